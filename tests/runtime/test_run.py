"""``reactive_services.run`` / ``serve``: what they accept, the start and shutdown sequences, failures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest

from reactive_services import Controller, Microservice, Running, System, event_pattern, run, serve
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ConfigError
from reactive_services.testing import unique_name, wait_for


class Seen(Controller):
    def __init__(self) -> None:
        self.values: list[Any] = []

    @event_pattern("run.events")
    async def handle(self, payload: Any) -> None:
        self.values.append(payload)


def make_service(broker: InMemoryBroker, name: str = "seen") -> tuple[Microservice, Seen]:
    seen = Seen()
    return Microservice(broker, [seen], name=name, namespace=unique_name("n") + "."), seen


async def hello_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """A minimal ASGI app: ``GET /`` -> 200 ``ok``; lifespan accepted."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def http_get(url: str) -> str:
    """The body of ``GET url`` (HTTP/1.0, no keep-alive)."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1].decode()


async def start(target: Any, **kwargs: Any) -> tuple[asyncio.Task[int], asyncio.Event, Running]:
    """``serve(target, ...)`` in a task, once it is ready."""
    stop, ready = asyncio.Event(), asyncio.Event()
    running: list[Running] = []

    def on_ready(info: Running) -> None:
        running.append(info)
        ready.set()

    task = asyncio.create_task(serve(target, stop=stop, on_ready=on_ready, **kwargs))
    done, _ = await asyncio.wait([task, asyncio.ensure_future(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises why it ended
        raise AssertionError("serve returned before it was ready")
    return task, stop, running[0]


async def test_serve_starts_the_broker_and_the_service_and_stops_both_gracefully() -> None:
    broker = InMemoryBroker()
    service, seen = make_service(broker)
    task, stop, running = await start(service)
    assert broker.started and service.started
    assert running == Running(services=(service,), url=None)
    topic = service.namespace + "run.events"
    await broker.emit(topic, {"i": 1})
    await wait_for(lambda: seen.values == [{"i": 1}], what="the event handled")
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0
    assert not service.started and not broker.started  # serve started the broker, so it stopped it
    partitions = await broker.end_offsets(topic)
    committed = [await broker.committed(service.group_id, topic, p) or 0 for p in partitions]
    assert sum(committed) == 1  # handled, then committed before the source closed


async def test_a_broker_started_by_the_caller_is_left_running() -> None:
    async with InMemoryBroker() as broker:
        service, _ = make_service(broker)
        task, stop, _ = await start([service])
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0
        assert broker.started and not service.started


@pytest.mark.parametrize("shape", ["list", "factory", "async factory", "system", "async system factory"])
async def test_every_target_shape_runs_its_services(shape: str) -> None:
    broker = InMemoryBroker()
    services = [make_service(broker, "a")[0], make_service(broker, "b")[0]]

    async def make_system() -> System:
        return System(services)

    targets: dict[str, Any] = {
        "list": services,
        "factory": lambda: services,
        "async factory": lambda: asyncio.sleep(0, services),
        "system": System(services),
        "async system factory": make_system,
    }
    task, stop, running = await start(targets[shape])
    assert running.services == tuple(services) and all(s.started for s in services)
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0
    assert not any(s.started for s in services) and not broker.started


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (42, "int 42 is not a Microservice"),
        ("orders", "is not a Microservice"),
        (lambda: None, "returned NoneType None, not a Microservice"),
    ],
)
async def test_what_is_not_services_is_a_configuration_error(target: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        await serve(target)
    assert caught.value.key == "services"


async def test_a_list_with_something_else_in_it_is_refused_and_nothing_starts() -> None:
    broker = InMemoryBroker()
    service, _ = make_service(broker)
    with pytest.raises(ConfigError) as caught:
        await serve([service, "x"])
    assert caught.value.key == "services" and not broker.started and not service.started


async def test_bad_arguments_are_configuration_errors() -> None:
    service, _ = make_service(InMemoryBroker())
    for kwargs, key in (
        ({"shutdown_timeout_s": 0}, "shutdown_timeout_s"),
        ({"app_shutdown_timeout_s": -1}, "app_shutdown_timeout_s"),
        ({"port": 70000}, "port"),
        ({"app": hello_app}, "app"),  # the System has one too
    ):
        with pytest.raises(ConfigError) as caught:
            await serve(System([service], app=hello_app), **kwargs)
        assert caught.value.key == key


async def test_the_shutdown_sequence_services_then_callbacks_then_app_then_callbacks_then_broker() -> None:
    broker = InMemoryBroker()
    service, _ = make_service(broker)
    steps: list[str] = []
    url: list[str] = []

    async def services_stopped() -> None:
        assert not service.started and broker.started
        assert await http_get(url[0]) == "ok"  # the app still serves
        steps.append("on_services_stopped")

    async def stopped() -> None:
        with pytest.raises(OSError):  # the app's server is closed
            await http_get(url[0])
        assert broker.started  # stopped last, after the callbacks
        steps.append("on_stopped")

    async def extra() -> None:
        steps.append("on_stopped from serve's argument")

    system = System([service], app=hello_app, on_services_stopped=[services_stopped], on_stopped=[stopped])
    task, stop, running = await start(system, port=0, on_stopped=[extra])
    assert running.url is not None and running.url.startswith("http://127.0.0.1:")
    url.append(running.url)
    assert await http_get(running.url) == "ok"
    stop.set()
    assert await asyncio.wait_for(task, 30) == 0
    assert steps == ["on_services_stopped", "on_stopped", "on_stopped from serve's argument"]
    assert not broker.started


async def test_a_failing_step_makes_the_result_1_and_the_later_steps_still_run() -> None:
    broker = InMemoryBroker()
    service, _ = make_service(broker)
    ran: list[str] = []

    async def fails() -> None:
        raise RuntimeError("disk full")

    async def after() -> None:
        ran.append("after")

    task, stop, _ = await start(service, on_stopped=[fails, after])
    stop.set()
    assert await asyncio.wait_for(task, 20) == 1
    assert ran == ["after"] and not broker.started


class FailingStart(Microservice):
    async def start(self) -> None:
        raise RuntimeError("cannot subscribe")


async def test_a_failed_start_stops_what_started_runs_on_stopped_and_raises() -> None:
    broker = InMemoryBroker()
    first, _ = make_service(broker, "first")
    second = FailingStart(broker, [Seen()], name="second")
    ran: list[str] = []

    async def cleanup() -> None:
        ran.append("cleanup")

    async def not_run() -> None:
        ran.append("on_services_stopped")  # a drain step: only after a started system

    system = System([first, second], on_services_stopped=[not_run], on_stopped=[cleanup])
    with pytest.raises(RuntimeError, match="cannot subscribe"):
        await serve(system)
    assert ran == ["cleanup"]
    assert not first.started and not broker.started


async def test_a_taken_port_is_a_configuration_error_before_any_service_starts() -> None:
    broker = InMemoryBroker()
    service, _ = make_service(broker)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=str(port)) as caught:
            await serve(service, app=hello_app, port=port)
    assert caught.value.key == "port"
    assert not broker.started and not service.started


async def test_a_host_that_does_not_resolve_is_a_configuration_error() -> None:
    service, _ = make_service(InMemoryBroker())
    with pytest.raises(ConfigError) as caught:
        await serve(service, app=hello_app, host="no-such-host.invalid", port=0)
    assert caught.value.key == "host"


async def test_a_service_that_owns_its_broker_starts_and_stops_it_itself() -> None:
    broker = InMemoryBroker()
    service = Microservice(broker, [Seen()], name="own", own_broker=True)
    task, stop, _ = await start(service)
    assert broker.started and service.started
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0
    assert not broker.started


async def test_plain_functions_are_callbacks_too() -> None:
    broker = InMemoryBroker()
    service, _ = make_service(broker)
    ran: list[str] = []
    task, stop, _ = await start(service, on_services_stopped=[lambda: ran.append("sync")], on_stopped=[ran.clear])
    stop.set()
    assert await asyncio.wait_for(task, 20) == 0
    assert ran == []  # appended by the first, cleared by the second: both ran, in order


async def test_run_inside_a_running_loop_points_to_serve() -> None:
    service, _ = make_service(InMemoryBroker())
    with pytest.raises(RuntimeError, match=r"await serve\(\.\.\.\)"):
        run(service)


async def test_a_microservice_started_twice_is_refused() -> None:
    async with InMemoryBroker() as broker:
        service, _ = make_service(broker)
        await service.start()
        try:
            with pytest.raises(RuntimeError, match="started already"):
                await service.start()
        finally:
            await service.stop()
        await service.start()  # once stopped it starts again
        await service.stop()
