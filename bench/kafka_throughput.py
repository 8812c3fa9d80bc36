"""Kafka throughput of the library against the raw clients, each contender in its own process.

    python bench/kafka_throughput.py [--records 200000] [--rounds 3] [--only raw,source_rx,...]

Produces ``--records`` JSON records of about 200 bytes to a fresh one-partition topic, then runs
every contender ``--rounds`` times, each run in a fresh Python process and (for consumers) a fresh
consumer group, and prints records/s per round, the median, and the median's ratio to the raw
aiokafka row of its section. Every consumer does the same work per record (decode the JSON,
compute ``qty * price``, keep it when >= 0), commits once a second, and is timed from the first
record it received to the last, so group joins and connection set-up are not counted. Producers
are timed from the first send to the last acknowledgement. Prints only; nothing is asserted.

Consumers also report the CPU time of their process over that same span, per record
(``time.process_time``), and its ratio to the baseline's: on a machine shared with other jobs,
where single rounds' rates vary by 20 to 40%, it is the steadier figure of the work done per
record (the rate also counts waiting for fetches and for the CPU).

Consumers (ratios to ``raw``):

- ``raw``: ``AIOKafkaConsumer.getmany()`` + ``orjson.loads`` + the work inline.
- ``raw_rx``: the same fetch loop feeding the same reactivex chain (map, map, filter) through a Subject.
- ``source_rx``: ``KafkaBroker.source(decode="json") -> map -> filter -> Observer``.
- ``source_rx_c8``: the same with ``concurrency=8`` (records with a key handled in key order).
- ``service_sync`` / ``service_async``: a ``Microservice`` with one ``@event_pattern`` payload handler
  (``def`` / ``async def``) doing the work.
- ``service_model``: ``service_sync`` with the payload validated as a pydantic model of the record
  (``model=``), the work done on the model: the cost of validation.
- ``batches``: ``KafkaBroker.source_batches() -> Observer`` doing the work over each batch's ``values``.
- ``batches_messages``: the same over the batch's messages (``for m in batch``: a Message made per record).
- ``confluent``: raw confluent-kafka ``consume(500)`` + ``orjson.loads`` (when installed: the ``bench`` extra).
- ``faststream``: a FastStream Kafka subscriber with a ``dict`` payload (when installed).
- ``quix``: a Quix Streams ``Application`` with ``sdf.apply(...)`` (when installed).

Producers (ratios to ``raw_producer``; every one with ``acks="all"`` and idempotence, as the broker's
own producer):

- ``raw_producer``: ``await AIOKafkaProducer.send(orjson.dumps(value))`` per record, then every future.
- ``emit_batch``: one ``KafkaBroker.emit_batch`` of every record (which fills aiokafka's record batches
  itself: no future per record, so it may pass the per-record ``send`` baseline).
- ``sink``: ``reactivex.from_iterable(values).subscribe(broker.sink(topic))``, then ``flush``.

Consume-transform-produce (ratios to ``transform_alos``): ``source -> map -> sink`` of every record
into a second topic, at-least-once (``transform_alos``) and exactly-once through Kafka transactions
(``transform_eos``), timed until the last input's offset is committed.

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` when set, else starts a local broker with
``reactive_services.testing.local_kafka`` (and stops it afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent

CONSUMERS = [
    "raw",
    "raw_rx",
    "source_rx",
    "source_rx_c8",
    "service_sync",
    "service_async",
    "service_model",
    "batches",
    "batches_messages",
    "confluent",
    "faststream",
    "quix",
]
PRODUCERS = ["raw_producer", "emit_batch", "sink"]
TRANSFORMS = ["transform_alos", "transform_eos"]
OPTIONAL = {"confluent": "confluent_kafka", "faststream": "faststream", "quix": "quixstreams"}
SECTIONS = [
    ("consume", CONSUMERS, "raw"),
    ("produce", PRODUCERS, "raw_producer"),
    ("transform", TRANSFORMS, "transform_alos"),
]


def make_record(i: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "order_id": i,
        "customer": f"customer-{i % 997:05d}",
        "sku": f"sku-{i % 113:04d}",
        "qty": 1 + i % 5,
        "price": round(3.5 + (i % 50) * 1.25, 2),
        "ts": 1_700_000_000_000 + i,
        "status": "created",
        "note": "",
    }
    rec["note"] = "x" * max(0, 200 - len(orjson.dumps(rec)))
    return rec


def keep(amount: float) -> bool:
    return amount >= 0.0


def work(value: dict[str, Any]) -> float:
    return value["qty"] * value["price"]  # type: ignore[no-any-return]


class Clock:
    """Counts records; times the first to the ``n``-th and sets ``done`` then.

    Contenders that see records one at a time (the payload handlers, FastStream, Quix) count
    inline (``if not clock.t0``, ``clock.count += 1``, :meth:`finish` at ``n``) rather than
    calling :meth:`start` and :meth:`add` per record: those two calls cost about 0.13 us per
    record, which ``raw`` (one call per fetch) does not pay.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.t0 = 0.0
        self.t1 = 0.0
        self.cpu0 = 0.0  # process CPU seconds at t0 and at t1
        self.cpu1 = 0.0
        self.done = asyncio.Event()
        CLOCKS.append(self)

    def start(self) -> None:
        if not self.t0:
            self.t0 = time.perf_counter()
            self.cpu0 = time.process_time()

    def add(self, k: int = 1) -> None:
        self.count += k
        if self.count >= self.n and not self.t1:
            self.stop()
            self.done.set()

    def finish(self) -> None:
        """The ``n``-th record: stop the clock."""
        if not self.t1:
            self.stop()
            self.done.set()

    def stop(self) -> None:
        """Stop the clock now (again: later)."""
        self.t1 = time.perf_counter()
        self.cpu1 = time.process_time()

    @property
    def rate(self) -> float:
        return self.n / (self.t1 - self.t0)

    @property
    def cpu_us(self) -> float | None:
        """CPU microseconds of the process per record from t0 to t1 (None: not timed)."""
        return (self.cpu1 - self.cpu0) / self.n * 1e6 if self.cpu0 and self.cpu1 else None


#: Every Clock made in this process (a contender's run reports the CPU time of the last).
CLOCKS: list[Clock] = []


def group() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


# -- consumers ----------------------------------------------------------------------------------


async def c_raw(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    clock = Clock(n)
    last_commit = time.monotonic()
    kept = 0
    try:
        while clock.count < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                clock.start()
                for record in records:
                    if keep(work(orjson.loads(record.value))):
                        kept += 1
                clock.add(len(records))
            if time.monotonic() - last_commit >= 1.0:
                await consumer.commit()
                last_commit = time.monotonic()
        await consumer.commit()
    finally:
        await consumer.stop()
    assert kept == n, kept
    return clock.rate


async def c_raw_rx(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer
    from reactivex import operators as ops
    from reactivex.subject import Subject

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    clock = Clock(n)
    subject: Subject[Any] = Subject()
    subject.pipe(ops.map(lambda r: orjson.loads(r.value)), ops.map(work), ops.filter(keep)).subscribe(
        lambda _amount: clock.add()
    )
    last_commit = time.monotonic()
    try:
        while clock.count < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                clock.start()
                for record in records:
                    subject.on_next(record)
            if time.monotonic() - last_commit >= 1.0:
                await consumer.commit()
                last_commit = time.monotonic()
        await consumer.commit()
    finally:
        await consumer.stop()
    return clock.rate


async def _source_rx(bootstrap: str, topic: str, n: int, concurrency: int) -> float:
    from reactivex import operators as ops

    from reactive_services.adapters import Message
    from reactive_services.adapters.kafka import KafkaBroker

    clock = Clock(n)
    stop = asyncio.Event()

    def first(m: Message) -> float:
        clock.start()
        return work(m.value)

    async with KafkaBroker(bootstrap, commit_interval_s=1.0) as broker:
        ended = asyncio.Event()
        broker.source(topic, group_id=group(), stop=stop, concurrency=concurrency).pipe(
            ops.map(first), ops.filter(keep)
        ).subscribe(lambda _a: clock.add(), lambda e: ended.set(), ended.set)
        await clock.done.wait()
        stop.set()
        await ended.wait()
    return clock.rate


async def c_source_rx(bootstrap: str, topic: str, n: int) -> float:
    return await _source_rx(bootstrap, topic, n, 1)


async def c_source_rx_c8(bootstrap: str, topic: str, n: int) -> float:
    return await _source_rx(bootstrap, topic, n, 8)


async def _service(bootstrap: str, topic: str, n: int, *, asynchronous: bool) -> float:
    from reactive_services import Microservice, event_pattern
    from reactive_services.adapters.kafka import KafkaBroker

    clock = Clock(n)

    class Sync:
        @event_pattern(topic)
        def handle(self, payload: dict[str, Any]) -> None:
            if not clock.t0:
                clock.start()
            if keep(work(payload)):
                clock.count += 1
                if clock.count == n:
                    clock.finish()

    class Async:
        @event_pattern(topic)
        async def handle(self, payload: dict[str, Any]) -> None:
            if not clock.t0:
                clock.start()
            if keep(work(payload)):
                clock.count += 1
                if clock.count == n:
                    clock.finish()

    async with KafkaBroker(bootstrap, commit_interval_s=1.0) as broker:
        service = Microservice(broker, [Async() if asynchronous else Sync()], name="bench", group_id=group())
        await service.start()
        await clock.done.wait()
        await service.stop()
    return clock.rate


async def c_service_model(bootstrap: str, topic: str, n: int) -> float:
    """``service_sync`` with the payload validated as a pydantic model of the record (``model=``)."""
    import pydantic

    from reactive_services import Microservice, event_pattern
    from reactive_services.adapters.kafka import KafkaBroker

    class OrderRecord(pydantic.BaseModel):
        order_id: int
        customer: str
        sku: str
        qty: int
        price: float
        ts: int
        status: str
        note: str

    clock = Clock(n)

    class Typed:
        @event_pattern(topic, model=OrderRecord)
        def handle(self, order: Any) -> None:
            if not clock.t0:
                clock.start()
            if keep(order.qty * order.price):
                clock.count += 1
                if clock.count == n:
                    clock.finish()

    async with KafkaBroker(bootstrap, commit_interval_s=1.0) as broker:
        service = Microservice(broker, [Typed()], name="bench", group_id=group())
        await service.start()
        await clock.done.wait()
        await service.stop()
    return clock.rate


async def c_service_sync(bootstrap: str, topic: str, n: int) -> float:
    return await _service(bootstrap, topic, n, asynchronous=False)


async def c_service_async(bootstrap: str, topic: str, n: int) -> float:
    return await _service(bootstrap, topic, n, asynchronous=True)


async def _batches(bootstrap: str, topic: str, n: int, *, messages: bool) -> float:
    from reactive_services.adapters import Batch
    from reactive_services.adapters.kafka import KafkaBroker

    clock = Clock(n)
    stop = asyncio.Event()

    def on_values(batch: Batch) -> None:
        clock.start()
        kept = 0
        for value in batch.values:
            if keep(work(value)):
                kept += 1
        clock.add(kept)

    def on_messages(batch: Batch) -> None:
        clock.start()
        kept = 0
        for m in batch:
            if keep(work(m.value)):
                kept += 1
        clock.add(kept)

    async with KafkaBroker(bootstrap, commit_interval_s=1.0) as broker:
        ended = asyncio.Event()
        broker.source_batches(topic, group_id=group(), stop=stop).subscribe(
            on_messages if messages else on_values, lambda e: ended.set(), ended.set
        )
        await clock.done.wait()
        stop.set()
        await ended.wait()
    return clock.rate


async def c_batches(bootstrap: str, topic: str, n: int) -> float:
    return await _batches(bootstrap, topic, n, messages=False)


async def c_batches_messages(bootstrap: str, topic: str, n: int) -> float:
    return await _batches(bootstrap, topic, n, messages=True)


async def c_confluent(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group(),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    clock = Clock(n)
    last_commit = time.monotonic()
    try:
        while clock.count < n:
            records = consumer.consume(500, 1.0)
            if not records:
                continue
            clock.start()
            kept = 0
            for record in records:
                if record.error() is None and keep(work(orjson.loads(record.value()))):
                    kept += 1
            clock.add(kept)
            if time.monotonic() - last_commit >= 1.0:
                consumer.commit(asynchronous=True)
                last_commit = time.monotonic()
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return clock.rate


async def c_faststream(bootstrap: str, topic: str, n: int) -> float:
    from faststream.kafka import KafkaBroker as FSBroker

    clock = Clock(n)
    broker = FSBroker(bootstrap)

    @broker.subscriber(topic, group_id=group(), auto_offset_reset="earliest")  # type: ignore[misc]
    async def handle(payload: dict[str, Any]) -> None:
        if not clock.t0:
            clock.start()
        if keep(work(payload)):
            clock.count += 1
            if clock.count == n:
                clock.finish()

    await broker.start()
    try:
        await clock.done.wait()
    finally:
        await broker.stop()
    return clock.rate


def c_quix(bootstrap: str, topic: str, n: int) -> float:
    """Quix Streams runs its own loop and signal handlers: in the main thread, not under asyncio."""
    from quixstreams import Application

    clock = Clock(n)
    app = Application(
        broker_address=bootstrap, consumer_group=group(), auto_offset_reset="earliest", commit_interval=1.0
    )

    def on_value(value: dict[str, Any]) -> None:
        if not clock.t0:
            clock.start()
        if keep(work(value)):
            clock.count += 1
            if clock.count >= n and not clock.t1:
                clock.stop()
                app.stop()

    sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
    sdf.update(on_value)
    app.run()
    return clock.rate


# -- producers ----------------------------------------------------------------------------------


async def p_raw_producer(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaProducer

    values = [make_record(i) for i in range(n)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        t0 = time.perf_counter()
        futures = [await producer.send(topic, orjson.dumps(v)) for v in values]
        await asyncio.gather(*futures)
        return n / (time.perf_counter() - t0)
    finally:
        await producer.stop()


async def p_emit_batch(bootstrap: str, topic: str, n: int) -> float:
    from reactive_services.adapters.kafka import KafkaBroker

    values = [(None, make_record(i)) for i in range(n)]
    async with KafkaBroker(bootstrap) as broker:
        t0 = time.perf_counter()
        await broker.emit_batch(topic, values)
        return n / (time.perf_counter() - t0)


async def p_sink(bootstrap: str, topic: str, n: int) -> float:
    import reactivex

    from reactive_services.adapters.kafka import KafkaBroker

    values = [make_record(i) for i in range(n)]
    async with KafkaBroker(bootstrap) as broker:
        sink = broker.sink(topic)
        t0 = time.perf_counter()
        reactivex.from_iterable(values).subscribe(sink)
        await sink.flush()
        assert sink.sent == n, sink.sent
        return n / (time.perf_counter() - t0)


# -- consume-transform-produce ------------------------------------------------------------------


async def _transform(bootstrap: str, topic: str, n: int, guarantee: str) -> float:
    from reactivex import operators as ops

    from reactive_services import Microservice, event_pattern
    from reactive_services.adapters.kafka import KafkaBroker

    out = f"{topic}-out-{uuid.uuid4().hex[:6]}"
    clock = Clock(n)

    class Transform:
        def __init__(self, broker: KafkaBroker) -> None:
            self.sink = broker.sink(out)

        @event_pattern(topic, pipeline=True)
        def handle(self, messages: Any) -> Any:
            return messages.pipe(
                ops.do_action(lambda _m: clock.start()),
                ops.map(lambda m: {"order_id": m.value["order_id"], "amount": work(m.value)}),
                ops.do(self.sink),
                ops.do_action(lambda _v: clock.add()),
            )

    async with KafkaBroker(bootstrap, commit_interval_s=1.0) as broker:
        await broker.create_topics([out], partitions=1)
        gid = group()
        service = Microservice(broker, [Transform(broker)], name="bench", group_id=gid, processing_guarantee=guarantee)
        await service.start()
        await clock.done.wait()
        while (await broker.committed(gid, topic, 0) or 0) < n:  # timed until the last input is committed
            await asyncio.sleep(0.005)
        clock.stop()
        await service.stop()
    return clock.rate


async def t_transform_alos(bootstrap: str, topic: str, n: int) -> float:
    return await _transform(bootstrap, topic, n, "at_least_once")


async def t_transform_eos(bootstrap: str, topic: str, n: int) -> float:
    return await _transform(bootstrap, topic, n, "exactly_once")


RUNNERS: dict[str, Callable[[str, str, int], Awaitable[float] | float]] = {
    **{name: globals()[f"c_{name}"] for name in CONSUMERS},
    **{name: globals()[f"p_{name}"] for name in PRODUCERS},
    **{name: globals()[f"t_{name}"] for name in TRANSFORMS},
}


# -- the driver ---------------------------------------------------------------------------------


async def produce(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    t0 = time.perf_counter()
    try:
        futures = [await producer.send(topic, orjson.dumps(make_record(i)), partition=0) for i in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def create_topic(bootstrap: str, topic: str) -> None:
    from reactive_services.adapters.kafka import KafkaBroker

    async with KafkaBroker(bootstrap) as admin:
        await admin.create_topics([topic], partitions=1)


def run_one(name: str, bootstrap: str, topic: str, n: int, timeout_s: float) -> tuple[float, float | None] | str:
    """Run contender ``name`` in a fresh process; its records/s and CPU microseconds per record
    (None: not timed, a producer), or why it failed."""
    cmd = [sys.executable, __file__, "--contender", name, "--bootstrap", bootstrap, "--topic", topic]
    try:
        done = subprocess.run(
            [*cmd, "--records", str(n)], capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:g} s"
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            got = json.loads(line)
            return float(got["rate"]), got.get("cpu_us")
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"failed: {tail[:120]}"


def main_driver(args: argparse.Namespace) -> None:
    wanted = args.only.split(",") if args.only else [c for _s, names, _b in SECTIONS for c in names]
    missing = [c for c in wanted if c in OPTIONAL and importlib.util.find_spec(OPTIONAL[c]) is None]
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    state_dir = None
    from reactive_services.testing import local_kafka

    if not bootstrap:
        state_dir = tempfile.mkdtemp(prefix="bench-kafka-")
        print(f"starting a local Kafka broker in {state_dir} ...", flush=True)
        bootstrap = local_kafka.start(state_dir)
    try:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        asyncio.run(create_topic(bootstrap, topic))
        produced_s = asyncio.run(produce(bootstrap, topic, args.records))
        size = len(orjson.dumps(make_record(args.records // 2)))
        print(
            f"{args.records:,} records of ~{size} B in {topic} (1 partition), produced in {produced_s:.2f} s; "
            f"{args.rounds} rounds, each contender in its own process"
        )
        if missing:
            print(f"not installed (pip install -e '.[bench]'): {', '.join(missing)}")
        results: dict[str, list[float | str]] = {}
        cpu: dict[str, list[float | None]] = {}
        for _round in range(args.rounds):
            # every other round in reverse order, so that no contender always runs first
            for name in wanted if _round % 2 == 0 else wanted[::-1]:
                if name in missing:
                    continue
                target = topic
                if name in PRODUCERS:
                    target = f"{topic}-p-{name}-{_round}"
                    asyncio.run(create_topic(bootstrap, target))
                run = run_one(name, bootstrap, target, args.records, args.timeout)
                results.setdefault(name, []).append(run if isinstance(run, str) else run[0])
                cpu.setdefault(name, []).append(None if isinstance(run, str) else run[1])
                print(".", end="", flush=True)
        print()
        report(results, args.rounds, cpu)
    finally:
        if state_dir is not None:
            local_kafka.stop(state_dir)


def report(
    results: dict[str, list[float | str]], rounds: int, cpu: dict[str, list[float | None]] | None = None
) -> None:
    """Per section: records/s per round, their median, and the median of the per-round ratios to
    the section's baseline (each round runs every contender back to back, every other round in
    reverse order, so a ratio compares runs made under the same load on a shared machine); then,
    where timed, the median CPU microseconds per record and the median of the per-round ratios
    of the baseline's CPU time to the contender's (1.0: as cheap per record as the baseline)."""
    cpu = cpu or {}
    head = "  ".join(f"{'round ' + str(i + 1):>9}" for i in range(rounds))
    for section, names, base in SECTIONS:
        shown = [n for n in names if n in results]
        if not shown:
            continue
        timed = any(c is not None for n in shown for c in cpu.get(n, []))
        print(f"\n{section} (records/s; ratio = median over rounds of rate / {base} rate in the same round)")
        if timed:
            print(f"(cpu: CPU us per record, median; cpu ratio: median over rounds of {base} cpu / cpu)")
        cpu_head = f"  {'cpu':>5}  {'cpu ratio':>9}" if timed else ""
        print(f"{'contender':<15} {head}  {'median':>9}  {'ratio':>5}{cpu_head}")
        for name in shown:
            runs = results[name]
            cells = "  ".join(f"{r:>9,.0f}" if isinstance(r, float) else f"{'-':>9}" for r in runs)
            rates = [r for r in runs if isinstance(r, float)]
            ratios = [
                r / b
                for r, b in zip(runs, results.get(base, []), strict=False)
                if isinstance(r, float) and isinstance(b, float)
            ]
            median = f"{statistics.median(rates):>9,.0f}" if rates else f"{'-':>9}"
            ratio = f"{statistics.median(ratios):>5.2f}" if ratios else f"{'-':>5}"
            cpu_cells = ""
            if timed:
                costs = [c for c in cpu.get(name, []) if c is not None]
                cpu_ratios = [
                    b / c for c, b in zip(cpu.get(name, []), cpu.get(base, []), strict=False) if c and b is not None
                ]
                cpu_cells = f"  {statistics.median(costs):>5.2f}" if costs else f"  {'-':>5}"
                cpu_cells += f"  {statistics.median(cpu_ratios):>9.2f}" if cpu_ratios else f"  {'-':>9}"
            print(f"{name:<15} {cells}  {median}  {ratio}{cpu_cells}")
            for r in runs:
                if isinstance(r, str):
                    print(f"{'':<15} ({r})")
                    break


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records per run (default 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every contender (default 3)")
    parser.add_argument("--only", default="", help="comma-separated contenders (default: all)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one run may take (default 300)")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        with contextlib.suppress(KeyboardInterrupt):
            result = RUNNERS[args.contender](args.bootstrap, args.topic, args.records)
            rate = asyncio.run(result) if inspect.isawaitable(result) else result  # type: ignore[arg-type]
            timed = CLOCKS[-1].cpu_us if CLOCKS else None
            print(json.dumps({"rate": rate, "cpu_us": timed}), flush=True)
        return
    main_driver(args)


if __name__ == "__main__":
    main()
