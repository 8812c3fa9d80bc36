"""Sustained end-to-end rate of the shop: orders accepted by the gateway vs orders handled by the inventory.

    python bench/shop_load.py [--seconds 20] [--connections 50] [--rate 0] [--rounds 1]
                              [--only memory,kafka] [--kafka HOST:PORT] [--drain 120] [--latency 0]

Each run starts the whole shop in a fresh process as ``reactive-services serve --dev`` does
(:func:`reactive_services.examples.shop.system.serve`), with a fresh data dir and namespace, on the
embedded broker (``memory``) or on Kafka (``kafka``: ``--kafka`` or ``$KAFKA_BOOTSTRAP_SERVERS``;
skipped without either). Once ``/readyz`` is 200, this process sends ``POST /orders`` with the dev
token through ``--connections`` httpx clients (one connection each): closed loop (default) or open
loop at ``--rate`` orders/s (latency counted from the scheduled send time). Orders are the shipped
Olist orders (``order_items.csv``, products of ``products.csv``) drawn at random; once a product's
stock (2,017 units in all) runs out its orders are rejected, which counts as handled.

Measured (the shop process reports every 0.5 s, and on demand at the load's start and end):

- accepted/s = 2xx answers / load duration; p50 / p99 latency; errors (by status or exception type).
- handled/s: orders the InventoryService applied + rejected (its counters) during the load, and
  ratio = handled / accepted ("sustained": a ratio near 1 and a bounded lag).
- lag = end offset - committed offset of ``order.created`` in the inventory's group (all partitions):
  its maximum during the load, at its end, and the seconds after it until 0 (``drain s``); on Kafka
  commits trail handling by up to ``commit_interval_s`` (1 s): about a second of orders.
- applied / rejected / missing: the outcome of every accepted order id in the inventory's store.
- cpu: CPU time / wall time during the load of the shop process and of this one (100 % = one core),
  and of the whole machine (100 % = every core busy): which is near its limit bounds the rate.

End-to-end latency (``--latency N``: after the load and its drain, or alone with ``--seconds 0``), in the same
shop process: one websocket client on the gateway's ``/ws`` (dev token, ``Authorization: Bearer``) subscribes to
the channels ``inventory`` and ``orders``; then N orders of one unit of a product with stock (every unit of the
initial stock once, shuffled: they apply unless a load used the stock up; a rejection is an outcome too) are
sent one after another, each timed from just before its ``POST /orders`` to the arrival on the websocket of its
outcome (``inventory.updated`` or ``order.rejected`` with the ``order_id`` the POST answered); the next is sent
then. p50 / p90 / p99 / max, and the p50 of the POST's answer alone; an outcome not there within 10 s is a
timeout (the run stops after 5).

Prints a row per run and the median over ``--rounds`` (a table per measurement); exits 1 if an accepted
order has no outcome, an order of ``--latency`` timed out or was refused, or a run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TAG = "@bench "  # prefix of the shop process's report lines on its stdout
STEP_S = 60.0  # seconds any one exchange with the shop process may take
OUTCOME_TIMEOUT_S = 10.0  # --latency: an order's outcome not on the websocket within this is a timeout
MAX_TIMEOUTS = 5  # --latency: the run stops after this many
OUTCOMES = ("inventory.updated", "order.rejected")


def say(kind: str, **fields: Any) -> None:
    print(TAG + json.dumps({"kind": kind, **fields}), flush=True)


async def shop_process(broker: str) -> int:
    """The shop process: run the shop as ``serve`` does; report on stdout (lines starting with TAG),
    take commands on stdin (snap, check PATH, stop)."""
    from reactive_services import Microservice
    from reactive_services.auth import JwtConfig
    from reactive_services.examples.shop.services import InventoryController
    from reactive_services.examples.shop.system import ServeConfig, ServeInfo, serve

    logging.getLogger("reactive_services").setLevel(logging.WARNING)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-shop-"))
    ns = f"bench-{uuid.uuid4().hex[:8]}."
    bootstrap = None if broker == "memory" else broker
    config = ServeConfig(bootstrap_servers=bootstrap, port=0, data_dir=data_dir, namespace=ns, dev=True)
    config.jwt = JwtConfig.development()  # whatever RS_JWT_* says: the dev token must verify
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def control(info: ServeInfo) -> None:
        objects = gc.get_objects()  # serve() keeps its services to itself: find the inventory's
        svc = next((o for o in objects if isinstance(o, Microservice) and o.name == "inventory"), None)
        inventory = next((getattr(o, "inventory", None) for o in objects if isinstance(o, InventoryController)), None)
        del objects
        topic = ns + "order.created"

        async def sample() -> dict[str, Any]:
            source, group = svc.broker, svc.group_id  # svc None (not found): AttributeError, reported
            ends = await source.end_offsets(topic)
            committed = await asyncio.gather(*(source.committed(group, topic, p) for p in ends))
            end, done = sum(ends.values()), sum(c or 0 for c in committed)
            applied, rejected = getattr(inventory, "applied", None), getattr(inventory, "rejected", None)
            counted = isinstance(applied, int) and isinstance(rejected, int)
            handled = applied + rejected if counted else done
            return dict(t=time.time(), cpu=time.process_time(), lag=end - done, handled=handled, counted=counted)

        async def check(path: Path) -> dict[str, Any]:  # the outcome of every accepted order, from the store
            found = [(order_id, await inventory.store.outcome(order_id)) for order_id in path.read_text().split()]
            got = Counter(outcome.status for _, outcome in found if outcome is not None)
            missing = [order_id for order_id, outcome in found if outcome is None]
            return dict(applied=got["applied"], rejected=got["rejected"], missing=missing[:10], lost=len(missing))

        async def sampler() -> None:
            while True:
                with contextlib.suppress(Exception):  # a sample missed; the next one may work
                    say("sample", **await sample())
                await asyncio.sleep(0.5)

        sampling = asyncio.create_task(sampler())
        say("ready", url=info.url, token=info.dev_token)
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
                if line == "snap":
                    say("snap", **await sample())
                elif line.startswith("check "):
                    say("check", **await check(Path(line[6:])))
                else:  # "stop", or stdin closed
                    break
        except Exception as exc:  # the inventory not found, the broker gone...: reported, then stop
            say("error", error=repr(exc))
        finally:
            sampling.cancel()
            stop.set()

    def ready(info: ServeInfo) -> None:
        tasks.append(asyncio.create_task(control(info)))

    try:
        return await serve(config, on_ready=ready, stop=stop)
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def shop_orders() -> dict[str, list[dict[str, Any]]]:
    """(The driver, from here on.) ``POST /orders`` bodies: ``load``: the shipped Olist orders, items of products that
    exist; ``units`` (``--latency``): one unit of a product each, every unit of the initial stock once, shuffled."""
    from reactive_services.examples.shop.demo import DATA_DIR
    from reactive_services.examples.shop.inventory import initial_stock
    from reactive_services.examples.shop.orders import OrderItemRow, read_order_rows

    stock = initial_stock(DATA_DIR / "olist" / "products.csv")
    orders: dict[str, Counter[str]] = {}
    for row in read_order_rows(DATA_DIR / "olist" / "order_items.csv"):
        if isinstance(row, OrderItemRow) and row.product_id in stock:
            orders.setdefault(row.order_id, Counter())[row.product_id] += 1
    units = [{"items": [{"product_id": p, "quantity": 1}]} for p, n in stock.items() for _ in range(n)]
    random.Random(11).shuffle(units)
    load = [{"items": [{"product_id": p, "quantity": q} for p, q in items.items()]} for items in orders.values()]
    return {"load": load, "units": units}


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nan if empty)."""
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def host_cpu() -> tuple[float, float] | None:
    """(busy, total) jiffies of every core (Linux ``/proc/stat``), or None."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


class Shop:
    """The shop process: its report lines (samples kept, answers queued) and its commands."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc, self.log_path = proc, log_path
        self.samples: list[dict[str, Any]] = []
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, broker: str, log_path: Path) -> Shop:
        with open(log_path, "wb") as log:  # the child's stderr: its tail is shown when it fails
            pipe = asyncio.subprocess.PIPE
            args = (sys.executable, __file__, "--shop", broker)
            return cls(
                await asyncio.create_subprocess_exec(*args, stdin=pipe, stdout=pipe, stderr=log, cwd=ROOT), log_path
            )

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(TAG):
                report = json.loads(line[len(TAG) :])
                (self.samples.append if report["kind"] == "sample" else self.answers.put_nowait)(report)
        self.answers.put_nowait({"kind": "exited"})

    async def answer(self, kind: str) -> dict[str, Any]:
        while True:
            report = await asyncio.wait_for(self.answers.get(), STEP_S)
            if report["kind"] == kind:
                return report
            if report["kind"] in ("exited", "error"):
                tail = (self.log_path.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"shop process: {report.get('error', 'exited')}: {tail[:200]}")

    async def ask(self, command: str, kind: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.answer(kind)

    async def close(self) -> None:
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), STEP_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self.reader


async def load(clients: list[Any], orders: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """POST /orders for ``args.seconds``, closed loop or at ``args.rate``; answers and their latencies.
    (One client per connection: one shared pool of 50 cost ~6 ms of CPU per request, httpcore
    scanning every connection on each, and was the bottleneck.)"""
    import httpx

    rng = random.Random(7)
    latencies: list[float] = []
    accepted: list[str] = []
    errors: Counter[str] = Counter()

    async def post(http: Any, start: float) -> None:
        try:
            response = await http.post("/orders", json=rng.choice(orders))
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] += 1
            return
        latencies.append(time.perf_counter() - start)
        if 200 <= response.status_code < 300:
            accepted.append(response.json()["order_id"])
        else:
            errors[str(response.status_code)] += 1

    async def worker(http: Any) -> None:
        while (now := time.perf_counter()) < deadline:
            await post(http, now)

    t0 = time.perf_counter()
    deadline = t0 + args.seconds
    if args.rate > 0:
        pending: set[asyncio.Task[None]] = set()
        i = 0
        while (due := t0 + i / args.rate) < deadline:
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(post(clients[i % len(clients)], due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        await asyncio.gather(*pending)
    else:
        await asyncio.gather(*(worker(http) for http in clients))
    return {"duration": time.perf_counter() - t0, "latencies": latencies, "accepted": accepted, "errors": errors}


async def latency(http: Any, ready: dict[str, Any], orders: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """``n`` orders one after another, each timed from just before its POST to its outcome on ``/ws``."""
    import httpx
    from websockets.asyncio.client import connect

    arrived: dict[str, tuple[float, str]] = {}  # order id: (perf_counter at its outcome's arrival, topic)
    news = asyncio.Event()
    url = "ws" + ready["url"].removeprefix("http").rstrip("/") + "/ws"
    async with connect(url, additional_headers={"Authorization": f"Bearer {ready['token']}"}, proxy=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": ["inventory", "orders"]}))
        if (reply := json.loads(await asyncio.wait_for(ws.recv(), STEP_S))).get("type") != "subscribed":
            raise RuntimeError(f"/ws subscribe answered {reply}")

        async def read() -> None:
            try:
                async for raw in ws:
                    now, frame = time.perf_counter(), json.loads(raw)
                    event = frame.get("event") if frame.get("type") == "event" else None
                    if isinstance(event, dict) and event.get("topic") in OUTCOMES:
                        arrived.setdefault(event["data"]["order_id"], (now, event["topic"]))
                        news.set()
            finally:
                news.set()

        reader = asyncio.create_task(read())
        totals, posts, timeouts = list[float](), list[float](), 0  # seconds: to the outcome, to the POST's answer
        outcomes, errors = Counter[str](), Counter[str]()
        for i in range(n):
            t0 = time.perf_counter()
            try:
                response = await http.post("/orders", json=orders[i % len(orders)])
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            posts.append(time.perf_counter() - t0)
            if not 200 <= response.status_code < 300:
                errors[str(response.status_code)] += 1
                continue
            order_id = response.json()["order_id"]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, t0 + OUTCOME_TIMEOUT_S - time.perf_counter())):
                    while order_id not in arrived and not reader.done():
                        news.clear()
                        await news.wait()
            if order_id in arrived:
                totals.append(arrived[order_id][0] - t0)
                outcomes[arrived[order_id][1]] += 1
            elif reader.done():
                raise RuntimeError(f"/ws ended ({reader.exception()!r}): {ws.close_code} {ws.close_reason!r}")
            elif (timeouts := timeouts + 1) >= MAX_TIMEOUTS:
                break
        reader.cancel()
    quantiles = {"p50 ms": 0.5, "p90 ms": 0.9, "p99 ms": 0.99, "max ms": 1.0}
    return {name: pct(sorted(totals), q) * 1e3 for name, q in quantiles.items()} | {
        "POST p50 ms": pct(sorted(posts), 0.5) * 1e3,
        "orders": len(totals),
        "applied": outcomes["inventory.updated"],
        "rejected": outcomes["order.rejected"],
        "timeouts": timeouts,
        "errors": sum(errors.values()),
        "_notes": {  # note: shown
            f"errors: {dict(errors)}": errors,
            f"{timeouts} outcome(s) not there within {OUTCOME_TIMEOUT_S:g} s": timeouts,
            f"stopped after {MAX_TIMEOUTS} timeouts": timeouts >= MAX_TIMEOUTS and i + 1 < n,
        },
    }


async def measure_load(
    shop: Shop, clients: list[Any], orders: list[dict[str, Any]], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """The load, its drain and the check of its orders' outcomes: the columns of :data:`COLUMNS`."""
    before, cpu0, host0 = await shop.ask("snap", "snap"), time.process_time(), host_cpu()
    result = await load(clients, orders, args)
    after, cpu1, host1 = await shop.ask("snap", "snap"), time.process_time(), host_cpu()
    drain_s = None
    while drain_s is None and time.time() - after["t"] < args.drain:
        snap = await shop.ask("snap", "snap")
        if snap["lag"] == 0:
            drain_s = max(0.0, snap["t"] - after["t"])
        else:
            await asyncio.sleep(0.1)
    ids = work / "accepted.txt"
    ids.write_text("\n".join(result["accepted"]))
    check = await shop.ask(f"check {ids}", "check")
    window = [s["lag"] for s in [before, *shop.samples, after] if before["t"] <= s["t"] <= after["t"]]
    lat = sorted(result["latencies"])
    duration = result["duration"]
    return {
        "accepted/s": len(result["accepted"]) / duration,
        "p50 ms": pct(lat, 0.5) * 1e3,
        "p99 ms": pct(lat, 0.99) * 1e3,
        "errors": sum(result["errors"].values()),
        "handled/s": (after["handled"] - before["handled"]) / (after["t"] - before["t"]),
        "ratio": (after["handled"] - before["handled"]) / max(1, len(result["accepted"])),
        "max lag": max(window),
        "end lag": after["lag"],
        "drain s": drain_s,
        "applied": check["applied"],
        "rejected": check["rejected"],
        "missing": check["lost"],
        "shop cpu": (after["cpu"] - before["cpu"]) / (after["t"] - before["t"]) * 100,
        "load cpu": (cpu1 - cpu0) / duration * 100,
        "host cpu": (host1[0] - host0[0]) / (host1[1] - host0[1]) * 100 if host0 and host1 else None,
        "_notes": {  # note: shown
            f"errors: {dict(result['errors'])}": result["errors"],
            f"accepted orders without an outcome, e.g. {check['missing'][:10]}": check["missing"],
            "no inventory counters found: handled = committed offsets": not before["counted"],
            f"lag not back to 0 within {args.drain:g} s": drain_s is None,
        },
    }


async def run_once(broker: str, orders: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """One fresh shop: the load (``--seconds``), then the latency (``--latency``: under ``"_latency"``,
    its result or why it failed)."""
    import httpx

    work = Path(tempfile.mkdtemp(prefix="bench-shop-load-"))
    shop = await Shop.start(broker, work / "shop.log")
    result: dict[str, Any] = {}
    try:
        ready = await shop.answer("ready")
        auth = {"Authorization": f"Bearer {ready['token']}"}
        options = {"limits": httpx.Limits(max_connections=1), "timeout": httpx.Timeout(30.0, pool=None)}
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=ready["url"], headers=auth, **options))
                for _ in range(args.connections if args.seconds > 0 else 1)
            ]
            deadline = time.monotonic() + STEP_S
            while (await clients[0].get("/readyz")).status_code != 200:  # partitions assigned, replies up
                if time.monotonic() > deadline:
                    raise RuntimeError(f"/readyz not 200 within {STEP_S:g} s")
                await asyncio.sleep(0.2)
            if args.seconds > 0:
                result = await measure_load(shop, clients, orders["load"], args, work)
            if args.latency > 0:
                try:
                    result["_latency"] = await latency(clients[0], ready, orders["units"], args.latency)
                except Exception as exc:  # noqa: BLE001 - reported in its table; the load's result stands
                    result["_latency"] = f"failed: {str(exc) or repr(exc)}"
    finally:
        await shop.close()
        shutil.rmtree(work, ignore_errors=True)
    return result


COLUMNS = {  # name: format (d: rounded to an integer; the column is as wide as its name)
    **{"accepted/s": ",.0f", "p50 ms": ".1f", "p99 ms": ".1f", "errors": ",d", "handled/s": ",.0f", "ratio": ".2f"},
    **{"max lag": ",d", "end lag": ",d", "drain s": ".1f", "applied": ",d", "rejected": ",d", "missing": ",d"},
    **{"shop cpu": ".0f%", "load cpu": ".0f%", "host cpu": ".0f%"},
}
LATENCY_COLUMNS = {  # the table of --latency
    **{"p50 ms": ".1f", "p90 ms": ".1f", "p99 ms": ".1f", "max ms": ".1f", "POST p50 ms": ".1f"},
    **{"orders": ",d", "applied": ",d", "rejected": ",d", "timeouts": ",d", "errors": ",d"},
}


def row(label: str, result: dict[str, Any], columns: dict[str, str]) -> str:
    cells = []
    for name, fmt in columns.items():
        value, unit = result.get(name), fmt.lstrip(",.0123456789df")
        text = "-" if value is None else format(round(value) if "d" in fmt else value, fmt.rstrip("%")) + unit
        cells.append(f"{text:>{max(6, len(name))}}")
    return f"{label:<10} " + " ".join(cells)


def median_of(runs: list[dict[str, Any]], columns: dict[str, str]) -> dict[str, Any]:
    values = {name: [r[name] for r in runs if r.get(name) is not None] for name in columns}
    return {name: statistics.median(v) if len(v) * 2 > len(runs) else None for name, v in values.items()}


def table(results: dict[str, list[dict[str, Any] | str]], columns: dict[str, str]) -> bool:
    """Print a row per run (a str: why it failed), the median per broker, and the notes shown of each run;
    True if every run has a row (none failed)."""
    print(f"{'broker':<10} " + " ".join(f"{n:>6}" for n in columns))
    clean = True
    for name, runs in results.items():
        good = [r for r in runs if isinstance(r, dict)]
        clean &= len(good) == len(runs)
        for i, run in enumerate(runs):
            label = f"{name} #{i + 1}" if len(runs) > 1 else name
            print(row(label, run, columns) if isinstance(run, dict) else f"{label:<10} ({run})")
        if len(runs) > 1 and good:
            print(row(f"{name} med", median_of(good, columns), columns))
        for note in (note for run in good for note, shown in run["_notes"].items() if shown):
            print(f"{'':<10} {note}")
    return clean


async def main_async(args: argparse.Namespace) -> int:
    bootstrap = args.kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    brokers = [b.strip() for b in args.only.split(",") if b.strip()]
    if "kafka" in brokers and not bootstrap:
        print("kafka: skipped (give --kafka HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS)")
        brokers.remove("kafka")
    orders = shop_orders()
    mode = f"open loop at {args.rate:,.0f} orders/s" if args.rate > 0 else "closed loop"
    where = f"; kafka at {bootstrap}" if "kafka" in brokers else ""
    load = f"{len(orders['load'])} shipped orders, drawn at random; {args.seconds:g} s of POST /orders per run"
    parts = [f"{load}, {args.connections} connections, {mode}"] if args.seconds > 0 else []
    parts += [f"{args.latency} sequential orders timed to their outcome on /ws"] if args.latency > 0 else []
    print("; then ".join(parts) + f"; {args.rounds} round(s), a fresh shop each{where}", flush=True)
    results: dict[str, list[dict[str, Any] | str]] = {}
    for _round in range(args.rounds):
        for name in brokers:
            try:
                outcome: dict[str, Any] | str = await run_once(bootstrap if name == "kafka" else name, orders, args)
            except Exception as exc:  # noqa: BLE001 - reported in the table; the other runs go on
                outcome = f"failed: {str(exc) or repr(exc)}"
            results.setdefault(name, []).append(outcome)
            print(".", end="", flush=True)
    print()
    clean = True
    if args.seconds > 0:
        clean &= not any(r["missing"] for rs in results.values() for r in rs if isinstance(r, dict))
        clean &= table(results, COLUMNS)
    if args.latency > 0:
        print(f"\nPOST /orders -> outcome on the websocket ({args.latency} sequential orders)")
        runs = {name: [r if isinstance(r, str) else r["_latency"] for r in rs] for name, rs in results.items()}
        clean &= not any(r["timeouts"] or r["errors"] for rs in runs.values() for r in rs if isinstance(r, dict))
        clean &= table(runs, LATENCY_COLUMNS)
    return 0 if clean else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of load per run (default 20)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent HTTP connections (default 50)")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop at this many orders/s (default: closed)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per broker; the median is printed (default 1)")
    parser.add_argument("--only", default="memory,kafka", help="comma-separated: memory, kafka (default both)")
    parser.add_argument("--kafka", metavar="HOST:PORT", help="Kafka (default $KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for lag 0 (default 120)")
    parser.add_argument("--latency", type=int, default=0, metavar="N", help="N sequential orders timed (default 0)")
    parser.add_argument("--shop", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.shop and {b.strip() for b in args.only.split(",") if b.strip()} - {"memory", "kafka"}:
        parser.error(f"--only: memory, kafka; got {args.only!r}")
    if not args.shop and args.seconds <= 0 and args.latency <= 0:
        parser.error("nothing to measure: --seconds 0 and no --latency")
    if args.shop:
        sys.exit(asyncio.run(shop_process(args.shop)))
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
