"""Running services as a long-lived process: stop on SIGTERM / SIGINT, gracefully.

Shutdown sequence (:func:`run_until_signal`), on the first SIGTERM or SIGINT:

1. every :class:`~reactive_services.Microservice` stops fetching; the record in hand and the
   work it tracked finish (at most ``shutdown_timeout_s`` seconds), handled offsets are
   committed and the pipelines complete (``on_completed``: buffers and windows flush);
2. the ``on_stopped`` callbacks run in order (flush the producer, close websocket clients
   with 1001, close databases);
3. the function returns 0; a second signal during shutdown is ignored (the timeout bounds it).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

from ._runtime import Microservice

__all__ = ["run_until_signal"]

log = logging.getLogger("reactive_services.lifecycle")


async def run_until_signal(
    services: Sequence[Microservice],
    *,
    on_stopped: Sequence[Callable[[], Awaitable[object]]] = (),
    shutdown_timeout_s: float = 30.0,
    stop: asyncio.Event | None = None,
) -> int:
    """Run started ``services`` until SIGTERM or SIGINT (or ``stop`` is set), then stop them gracefully.

    Args:
        services: started services; stopped in reverse order.
        on_stopped: coroutine functions awaited after the services stopped, in order.
        shutdown_timeout_s: seconds each service may take to finish its in-flight work.
        stop: an extra way to ask for the shutdown (tests).

    Returns:
        0 when the shutdown completed; 1 when a service or callback failed while stopping
        (the failure is logged).
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    try:
        await stop.wait()
        log.info("shutting down %d service(s)", len(services))
        code = 0
        for service in reversed(services):
            try:
                await service.stop(timeout=shutdown_timeout_s)
            except Exception as exc:  # keep stopping the others
                log.error("stopping %s failed: %s", service.name, exc)
                code = 1
        for callback in on_stopped:
            try:
                await callback()
            except Exception as exc:
                log.error("shutdown step failed: %s", exc)
                code = 1
        return code
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
