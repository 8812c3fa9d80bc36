"""Latency, produce -> consume -> websocket client, on Kafka, beside a raw aiokafka consumer in the same run.

    python bench/kafka_latency.py [--seconds 10] [--rate 0] [--probe 20000]

Four processes: this one produces; a raw aiokafka consumer (``getmany`` loop) and the library
path (``KafkaBroker.source -> map -> NotificationHub`` of a ``WebSocketServer``) each read the
topic in a consumer group of their own; a websocket client (``adapters.websocket.connect``)
subscribes to the hub's channel. Every record carries its send time (``time.time()``, one clock
for every process of the machine); the raw consumer records ``receive - send`` per record, the
websocket client ``websocket frame received - send``.

First a probe: ``--probe`` records produced as fast as possible, timed from the client's first
event to its last, gives the library path's maximum rate. Then ``--seconds`` of records at
``--rate`` records/s (default: half the probe's maximum), paced in 1 ms ticks. Printed: the
maximum rate, then p50 / p90 / p99 / max latency (ms) of the raw consumer and of the websocket
client, and their ratio (client / raw). Prints only; nothing is asserted.

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` when set, else starts a local broker with
``reactive_services.testing.local_kafka`` (and stops it afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "latency"


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1], "n": len(ordered)}


# -- the child processes ------------------------------------------------------------------------


async def raw_consumer(bootstrap: str, topic: str) -> None:
    """Read ``topic`` with a bare aiokafka loop; on stdin "report": print the latencies, exit."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"lat-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    latencies: list[float] = []
    last_commit = time.monotonic()

    async def read() -> None:
        nonlocal last_commit
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            now = time.time()
            for records in batches.values():
                for record in records:
                    value = orjson.loads(record.value)
                    if value.get("phase") == "measure":
                        latencies.append(now - value["sent"])
            if time.monotonic() - last_commit >= 1.0:
                await consumer.commit()
                last_commit = time.monotonic()

    reader = asyncio.ensure_future(read())
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    for tp in consumer.assignment():
        await consumer.position(tp)
    print(json.dumps({"ready": True}), flush=True)
    await _until_report()
    reader.cancel()
    print(json.dumps({"latencies": latencies}), flush=True)
    await consumer.stop()


async def library_server(bootstrap: str, topic: str) -> None:
    """``KafkaBroker.source -> map -> hub`` serving a websocket server; prints its URL once assigned."""
    from reactivex import operators as ops

    from reactive_services.adapters.kafka import KafkaBroker
    from reactive_services.adapters.websocket import WebSocketServer

    server = WebSocketServer(ping_interval=None)
    await server.start()
    assigned = asyncio.Event()
    async with KafkaBroker(bootstrap, commit_interval_s=1.0, poll_timeout_s=0.1) as broker:
        stop = asyncio.Event()
        broker.source(
            topic,
            group_id=f"lat-lib-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="latest",
            stop=stop,
            on_assigned=assigned.set,
        ).pipe(ops.map(lambda m: (CHANNEL, m.value))).subscribe(server.hub)
        await assigned.wait()
        print(json.dumps({"url": server.url}), flush=True)
        await _until_report()
        stop.set()
    await server.stop()


async def ws_client(url: str) -> None:
    """Subscribe to the hub's channel; record frame receive time - send time per event."""
    from reactive_services.adapters.websocket import connect

    latencies: list[float] = []
    probe: list[float] = []
    subscribed = asyncio.Event()

    def on_frame(frame: dict[str, Any]) -> None:
        now = time.time()
        if frame.get("type") == "subscribed":
            subscribed.set()
        elif frame.get("type") == "event":
            event = frame["event"]
            if event.get("phase") == "measure":
                latencies.append(now - event["sent"])
            else:
                probe.append(now)

    subscription = connect(url, subscribe=[CHANNEL]).subscribe(on_frame)
    await subscribed.wait()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() == "probe":
            print(json.dumps({"probe": [probe[0], probe[-1], len(probe)] if probe else None}), flush=True)
        elif line.strip() in ("report", ""):
            break
    subscription.dispose()
    print(json.dumps({"latencies": latencies}), flush=True)


async def _until_report() -> None:
    while (await asyncio.to_thread(sys.stdin.readline)).strip() not in ("report", ""):
        pass


# -- the driver ---------------------------------------------------------------------------------


class Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=256 * 2**20,  # the latencies come back as one JSON line
        )
        return cls(proc)

    async def read(self, timeout: float = 120.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError("a child process ended early")
            if line.startswith(b"{"):
                return json.loads(line)  # type: ignore[no-any-return]

    async def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()


async def produce(bootstrap: str, topic: str, n: int, rate: float, phase: str) -> None:
    """``n`` records, at ``rate`` records/s (0: as fast as possible), each with its send time."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        futures = []
        start = time.monotonic()
        for i in range(n):
            if rate:
                due = start + i / rate
                delay = due - time.monotonic()
                if delay > 0.001:
                    await asyncio.sleep(delay)
            payload = {"i": i, "phase": phase, "sent": time.time(), "note": "x" * 150}
            futures.append(await producer.send(topic, orjson.dumps(payload), partition=0))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def main_async(args: argparse.Namespace) -> None:
    from reactive_services.adapters.kafka import KafkaBroker
    from reactive_services.testing import local_kafka

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    state_dir = None
    if not bootstrap:
        state_dir = tempfile.mkdtemp(prefix="bench-kafka-")
        print(f"starting a local Kafka broker in {state_dir} ...", flush=True)
        bootstrap = local_kafka.start(state_dir)
    children: list[Child] = []
    try:
        topic = f"latency-{uuid.uuid4().hex[:8]}"
        async with KafkaBroker(bootstrap) as admin:
            await admin.create_topics([topic], partitions=1)
        raw = await Child.start("--child", "raw", bootstrap, topic)
        server = await Child.start("--child", "server", bootstrap, topic)
        children += [raw, server]
        await raw.read()
        url = (await server.read())["url"]
        client = await Child.start("--child", "client", url)
        children.append(client)
        await client.read()

        await produce(bootstrap, topic, args.probe, 0, "probe")
        await asyncio.sleep(3.0)
        await client.say("probe")
        first, last, seen = (await client.read())["probe"]
        max_rate = seen / (last - first) if last > first else float("nan")
        rate = args.rate or max_rate / 2
        print(f"library path (source -> hub -> websocket client) maximum: {max_rate:,.0f} records/s ({seen} in probe)")
        print(f"measuring {args.seconds:g} s at {rate:,.0f} records/s ...", flush=True)
        await produce(bootstrap, topic, int(rate * args.seconds), rate, "measure")
        await asyncio.sleep(2.0)
        for child in (client, raw):
            await child.say("report")
        client_lat = (await client.read())["latencies"]
        raw_lat = (await raw.read())["latencies"]
        await server.say("report")
        rows = {
            "raw aiokafka consumer": percentiles(raw_lat),
            "source -> hub -> websocket client": percentiles(client_lat),
        }
        print(f"\n{'path':<36} {'records':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, p in rows.items():
            print(
                f"{name:<36} {p['n']:>8} {p['p50'] * 1e3:>8.2f} {p['p90'] * 1e3:>8.2f} "
                f"{p['p99'] * 1e3:>8.2f} {p['max'] * 1e3:>8.2f}"
            )
        a, b = rows["raw aiokafka consumer"], rows["source -> hub -> websocket client"]
        print(
            f"{'ratio client / raw':<36} {'':>8} {b['p50'] / a['p50']:>8.2f} {b['p90'] / a['p90']:>8.2f} "
            f"{b['p99'] / a['p99']:>8.2f}"
        )
        for child in children:
            await asyncio.wait_for(child.proc.wait(), 30)
    finally:
        for child in children:
            if child.proc.returncode is None:
                child.proc.kill()
        if state_dir is not None:
            local_kafka.stop(state_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of paced records (default 10)")
    parser.add_argument("--rate", type=float, default=0.0, help="records/s (default: half the probed maximum)")
    parser.add_argument("--probe", type=int, default=20_000, help="records of the maximum-rate probe (default 20000)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        run = {"raw": raw_consumer, "server": library_server, "client": ws_client}[kind]
        asyncio.run(run(*rest))  # type: ignore[operator]
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
