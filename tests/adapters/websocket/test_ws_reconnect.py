"""connect(reconnect=...): backoff with jitter, resuming from the last cursor across a server
restart, recovery_failed surfaced, and the codes that end the stream (issue 15 item 2)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from resumekit import gateway, publish

from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.websocket import ConnectionState, Reconnect, WebSocketServer, connect
from reactive_services.errors import ConfigError, ConnectionClosedError, WebSocketError

pytestmark = pytest.mark.timeout(30)

TOPIC = "ev"
FAST = Reconnect(initial_s=0.05, max_s=0.2)


class Collector:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.completed = False

    def on_next(self, frame: dict[str, Any]) -> None:
        self.items.append(frame)

    def on_error(self, error: BaseException) -> None:
        self.error = error

    def on_completed(self) -> None:
        self.completed = True

    def numbers(self) -> list[int]:
        return [f["event"]["n"] for f in self.items if f["type"] == "event"]

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    policy = Reconnect(initial_s=1.0, max_s=5.0, multiplier=2.0, jitter=0.5, random=lambda: 1.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 2.5, 2.5]
    no_jitter = Reconnect(initial_s=1.0, max_s=5.0, jitter=0.0)
    assert [no_jitter.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    full = Reconnect(initial_s=1.0, jitter=1.0)
    assert all(0.0 <= full.delay(1) <= 1.0 for _ in range(100))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"initial_s": 0}, "initial_s"),
        ({"initial_s": 2, "max_s": 1}, "max_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_reconnect_settings_are_checked(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Reconnect(**kwargs)


async def test_resumes_from_its_last_cursor_across_a_server_restart() -> None:
    port = free_port()
    states: list[ConnectionState] = []
    got = Collector()
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=2)
        async with gateway(broker, [TOPIC], port=port) as server:
            sub = connect(
                server.url, subscribe=["c"], events_only=True, reconnect=FAST, on_state=states.append
            ).subscribe(got)
            await got.wait(lambda c: "open" in states)
            await asyncio.sleep(0.1)  # subscribed
            await publish(broker, TOPIC, range(3))
            await got.wait(lambda c: len(c.items) == 3)
        # the server is gone (closed with 1001): the client tries again and again, refused
        await publish(broker, TOPIC, range(3, 8))
        await got.wait(lambda c: states.count("reconnecting") >= 2)
        async with gateway(broker, [TOPIC], port=port):  # another instance, same address
            await got.wait(lambda c: len(c.items) == 8)
            await publish(broker, TOPIC, range(8, 10))
            await got.wait(lambda c: len(c.items) == 10)
            assert got.numbers() == list(range(10))
            assert got.error is None and not got.completed
            sub.dispose()
        await asyncio.sleep(0.05)
    assert states[:2] == ["connecting", "open"]
    assert "reconnecting" in states and states[-1] == "closed"


async def test_a_client_that_saw_no_event_resumes_from_the_subscribed_cursor() -> None:
    port = free_port()
    got = Collector()
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC], port=port) as server:
            sub = connect(server.url, subscribe=["c"], reconnect=FAST).subscribe(got)
            await got.wait(lambda c: any(f["type"] == "subscribed" for f in c.items))
        await publish(broker, TOPIC, range(4))
        async with gateway(broker, [TOPIC], port=port):
            await got.wait(lambda c: len(c.numbers()) == 4)
            assert got.numbers() == [0, 1, 2, 3]
            sub.dispose()


async def test_recovery_failed_is_surfaced_and_the_live_stream_follows() -> None:
    reasons: list[str] = []
    got = Collector()
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC]) as server:
            sub = connect(
                server.url,
                subscribe=["c"],
                since="v1.not-a-cursor",
                reconnect=FAST,
                on_recovery_failed=reasons.append,
            ).subscribe(got)
            await got.wait(lambda c: any(f["type"] == "recovery_failed" for f in c.items))
            [reason] = reasons
            assert reason.startswith("malformed cursor: ") and "JSON" in reason, reason
            await publish(broker, TOPIC, range(2))
            await got.wait(lambda c: len(c.numbers()) == 2)
            sub.dispose()


async def test_gives_up_after_max_attempts() -> None:
    got = Collector()
    states: list[ConnectionState] = []
    connect(
        f"ws://127.0.0.1:{free_port()}",
        subscribe=["c"],
        reconnect=Reconnect(initial_s=0.01, max_s=0.02, max_attempts=3),
        on_state=states.append,
    ).subscribe(got)
    await got.wait(lambda c: c.error is not None)
    assert isinstance(got.error, WebSocketError)
    assert states.count("connecting") == 3 and states.count("reconnecting") == 2


async def test_a_refused_subscribe_is_not_retried() -> None:
    got = Collector()
    async with WebSocketServer("127.0.0.1", 0, ping_interval=None) as server:
        server.connections.subscribe(lambda conn: setattr(conn, "_allowed", lambda channel: False))
        connect(server.url, subscribe=["c"], reconnect=FAST).subscribe(got)
        await got.wait(lambda c: c.error is not None)
    assert isinstance(got.error, ConnectionClosedError) and got.error.code == 4403


async def test_without_reconnect_a_going_away_completes() -> None:
    got = Collector()
    async with WebSocketServer("127.0.0.1", 0, ping_interval=None) as server:
        connect(server.url, subscribe=["c"]).subscribe(got)
        await got.wait(lambda c: len(c.items) == 1)
    await got.wait(lambda c: c.completed)
