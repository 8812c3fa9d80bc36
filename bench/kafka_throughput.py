"""Kafka read throughput: a raw aiokafka loop vs ``KafkaBroker.source`` with a reactivex pipeline.

Produces ``--records`` (default 100k) JSON records of about 200 bytes to a fresh
one-partition topic, then reads them twice, each time in a fresh consumer group:

  (a) raw:      ``AIOKafkaConsumer.getmany()`` + ``orjson.loads`` + the same map/filter inline
  (b) pipeline: ``KafkaBroker.source(decode="json") -> ops.map -> ops.filter -> Observer``

and prints records/s of each and the ratio b/a, per round (a then b) and best-of-rounds
(on 2 cores the broker competes with the client, so single rounds are noisy). The clock runs from the first record
received to the last, so group joins and connection set-up are not counted. Prints
only; nothing is asserted.

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` when set, else starts a local broker with
reactive_services.testing.local_kafka (and stops it afterwards)::

    python bench/kafka_throughput.py [--records 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from reactivex import operators as ops

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reactive_services.adapters import Message  # noqa: E402
from reactive_services.adapters.kafka import KafkaBroker  # noqa: E402
from reactive_services.testing import local_kafka  # noqa: E402


def make_record(i: int) -> bytes:
    rec = {
        "order_id": i,
        "customer": f"customer-{i % 997:05d}",
        "sku": f"sku-{i % 113:04d}",
        "qty": 1 + i % 5,
        "price": round(3.5 + (i % 50) * 1.25, 2),
        "ts": 1_700_000_000_000 + i,
        "status": "created",
        "note": "",
    }
    raw = orjson.dumps(rec)
    rec["note"] = "x" * max(0, 200 - len(raw))
    return orjson.dumps(rec)


async def produce(bootstrap: str, topic: str, n: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    t0 = time.perf_counter()
    try:
        futures = []
        for i in range(n):
            futures.append(await producer.send(topic, make_record(i), partition=0))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


def keep(amount: float) -> bool:
    return amount >= 0.0


async def read_raw(bootstrap: str, topic: str, n: int, max_batch: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    count = 0
    kept = 0
    t0 = None
    try:
        while count < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=max_batch)
            for records in batches.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for record in records:
                    value = orjson.loads(record.value)
                    amount = value["qty"] * value["price"]
                    if keep(amount):
                        kept += 1
                    count += 1
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
        await consumer.commit()
    finally:
        await consumer.stop()
    assert kept == n
    return elapsed


async def read_pipeline(bootstrap: str, topic: str, n: int, max_batch: int) -> float:
    async with KafkaBroker(bootstrap, max_batch=max_batch) as broker:
        stop = asyncio.Event()
        done = asyncio.Event()
        state = {"count": 0, "t0": 0.0, "t1": 0.0}

        def first(m: Message) -> Message:
            if state["t0"] == 0.0:
                state["t0"] = time.perf_counter()
            return m

        def on_next(amount: float) -> None:
            state["count"] += 1
            if state["count"] >= n:
                state["t1"] = time.perf_counter()
                stop.set()

        broker.source(topic, group_id=f"bench-rx-{uuid.uuid4().hex[:8]}", stop=stop).pipe(
            ops.map(first),
            ops.map(lambda m: m.value["qty"] * m.value["price"]),
            ops.filter(keep),
        ).subscribe(on_next, lambda e: done.set(), done.set)
        await done.wait()
        assert state["count"] == n
        return state["t1"] - state["t0"]


async def main_async(args: argparse.Namespace) -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    local = None
    state_dir = None
    if not bootstrap:
        local = local_kafka
        state_dir = tempfile.mkdtemp(prefix="bench-kafka-")
        print(f"starting a local Kafka broker in {state_dir} ...", flush=True)
        bootstrap = local.start(state_dir)
    try:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        async with KafkaBroker(bootstrap) as admin:
            await admin.create_topics([topic], partitions=1)
        size = len(make_record(args.records // 2))
        produced_s = await produce(bootstrap, topic, args.records)
        print(
            f"produced {args.records} records of ~{size} B to {topic} in {produced_s:.2f} s "
            f"({args.records / produced_s:,.0f} records/s)"
        )
        rows = []
        for round_ in range(args.rounds):
            raw_s = await read_raw(bootstrap, topic, args.records, args.max_batch)
            rx_s = await read_pipeline(bootstrap, topic, args.records, args.max_batch)
            rows.append((round_ + 1, args.records / raw_s, args.records / rx_s))
        print()
        print(f"{'round':>5}  {'(a) raw getmany+orjson':>24}  {'(b) KafkaBroker.source+rx':>26}  {'b/a':>5}")
        for r, a, b in rows:
            print(f"{r:>5}  {a:>17,.0f} rec/s  {b:>19,.0f} rec/s  {b / a:>5.2f}")
        best_a, best_b = max(r[1] for r in rows), max(r[2] for r in rows)
        print(f"{'best':>5}  {best_a:>17,.0f} rec/s  {best_b:>19,.0f} rec/s  {best_b / best_a:>5.2f}")
    finally:
        if local is not None:
            local.stop(state_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records to produce and read (default 100000)")
    parser.add_argument("--max-batch", type=int, default=500, help="records per getmany() (default 500)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="measurement rounds; the best of each is compared too (default 3)"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
