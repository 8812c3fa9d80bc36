"""``reactive-services serve``: the shop's services, the notification hub and the gateway as long-running processes.

Services (``--only`` picks some; default: all in one process):

===============  =====================================================================  ==================
service          what it runs                                                           own state
===============  =====================================================================  ==================
``orders``       order query service: stores ``order.created``, answers ``orders.get``  ``orders.db``
``inventory``    reserves stock for ``order.created``, answers ``inventory.get_stock``   ``inventory.db``
                 and ``inventory.get_order``
``auth``         users and login, answers ``auth.login``                                 ``auth.db``
``logs``         log analytics: ``logs`` -> ``log.stats``, ``log.alert``, ``logs.late``   (windows in memory)
``gateway``      the HTTP API and ``/ws`` on uvicorn, the dashboard, and a notification  (hub in memory)
                 hub fed by its own consumer group (``notifications.<instance>``, from
                 the end of the topics: live events), so every gateway instance's
                 clients get every event of their channels
===============  =====================================================================  ==================

The gateway's ``/ws`` lets a client that lost its connection resume from the cursor of the last
event it received, on any gateway instance (``{"op": "subscribe", ..., "since": cursor}``:
``docs/websocket.md``): the hub has a
:class:`~reactive_services.adapters.websocket.NotificationLog` of the notification topics (its
epoch: ``"<broker kind>:<namespace>"`` on Kafka, a fresh one per process on the embedded broker,
whose log does not outlive the process). On RabbitMQ, which keeps no log, a resume is answered
``recovery_failed``.

The inventory also answers over gRPC (``shop.inventory.v1.Inventory``, the generic
``reactive_services.v1.Requests`` for its ``@message_pattern`` handlers, health and reflection:
:class:`reactive_services.grpc.GrpcServer`) on ``--host`` and ``--grpc-port`` (default
:data:`GRPC_PORT`, 50051, the usual gRPC port; 0: any free port, printed at start; ``--no-grpc``:
none), in every process that runs the inventory. The gateway asks the inventory over the broker
unless ``--inventory-transport grpc --inventory-grpc-address HOST:PORT`` (``docs/grpc.md``: why
the broker is the default).

On the embedded broker everything must run in one process (the broker lives in it); on Kafka
(``--bootstrap-servers``) each service can run in a process of its own, and several instances
of one service share its consumer group (the gateway's hub excepted, see above).

The process runs until SIGTERM / SIGINT, then stops gracefully (:func:`reactive_services.serve`'s
sequence): every Microservice stops fetching, finishes in-flight work and commits; the hub
flushes and closes websocket clients with 1001; the HTTP server stops; the gRPC server stops
(health ``NOT_SERVING`` first, calls in flight get :data:`GRPC_GRACE_S` seconds); the broker and
the databases close; exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reactive_services import ClientProxy, Microservice, Running, System, __version__
from reactive_services import serve as serve_system
from reactive_services.adapters import Broker, DeadLetterSink
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.websocket import NotificationLog, OverflowPolicy, WebSocketServer
from reactive_services.asyncapi import Deployment
from reactive_services.auth import JwtConfig, issue_token
from reactive_services.errors import ConfigError
from reactive_services.operators import ChangelogStore

from .demo import DATA_DIR, RABBITMQ_PREFETCH

__all__ = [
    "GRPC_GRACE_S",
    "GRPC_PORT",
    "SERVICES",
    "ServeConfig",
    "ServeInfo",
    "build_services",
    "deployment",
    "gateway_client",
    "log_shipper",
    "serve",
]

log = logging.getLogger("reactive_services.serve")

#: The services ``serve --only`` accepts.
SERVICES: tuple[str, ...] = ("orders", "inventory", "auth", "logs", "gateway")

#: Topics the shop uses (created at start on Kafka, 3 partitions each).
TOPICS: tuple[str, ...] = (
    "order.created",
    "order.rejected",
    "inventory.updated",
    "stock.low",
    "logs",
    "log.stats",
    "log.alert",
    "logs.late",
)

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"

#: The inventory's default gRPC port (the port gRPC's own examples use).
GRPC_PORT: int = 50051
#: Seconds the inventory's gRPC calls in flight get to finish at shutdown.
GRPC_GRACE_S: float = 5.0


@dataclass
class ServeConfig:
    """What ``serve`` runs.

    Attributes:
        only: the services to run in this process (default: all of :data:`SERVICES`).
        bootstrap_servers: Kafka ``HOST:PORT``; None: the embedded broker (all services then).
        rabbitmq_url: ``amqp://USER:PASSWORD@HOST:PORT/`` of a RabbitMQ server instead of Kafka
            (not with ``bootstrap_servers``); its topics get 3 partitions, as on Kafka.
        host, port: where the gateway listens (port 0: any free port).
        data_dir: folder of the services' databases (created).
        namespace: topic prefix shared by every process of one deployment (e.g. ``"shop."``).
        instance: this process's instance name (the hub's consumer group is
            ``notifications.<instance>``); default: a random one.
        products: the products CSV that seeds an empty inventory database.
        jwt: token settings; None: read ``RS_JWT_*`` from the environment (or ``dev``).
        dev: development mode: a random HS256 secret when none is configured, and a token with
            every scope printed at start.
        replay_logs: replay the shipped loghub files to ``logs`` once at start.
        queue_size, overflow: the hub's per-client queue (messages) and overflow policy.
        shutdown_timeout_s: seconds each service may take to finish in-flight work.
        log_idle_timeout_s: seconds without a line after which a log source's open windows
            are published (and their lines committed); None: only newer lines or the stop do.
        retention_bytes, retention_s: on the embedded broker, the bytes and the age (seconds, by
            record timestamp) each partition keeps at most, as Kafka topics do (default 16 MiB,
            no age limit: the replayed log lines carry their own, years-old, timestamps).
        grpc_port: the port of the inventory's gRPC server, on ``host``, where the inventory runs
            (default :data:`GRPC_PORT`; 0: any free port, in :attr:`ServeInfo.grpc_address`;
            None: no gRPC server).
        inventory_transport, inventory_grpc_address: how the gateway asks the inventory
            (:class:`~reactive_services.examples.shop.gateway.GatewaySettings`): ``"broker"``
            (default), or ``"grpc"`` to the inventory's gRPC server at ``HOST:PORT``.
    """

    only: tuple[str, ...] = SERVICES
    bootstrap_servers: str | None = None
    rabbitmq_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    namespace: str = ""
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    products: Path = DATA_DIR / "olist" / "products.csv"
    jwt: JwtConfig | None = None
    dev: bool = False
    replay_logs: bool = False
    queue_size: int = 1000
    overflow: OverflowPolicy = "close"
    shutdown_timeout_s: float = 30.0
    log_idle_timeout_s: float | None = 30.0
    retention_bytes: int | None = 16 * 1024 * 1024
    retention_s: float | None = None
    grpc_port: int | None = GRPC_PORT
    inventory_transport: str = "broker"
    inventory_grpc_address: str | None = None

    def validate(self) -> None:
        """Raises ConfigError naming the offending setting."""
        unknown = [name for name in self.only if name not in SERVICES]
        if unknown or not self.only:
            raise ConfigError("only", f"unknown service(s) {unknown} (known: {', '.join(SERVICES)})")
        if self.rabbitmq_url is not None:
            if self.bootstrap_servers is not None:
                raise ConfigError("rabbitmq_url", "give either a RabbitMQ URL or Kafka bootstrap servers, not both")
            if not self.rabbitmq_url.startswith(("amqp://", "amqps://")):
                raise ConfigError("rabbitmq_url", f"must be an amqp:// or amqps:// URL, got {self.rabbitmq_url!r}")
        if not self.shared_broker and set(self.only) != set(SERVICES):
            raise ConfigError(
                "only",
                "on the embedded broker every service runs in one process; "
                "give --bootstrap-servers or --rabbitmq-url to run some of them",
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError("port", f"must be in 0..65535, got {self.port}")
        grpc_port = self.grpc_port
        if grpc_port is not None and (isinstance(grpc_port, bool) or not isinstance(grpc_port, int)):
            raise ConfigError("grpc_port", f"must be an integer port, got {grpc_port!r}")
        if grpc_port is not None and not 0 <= grpc_port <= 65535:
            raise ConfigError("grpc_port", f"must be in 0..65535, got {grpc_port}")
        self.gateway_settings()  # the inventory's transport and address
        if "inventory" in self.only and not self.products.is_file():
            raise ConfigError("products", f"no such file: {self.products}")
        if self.replay_logs and "logs" not in self.only and not self.shared_broker:
            raise ConfigError("replay_logs", "needs the logs service")
        if self.log_idle_timeout_s is not None and not self.log_idle_timeout_s > 0:
            raise ConfigError("log_idle_timeout_s", f"must be > 0 seconds, got {self.log_idle_timeout_s!r}")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("data_dir", f"cannot create {self.data_dir}: {exc.strerror or exc}") from exc
        if not os.access(self.data_dir, os.W_OK):
            raise ConfigError("data_dir", f"{self.data_dir} is not writable")

    @property
    def shared_broker(self) -> bool:
        """True on Kafka or RabbitMQ (a broker other processes share), False on the embedded one."""
        return self.bootstrap_servers is not None or self.rabbitmq_url is not None

    def gateway_settings(self) -> Any:
        """The gateway's :class:`~reactive_services.examples.shop.gateway.GatewaySettings`.

        Raises:
            ConfigError: ``inventory_transport`` is not ``"broker"`` or ``"grpc"``; ``"grpc"``
                without ``inventory_grpc_address``, or an address that is not ``HOST:PORT``.
        """
        from reactive_services.examples.shop.gateway import GatewaySettings

        return GatewaySettings(
            inventory_transport=self.inventory_transport,  # type: ignore[arg-type]  # checked there
            inventory_grpc_address=self.inventory_grpc_address,
        )

    def jwt_config(self) -> JwtConfig:
        """The JWT settings: ``jwt``, else ``RS_JWT_*``, else (dev only) a random secret.

        Raises:
            ConfigError: no token settings (naming the environment variable) outside dev mode.
        """
        if self.jwt is not None:
            return self.jwt
        try:
            return JwtConfig.from_env()
        except ConfigError:
            if self.dev and not any(k.startswith("RS_JWT_") for k in os.environ):
                return JwtConfig.development()
            raise


@dataclass
class ServeInfo:
    """What a started ``serve`` offers: ``url`` of the gateway (None without it), the
    ``services`` running, in dev mode a ``dev_token`` with every scope, and ``grpc_address``,
    ``HOST:PORT`` of the inventory's gRPC server (the real port when 0 was asked; None without
    it)."""

    url: str | None
    services: list[str]
    dev_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    grpc_address: str | None = None


async def serve(
    config: ServeConfig,
    *,
    on_ready: Callable[[ServeInfo], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Start the configured services and run until SIGTERM / SIGINT (or ``stop``).

    Built on :func:`reactive_services.serve`: a factory builds the :class:`~reactive_services.System`
    (broker, databases, services, the gateway app) inside the loop, once the signal handlers
    are installed (a SIGTERM while starting asks for the same graceful stop, once started).

    Returns:
        0 after a graceful shutdown; 1 when a step of the shutdown failed (logged).

    Raises:
        ConfigError: a bad setting (before anything starts), a database that is not SQLite,
            or the gateway cannot listen on ``host``:``port``.
        BrokerUnavailableError: Kafka cannot be reached.
    """
    config.validate()
    info = ServeInfo(url=None, services=list(config.only))
    background: list[asyncio.Task[Any]] = []
    clients: list[ClientProxy] = []

    async def system() -> System:
        built, client = await _system(config, info)
        clients.append(client)
        return built

    def ready(running: Running) -> None:
        info.url = running.url
        if config.replay_logs:
            from reactive_services.examples.shop.log_sources import SOURCES, default_files
            from reactive_services.logs import replay_logs

            replay = replay_logs(clients[0], default_files(), formats=SOURCES)
            background.append(asyncio.create_task(replay, name="replay-logs"))
        if on_ready is not None:
            on_ready(info)

    async def cancel_background() -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    return await serve_system(
        system,
        host=config.host,
        port=config.port,
        on_ready=ready,
        on_stopped=[cancel_background],
        shutdown_timeout_s=config.shutdown_timeout_s,
        app_shutdown_timeout_s=5.0,
        uvicorn_options={"lifespan": "on", "ws_per_message_deflate": False},
        stop=stop,
    )


async def _system(config: ServeConfig, info: ServeInfo) -> tuple[System, ClientProxy]:
    """The shop's :class:`~reactive_services.System` for ``config`` (the broker started, the
    databases open, the services and the gateway app built, not started) and the client that
    replays log lines to ``logs`` (:func:`log_shipper`).

    On a failure, what was opened is closed again before the error is raised.
    """
    from reactive_services.examples.shop.auth import SCOPES, UserStore
    from reactive_services.examples.shop.gateway import create_app
    from reactive_services.examples.shop.inventory import InventoryStore, initial_stock
    from reactive_services.examples.shop.inventory_grpc import InventoryServicer
    from reactive_services.examples.shop.order_query import OrderStore
    from reactive_services.grpc import GrpcServer
    from reactive_services.metrics import MeteredBroker, ServiceMetrics
    from reactive_services.readiness import consumer_groups, readiness

    jwt = config.jwt_config() if "gateway" in config.only or "auth" in config.only else None
    metrics = ServiceMetrics()
    raw_broker: Broker
    if config.rabbitmq_url is not None:
        from reactive_services.adapters.rabbitmq import RabbitBroker

        # 3 partitions for every topic, as create_topics gives on Kafka (every process must agree);
        # the prefetch leaves the log analytics' open windows room to hold their lines
        raw_broker = RabbitBroker(config.rabbitmq_url, partitions=3, prefetch=RABBITMQ_PREFETCH)
    elif config.bootstrap_servers is None:
        # bounded as a Kafka topic is: a long-running serve does not keep every record it ever saw
        raw_broker = InMemoryBroker(retention_bytes=config.retention_bytes, retention_s=config.retention_s)
    else:
        from reactive_services.adapters.kafka import KafkaBroker

        raw_broker = KafkaBroker(config.bootstrap_servers)
    broker = MeteredBroker(raw_broker, metrics)
    await broker.start()
    ns = config.namespace
    client = gateway_client(broker, ns)
    services: list[Microservice] = []
    closers: list[Callable[[], Awaitable[Any]]] = []
    try:
        if config.shared_broker:
            await broker.create_topics([ns + t for t in TOPICS])
        data = config.data_dir
        stores = _Stores()
        if "orders" in config.only:
            stores.orders = OrderStore(data / "orders.db")
            await _open(stores.orders, data / "orders.db")
            closers.append(stores.orders.close)
        if "inventory" in config.only:
            stores.inventory = InventoryStore(data / "inventory.db", seed=initial_stock(config.products))
            await _open(stores.inventory, data / "inventory.db")
            closers.append(stores.inventory.close)
        if "auth" in config.only:
            stores.users = UserStore(data / "auth.db")
            await _open(stores.users, data / "auth.db")
            closers.append(stores.users.close)
        app = None
        hub_server: WebSocketServer | None = None
        if "gateway" in config.only:
            hub_server = WebSocketServer(
                queue_size=config.queue_size, overflow=config.overflow, log=await _notification_log(broker, ns)
            )
            metrics.watch_hub(hub_server)
        services.extend(
            build_services(
                broker,
                config.only,
                stores,
                namespace=ns,
                jwt=jwt,
                hub=hub_server.hub if hub_server is not None else None,
                instance=config.instance,
                log_idle_timeout_s=config.log_idle_timeout_s,
            )
        )
        if hub_server is not None:
            assert jwt is not None
            app = create_app(
                client=client,
                jwt=jwt,
                settings=config.gateway_settings(),
                hub=hub_server,
                metrics=metrics,
                readiness=readiness(broker, services),
                static_dir=DASHBOARD_DIR,
                description=deployment(ns, host=f"{config.host}:{config.port}"),
            )
        if config.dev and jwt is not None and jwt.can_issue:
            info.dev_token = issue_token(jwt, "dev", sorted(SCOPES))
        # reads the services at each refresh; the first ones may find nothing subscribed yet
        metrics.start_lag_refresh(broker, lambda: consumer_groups(services), interval_s=5.0)
        grpc_server: GrpcServer | None = None
        if "inventory" in config.only and config.grpc_port is not None:
            # last: nothing below can fail, and a failed start past here stops it (on_stopped)
            grpc_server = GrpcServer(
                [s for s in services if s.name == "inventory"],
                servicers=[InventoryServicer(stores.inventory)],
                host=config.host,
                port=config.grpc_port,
                options=[("grpc.so_reuseport", 0)],  # a port in use is an error, not shared
            )
            _check_bindable(config.host, config.grpc_port)  # our error, not grpc's log line
            try:
                await grpc_server.start()
            except ConfigError as exc:
                raise ConfigError("grpc_port", str(exc).removeprefix("port: ")) from exc
            info.grpc_address = grpc_server.address
    except BaseException:
        await _close_all([metrics.stop, broker.stop, *closers])
        raise

    async def close_clients() -> None:
        if hub_server is None:
            return
        # The notifications service has completed the hub, which flushes every client's
        # queue and closes it with 1001; uvicorn's shutdown would close them at once with
        # 1012, dropping what is still queued. So wait for the hub first (bounded).
        try:
            async with asyncio.timeout(hub_server.hub.flush_timeout + hub_server.close_timeout):
                await hub_server.hub.wait_closed()
        except TimeoutError:
            log.warning("websocket clients not closed by the hub in time; the gateway closes them")

    async def stop_hub() -> None:
        if hub_server is not None:
            await hub_server.stop()

    async def stop_grpc() -> None:
        # after the app's server (a gateway in this process may still ask), before the database
        if grpc_server is not None:
            await grpc_server.stop(GRPC_GRACE_S)

    system = System(
        services,
        app=app,
        on_services_stopped=[close_clients],
        on_stopped=[stop_grpc, stop_hub, metrics.stop, broker.stop, *closers],
    )
    return system, log_shipper(broker, ns)


@dataclass
class _Stores:
    """The databases of the services a process runs (None: that service does not run here)."""

    orders: Any = None
    inventory: Any = None
    users: Any = None


def gateway_client(broker: Broker, namespace: str = "") -> ClientProxy:
    """The gateway's :class:`ClientProxy`: it emits ``order.created`` (``POST /orders``) and sends
    the requests of :data:`~reactive_services.examples.shop.gateway.PATTERNS`, nothing else."""
    from reactive_services.examples.shop.gateway import PATTERNS

    from .messages import OrderCreated

    return ClientProxy(
        broker, namespace=namespace, client_id="gateway", emits={"order.created": OrderCreated}, sends=PATTERNS
    )


def log_shipper(broker: Broker, namespace: str = "") -> ClientProxy:
    """The client that publishes application log lines to ``logs`` (``serve --replay-logs``,
    ``logs replay``): :class:`~reactive_services.logs.LogRecord` values, ``{"line": str, "source":
    str, "line_no": int}``."""
    from reactive_services.logs import LOGS_TOPIC, LogRecord

    return ClientProxy(broker, namespace=namespace, client_id="log-shipper", emits={LOGS_TOPIC: LogRecord})


async def _notification_log(broker: Broker, namespace: str) -> NotificationLog | None:
    """The gateway hub's log of the notification topics, opened (None on RabbitMQ: no log)."""
    from reactive_services.examples.shop.notifications import CHANNELS, notification_of

    if broker.kind == "rabbitmq":
        return None
    topics = [namespace + pattern for pattern in CHANNELS]
    await broker.create_topics(topics)  # their partitions known before the hub's cursors start
    # the embedded broker's log lives as long as the process: a cursor of another run is refused
    epoch = f"{broker.kind}:{namespace}" if broker.kind != "memory" else f"memory:{uuid.uuid4().hex}"
    log = NotificationLog(broker, topics, lambda message: notification_of(message, namespace), epoch=epoch)
    await log.open()
    return log


def build_services(
    broker: Broker,
    only: Sequence[str],
    stores: _Stores,
    *,
    namespace: str = "",
    jwt: JwtConfig | None = None,
    hub: Any = None,
    instance: str = "",
    log_idle_timeout_s: float | None = 30.0,
) -> list[Microservice]:
    """The shop's Microservices among ``only`` (not started), on ``broker``, with the given
    stores (opened or not: nothing is read before the services start)."""
    from reactive_services.examples.shop.auth import AuthController
    from reactive_services.examples.shop.inventory import InventoryService
    from reactive_services.examples.shop.messages import InventoryUpdated, OrderRejected, StockLow
    from reactive_services.examples.shop.notifications import NotificationController
    from reactive_services.examples.shop.order_query import OrderQueryController
    from reactive_services.examples.shop.services import InventoryController, LogAnalyticsController
    from reactive_services.logs import (
        ALERT_TOPIC,
        LATE_TOPIC,
        STATS_TOPIC,
        LateLine,
        LogAlert,
        LogAnalyticsService,
        WindowStats,
    )

    ns = namespace
    services: list[Microservice] = []
    if "orders" in only:
        services.append(Microservice(broker, [OrderQueryController(stores.orders)], name="orders", namespace=ns))
    if "inventory" in only:
        publisher = ClientProxy(
            broker,
            namespace=ns,
            client_id="inventory",
            emits={"inventory.updated": InventoryUpdated, "order.rejected": OrderRejected, "stock.low": StockLow},
        )
        inventory = InventoryService(stores.inventory, publisher.emit, emit_batch=publisher.emit_batch)
        services.append(
            Microservice(
                broker, [InventoryController(inventory, DeadLetterSink(broker))], name="inventory", namespace=ns
            )
        )
    if "auth" in only:
        assert jwt is not None
        services.append(Microservice(broker, [AuthController(stores.users, jwt)], name="auth", namespace=ns))
    if "logs" in only:
        publisher = ClientProxy(
            broker,
            namespace=ns,
            client_id="log-analytics",
            emits={STATS_TOPIC: WindowStats, ALERT_TOPIC: LogAlert, LATE_TOPIC: LateLine},
        )
        analytics = LogAnalyticsService(publisher.emit)
        controller = LogAnalyticsController(
            analytics,
            DeadLetterSink(broker),
            idle_timeout_s=log_idle_timeout_s,
            # every line counted once in the published stats, across crashes
            checkpoint=ChangelogStore(broker, f"{ns}log-analytics.windows"),
        )
        services.append(Microservice(broker, [controller], name="log-analytics", namespace=ns))
    if "gateway" in only and hub is not None:
        # a hub serves live events: a new instance's group starts at the end of the topics; a
        # restarted one resumes from its committed offsets, and its hub drops what is behind
        # the head of its NotificationLog (opened at the end of the topics: those records reach
        # resuming clients from the log, not again as live events)
        services.append(
            Microservice(
                broker,
                [NotificationController(hub, dead_letter=DeadLetterSink(broker), namespace=ns)],
                name="notifications",
                namespace=ns,
                group_id=f"{ns}notifications.{instance}",
                auto_offset_reset="latest",
            )
        )
    return services


def deployment(namespace: str = "", *, host: str = "localhost:8000", broker: Broker | None = None) -> Deployment:
    """The whole shop as :mod:`reactive_services.asyncapi` and :mod:`reactive_services.topology`
    describe it: every service, the gateway's client and websocket, the log shipper. Nothing is
    opened or started (``reactive-services asyncapi reactive_services.examples.shop.system:deployment``).

    Args:
        namespace: the deployment's topic prefix.
        host: ``HOST:PORT`` of the gateway (its websocket endpoint ``/ws``).
        broker: the broker the document names as its server (default: the embedded broker).
    """
    from reactive_services.asyncapi import Deployment, WebSocketApi
    from reactive_services.examples.shop.auth import UserStore
    from reactive_services.examples.shop.inventory import InventoryStore
    from reactive_services.examples.shop.order_query import OrderStore

    from .notifications import CHANNELS

    broker = broker or InMemoryBroker()
    nowhere = Path("unopened")
    stores = _Stores(OrderStore(nowhere), InventoryStore(nowhere), UserStore(nowhere))
    services = build_services(
        broker, SERVICES, stores, namespace=namespace, jwt=JwtConfig.development(), hub=_NoHub(), instance="INSTANCE"
    )
    channels: dict[str, list[str]] = {}
    for topic, channel in CHANNELS.items():
        channels.setdefault(channel, []).append(namespace + topic)
    return Deployment(
        [*services, gateway_client(broker, namespace), log_shipper(broker, namespace)],
        title="reactive-services shop",
        version=__version__,
        description=(
            "The shop: orders go through the gateway (POST /orders) to order.created; the inventory reserves stock "
            "in its own database and publishes inventory.updated / order.rejected / stock.low; the notification "
            "hub pushes events to websocket clients; log analytics turns application logs into window stats and "
            "alerts. Generated from the services' handlers (reactive-services asyncapi)."
        ),
        websocket=WebSocketApi(host=host, channels=channels),
    )


class _NoHub:
    """The hub of a described (never started) notification service."""

    def on_next(self, value: Any) -> None:
        raise RuntimeError("a described deployment does not run")

    def on_error(self, error: Exception) -> None:
        pass

    def on_completed(self) -> None:
        pass


async def _close_all(steps: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    """Run every step, whatever the earlier ones raised (cleaning up after a failed start)."""
    for step in steps:
        try:
            await step()
        except Exception:
            pass


def _check_bindable(host: str, port: int) -> None:
    """Bind ``host``:``port`` once and let it go, before grpc does (grpc would log its own error
    line on stderr first).

    Raises:
        ConfigError("host", ...): ``host`` does not resolve.
        ConfigError("grpc_port", ...): the port cannot be bound (in use, or not allowed).
    """
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError, OverflowError) as exc:
        raise ConfigError("host", f"cannot resolve {host!r}: {exc}") from exc
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError("grpc_port", f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


async def _open(store: Any, path: Path) -> None:
    """Open a service's database; a file that is not a usable SQLite database is a ConfigError naming it."""
    import sqlite3

    try:
        await store.open()
    except sqlite3.Error as exc:
        raise ConfigError("data_dir", f"{path}: {exc}") from exc


def parse_only(values: Sequence[str] | None) -> tuple[str, ...]:
    """``["orders,inventory", "gateway"]`` -> ``("orders", "inventory", "gateway")``; None -> all."""
    if not values:
        return SERVICES
    out: list[str] = []
    for value in values:
        out.extend(name.strip().lower() for name in value.split(",") if name.strip())
    return tuple(dict.fromkeys(out))
