"""The whole shop in one process: orders -> inventory -> notifications over websockets, plus log analytics.

Run it with ``reactive-services demo`` (see ``reactive_services.cli``). Steps:

1. start the broker (in-memory, or Kafka with ``bootstrap_servers``), the websocket server
   and its notification hub; connect N real websocket clients over loopback, each
   subscribed to its channels, and wait for each subscription to be confirmed;
2. start the inventory, notification and log analytics microservices;
3. the order service publishes one ``order.created`` per order of the orders file, and the
   log files are replayed into ``logs`` with their own timestamps;
4. wait until the inventory handled every order and the log analytics read every line, stop
   the log analytics (its last windows are emitted on completion), wait until the
   notification service has read every event and the hub has flushed, then stop it all:
   the hub closes the clients with 1001, which completes their Observables;
5. return the report (see :func:`run_demo`).

On Kafka the topics of a run are put in a namespace of their own (``demo-<id>.``), so runs
never read each other's records.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reactive_services import ClientProxy, Microservice, start_all_microservices
from reactive_services.adapters import DeadLetterSink
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.websocket import WebSocketServer, connect
from reactive_services.errors import ConfigError
from reactive_services.logs import LogAnalyticsService, replay_logs

from .inventory import InventoryService, InventoryStore, initial_stock
from .log_sources import SOURCES
from .notifications import CHANNELS, NotificationController
from .orders import OrderService, read_order_rows
from .services import InventoryController, LogAnalyticsController

__all__ = ["DATA_DIR", "DemoConfig", "DemoTimeout", "default_log_files", "run_demo"]

log = logging.getLogger("reactive_services.demo")

DATA_DIR = Path(__file__).parent / "data"

#: the channel sets of the demo clients, used in turn: client i gets CLIENT_CHANNELS[i % 3]
CLIENT_CHANNELS: tuple[tuple[str, ...], ...] = (
    ("orders",),
    ("inventory", "stock"),
    ("logs", "alerts", "orders"),
)

TOPICS = sorted({"order.created", "logs", *CHANNELS})


#: RabbitMQ: unacknowledged messages per partition (see :func:`_make_broker`)
RABBITMQ_PREFETCH = 10_000


def default_log_files() -> dict[str, Path]:
    """The shipped loghub files: ``{source name: path}``."""
    return {p.name.split("_")[0]: p for p in sorted((DATA_DIR / "loghub").glob("*_2k.log"))}


@dataclass
class DemoConfig:
    """What the demo runs on.

    Attributes:
        orders: order-items CSV (Olist format).
        products: products CSV (Olist format), for the initial stock.
        logs: ``{source name: log file}``; the name picks the log format (Apache, HDFS, Linux, OpenSSH).
        clients: websocket clients to connect (>= 0).
        bootstrap_servers: ``HOST:PORT`` of a Kafka broker, or None for the in-memory broker.
        rabbitmq_url: ``amqp://USER:PASSWORD@HOST:PORT/`` of a RabbitMQ server instead (not with
            ``bootstrap_servers``).
        db_path: the inventory's SQLite file (default: a fresh file in a temporary folder).
        low_stock_threshold: units; ``stock.low`` when remaining stock falls below it.
        timeout_s: seconds allowed for each wait (orders handled, logs read, notifications).
        connect_timeout_s: seconds allowed to reach the Kafka broker.
    """

    orders: Path = DATA_DIR / "olist" / "order_items.csv"
    products: Path = DATA_DIR / "olist" / "products.csv"
    logs: Mapping[str, Path] = field(default_factory=default_log_files)
    clients: int = 3
    bootstrap_servers: str | None = None
    rabbitmq_url: str | None = None
    db_path: Path | None = None
    low_stock_threshold: int = 2
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0

    def validate(self) -> None:
        """Raises ConfigError naming the first bad setting."""
        for key in ("orders", "products"):
            path = Path(getattr(self, key))
            if not path.exists():
                raise ConfigError(key, f"no such file: {path}")
            if not path.is_file():
                raise ConfigError(key, f"not a file: {path}")
        read_order_rows(self.orders)  # checks the header now: ConfigError names a missing column
        for name, path in self.logs.items():
            if name not in SOURCES:
                raise ConfigError("logs", f"no log format for source {name!r} (known: {', '.join(SOURCES)})")
            if not Path(path).is_file():
                raise ConfigError("logs", f"no such file for source {name!r}: {path}")
        if self.clients < 0:
            raise ConfigError("clients", f"must be >= 0, got {self.clients}")
        if self.rabbitmq_url is not None:
            if self.bootstrap_servers is not None:
                raise ConfigError("rabbitmq_url", "give either a RabbitMQ URL or Kafka bootstrap servers, not both")
            if not self.rabbitmq_url.startswith(("amqp://", "amqps://")):
                raise ConfigError("rabbitmq_url", f"must be an amqp:// or amqps:// URL, got {self.rabbitmq_url!r}")
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s", f"must be > 0, got {self.timeout_s}")


class DemoTimeout(RuntimeError):
    """A stage of the demo did not finish within ``timeout_s``; the message says which."""


Progress = Callable[[str, int, int | None], None]


def _no_progress(stage: str, done: int, total: int | None) -> None:
    pass


async def _until(
    what: str, predicate: Callable[[], bool], timeout: float, tick: Callable[[], None] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if tick:
            tick()
        if time.monotonic() > deadline:
            raise DemoTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)
    if tick:
        tick()


def _make_broker(config: DemoConfig) -> Any:
    if config.rabbitmq_url is not None:
        from reactive_services.adapters.rabbitmq import RabbitBroker

        # the log analytics' open windows hold their records' acknowledgements, and RabbitMQ sends
        # a partition nothing more while ``prefetch`` of its messages are unacknowledged: with the
        # default (256) the windows wait for lines that never come; this is more than the demo's
        # log files hold
        return RabbitBroker(config.rabbitmq_url, connect_timeout_s=config.connect_timeout_s, prefetch=RABBITMQ_PREFETCH)
    if config.bootstrap_servers is None:
        return InMemoryBroker()
    from reactive_services.adapters.kafka import KafkaBroker

    return KafkaBroker(config.bootstrap_servers, connect_timeout_s=config.connect_timeout_s)


async def run_demo(config: DemoConfig, progress: Progress = _no_progress) -> dict[str, Any]:
    """Run the shop end to end and return its report.

    Returns:
        ``{"broker": "memory" | "kafka" | "rabbitmq", "namespace", "orders": {items_read, invalid_rows,
        invalid, emitted, applied, rejected, dead_lettered, duplicates}, "inventory":
        {initial_stock, final_stock, applied_orders, stock_low_events, low_stock_threshold},
        "notifications": {published: {channel: n}, delivered, slow_clients_closed,
        clients: [{channels, received, completed, error}]}, "logs": {source: {lines,
        by_level, unparsed, windows, alerts, top_templates}}, "elapsed_s"}``

    Raises:
        ConfigError: a bad setting (named).
        BrokerUnavailableError: the Kafka broker (or the RabbitMQ server) cannot be reached.
        DemoTimeout: a stage did not finish in time.
    """
    config.validate()
    started = time.monotonic()
    broker = _make_broker(config)
    await broker.start()
    namespace = "" if broker.kind == "memory" else f"demo-{uuid.uuid4().hex[:8]}."
    client = ClientProxy(broker, namespace=namespace)
    tmp = tempfile.TemporaryDirectory(prefix="reactive-services-demo-")
    services: list[Microservice] = []
    store: InventoryStore | None = None
    server = WebSocketServer("127.0.0.1", 0)
    subscriptions = []
    try:
        await broker.create_topics([namespace + t for t in TOPICS])

        # websocket server, hub and clients, connected and subscribed before any event flows
        await server.start()
        clients: list[dict[str, Any]] = []
        for i in range(config.clients):
            channels = CLIENT_CHANNELS[i % len(CLIENT_CHANNELS)]
            state: dict[str, Any] = {
                "channels": list(channels),
                "received": 0,
                "subscribed": asyncio.Event(),
                "completed": False,
                "error": None,
                "closed": asyncio.Event(),
            }

            def on_frame(frame: dict[str, Any], state: dict[str, Any] = state) -> None:
                if frame.get("type") == "event":
                    state["received"] += 1
                elif frame.get("type") == "subscribed":
                    state["subscribed"].set()

            def on_error(exc: Exception, state: dict[str, Any] = state) -> None:
                state["error"] = f"{type(exc).__name__}: {exc}"
                state["closed"].set()
                state["subscribed"].set()

            def on_completed(state: dict[str, Any] = state) -> None:
                state["completed"] = True
                state["closed"].set()

            subscriptions.append(connect(server.url, subscribe=channels).subscribe(on_frame, on_error, on_completed))
            clients.append(state)
        await asyncio.wait_for(asyncio.gather(*(c["subscribed"].wait() for c in clients)), config.timeout_s)
        failed = [c for c in clients if c["error"]]
        if failed:
            raise RuntimeError(f"websocket client failed to subscribe: {failed[0]['error']}")

        # services
        db_path = config.db_path or Path(tmp.name) / "inventory.db"
        stock0 = initial_stock(config.products)
        store = InventoryStore(db_path, seed=stock0)
        await store.open()
        initial = await store.stock()
        inventory = InventoryService(
            store, client.emit, emit_batch=client.emit_batch, low_stock_threshold=config.low_stock_threshold
        )
        inventory_ctl = InventoryController(inventory, DeadLetterSink(broker))
        analytics = LogAnalyticsService(client.emit)
        logs_ctl = LogAnalyticsController(analytics, DeadLetterSink(broker))
        notifications = NotificationController(server.hub, dead_letter=DeadLetterSink(broker), namespace=namespace)
        inventory_svc = Microservice(broker, [inventory_ctl], name="inventory", namespace=namespace)
        logs_svc = Microservice(broker, [logs_ctl], name="log-analytics", namespace=namespace)
        notify_svc = Microservice(broker, [notifications], name="notifications", namespace=namespace)
        services = [inventory_svc, logs_svc, notify_svc]
        await start_all_microservices(*services)

        # producers: orders and log replay
        order_report = await OrderService(client.emit_batch, config.orders).run()
        emitted = order_report["emitted"]
        progress("orders published", emitted, emitted)
        lines = await replay_logs(client, config.logs, formats=SOURCES)
        total_lines = sum(lines.values())
        progress("log lines replayed", total_lines, total_lines)

        def orders_done() -> int:
            return inventory.applied + inventory.rejected + inventory_ctl.dead_letter.sent

        await _until(
            "the inventory to handle every order",
            lambda: orders_done() >= emitted,
            config.timeout_s,
            lambda: progress("orders handled", orders_done(), emitted),
        )
        await inventory.wait_idle()
        await _until(
            "the log analytics to read every line",
            lambda: logs_ctl.received >= total_lines,
            config.timeout_s,
            lambda: progress("log lines analysed", logs_ctl.received, total_lines),
        )
        await logs_svc.stop()  # completes the log stream: the last windows are emitted
        await analytics.flush()

        def published_events() -> dict[str, int]:  # per channel, as the producers count them
            counters, logs = inventory.counters(), _logs_report(analytics.report(), config.logs).values()
            return {
                "orders": emitted + counters["rejected"],
                "inventory": counters["applied"],
                "stock": counters["stock_low_events"],
                "logs": sum(s["windows"] for s in logs),
                "alerts": sum(s["alerts"] for s in logs),
            }

        async def notifications_caught_up() -> bool:
            if broker.kind == "rabbitmq":  # no offsets: nothing left in the group's queues, every event forwarded
                for topic in CHANNELS:
                    if any((await broker.queue_depths(notify_svc.group_id, namespace + topic)).values()):
                        return False
                published = published_events()
                return all(notifications.forwarded.get(ch, 0) >= n for ch, n in published.items())
            for topic in CHANNELS:
                ends = await broker.end_offsets(namespace + topic)
                for partition, end in ends.items():
                    if ((await broker.committed(notify_svc.group_id, namespace + topic, partition)) or 0) < end:
                        return False
            return True

        deadline = time.monotonic() + config.timeout_s
        while not await notifications_caught_up():
            progress("notifications forwarded", sum(notifications.forwarded.values()), None)
            if time.monotonic() > deadline:
                raise DemoTimeout("timed out waiting for the notification service to read every event")
            await asyncio.sleep(0.05)
        await server.hub.wait_idle()
        expected = [sum(notifications.forwarded.get(ch, 0) for ch in c["channels"]) for c in clients]
        await _until(
            "every websocket client to receive its events",
            lambda: all(c["received"] >= e for c, e in zip(clients, expected, strict=True)),
            config.timeout_s,
        )

        # graceful stop: the hub's on_completed closes the clients with 1001
        await inventory_svc.stop()
        await notify_svc.stop()
        await asyncio.wait_for(asyncio.gather(*(c["closed"].wait() for c in clients)), config.timeout_s)
        final = await store.stock()
        errors = [repr(e) for s in services for e in s.errors] + [repr(e) for e in inventory.errors]
        if errors:
            raise RuntimeError(f"a service failed: {errors[0]}")

        counters = inventory.counters()
        report = {
            "broker": broker.kind,
            "namespace": namespace,
            "orders": {
                "items_read": order_report["items_read"],
                "invalid_rows": order_report["invalid_rows"],
                "invalid": order_report["invalid"],
                "emitted": emitted,
                "applied": counters["applied"],
                "rejected": counters["rejected"],
                "dead_lettered": inventory_ctl.dead_letter.sent,
                "duplicates": counters["duplicates"],
            },
            "inventory": {
                "initial_stock": initial,
                "final_stock": final,
                "applied_orders": counters["applied_orders"],
                "stock_low_events": counters["stock_low_events"],
                "low_stock_threshold": config.low_stock_threshold,
            },
            "notifications": {
                "published": {ch: server.hub.published.get(ch, 0) for ch in sorted(set(CHANNELS.values()))},
                "delivered": server.hub.delivered,
                "slow_clients_closed": server.hub.slow_clients_closed,
                "clients": [
                    {
                        "channels": c["channels"],
                        "received": c["received"],
                        "completed": c["completed"],
                        "error": c["error"],
                    }
                    for c in clients
                ],
            },
            "logs": _logs_report(analytics.report(), config.logs),
            "elapsed_s": round(time.monotonic() - started, 3),
        }
        return report
    finally:
        for sub in subscriptions:
            sub.dispose()
        for service in services:
            if service.started:
                try:
                    await service.stop(timeout=5)
                except Exception as exc:  # already failing: keep the first error
                    log.warning("stopping %s: %s", service.name, exc)
        await server.stop()
        await broker.stop()
        if store is not None:
            await store.close()  # its worker thread would keep the process alive
        tmp.cleanup()


def _logs_report(report: Mapping[str, Any], sources: Mapping[str, Path]) -> dict[str, Any]:
    """Every configured source, in the order given; one with no line at all gets zeros."""
    empty = {
        "lines": 0,
        "by_level": {},
        "unparsed": 0,
        "late": 0,
        "windows": 0,
        "alerts": 0,
        "alerts_by_kind": {},
        "templates": 0,
        "top_templates": [],
    }
    return {name: report.get(name, empty) for name in sources}


def check_report(
    report: Mapping[str, Any], *, orders_file: Path | None = None, log_files: Mapping[str, Path] | None = None
) -> list[str]:
    """The invariants a demo report must satisfy; returns the violations (empty: all hold).

    Checked: applied + rejected + dead_lettered = emitted; for every product final stock =
    initial stock minus the quantities of the applied orders (recomputed from the orders
    file when given) and never negative; each client received the sum of ``published`` over
    its channels; each log source's ``lines`` equals its file's line count.
    """
    problems: list[str] = []
    o = report["orders"]
    if o["applied"] + o["rejected"] + o["dead_lettered"] != o["emitted"]:
        problems.append(
            f"applied+rejected+dead_lettered = {o['applied'] + o['rejected'] + o['dead_lettered']}"
            f" != emitted = {o['emitted']}"
        )
    inv = report["inventory"]
    if orders_file is not None:
        from .orders import OrderItemRow, read_order_rows

        applied = set(inv["applied_orders"])
        taken: dict[str, int] = {}
        for row in read_order_rows(orders_file):
            if isinstance(row, OrderItemRow) and row.order_id in applied:
                taken[row.product_id] = taken.get(row.product_id, 0) + 1
        for pid, start in inv["initial_stock"].items():
            want = start - taken.get(pid, 0)
            if inv["final_stock"].get(pid) != want:
                problems.append(f"final stock of {pid} = {inv['final_stock'].get(pid)}, expected {want}")
    if any(v < 0 for v in inv["final_stock"].values()):
        problems.append("negative final stock")
    published = report["notifications"]["published"]
    for c in report["notifications"]["clients"]:
        want = sum(published.get(ch, 0) for ch in c["channels"])
        if c["received"] != want:
            problems.append(f"client {c['channels']} received {c['received']}, published on its channels {want}")
    for name, path in (log_files or {}).items():
        with open(path, "rb") as f:
            n = sum(1 for _ in f)
        if report["logs"][name]["lines"] != n:
            problems.append(f"log {name}: lines {report['logs'][name]['lines']} != {n} in the file")
    return problems


def parse_log_args(values: Sequence[str]) -> dict[str, Path]:
    """``["Apache=/x/a.log", "/y/HDFS_2k.log"]`` -> ``{"Apache": Path, "HDFS": Path}``.

    The source name (which picks the log format, case-insensitively: ``hdfs`` is ``HDFS``)
    is given before ``=``, or is the file name up to its first ``_`` or ``.``.

    Raises:
        ConfigError("logs", ...): an unknown source name, or the same source twice.
    """
    known = {name.lower(): name for name in SOURCES}
    out: dict[str, Path] = {}
    for value in values:
        if "=" in value:
            given, path = value.split("=", 1)
        else:
            path = value
            given = Path(value).name.split("_")[0].split(".")[0]
        name = known.get(given.lower())
        if name is None:
            raise ConfigError(
                "logs",
                f"cannot tell the log format of {value!r}: source {given!r} is not one of "
                f"{', '.join(SOURCES)}; write NAME=PATH",
            )
        if name in out:
            raise ConfigError("logs", f"source {name!r} given twice ({out[name]} and {path})")
        out[name] = Path(path)
    return out
