"""Running services as a long-lived process: :func:`run` (sync) and :func:`serve` (async).

``run`` is to services what ``uvicorn.run`` is to an ASGI app::

    broker = KafkaBroker("localhost:9092")
    orders = Microservice(broker, [Orders()], name="orders")

    if __name__ == "__main__":
        sys.exit(reactive_services.run(orders))          # or: reactive-services run app:orders

What to run (the ``target``) is one :class:`~reactive_services.Microservice`, a sequence of
them, a :class:`System` (services plus an ASGI app and shutdown callbacks), or a factory: a
callable without arguments, sync or async, returning one of those. A factory is called inside
the event loop, after the signal handlers are installed, so it may open databases and start
brokers; if it raises, nothing else has started.

Start, in order: the brokers of the services that are not started yet (they are stopped at
the end; a service made with ``own_broker=True`` starts and stops its broker itself), the
services in order, then the ASGI app on uvicorn (``host``/``port``, bound before any service
starts, so that a taken port is a :class:`ConfigError`). Then ``on_ready(Running(services,
url))`` is called.

Shutdown, on the first SIGTERM or SIGINT (or when ``stop`` is set, or the app's server ends
by itself):

1. every service stops fetching, in reverse order; the record in hand and the work it
   tracked finish (at most ``shutdown_timeout_s`` seconds), handled offsets are committed and
   the pipelines complete (``on_completed``: buffers and windows flush);
2. the ``on_services_stopped`` callbacks run in order, while the app still serves (e.g. let
   a websocket hub flush its clients' queues and close them with 1001);
3. the app's server stops: it stops accepting, finishes the open requests (at most
   ``app_shutdown_timeout_s`` seconds) and runs the app's lifespan shutdown;
4. the ``on_stopped`` callbacks run in order (flush producers, close databases);
5. the brokers :func:`serve` started are stopped.

A second signal during the shutdown is ignored (the timeouts bound it). A step that fails is
logged and the next steps still run; the result is then 1 instead of 0. If starting fails,
what started is stopped, the ``on_stopped`` callbacks run, and the error is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from reactive_services.adapters import Broker

from ._runtime import Microservice
from .errors import ConfigError

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ASGIApp", "Callback", "RunTarget", "Running", "System", "listen", "run", "serve"]

log = logging.getLogger("reactive_services.run")

#: A shutdown callback without arguments: a coroutine function (awaited) or a plain function
#: (called; an awaitable it returns is awaited too); its result is ignored.
Callback: TypeAlias = Callable[[], Awaitable[object] | object]

#: The largest websocket frame the app's server accepts by default, in bytes (``ws_max_size``).
WS_MAX_SIZE = 1024 * 1024

#: An ASGI 3 application (FastAPI, Starlette...): ``await app(scope, receive, send)``.
ASGIApp: TypeAlias = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


@dataclass
class System:
    """What one process runs: services, an optional ASGI app, and shutdown callbacks.

    Like faststream's ``FastStream(broker, ...)`` application object; return one from a
    factory to set up resources inside the event loop::

        async def system() -> System:
            store = await open_store("orders.db")
            return System([Microservice(broker, [Orders(store)], name="orders")], on_stopped=[store.close])

    Attributes:
        services: the Microservices, started in order and stopped in reverse order.
        app: an ASGI application served by uvicorn while the services run (None: no HTTP).
        on_services_stopped: callbacks (coroutine functions, or plain functions) run in order, once the services
            stopped and before the app's server stops (step 2 of the shutdown).
        on_stopped: callbacks (coroutine functions, or plain functions) run in order, after the app's server stopped
            (step 4); they also run when starting failed.
    """

    services: Sequence[Microservice] = ()
    app: ASGIApp | None = None
    on_services_stopped: Sequence[Callback] = ()
    on_stopped: Sequence[Callback] = ()


@dataclass(frozen=True)
class Running:
    """What :func:`serve` passes to ``on_ready`` once everything runs.

    Attributes:
        services: the started services, in start order.
        url: the app's base URL, ``"http://HOST:PORT/"`` (the real port when 0 was asked);
            None without an app.
    """

    services: tuple[Microservice, ...]
    url: str | None = None


#: What :func:`run` and :func:`serve` accept: a Microservice, a sequence of them, a System,
#: or a callable without arguments (sync or async) returning one of those.
RunTarget: TypeAlias = (
    Microservice
    | Sequence[Microservice]
    | System
    | Callable[
        [], "Microservice | Sequence[Microservice] | System | Awaitable[Microservice | Sequence[Microservice] | System]"
    ]
)


def run(
    target: RunTarget,
    *,
    app: ASGIApp | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[Running], object] | None = None,
    on_services_stopped: Sequence[Callback] = (),
    on_stopped: Sequence[Callback] = (),
    shutdown_timeout_s: float = 30.0,
    app_shutdown_timeout_s: float = 10.0,
    uvicorn_options: Mapping[str, Any] | None = None,
) -> int:
    """Run ``target`` until SIGTERM / SIGINT, then stop it gracefully: ``asyncio.run(serve(...))``.

    The entry point of a process (as ``uvicorn.run``); inside a running event loop use
    :func:`serve`. The arguments are :func:`serve`'s.

    Returns:
        the exit code: 0 after a graceful shutdown, 1 when a shutdown step failed (logged).

    Raises:
        ConfigError: a bad argument, a target that is not services, or the app cannot listen
            on ``host``:``port``.
        BrokerUnavailableError: a broker cannot be reached at start.
        RuntimeError: called while an asyncio loop runs in this thread (use ``await serve(...)``).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run() starts its own event loop; inside a running loop use `await serve(...)`")
    return asyncio.run(
        serve(
            target,
            app=app,
            host=host,
            port=port,
            on_ready=on_ready,
            on_services_stopped=on_services_stopped,
            on_stopped=on_stopped,
            shutdown_timeout_s=shutdown_timeout_s,
            app_shutdown_timeout_s=app_shutdown_timeout_s,
            uvicorn_options=uvicorn_options,
        )
    )


async def serve(
    target: RunTarget,
    *,
    app: ASGIApp | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[Running], object] | None = None,
    on_services_stopped: Sequence[Callback] = (),
    on_stopped: Sequence[Callback] = (),
    shutdown_timeout_s: float = 30.0,
    app_shutdown_timeout_s: float = 10.0,
    uvicorn_options: Mapping[str, Any] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Start ``target``, run until SIGTERM / SIGINT (or ``stop``), then stop it gracefully.

    See the module docstring for the start and shutdown sequences.

    Args:
        target: a Microservice, a sequence of them, a :class:`System`, or a factory (a
            callable without arguments, sync or async) returning one of those.
        app: an ASGI app to serve on uvicorn while the services run (or ``System.app``; not both).
        host: the address the app listens on.
        port: the app's port (0: any free port; ``on_ready`` gets the real one).
        on_ready: called once everything runs, with a :class:`Running` (the services and the
            app's URL).
        on_services_stopped: callbacks after the services stopped, before the app's server
            stops (run after the System's own).
        on_stopped: callbacks after the app's server stopped (run after the System's own).
        shutdown_timeout_s: seconds each service may take to finish its in-flight work (> 0).
        app_shutdown_timeout_s: seconds the app's server may take to finish open requests (> 0).
        uvicorn_options: extra ``uvicorn.Config`` arguments (defaults: ``log_level="warning"``,
            ``timeout_graceful_shutdown=app_shutdown_timeout_s``, ``ws_max_size=WS_MAX_SIZE``
            (1 MiB, not uvicorn's 16 MiB: a larger websocket frame is closed 1009 before it is
            buffered whole); the socket and the signal handling are :func:`serve`'s).
        stop: set it to ask for the shutdown (as a signal does).

    Returns:
        0 after a graceful shutdown; 1 when a shutdown step failed or the app's server ended
        by itself (logged).

    Raises:
        ConfigError: a bad argument, a target that is not services, ``app`` given twice, or
            the app cannot listen on ``host``:``port`` (nothing was started).
        BrokerUnavailableError: a broker cannot be reached at start.
        Exception: whatever the factory, a service's or the app's start raised.
    """
    if not shutdown_timeout_s > 0:
        raise ConfigError("shutdown_timeout_s", f"must be > 0 seconds, got {shutdown_timeout_s!r}")
    if not app_shutdown_timeout_s > 0:
        raise ConfigError("app_shutdown_timeout_s", f"must be > 0 seconds, got {app_shutdown_timeout_s!r}")
    if not 0 <= port <= 65535:
        raise ConfigError("port", f"must be in 0..65535, got {port}")
    stop = stop or asyncio.Event()
    with _signals_set(stop):
        system = await _resolve(target)
        process = _Process(
            services=list(system.services),
            app=app if app is not None else system.app,
            on_services_stopped=[*system.on_services_stopped, *on_services_stopped],
            on_stopped=[*system.on_stopped, *on_stopped],
            shutdown_timeout_s=shutdown_timeout_s,
            app_shutdown_timeout_s=app_shutdown_timeout_s,
        )
        try:
            if app is not None and system.app is not None:  # after the factory: its on_stopped still run
                raise ConfigError("app", "given twice: as an argument and in the System")
            url = await process.start(host, port, uvicorn_options or {})
        except BaseException:
            await process.abort()
            raise
        if on_ready is not None:
            on_ready(Running(tuple(process.services), url))
        await process.wait(stop)
        log.info("shutting down %d service(s)", len(process.services))
        return await process.shutdown()


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Generator[None, None, None]:
    """SIGTERM and SIGINT set ``stop`` while inside (where the loop can install handlers)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _resolve(target: object) -> System:
    """The :class:`System` that ``target`` (or what the factory ``target`` returns) describes.

    Raises:
        ConfigError("services", ...): not a Microservice, a sequence of them, a System or a factory.
    """
    if callable(target) and not isinstance(target, (Microservice, System)):
        made = target()
        if inspect.isawaitable(made):
            made = await made
        described = _as_system(made)
        if described is None:
            raise ConfigError(
                "services",
                f"the factory {_name(target)} returned {_describe(made)}, "
                "not a Microservice, a list of them or a System",
            )
        return described
    described = _as_system(target)
    if described is None:
        raise ConfigError(
            "services", f"{_describe(target)} is not a Microservice, a list of them, a System or a factory"
        )
    return described


def _as_system(value: object) -> System | None:
    if isinstance(value, System):
        return System(list(value.services), value.app, list(value.on_services_stopped), list(value.on_stopped))
    if isinstance(value, Microservice):
        return System([value])
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping)):
        items = list(value)
        if all(isinstance(item, Microservice) for item in items):
            return System(items)
    return None


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


class _Server:
    """The uvicorn server of the app, without uvicorn's own signal handling (:func:`serve` owns it)."""

    def __init__(self, app: ASGIApp, options: Mapping[str, Any], timeout_s: float) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        settings: dict[str, Any] = {
            "log_level": "warning",
            "timeout_graceful_shutdown": timeout_s,
            "ws_max_size": WS_MAX_SIZE,
            **options,
        }
        self.server: uvicorn.Server = Server(uvicorn.Config(app, **settings))
        self.timeout_s = float(settings["timeout_graceful_shutdown"] or timeout_s)
        self.task: asyncio.Task[None] | None = None

    async def start(self, listener: socket.socket) -> str:
        """Serve on ``listener`` until :meth:`stop`; returns ``"http://HOST:PORT/"`` once accepting."""
        self.task = asyncio.create_task(self.server.serve(sockets=[listener]), name="rs-asgi-app")
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises what stopped it
                raise RuntimeError("the app's server ended while starting (see its log)")
            await asyncio.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/"

    async def stop(self) -> None:
        """Stop accepting, finish open requests (bounded), run the lifespan shutdown."""
        if self.task is None:
            return
        self.server.should_exit = True
        done, _ = await asyncio.wait([self.task], timeout=self.timeout_s + 5.0)
        if not done:
            self.server.force_exit = True
            self.task.cancel()
            raise TimeoutError(f"the app's server did not stop within {self.timeout_s + 5.0:g} s")
        error = None if self.task.cancelled() else self.task.exception()
        if error is not None:
            raise error


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: any free port), bound before
    anything starts so that a taken port or a bad host is a configuration error.

    Raises:
        ConfigError("host", ...): ``host`` does not resolve.
        ConfigError("port", ...): the address cannot be bound (e.g. the port is in use).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, OverflowError) as exc:
        raise ConfigError("host", f"cannot resolve {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError("port", f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


@dataclass
class _Process:
    """One :func:`serve` call's state: what started, and how to stop it."""

    services: list[Microservice]
    app: ASGIApp | None
    on_services_stopped: list[Callback]
    on_stopped: list[Callback]
    shutdown_timeout_s: float
    app_shutdown_timeout_s: float

    def __post_init__(self) -> None:
        self.brokers: list[Broker] = []  # started here, stopped at the end
        self.started: list[Microservice] = []
        self.server: _Server | None = None
        self.listener: socket.socket | None = None
        self.code = 0

    async def start(self, host: str, port: int, uvicorn_options: Mapping[str, Any]) -> str | None:
        if self.app is not None:
            self.listener = listen(host, port)
            self.server = _Server(self.app, uvicorn_options, self.app_shutdown_timeout_s)
        for service in self.services:
            broker: Broker = service.broker
            if service._own:  # own_broker=True: the service starts and stops it itself
                continue
            if not broker.started and not any(b is broker for b in self.brokers):
                await broker.start()
                self.brokers.append(broker)
        for service in self.services:
            await service.start()
            self.started.append(service)
        if self.server is None or self.listener is None:
            return None
        listener, self.listener = self.listener, None
        return await self.server.start(listener)

    async def wait(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set, or the app's server ends by itself (then the result is 1)."""
        stopping = asyncio.ensure_future(stop.wait())
        waits: list[asyncio.Future[Any]] = [stopping]
        if self.server is not None and self.server.task is not None:
            waits.append(self.server.task)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not stop.is_set():
            log.error("the app's server ended by itself; stopping the services")
            self.code = 1

    async def shutdown(self) -> int:
        await self._stop_services(self.shutdown_timeout_s)
        await self._callbacks(self.on_services_stopped)
        await self._step("stopping the app's server", self._stop_server)
        await self._callbacks(self.on_stopped)
        await self._stop_brokers()
        return self.code

    async def abort(self) -> None:
        """After a failed start: stop what started (short timeouts), run ``on_stopped``."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        await self._step("stopping the app's server", self._stop_server)
        await self._stop_services(min(5.0, self.shutdown_timeout_s))
        await self._callbacks(self.on_stopped)
        await self._stop_brokers()

    async def _stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop()

    async def _stop_services(self, timeout_s: float) -> None:
        for service in reversed(self.started):
            await self._step(f"stopping {service.name}", functools.partial(service.stop, timeout=timeout_s))
        self.started.clear()

    async def _callbacks(self, callbacks: Sequence[Callback]) -> None:
        for callback in callbacks:
            await self._step(f"shutdown step {_name(callback)}", callback)

    async def _stop_brokers(self) -> None:
        for broker in reversed(self.brokers):
            await self._step(f"stopping the {broker.kind} broker", broker.stop)
        self.brokers.clear()

    async def _step(self, what: str, step: Callable[[], Awaitable[object] | object]) -> None:
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # keep stopping the rest
            log.error("%s failed: %s", what, exc)
            self.code = 1
