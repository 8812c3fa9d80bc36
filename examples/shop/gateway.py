"""The shop's API gateway: HTTP and websocket in front of the services (FastAPI, served by uvicorn).

The gateway holds no state of its own: it turns HTTP requests into events (``emit``) and
requests (``send``, request-reply over the broker) through one :class:`ClientProxy`, and hands
websocket connections to the notification hub. :func:`create_app` builds the app::

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
``GET /inventory/{id}``    ``inventory:read``  ``inventory.get_stock`` -> ``{"product_id", "stock"}``
``POST /auth/login``       (none)            ``auth.login`` -> the token JSON
``/ws`` (websocket)        (a valid token)   the notification protocol (``reactive_services.adapters.websocket``);
                                             channels allowed by the token's scopes
                                             (``reactive_services.examples.shop.auth.CHANNEL_SCOPES``)
``GET /healthz``           (none)            200 ``{"status": "ok"}`` while the process runs
``GET /readyz``            (none)            200 / 503 ``{"status", "checks": {...}, "error"}``
``GET /metrics``           (none)            ``metrics.render()`` (only when ``metrics`` is given)
``/docs``, ``/openapi.json``  (none)         OpenAPI, with the bearer security scheme
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

# No ``from __future__ import annotations``: FastAPI reads the routes' ``Annotated[...,
# Depends(require_scope(...))]`` parameters at definition time, and those name closures of
# create_app that string annotations could not be resolved against.

import asyncio
import inspect
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from reactive_services.adapters.websocket import CLOSE_UNAUTHORIZED, StarletteTransport

from reactive_services import ClientProxy, __version__
from reactive_services.auth import Claims, JwtConfig, verify_token
from reactive_services.errors import (
    AuthenticationError,
    BrokerError,
    ConfigError,
    RemoteError,
    RequestTimeoutError,
    TooManyAttemptsError,
)

from .auth import CHANNEL_SCOPES, INVALID_CREDENTIALS
from .order_query import MAX_ORDER_ID_CHARS

__all__ = [
    "PATTERNS",
    "GatewaySettings",
    "LoginRequest",
    "OrderItemIn",
    "OrderRequest",
    "create_app",
]

log = logging.getLogger(__name__)

#: The request-reply patterns the gateway sends (their reply consumers are started at startup).
PATTERNS: tuple[str, ...] = (
    "orders.get",
    "inventory.get_order",
    "inventory.get_stock",
    "notifications.get_order",
    "auth.login",
    "logs.recent_stats",
    "logs.recent_alerts",
)

#: Parts of ``GET /orders/{id}``: part name -> the request pattern answering it.
ORDER_PARTS: Mapping[str, str] = {
    "order": "orders.get",
    "inventory": "inventory.get_order",
    "notifications": "notifications.get_order",
}

#: A body over the limit is read on (and discarded) up to this many more bytes before the 413
#: is sent, so that the client, still sending, reads the answer instead of a connection reset.
_DRAIN_BYTES = 1024 * 1024
_DRAIN_TIMEOUT_S = 2.0

_MAX_ID_CHARS = MAX_ORDER_ID_CHARS


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway's limits (topics and their namespace are the :class:`ClientProxy`'s business).

    Args:
        call_timeout_s: seconds each request-reply call may take (> 0; default 2.0); past it
            the route answers 504 (``GET /orders/{id}``: the part is *missing*).
        login_timeout_s: seconds ``auth.login`` may take (> 0; default 5.0): the auth service
            hashes the password (argon2) and delays failed attempts (up to 2 s by default) on
            purpose, so a login gets longer than other calls.
        max_body_bytes: the largest request body accepted, bytes (>= 1; default 65536); over
            it: 413.
        readiness_timeout_s: seconds ``/readyz`` waits for ``readiness()`` (> 0; default 2.0).

    Raises:
        ConfigError: a value out of range (``key`` names it).
    """

    call_timeout_s: float = 2.0
    login_timeout_s: float = 5.0
    max_body_bytes: int = 65536
    readiness_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for key in ("call_timeout_s", "login_timeout_s", "readiness_timeout_s"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (value > 0 and math.isfinite(value))
            ):
                raise ConfigError(key, f"must be a number of seconds > 0, got {value!r}")
        value = self.max_body_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError("max_body_bytes", f"must be an integer >= 1 (bytes), got {value!r}")


# --------------------------------------------------------------------------- request and response bodies

#: Items per order, and units per item, at most.
MAX_ITEMS = 100
MAX_QUANTITY = 1_000_000


class OrderItemIn(BaseModel):
    """One line of ``POST /orders``."""

    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(min_length=1, max_length=_MAX_ID_CHARS, pattern=r"\S", description="non-blank")
    quantity: int = Field(
        ge=1, le=MAX_QUANTITY, strict=True, description="units, an integer >= 1 (not a string, float or boolean)"
    )


class OrderRequest(BaseModel):
    """The body of ``POST /orders`` (unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    items: list[OrderItemIn] = Field(min_length=1, max_length=MAX_ITEMS, description="1 to 100 items")
    customer_id: str | None = Field(default=None, min_length=1, max_length=_MAX_ID_CHARS, pattern=r"\S")


class LoginRequest(BaseModel):
    """The body of ``POST /auth/login``."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: SecretStr = Field(min_length=1, max_length=1024)


class OrderAccepted(BaseModel):
    order_id: str
    status: str = "accepted"


class StockLevel(BaseModel):
    product_id: str
    stock: int


class Token(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class OrderView(BaseModel):
    order_id: str
    order: dict[str, Any] | None = Field(description="the order as created (orders.get); null if unknown or missing")
    inventory: dict[str, Any] | None = Field(
        description='{"status": "applied" | "rejected", "items", "reason"}; null if not processed yet or missing'
    )
    notifications: list[dict[str, Any]] | None = Field(description='[{"channel", "topic", "sent_at"}]; null if missing')
    missing: list[str] = Field(description="parts that timed out or failed")
    errors: dict[str, str] = Field(description="part -> what went wrong")


class Problem(BaseModel):
    detail: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, Any]
    error: str | None = None


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in codes}


# --------------------------------------------------------------------------- errors


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "items", 0, "quantity")`` -> ``"items[0].quantity"``; other sources keep
    their name: ``("path", "order_id")`` -> ``"path.order_id"``."""
    parts = list(loc)
    text = ""
    if parts and parts[0] == "body":
        parts = parts[1:]
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    message = "; ".join(f"{_field_path(e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": errors, "message": message}, status_code=422)


def _unauthorized(detail: str, *, error: str | None = None) -> HTTPException:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def _upstream(pattern: str, exc: Exception, timeout: float) -> HTTPException:
    """The HTTP answer for a failed request-reply call (or publish)."""
    if isinstance(exc, (TimeoutError, RequestTimeoutError)):
        return HTTPException(504, f"{pattern}: no answer within {timeout} s")
    if isinstance(exc, RemoteError):
        log.warning("%s answered with an error: %s", pattern, exc)
        return HTTPException(502, f"{pattern} failed: {exc.remote_type}")
    if isinstance(exc, BrokerError):
        log.warning("%s: broker error: %r", pattern, exc)
        return HTTPException(503, f"{pattern}: the broker is unavailable")
    raise exc


def _part_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (TimeoutError, RequestTimeoutError)):
        return f"timed out after {float(timeout)} s"
    if isinstance(exc, RemoteError):
        return f"RemoteError {exc.remote_type}"
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- ASGI middleware


class _BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before the app sees them.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body is
    read (at most ``max_bytes`` + one chunk is held) and replayed to the app, so a chunked
    body is counted as it arrives. Before answering 413 the rest of the body is read and
    discarded, up to 1 MiB or 2 s, so that a client still sending gets the answer rather than
    a connection reset (not when it waits for ``100 Continue``: it has sent nothing); the
    connection is then closed.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        expects_continue = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        if declared is not None:
            if not declared.isdigit():
                await _plain(send, 400, "invalid Content-Length")
                return
            if int(declared) > self.max_bytes:
                # A client waiting for "100 Continue" has not sent the body: do not ask for it.
                await self._too_large(receive, send, drain=not expects_continue)
                return
        body = bytearray()
        disconnected = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                if disconnected:
                    return {"type": "http.disconnect"}
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return dict(await receive())

        await self.app(scope, replay, send)

    async def _too_large(self, receive: Any, send: Any, *, drain: bool = True) -> None:
        if not drain:
            await _plain(send, 413, f"request body too large: at most {self.max_bytes} bytes", close=True)
            return
        try:
            async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                drained = 0
                while drained <= _DRAIN_BYTES:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    drained += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            pass
        await _plain(send, 413, f"request body too large: at most {self.max_bytes} bytes", close=True)


async def _plain(send: Any, status: int, detail: str, *, close: bool = False) -> None:
    body = JSONResponse({"detail": detail}).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _RequestMetrics:
    """Call ``observe(route, method, status, seconds)`` once per HTTP request.

    ``route`` is the matched route's template (``"/orders/{order_id}"``), ``"/{path}"`` for the
    static mount, ``"<unmatched>"`` otherwise, so the label set stays bounded. An exception
    escaping the app counts as status 500. A failing ``observe`` is logged, never raised.
    """

    def __init__(self, app: Any, observe: Callable[[str, str, int, float], Any]) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            label = getattr(route, "path_format", None) or getattr(route, "path", None) or "<unmatched>"
            try:
                self.observe(label, scope.get("method", ""), status, time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - metrics must never break a request
                log.exception("metrics.observe_request failed")


# --------------------------------------------------------------------------- the gateway


class _Warmup:
    """Starts the client's reply consumers of :data:`PATTERNS` once, in the background.

    A task of its own rather than one of a task group: it may be started by a request
    (``/readyz``) that must not wait for it, and its failure must not end the app (it is
    logged and reported by ``/readyz``, and requests then start their consumer lazily). The
    lifespan cancels and awaits it at shutdown.
    """

    def __init__(self, client: ClientProxy) -> None:
        self.client = client
        self.ready = False
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start (or, after a failure, restart) the warm-up; idempotent."""
        if self.ready or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-warmup")

    async def _run(self) -> None:
        try:
            for pattern in PATTERNS:
                self.client.subscribe_to_response_of(pattern)
            await self.client.connect()
        except Exception as exc:  # noqa: BLE001 - reported by /readyz; requests connect lazily
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("gateway: the reply consumers could not be started: %s", self.error)
        else:
            self.ready, self.error = True, None

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


def _notification_server(hub: Any) -> Any:
    """The object whose ``serve(transport, allowed_channels=...)`` runs a websocket: ``hub``
    itself (a ``WebSocketServer``) or its ``server`` (a ``NotificationHub``)."""
    for candidate in (hub, getattr(hub, "server", None)):
        if candidate is not None and callable(getattr(candidate, "serve", None)):
            return candidate
    raise ConfigError("hub", f"needs a WebSocketServer or a NotificationHub, got {type(hub).__name__}")


def _all_true(checks: Mapping[str, Any]) -> bool:
    """Every bool of ``checks`` is True, top level and one mapping deep."""
    for value in checks.values():
        if isinstance(value, bool) and not value:
            return False
        if isinstance(value, Mapping) and not all(v for v in value.values() if isinstance(v, bool)):
            return False
    return True


def _bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def create_app(
    *,
    client: ClientProxy,
    jwt: JwtConfig,
    settings: GatewaySettings | None = None,
    hub: Any | None = None,
    metrics: Any | None = None,
    readiness: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    static_dir: Path | None = None,
) -> FastAPI:
    """Build the gateway app (routes and status codes in the module docstring).

    Args:
        client: emits ``order.created`` and sends the requests; its ``namespace`` applies.
            The app does not close it (its owner does); at startup it names :data:`PATTERNS`
            with ``subscribe_to_response_of`` and calls ``connect()``.
        jwt: verifies the bearer tokens (the public key is enough for RS256).
        settings: limits and timeouts (default :class:`GatewaySettings`).
        hub: the notification server the ``/ws`` connections are handed to: a
            ``WebSocketServer`` or its ``NotificationHub``; None: no ``/ws`` route.
        metrics: optional, duck-typed: ``render()`` (bytes, or an awaitable of them) and
            ``content_type`` serve ``GET /metrics``; if it has ``observe_request(route,
            method, status, seconds)``, that is called for every HTTP request.
        readiness: ``await readiness()`` -> a dict for ``/readyz``, e.g. ``{"broker": True,
            "partitions_assigned": True, "services": {"inventory": True}}``: ready when every
            bool in it (top level, or one mapping deep) is true; bounded by
            ``readiness_timeout_s``; raising or timing out means not ready.
        static_dir: a folder served at ``/`` (``index.html`` for ``/``), after every API route.

    Raises:
        ConfigError: ``hub`` has no ``serve`` method (nor its ``server``); ``static_dir`` is
            not a folder.
    """
    settings = settings or GatewaySettings()
    ws_server = _notification_server(hub) if hub is not None else None
    if static_dir is not None and not Path(static_dir).is_dir():
        raise ConfigError("static_dir", f"not a folder: {static_dir}")
    warmup = _Warmup(client)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warmup.start()
        try:
            yield
        finally:
            await warmup.stop()

    app = FastAPI(
        title="reactive-services shop gateway",
        version=__version__,
        description=(__doc__ or "").split("\n\n", 1)[0],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.warmup = warmup
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)
    observe = getattr(metrics, "observe_request", None)
    if callable(observe):
        app.add_middleware(_RequestMetrics, observe=observe)  # outermost: sees the 413s too

    bearer = HTTPBearer(
        auto_error=False,
        bearerFormat="JWT",
        description="A token from POST /auth/login: `Authorization: Bearer <token>`.",
    )

    def authenticate(credentials: HTTPAuthorizationCredentials | None) -> Claims:
        if credentials is None:
            raise _unauthorized("missing bearer token")
        try:
            return verify_token(jwt, credentials.credentials)
        except AuthenticationError as exc:
            raise _unauthorized(f"invalid token: {exc.reason}", error="invalid_token") from None

    def require_scope(needed: str) -> Callable[..., Awaitable[Claims]]:
        async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Claims:
            claims = authenticate(credentials)
            if needed not in claims.scopes:
                raise HTTPException(
                    403,
                    f"missing scope: {needed}",
                    headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
                )
            return claims

        check.__name__ = f"scope_{needed.replace(':', '_')}"
        return check

    async def call(pattern: str, payload: Any, *, timeout: float, key: str | None = None) -> Any:
        """One request-reply call bounded by ``timeout`` in all (reply consumer start included)."""
        async with asyncio.timeout(timeout):
            return await client.send(pattern, payload, timeout=timeout, key=key)

    # ----------------------------------------------------------------- orders

    @app.post(
        "/orders",
        status_code=202,
        response_model=OrderAccepted,
        responses=_problems(401, 403, 413, 503, 504),
        tags=["orders"],
        summary="Place an order (scope orders:write)",
    )
    async def place_order(
        order: OrderRequest,
        claims: Annotated[Claims, Depends(require_scope("orders:write"))],
    ) -> JSONResponse:
        """Publish ``order.created`` ``{"order_id", "items", "customer_id"?, "created_at"}``
        keyed by the new order id; answered once the broker acknowledged it."""
        order_id = uuid.uuid4().hex
        value: dict[str, Any] = {
            "order_id": order_id,
            "items": [{"product_id": i.product_id, "quantity": i.quantity} for i in order.items],
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if order.customer_id is not None:
            value["customer_id"] = order.customer_id
        try:
            async with asyncio.timeout(settings.call_timeout_s):
                await client.emit("order.created", value, key=order_id)
        except TimeoutError:
            raise HTTPException(
                504,
                f"the broker did not acknowledge order {order_id} within {settings.call_timeout_s} s;"
                " it may or may not have been accepted",
            ) from None
        except BrokerError as exc:
            raise _upstream("order.created", exc, settings.call_timeout_s) from None
        log.info("order %s placed by %s", order_id, claims.sub)
        return JSONResponse(
            {"order_id": order_id, "status": "accepted"}, status_code=202, headers={"Location": f"/orders/{order_id}"}
        )

    @app.get(
        "/orders/{order_id}",
        response_model=OrderView,
        responses=_problems(401, 403, 404),
        tags=["orders"],
        summary="An order with its inventory outcome and notifications (scope orders:read)",
    )
    async def get_order(
        order_id: Annotated[str, PathParam(min_length=1, max_length=_MAX_ID_CHARS)],
        claims: Annotated[Claims, Depends(require_scope("orders:read"))],
    ) -> dict[str, Any]:
        """Asks ``orders.get``, ``inventory.get_order`` and ``notifications.get_order`` at once;
        a part that does not answer in time or fails is listed in ``missing`` (never a 5xx)."""
        timeout = settings.call_timeout_s

        async def part(pattern: str) -> tuple[bool, Any]:
            try:
                return True, await call(pattern, {"order_id": order_id}, timeout=timeout, key=order_id)
            except Exception as exc:  # noqa: BLE001 - a failed part is reported, not raised
                if isinstance(exc, RemoteError):
                    log.warning("%s for order %s: %s", pattern, order_id, exc)
                return False, exc

        names = list(ORDER_PARTS)
        answers = await asyncio.gather(*(part(ORDER_PARTS[name]) for name in names))
        view: dict[str, Any] = {"order_id": order_id, "missing": [], "errors": {}}
        expected = {"order": dict, "inventory": dict, "notifications": list}
        for name, (ok, value) in zip(names, answers):
            if ok and value is not None and not isinstance(value, expected[name]):
                ok, value = False, ValueError(f"unexpected reply of type {type(value).__name__}")
            if ok:
                view[name] = value
            else:
                view[name] = None
                view["missing"].append(name)
                view["errors"][name] = _part_error(value, timeout)
        if not view["missing"] and view["order"] is None and view["inventory"] is None and not view["notifications"]:
            raise HTTPException(404, f"unknown order {order_id!r}")
        return view

    # ----------------------------------------------------------------- inventory

    @app.get(
        "/inventory/{product_id}",
        response_model=StockLevel,
        responses=_problems(401, 403, 404, 502, 503, 504),
        tags=["inventory"],
        summary="The stock of one product (scope inventory:read)",
    )
    async def get_stock(
        product_id: Annotated[str, PathParam(min_length=1, max_length=_MAX_ID_CHARS)],
        claims: Annotated[Claims, Depends(require_scope("inventory:read"))],
    ) -> dict[str, Any]:
        timeout = settings.call_timeout_s
        try:
            reply = await call("inventory.get_stock", {"product_ids": [product_id]}, timeout=timeout)
        except (TimeoutError, BrokerError, RemoteError) as exc:
            raise _upstream("inventory.get_stock", exc, timeout) from None
        if not isinstance(reply, Mapping):
            raise HTTPException(502, "inventory.get_stock: unexpected reply")
        stock = reply.get(product_id)
        if stock is None:
            raise HTTPException(404, f"unknown product {product_id!r}")
        return {"product_id": product_id, "stock": stock}

    # ----------------------------------------------------------------- logs

    async def latest(pattern: str, limit: int, source: str | None) -> list[dict[str, Any]]:
        timeout = settings.call_timeout_s
        payload: dict[str, Any] = {"limit": limit}
        if source is not None:
            payload["source"] = source
        try:
            reply = await call(pattern, payload, timeout=timeout)
        except (TimeoutError, BrokerError, RemoteError) as exc:
            raise _upstream(pattern, exc, timeout) from None
        if not isinstance(reply, list):
            raise HTTPException(502, f"{pattern}: unexpected reply")
        return reply

    @app.get(
        "/logs/stats",
        responses=_problems(401, 403, 502, 503, 504),
        tags=["logs"],
        summary="The latest log.stats windows (scope logs:read)",
    )
    async def recent_log_stats(
        claims: Annotated[Claims, Depends(require_scope("logs:read"))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        source: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    ) -> list[dict[str, Any]]:
        """Asks the log-analytics service (``logs.recent_stats``) for its latest window stats,
        oldest first: the history a dashboard draws before live ``log.stats`` events arrive."""
        return await latest("logs.recent_stats", limit, source)

    @app.get(
        "/logs/alerts",
        responses=_problems(401, 403, 502, 503, 504),
        tags=["logs"],
        summary="The latest log.alert values (scope logs:read)",
    )
    async def recent_log_alerts(
        claims: Annotated[Claims, Depends(require_scope("logs:read"))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        source: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    ) -> list[dict[str, Any]]:
        """Asks the log-analytics service (``logs.recent_alerts``) for its latest alerts, oldest first."""
        return await latest("logs.recent_alerts", limit, source)

    # ----------------------------------------------------------------- auth

    @app.post(
        "/auth/login",
        response_model=Token,
        responses={
            401: {"model": Problem, "description": "invalid username or password"},
            429: {"model": Problem, "description": "too many failed attempts; see Retry-After"},
            **_problems(502, 503, 504),
        },
        tags=["auth"],
        summary="Exchange a username and password for an access token",
    )
    async def login(body: LoginRequest, request: Request) -> JSONResponse:
        timeout = settings.login_timeout_s
        payload: dict[str, Any] = {"username": body.username, "password": body.password.get_secret_value()}
        if request.client is not None and request.client.host:
            payload["client"] = f"ip:{request.client.host}"[:256]
        try:
            # keyed by username: one username's attempts queue behind each other
            token = await call("auth.login", payload, timeout=timeout, key=body.username)
        except RemoteError as exc:
            throttled = TooManyAttemptsError.from_remote(exc)
            if throttled is not None:
                raise HTTPException(
                    429, str(throttled), headers={"Retry-After": str(throttled.retry_after_s)}
                ) from None
            if exc.remote_type == "AuthenticationError":
                raise _unauthorized(INVALID_CREDENTIALS) from None
            if exc.remote_type == "ValidationError":
                raise HTTPException(422, exc.remote_message) from None
            raise _upstream("auth.login", exc, timeout) from None
        except (TimeoutError, BrokerError) as exc:
            raise _upstream("auth.login", exc, timeout) from None
        if not isinstance(token, Mapping) or not isinstance(token.get("access_token"), str):
            raise HTTPException(502, "auth.login: unexpected reply")
        return JSONResponse(
            Token.model_validate(token).model_dump(),
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},  # RFC 6749 §5.1
        )

    # ----------------------------------------------------------------- operations

    @app.get("/healthz", tags=["operations"], summary="Liveness: 200 while the process runs")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
        tags=["operations"],
        summary="Readiness: 200 when every check is true, else 503",
    )
    async def readyz() -> JSONResponse:
        warmup.start()
        checks: dict[str, Any] = {"request_reply": warmup.ready}
        error = None
        if readiness is not None:
            try:
                async with asyncio.timeout(settings.readiness_timeout_s):
                    reported = await readiness()
                checks.update({str(k): v for k, v in dict(reported).items()})
            except Exception as exc:  # noqa: BLE001 - a failing check means not ready
                checks["readiness"] = False
                error = "readiness check timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        if not warmup.ready and warmup.error:
            error = error or warmup.error
        ready = _all_true(checks)
        body = {"status": "ready" if ready else "not ready", "checks": checks, "error": error}
        return JSONResponse(body, status_code=200 if ready else 503)

    if metrics is not None:

        @app.get("/metrics", include_in_schema=False)
        async def metrics_endpoint() -> Response:
            rendered = metrics.render()
            if inspect.isawaitable(rendered):
                rendered = await rendered
            return Response(rendered, media_type=getattr(metrics, "content_type", "text/plain; charset=utf-8"))

    # ----------------------------------------------------------------- websocket

    if ws_server is not None:

        @app.websocket("/ws")
        async def notifications_ws(websocket: WebSocket) -> None:
            token = _bearer_token(websocket.headers.get("authorization")) or websocket.query_params.get("token")
            await websocket.accept()
            try:
                if not token:
                    raise AuthenticationError("missing token")
                claims = verify_token(jwt, token)
            except AuthenticationError as exc:
                await websocket.close(CLOSE_UNAUTHORIZED, f"unauthorized: {exc.reason}")
                return
            granted = claims.scopes

            def allowed(channel: str) -> bool:
                needed = CHANNEL_SCOPES.get(channel)
                return needed is not None and needed in granted

            transport = StarletteTransport(websocket)
            async with asyncio.TaskGroup() as tasks:
                expiry = tasks.create_task(_close_at_expiry(transport, claims, jwt.leeway_s))
                try:
                    await ws_server.serve(transport, allowed_channels=allowed)
                finally:
                    expiry.cancel()

    if static_dir is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=Path(static_dir), html=True), name="static")
    return app


async def _close_at_expiry(transport: StarletteTransport, claims: Claims, leeway_s: float) -> None:
    """Close the websocket with 4401 when its token expires (as verify_token would judge it)."""
    await asyncio.sleep(max(0.0, claims.expires_at + leeway_s - time.time()))
    await transport.close(CLOSE_UNAUTHORIZED, "unauthorized: token expired")
