"""How fast the shop's inventory applies a backlog of orders: group commit against one order per transaction.

    python bench/inventory_drain.py [--orders 20000] [--rounds 3] [--only memory,kafka] [--kafka HOST:PORT]

The inventory service alone (``InventoryController`` -> ``InventoryService`` in a ``Microservice``,
wired as the shop wires it, events published with ``ClientProxy.emit_batch``) is started over a
backlog of ``--orders`` ``order.created`` records already on the broker (the shipped Olist orders,
cycled with fresh ids; every product seeded with 10^9 units, so every order is applied: the
write path), and timed from its start until its counters account for every order. Contenders, in
the same round, each on a fresh topic, group and SQLite file:

- ``one_by_one``: ``max_batch=1``, one SQLite transaction per order (the inventory before group
  commit);
- ``group_commit``: the default (``max_batch=500``): the orders queued while a transaction runs go
  into the next one.

Brokers: the embedded one (``memory``) and Kafka (``kafka``: ``--kafka`` or
``$KAFKA_BOOTSTRAP_SERVERS``; skipped without either). Prints orders/s per round, the median, the
median of the per-round ratios to ``one_by_one`` and the mean orders per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from shop_load import shop_orders  # bench/ is this script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("one_by_one", "group_commit")


async def run_once(broker_name: str, bootstrap: str | None, contender: str, n: int) -> tuple[float, int]:
    """One contender over a fresh backlog of ``n`` orders: (orders/s, transactions)."""
    from reactive_services import ClientProxy, Microservice
    from reactive_services.adapters import DeadLetterSink
    from reactive_services.examples.shop.demo import DATA_DIR
    from reactive_services.examples.shop.inventory import InventoryService, InventoryStore, initial_stock
    from reactive_services.examples.shop.services import InventoryController

    if broker_name == "memory":
        from reactive_services.adapters.memory import InMemoryBroker

        broker: Any = InMemoryBroker(partitions=1)
    else:
        from reactive_services.adapters.kafka import KafkaBroker

        broker = KafkaBroker(bootstrap or "", commit_interval_s=1.0)
    ns = f"drain-{uuid.uuid4().hex[:8]}."
    items = [order["items"] for order in shop_orders()["load"]]  # the shipped orders whose products exist
    records = [(f"o{i}", {"order_id": f"o{i}", "items": items[i % len(items)]}) for i in range(n)]
    seed = {p: 10**9 for p in initial_stock(DATA_DIR / "olist" / "products.csv")}
    with tempfile.TemporaryDirectory() as tmp:
        async with broker:
            await broker.create_topics([ns + "order.created"], partitions=1)
            for start in range(0, n, 5000):
                await broker.emit_batch(ns + "order.created", records[start : start + 5000])
            async with InventoryStore(Path(tmp) / "inventory.db", seed=seed) as store:
                client = ClientProxy(broker, namespace=ns)
                inventory = InventoryService(
                    store, client.emit, emit_batch=client.emit_batch, max_batch=1 if contender == "one_by_one" else 500
                )
                service = Microservice(
                    broker, [InventoryController(inventory, DeadLetterSink(broker))], name="inventory", namespace=ns
                )
                t0 = time.perf_counter()
                await service.start()
                while inventory.applied + inventory.rejected + inventory.duplicates < n:
                    if service.errors or inventory.errors:
                        raise RuntimeError(f"the inventory failed: {(service.errors or inventory.errors)[0]!r}")
                    await asyncio.sleep(0.005)
                elapsed = time.perf_counter() - t0
                await service.stop()
                await client.close()
                assert inventory.applied == n, (inventory.applied, inventory.rejected)
                return n / elapsed, inventory.transactions


def child(args: argparse.Namespace) -> None:
    rate, transactions = asyncio.run(run_once(args.broker, args.kafka, args.contender, args.orders))
    print(f"{rate} {transactions}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="memory,kafka")
    parser.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    import subprocess

    brokers = [b for b in args.only.split(",") if b]
    if "kafka" in brokers and not args.kafka:
        print("kafka: skipped (no --kafka and no KAFKA_BOOTSTRAP_SERVERS)")
        brokers.remove("kafka")
    print(f"{args.orders:,} orders of backlog per run; {args.rounds} rounds, each contender in its own process")
    for broker in brokers:
        rates: dict[str, list[float]] = {c: [] for c in CONTENDERS}
        txns: dict[str, list[int]] = {c: [] for c in CONTENDERS}
        for _ in range(args.rounds):
            for contender in CONTENDERS:
                cmd = [sys.executable, __file__, "--child", "--broker", broker, "--contender", contender]
                cmd += ["--orders", str(args.orders)] + (["--kafka", args.kafka] if args.kafka else [])
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, check=False)
                if out.returncode != 0:
                    print(f"{broker} {contender} failed:\n{out.stderr[-2000:]}")
                    return 1
                rate, transactions = out.stdout.split()[-2:]
                rates[contender].append(float(rate))
                txns[contender].append(int(transactions))
                print(".", end="", flush=True)
        print(f"\n{broker} (orders/s; ratio = median over rounds of rate / one_by_one's in the same round)")
        rounds = "".join(f"{'round ' + str(r + 1):>10}" for r in range(args.rounds))
        print(f"{'contender':<14}{rounds}{'median':>10}{'ratio':>7}{'orders/txn':>12}")
        for contender in CONTENDERS:
            ratio = statistics.median(a / b for a, b in zip(rates[contender], rates["one_by_one"], strict=True))
            per_txn = args.orders * len(txns[contender]) / sum(txns[contender])
            cells = "".join(f"{r:>10,.0f}" for r in rates[contender])
            print(f"{contender:<14}{cells}{statistics.median(rates[contender]):>10,.0f}{ratio:>7.2f}{per_txn:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
