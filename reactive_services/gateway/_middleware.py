"""ASGI middleware of a gateway: the request-body size limit (413) and per-request metrics.

Both are plain ASGI (they work under any Starlette / FastAPI app) and only look at ``http``
requests; websockets and the lifespan pass through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

log = logging.getLogger("reactive_services.gateway")

#: A body over the limit is read on (and discarded) up to this many more bytes before the 413
#: is sent, so that the client, still sending, reads the answer instead of a connection reset.
DRAIN_BYTES = 1024 * 1024
#: ... for at most this many seconds.
DRAIN_TIMEOUT_S = 2.0


class BodyLimitMiddleware:
    """ASGI middleware: refuse request bodies over ``max_bytes`` (bytes) with 413, before the app sees them.

    Install with ``app.add_middleware(BodyLimitMiddleware, max_bytes=65536)``.

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
                await plain_response(send, 400, "invalid Content-Length")
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
            await plain_response(send, 413, f"request body too large: at most {self.max_bytes} bytes", close=True)
            return
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                drained = 0
                while drained <= DRAIN_BYTES:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    drained += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            pass
        await plain_response(send, 413, f"request body too large: at most {self.max_bytes} bytes", close=True)


async def plain_response(send: Any, status: int, detail: str, *, close: bool = False) -> None:
    """Send a whole ``{"detail": detail}`` JSON response on the ASGI ``send`` (with
    ``Connection: close`` when ``close``)."""
    body = JSONResponse({"detail": detail}).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestMetricsMiddleware:
    """ASGI middleware: call ``observe(route, method, status, seconds)`` once per HTTP request.

    Install with ``app.add_middleware(RequestMetricsMiddleware, observe=metrics.observe_request)``
    (added last, it is the outermost: it sees the 413s of :class:`BodyLimitMiddleware` too).

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
