"""The inventory service as a process of its own (one instance of a scalable service).

    python -m reactive_services.examples.shop.inventory_process --bootstrap-servers HOST:PORT --db inventory.db \
        [--products products.csv] [--namespace NS] [--stats stats.json] [--handle-delay-s S]
    python -m reactive_services.examples.shop.inventory_process --rabbitmq-url amqp://... [--partitions N] ...

It consumes ``<namespace>order.created`` in consumer group ``inventory`` and keeps stock in
the SQLite file ``--db`` (instances of the service share it; each batch of reservations is one
``BEGIN IMMEDIATE`` transaction, so instances never apply an order twice). It prints
``ready`` on stdout once subscribed, runs until SIGTERM / SIGINT, then shuts down gracefully
(see :func:`reactive_services.serve`) and writes its counters to ``--stats`` as JSON:
``{"applied", "rejected", "duplicates", "stock_low_events", "republished", "handled",
"partitions": [[topic, partition], ...]}`` (partitions it was assigned at any time).

On RabbitMQ (``--rabbitmq-url`` instead of ``--bootstrap-servers``) the group is a quorum queue
per partition with single active consumer; ``--partitions`` is the partitions of every topic
(all processes of a system must agree; RabbitMQ does not store it), 3 by default as
``create_topics`` on Kafka.

``--handle-delay-s`` adds a pause per order before each transaction, to stand for a slower database in
fault tests (seconds, default 0).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from reactive_services import ClientProxy, Microservice, System, serve
from reactive_services.adapters import DeadLetterSink, Message

from .demo import DATA_DIR
from .inventory import InventoryService, InventoryStore, Order, initial_stock
from .services import InventoryController

__all__ = ["main", "run"]


class _SlowInventory(InventoryService):
    """An InventoryService that waits ``delay_s`` per order before each transaction (fault tests)."""

    def __init__(self, *args: Any, delay_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay_s = delay_s

    async def handle(self, orders: Sequence[Order], contexts: Sequence[Any] | None = None) -> Any:
        await asyncio.sleep(self.delay_s * len(orders))
        return await super().handle(orders, contexts)


class _Partitions(InventoryController):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.partitions: set[tuple[str, int]] = set()

    def _count(self, message: Message) -> None:
        super()._count(message)
        self.partitions.add((message.topic, message.partition))


async def run(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM / SIGINT (:func:`reactive_services.serve`); returns the exit code."""
    from reactive_services.adapters import Broker

    def make_broker() -> Broker:
        if args.rabbitmq_url:
            from reactive_services.adapters.rabbitmq import RabbitBroker

            return RabbitBroker(
                args.rabbitmq_url,
                partitions=args.partitions,
                connect_timeout_s=args.connect_timeout_s,
                publish_timeout_s=args.request_timeout_s,
            )
        from reactive_services.adapters.kafka import KafkaBroker

        return KafkaBroker(
            args.bootstrap_servers, connect_timeout_s=args.connect_timeout_s, request_timeout_s=args.request_timeout_s
        )

    async def system() -> System:
        broker = make_broker()
        await broker.start()
        store = InventoryStore(args.db, seed=initial_stock(args.products))
        try:
            await store.open()
        except BaseException:
            await broker.stop()
            raise
        client = ClientProxy(broker, namespace=args.namespace)
        inventory = (
            _SlowInventory(store, client.emit, emit_batch=client.emit_batch, delay_s=args.handle_delay_s)
            if args.handle_delay_s
            else InventoryService(store, client.emit, emit_batch=client.emit_batch)
        )
        controller = _Partitions(inventory, DeadLetterSink(broker))
        service = Microservice(broker, [controller], name="inventory", namespace=args.namespace)

        async def write_stats() -> None:
            await inventory.wait_idle()
            stats = {
                **inventory.counters(),
                "handled": controller.received,
                "partitions": sorted(controller.partitions),
            }
            stats.pop("applied_orders", None)
            if args.stats:
                Path(args.stats).write_bytes(orjson.dumps(stats))

        return System([service], on_stopped=[write_stats, broker.stop, store.close])

    return await serve(
        system, on_ready=lambda _: print("ready", flush=True), shutdown_timeout_s=args.shutdown_timeout_s
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reactive_services.examples.shop.inventory_process", description=__doc__
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="a Kafka broker")
    where.add_argument("--rabbitmq-url", metavar="amqp://USER:PASSWORD@HOST:PORT/", help="a RabbitMQ server")
    parser.add_argument("--partitions", type=int, default=3, help="RabbitMQ: partitions of every topic")
    parser.add_argument("--db", required=True, type=Path, help="the inventory's SQLite file")
    parser.add_argument("--products", type=Path, default=DATA_DIR / "olist" / "products.csv")
    parser.add_argument("--namespace", default="", help="topic prefix, e.g. 'run-1.'")
    parser.add_argument("--stats", type=Path, help="write the counters here as JSON at shutdown")
    parser.add_argument("--handle-delay-s", type=float, default=0.0)
    parser.add_argument("--connect-timeout-s", type=float, default=10.0)
    parser.add_argument("--shutdown-timeout-s", type=float, default=30.0)
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=30.0,
        help="seconds a publish may wait for the broker's acknowledgement",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("aio_pika").setLevel(logging.CRITICAL)
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(run(args))
    except Exception as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
