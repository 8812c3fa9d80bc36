"""The shop's API gateway: HTTP and websocket in front of the services (FastAPI, served by uvicorn).

Built from the library's gateway parts (:mod:`reactive_services.gateway`: bearer auth, the
error mapping, aggregation, middleware, readiness, the websocket glue); the routes are in one
router per concern (``_orders``, ``_inventory``, ``_logs``, ``_login``, ``_operations``).

The gateway holds no state of its own: it turns HTTP requests into events (``emit``) and
requests (``send``, request-reply over the broker) through one :class:`ClientProxy`, and hands
websocket connections to the notification hub. The inventory's requests go over the broker too
by default, or over gRPC to the inventory's server (``GatewaySettings(inventory_transport="grpc",
inventory_grpc_address="HOST:PORT")``: same replies, same status codes; see ``docs/grpc.md``;
the dashboard's ``inventory.list_stock`` and ``inventory.get_outcomes`` go over the broker either way).
:func:`create_app` builds the app::

    app = create_app(client=ClientProxy(broker, namespace=ns, client_id="gateway"),
                     jwt=JwtConfig.from_env(), hub=ws_server, readiness=check, metrics=metrics)
    uvicorn.run(app, host="0.0.0.0", port=8000, ws_per_message_deflate=False)

Routes
------
=========================  ================  ==============================================================
route                      scope             what
=========================  ================  ==============================================================
``POST /orders``           ``orders:write``  emit ``order.created`` (key = order id); **202**
                                             ``{"order_id", "status": "accepted"}`` + ``Location``
``GET /orders/{id}``       ``orders:read``   ``orders.get`` + ``inventory.get_order`` +
                                             ``notifications.get_order`` in parallel (see below)
``GET /orders?limit=``     ``orders:read``   ``orders.latest`` then ``inventory.get_outcomes``: the latest
                                             orders, newest first, each with its ``outcome`` (see below)
``GET /inventory/{id}``    ``inventory:read``  ``inventory.get_stock`` -> ``{"product_id", "stock"}``
``GET /inventory``         ``inventory:read``  ``inventory.list_stock``: one page of the stock
                                             (``limit``, ``offset``, ``order``, ``low_only``), low ones flagged
``POST /auth/login``       (none)            ``auth.login`` -> the token JSON
``/ws`` (websocket)        (a valid token)   the notification protocol (``reactive_services.adapters.websocket``);
                                             channels allowed by the token's scopes
                                             (``reactive_services.examples.shop.auth.CHANNEL_SCOPES``)
``GET /healthz``           (none)            200 ``{"status": "ok"}`` while the process runs
``GET /readyz``            (none)            200 / 503 ``{"status", "checks": {...}, "error"}``
``GET /metrics``           (none)            ``metrics.render()`` (only when ``metrics`` is given)
``/docs``, ``/openapi.json``  (none)         OpenAPI, with the bearer security scheme
``GET /asyncapi.json``     (none)            the AsyncAPI 3.0 document (also ``.yaml``), with ``description``
``GET /topology.svg``      (none)            the topology drawn by Graphviz, with ``description``
``GET /vendor/plotly.min.js``  (none)        the dashboard's chart library: the file the ``plotly`` package
                                             ships (with ``static_dir``; ``_dashboard``)
``/`` (static)             (none)            ``static_dir`` (html=True), mounted last
=========================  ================  ==============================================================

Status codes
------------
- **401** + ``WWW-Authenticate: Bearer``: no ``Authorization: Bearer <token>`` header, or a
  token :func:`~reactive_services.auth.verify_token` refuses (``detail`` names the reason:
  ``"invalid token: token expired"``; the token itself is never echoed). On ``/auth/login``:
  wrong credentials, ``{"detail": "invalid username or password"}`` whichever part is wrong.
- **403** + ``WWW-Authenticate: Bearer error="insufficient_scope"``: a valid token without the
  route's scope; ``detail`` is ``"missing scope: orders:write"``.
- **413**: a request body over ``max_body_bytes`` (checked on ``Content-Length`` and on the
  bytes actually received, so a chunked body cannot get past it).
- **422**: a malformed body or parameter. FastAPI's ``detail`` list (each error's ``loc``,
  ``msg``, ``type``; the offending input is not echoed back) plus ``message``, one line naming
  each field path: ``"items[0].quantity: Input should be greater than or equal to 1"``. On
  ``/auth/login`` also the auth service's ``ValidationError``.
- **429** + ``Retry-After: <s>``: the auth service's login throttle refused the attempt.
- **404**: unknown product; an order that every part answered about and none knows.
- **502**: the service answered with an error (``RemoteError``); ``detail`` names its type.
- **503**: the broker refused or did not acknowledge a publish, or request-reply cannot run
  (reply consumer down); ``/readyz`` when a check is false.
- **504**: the service did not answer within ``call_timeout_s`` (``login_timeout_s`` for login).

``GET /orders/{id}``: the three parts are asked at once, each bounded by ``call_timeout_s``::

    200 {"order_id", "order": <orders.get reply> | null, "inventory": <inventory.get_order reply> | null,
         "notifications": [{"channel", "topic", "sent_at"}] | null,
         "missing": ["inventory", ...],                # parts that timed out or failed (their value: null)
         "errors": {"inventory": "timed out after 2.0 s" | "RemoteError ValidationError" | ...}}

A slow or stopped service makes its part *missing*, never the request fail; 404 only when all
three answered and none knows the order (order null, inventory null, notifications []).

What a dashboard shows first (then it follows the live events of ``/ws``)::

    GET /orders?limit=50 (1..1000)
    200 {"orders": [{"order_id", "items", "created_at"?, ..., "received_at": <epoch s>,
                     "outcome": {"status": "applied" | "rejected", "items", "reason"} | null}],
         "total": <orders stored>, "missing": [] | ["inventory"], "errors": {...}}

    GET /inventory?limit=100 (1..1000)&offset=0&order=recent|product|stock&low_only=false
    200 {"items": [{"product_id", "stock", "low": stock < threshold}], "total", "low",
         "threshold", "limit", "offset", "order"}

``order=recent`` puts the products of the latest applied orders first. Without the inventory's
answer ``GET /orders`` still lists the orders (outcomes null, ``missing``); a parameter out of
range is a 422 naming it (``"query.limit: Input should be less than or equal to 1000"``).

Websocket ``/ws``
-----------------
The token comes from ``Authorization: Bearer <token>`` or, for browsers (which cannot set
headers on a websocket), the ``token`` query parameter (keep uvicorn's access log off, or the
token lands in it). A missing or invalid token: the handshake is **accepted, then closed with
4401** and reason ``"unauthorized: <reason>"`` -- a browser cannot read the status of a
refused handshake, but it gets the close code. Then the connection is handed to the
notification server (``WebSocketServer.serve(StarletteTransport(ws), allowed_channels=...)``):
a subscribe to a channel the token's scopes do not allow closes it with **4403**. When the
token expires, the connection is closed with 4401 ``"unauthorized: token expired"``.
Without ``hub`` the route is not registered.

Request-reply readiness: on startup (the ASGI lifespan) the gateway starts the reply
consumers of every pattern it sends (``client.subscribe_to_response_of`` + ``connect``) in
the background, so that the first requests do not pay for a consumer group join; ``/readyz``
reports it as the check ``"request_reply"``, beside the checks of ``readiness()``. Ready means
every bool in ``checks`` is true, at the top level or in a nested mapping (such as
``{"services": {name: started}}``); other values are passed along as they are.

Behind a reverse proxy run uvicorn with ``--proxy-headers`` (``forwarded_allow_ips``), so that
the client address sent with each login (the auth service throttles per client) is the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline

from reactive_services import ClientProxy, __version__
from reactive_services.adapters.tracing import tracer_provider, tracing_enabled
from reactive_services.adapters.websocket import WebSocketServer
from reactive_services.asyncapi import Deployment
from reactive_services.auth import JwtConfig
from reactive_services.errors import ConfigError
from reactive_services.gateway import (
    BearerAuth,
    BodyLimitMiddleware,
    ReplyWarmup,
    RequestMetricsMiddleware,
    describe_router,
    serve_notifications,
    validation_error_handler,
)

from ..auth import CHANNEL_SCOPES
from . import _dashboard, _inventory, _login, _logs, _operations, _orders
from ._models import LoginRequest, OrderItemIn, OrderRequest
from ._orders import ORDER_PARTS
from ._requests import GatewayRequests
from ._settings import INVENTORY_TRANSPORTS, GatewaySettings, InventoryTransport

__all__ = [
    "INVENTORY_TRANSPORTS",
    "PATTERNS",
    "GatewayRequests",
    "GatewaySettings",
    "InventoryTransport",
    "LoginRequest",
    "OrderItemIn",
    "OrderRequest",
    "create_app",
]

#: The request-reply patterns the gateway sends (their reply consumers are started at startup).
PATTERNS: tuple[str, ...] = (
    *ORDER_PARTS.values(),
    "orders.latest",
    "inventory.get_stock",
    "inventory.list_stock",
    "inventory.get_outcomes",
    "auth.login",
    "logs.recent_stats",
    "logs.recent_alerts",
)


def create_app(
    *,
    client: ClientProxy,
    jwt: JwtConfig,
    settings: GatewaySettings | None = None,
    hub: Any | None = None,
    metrics: Any | None = None,
    readiness: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    static_dir: Path | None = None,
    description: Deployment | None = None,
) -> FastAPI:
    """Build the gateway app (routes and status codes in the module docstring).

    Args:
        client: emits ``order.created`` and sends the requests; its ``namespace`` applies.
            The app does not close it (its owner does); at startup it names :data:`PATTERNS`
            with ``subscribe_to_response_of`` and calls ``connect()``.
        jwt: verifies the bearer tokens (the public key is enough for RS256).
        settings: limits, timeouts and the inventory's transport (default :class:`GatewaySettings`:
            everything over the broker). With ``inventory_transport="grpc"`` the app opens an
            ``InventoryGrpcClient`` at startup (the ASGI lifespan) and closes it at shutdown;
            the inventory's patterns are then not warmed up on the broker.
        hub: the notification server the ``/ws`` connections are handed to: a
            ``WebSocketServer`` or its ``NotificationHub``; None: no ``/ws`` route.
        metrics: optional, duck-typed: ``render()`` (bytes, or an awaitable of them) and
            ``content_type`` serve ``GET /metrics``; if it has ``observe_request(route,
            method, status, seconds)``, that is called for every HTTP request.
        readiness: ``await readiness()`` -> a dict for ``/readyz``, e.g. ``{"broker": True,
            "partitions_assigned": True, "services": {"inventory": True}}``: ready when every
            bool in it (top level, or one mapping deep) is true; bounded by
            ``readiness_timeout_s``; raising or timing out means not ready.
        static_dir: a folder served at ``/`` (``index.html`` for ``/``), after every API route;
            with it, ``GET /vendor/plotly.min.js`` serves the chart library its dashboard uses.
        description: the deployment to describe at ``/asyncapi.json``, ``/asyncapi.yaml`` and
            ``/topology.svg`` (:func:`reactive_services.gateway.describe_router`); None: no
            such routes.

    Raises:
        ConfigError: ``hub`` is neither a ``WebSocketServer`` nor has one as ``server``;
            ``static_dir`` is not a folder.
    """
    settings = settings or GatewaySettings()
    ws_server = _notification_server(hub) if hub is not None else None
    if static_dir is not None and not Path(static_dir).is_dir():
        raise ConfigError("static_dir", f"not a folder: {static_dir}")
    requests = GatewayRequests(client, settings)
    warmup = ReplyWarmup(client, tuple(p for p in PATTERNS if p not in requests.grpc_patterns))
    auth = BearerAuth(jwt, description="A token from POST /auth/login: `Authorization: Bearer <token>`.")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        requests.open()
        warmup.start()
        try:
            yield
        finally:
            await warmup.stop()
            await requests.close()

    # FastAPIOffline (fastapi-offline): a FastAPI app whose /docs and /redoc load Swagger UI and
    # ReDoc from files the package ships, served by the app, not from a CDN: they work offline.
    app = FastAPIOffline(
        title="reactive-services shop gateway",
        version=__version__,
        description=(__doc__ or "").split("\n\n", 1)[0],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.warmup = warmup
    app.state.requests = requests
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    observe = getattr(metrics, "observe_request", None)
    if callable(observe):
        app.add_middleware(RequestMetricsMiddleware, observe=observe)  # outermost: sees the 413s too
    if tracing_enabled():  # a server span per HTTP request (OpenTelemetry's ASGI instrumentation)
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(
            OpenTelemetryMiddleware,
            tracer_provider=tracer_provider(),
            excluded_urls="healthz,readyz,metrics",
            exclude_spans=["receive", "send"],  # not one span per websocket message
        )

    app.include_router(_orders.router(client, requests, settings, auth))
    if description is not None:
        app.include_router(describe_router(description))
    app.include_router(_inventory.router(requests, settings, auth))
    app.include_router(_logs.router(client, settings, auth))
    app.include_router(_login.router(client, settings))
    app.include_router(_operations.router(settings, warmup, readiness, metrics))

    if ws_server is not None:
        server = ws_server

        @app.websocket("/ws")
        async def notifications_ws(websocket: WebSocket) -> None:
            await serve_notifications(websocket, server, jwt, CHANNEL_SCOPES)

    if static_dir is not None:
        from fastapi.staticfiles import StaticFiles

        app.include_router(_dashboard.router())

        app.mount("/", StaticFiles(directory=Path(static_dir), html=True), name="static")
    return app


def _notification_server(hub: Any) -> WebSocketServer:
    """The server a ``/ws`` connection is handed to: ``hub`` itself (a ``WebSocketServer``) or
    its ``server`` (a ``NotificationHub``)."""
    for candidate in (hub, getattr(hub, "server", None)):
        if isinstance(candidate, WebSocketServer):
            return candidate
    raise ConfigError("hub", f"needs a WebSocketServer or a NotificationHub, got {type(hub).__name__}")
