"""Request-reply latency and throughput: gRPC beside the broker, in one run.

    python bench/request_latency.py [--requests 2000] [--concurrency 16] [--rounds 3] [--kafka HOST:PORT]
                                    [--rabbitmq URL]

One service with one ``async def`` ``@message_pattern`` handler (it returns the payload's
``n`` doubled), answered three ways in this process:

  grpc:   :class:`reactive_services.grpc.GrpcServer` on loopback, :class:`GrpcClient`;
  memory: the in-memory broker's request-reply (``ClientProxy.send``);
  kafka:  Kafka's request-reply (with ``--kafka``): request topic, reply topic, two consumers;
  rabbitmq: RabbitMQ's (with ``--rabbitmq``, an ``amqp://`` URL): the same topics as exchanges,
          the groups as quorum queues (:class:`reactive_services.adapters.rabbitmq.RabbitBroker`).

For each, in interleaved rounds: ``--requests`` sequential calls (latency: p50 / p99 in
milliseconds), then the same number with ``--concurrency`` calls in flight at once
(throughput: requests/s). Prints each round and the median of the rounds. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from reactive_services import ClientProxy, Controller, Microservice, message_pattern
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.grpc import GrpcClient, GrpcServer


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(call: Callable[[int], Awaitable[Any]], requests: int, concurrency: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) of sequential calls, and requests/s with ``concurrency`` in flight."""
    latencies = []
    for n in range(requests):
        started = time.perf_counter()
        assert await call(n) == 2 * n
        latencies.append((time.perf_counter() - started) * 1000)
    queue = iter(range(requests))

    async def worker() -> None:
        for n in queue:
            assert await call(n) == 2 * n

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = requests / (time.perf_counter() - started)
    return percentile(latencies, 0.5), percentile(latencies, 0.99), rate


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kafka", metavar="HOST:PORT", help="also measure Kafka request-reply")
    parser.add_argument("--rabbitmq", metavar="URL", help="also measure RabbitMQ request-reply (amqp://...)")
    args = parser.parse_args(argv)
    pattern = f"bench.double.{uuid.uuid4().hex[:8]}"

    class Doubler(Controller):
        @message_pattern(pattern)
        async def double(self, payload: dict[str, int]) -> int:
            return payload["n"] * 2

    contenders: dict[str, Callable[[int], Awaitable[Any]]] = {}
    cleanups: list[Callable[[], Awaitable[Any]]] = []
    memory = InMemoryBroker()
    await memory.start()
    cleanups.append(memory.stop)
    memory_service = Microservice(memory, [Doubler()], name="doubler")
    await memory_service.start()
    cleanups.insert(0, memory_service.stop)
    server = GrpcServer([memory_service])
    await server.start()
    cleanups.insert(0, server.stop)
    grpc_client = GrpcClient(server.address)
    cleanups.insert(0, grpc_client.close)
    contenders["grpc"] = lambda n: grpc_client.send(pattern, {"n": n}, timeout=10)
    memory_client = ClientProxy(memory, client_id="bench")
    cleanups.insert(0, memory_client.close)
    contenders["memory"] = lambda n: memory_client.send(pattern, {"n": n}, timeout=10)

    async def broker_contender(name: str, broker: Any) -> None:
        """``name``: the Doubler served on ``broker``, asked through a ClientProxy (request-reply)."""
        await broker.start()
        cleanups.append(broker.stop)
        service = Microservice(broker, [Doubler()], name=f"doubler-{uuid.uuid4().hex[:6]}")
        await service.start()
        cleanups.insert(0, service.stop)
        client = ClientProxy(broker, client_id="bench")
        cleanups.insert(0, client.close)
        contenders[name] = lambda n: client.send(pattern, {"n": n}, timeout=30)

    if args.kafka:
        from reactive_services.adapters.kafka import KafkaBroker

        await broker_contender("kafka", KafkaBroker(args.kafka))
    if args.rabbitmq:
        from reactive_services.adapters.rabbitmq import RabbitBroker

        await broker_contender("rabbitmq", RabbitBroker(args.rabbitmq))
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    try:
        for call in contenders.values():  # warm-up: connections, reply consumers
            await measure(call, 50, 4)
        for n in range(1, args.rounds + 1):
            for name, call in contenders.items():
                results[name].append(await measure(call, args.requests, args.concurrency))
                p50, p99, rate = results[name][-1]
                print(f"round {n} {name:<8} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  {rate:9,.0f} requests/s")
    finally:
        for cleanup in cleanups:
            await cleanup()
    print(
        f"\n{args.requests:,} sequential requests (latency) and {args.requests:,} with {args.concurrency} in flight "
        f"(throughput); median of {args.rounds} rounds"
    )
    for name, rows in results.items():
        p50 = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        rate = statistics.median(r[2] for r in rows)
        print(f"  {name:<8} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   {rate:9,.0f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
