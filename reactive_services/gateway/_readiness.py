"""Readiness of a gateway: its request-reply consumers warmed up, plus the checks of its services.

A gateway sends requests (``ClientProxy.send``) and reads their replies with consumers that
join their groups on first use; :class:`ReplyWarmup` starts them in the background at startup,
so that the first requests do not pay for the join. :func:`readiness_report` builds the body of
``GET /readyz`` from the warm-up and an optional ``readiness()`` check (such as
:func:`reactive_services.readiness.readiness`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from reactive_services._runtime import ClientProxy
from reactive_services.readiness import ready

log = logging.getLogger("reactive_services.gateway")


class ReplyWarmup:
    """Starts the reply consumers of ``patterns`` on ``client`` once, in the background.

    A task of its own rather than one of a task group: it may be started by a request
    (``/readyz``) that must not wait for it, and its failure must not end the app (it is logged
    and reported by :func:`readiness_report`; requests then start their consumer lazily). Call
    :meth:`start` at startup (an ASGI lifespan) and :meth:`stop` at shutdown.

    Args:
        client: the client whose reply consumers are started (``subscribe_to_response_of`` for
            each pattern, then ``connect()``).
        patterns: the request patterns the gateway sends.

    Attributes:
        ready: True once the consumers started.
        error: ``"<type>: <message>"`` of the last failed start, else None.
    """

    def __init__(self, client: ClientProxy, patterns: Iterable[str]) -> None:
        self.client = client
        self.patterns = tuple(patterns)
        self.ready = False
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start (or, after a failure, restart) the warm-up; idempotent; needs a running loop."""
        if self.ready or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-warmup")

    async def _run(self) -> None:
        try:
            for pattern in self.patterns:
                self.client.subscribe_to_response_of(pattern)
            await self.client.connect()
        except Exception as exc:  # noqa: BLE001 - reported by /readyz; requests connect lazily
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("gateway: the reply consumers could not be started: %s", self.error)
        else:
            self.ready, self.error = True, None

    async def stop(self) -> None:
        """Cancel a warm-up still running and wait for it."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


async def readiness_report(
    warmup: ReplyWarmup,
    readiness: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    *,
    timeout_s: float = 2.0,
) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)`` for ``GET /readyz``; (re)starts the warm-up if it is not running.

    ``body`` is ``{"status": "ready" | "not ready", "checks": {"request_reply": bool, ...the
    checks of readiness()}, "error": str | None}``. Ready means every bool of ``checks`` is
    true (:func:`reactive_services.readiness.ready`: top level, or one mapping deep). A
    ``readiness()`` that raises or takes more than ``timeout_s`` seconds adds
    ``"readiness": False`` and names the failure in ``error``.
    """
    warmup.start()
    checks: dict[str, Any] = {"request_reply": warmup.ready}
    error = None
    if readiness is not None:
        try:
            async with asyncio.timeout(timeout_s):
                reported = await readiness()
            checks.update({str(k): v for k, v in dict(reported).items()})
        except Exception as exc:  # noqa: BLE001 - a failing check means not ready
            checks["readiness"] = False
            error = "readiness check timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
    if not warmup.ready and warmup.error:
        error = error or warmup.error
    ok = ready(checks)
    return ok, {"status": "ready" if ok else "not ready", "checks": checks, "error": error}
