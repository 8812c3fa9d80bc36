"""The shop behind its API gateway, for real HTTP and websocket calls (imported by the tests
of this folder; ``conftest.py`` turns it into fixtures).

``start_shop(broker, tmp_path, ...)`` starts, on the given broker and in a namespace of its
own: the inventory (seeded stock), the order query service, the notification service with
its websocket server, the auth service (users alice / bob / carol), and the gateway app on a
real uvicorn server bound to 127.0.0.1 port 0; ``shop.http`` is an ``httpx.AsyncClient`` for
it. Every service is a :class:`Microservice`; a test may stop one (``shop.inventory_svc``).
``inventory_grpc=True`` also serves the inventory's gRPC API (``InventoryServicer`` over the same
database, a real grpc.aio server on 127.0.0.1 port 0: ``shop.grpc_server``) and points the
gateway's inventory requests at it (``inventory_transport="grpc"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from argon2 import PasswordHasher

from reactive_services import ClientProxy, Microservice
from reactive_services.adapters import DeadLetterSink
from reactive_services.adapters.websocket import NotificationLog, WebSocketServer
from reactive_services.auth import JwtConfig, issue_token
from reactive_services.examples.shop.auth import AuthController, UserStore
from reactive_services.examples.shop.gateway import GatewaySettings, create_app
from reactive_services.examples.shop.inventory import InventoryService, InventoryStore
from reactive_services.examples.shop.inventory_grpc import InventoryServicer
from reactive_services.examples.shop.notifications import CHANNELS, NotificationController, notification_of
from reactive_services.examples.shop.order_query import OrderQueryController, OrderStore
from reactive_services.examples.shop.services import InventoryController, LogAnalyticsController
from reactive_services.grpc import GrpcServer
from reactive_services.logs import LogAnalyticsService
from reactive_services.testing import unique_name, wait_for

STEP = 10.0  # seconds any one wait may take
PASSWORD = "correct horse battery"
STOCK = {"p-plenty": 10, "p-last": 1, "p-none": 0}
USERS = {
    "alice": ["orders:write", "orders:read", "inventory:read", "notifications:read"],
    "bob": ["orders:read"],
    "carol": ["notifications:read", "logs:read"],
}


@dataclass
class Shop:
    broker: Any
    namespace: str
    jwt: JwtConfig
    client: ClientProxy
    app: Any
    server: uvicorn.Server
    base_url: str
    http: httpx.AsyncClient
    ws_server: WebSocketServer
    inventory: InventoryService
    inventory_svc: Microservice
    orders_svc: Microservice
    notify_svc: Microservice
    auth_svc: Microservice
    auth: AuthController
    notifications: NotificationController
    order_query: OrderQueryController
    analytics: LogAnalyticsService
    logs_svc: Microservice
    ready: dict[str, Any] = field(default_factory=lambda: {"broker": True, "partitions_assigned": True})
    grpc_server: GrpcServer | None = None

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/ws"

    def token(self, sub: str = "alice", scopes: list[str] | None = None, **kwargs: Any) -> str:
        return issue_token(self.jwt, sub, USERS.get(sub, []) if scopes is None else scopes, **kwargs)

    def headers(self, sub: str = "alice", scopes: list[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, scopes)}"}


def cheap_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


async def serve_app(app: Any, **config: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    """Run ``app`` on uvicorn, 127.0.0.1 port 0, in this event loop; returns (server, task, base url)."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="on",
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
            ws_ping_interval=None,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=2,
            **config,
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + STEP
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise AssertionError("uvicorn exited before starting")
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


async def stop_app(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, STEP)


@contextlib.asynccontextmanager
async def start_shop(
    broker: Any,
    tmp_path: Path,
    *,
    settings: GatewaySettings | None = None,
    metrics: Any = None,
    static_dir: Path | None = None,
    namespace: str | None = None,
    max_failures: int = 5,
    inventory_grpc: bool = False,
    resumable: bool = False,
) -> AsyncIterator[Shop]:
    ns = namespace if namespace is not None else ("" if broker.kind == "memory" else unique_name("gw") + ".")
    jwt = JwtConfig.development()
    client = ClientProxy(broker, namespace=ns, client_id="gateway")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(client.close)
        inventory_store = await stack.enter_async_context(InventoryStore(tmp_path / "inventory.db", seed=STOCK))
        order_store = await stack.enter_async_context(OrderStore(tmp_path / "orders.db"))
        users = await stack.enter_async_context(UserStore(tmp_path / "auth.db", hasher=cheap_hasher()))
        for name, scopes in USERS.items():
            await users.add_user(name, PASSWORD, scopes)

        log = None
        if resumable:  # the hub has a NotificationLog: cursors in frames, subscribe with since
            topics = [ns + pattern for pattern in CHANNELS]
            await broker.create_topics(topics)
            log = NotificationLog(broker, topics, lambda m: notification_of(m, ns), epoch=unique_name("epoch"))
            await log.open()
        ws_server = WebSocketServer(ping_interval=None, close_timeout=1.0, log=log)
        stack.push_async_callback(lambda: asyncio.wait_for(ws_server.stop(), STEP))

        inventory = InventoryService(inventory_store, client.emit, emit_batch=client.emit_batch)
        auth = AuthController(users, jwt, max_failures=max_failures, base_delay_s=0.0)
        notifications = NotificationController(ws_server.hub, dead_letter=DeadLetterSink(broker), namespace=ns)
        order_query = OrderQueryController(order_store)
        analytics = LogAnalyticsService(client.emit)
        services = {
            "inventory": Microservice(
                broker, [InventoryController(inventory, DeadLetterSink(broker))], name="inventory", namespace=ns
            ),
            "orders": Microservice(broker, [order_query], name="order-query", namespace=ns),
            "notify": Microservice(broker, [notifications], name="notifications", namespace=ns),
            "auth": Microservice(broker, [auth], name="auth", namespace=ns),
            "logs": Microservice(
                broker, [LogAnalyticsController(analytics, DeadLetterSink(broker))], name="log-analytics", namespace=ns
            ),
        }
        for service in services.values():
            await service.start()
            stack.push_async_callback(service.stop)

        ready: dict[str, Any] = {"broker": True, "partitions_assigned": True}

        async def readiness() -> dict[str, Any]:
            return dict(ready)

        grpc_server = None
        if inventory_grpc:
            grpc_server = GrpcServer(servicers=[InventoryServicer(inventory_store)])
            await grpc_server.start()
            stack.push_async_callback(grpc_server.stop, 0)
            settings = replace(
                settings or GatewaySettings(), inventory_transport="grpc", inventory_grpc_address=grpc_server.address
            )

        app = create_app(
            client=client,
            jwt=jwt,
            settings=settings,
            hub=ws_server,
            metrics=metrics,
            readiness=readiness,
            static_dir=static_dir,
        )
        server, task, base_url = await serve_app(app)
        stack.push_async_callback(stop_app, server, task)
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=STEP))
        shop = Shop(
            broker=broker,
            namespace=ns,
            jwt=jwt,
            client=client,
            app=app,
            server=server,
            base_url=base_url,
            http=http,
            ws_server=ws_server,
            inventory=inventory,
            inventory_svc=services["inventory"],
            orders_svc=services["orders"],
            notify_svc=services["notify"],
            auth_svc=services["auth"],
            auth=auth,
            notifications=notifications,
            order_query=order_query,
            analytics=analytics,
            logs_svc=services["logs"],
            ready=ready,
            grpc_server=grpc_server,
        )
        await until(lambda: app.state.warmup.ready, what="the gateway's reply consumers")
        yield shop


#: The kit's wait_for, with this module's patience by default.
until = functools.partial(wait_for, timeout=STEP)
