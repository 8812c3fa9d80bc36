"""The tests' own RabbitMQ servers (reactive_services.testing.local_rabbitmq, Debian's
rabbitmq-server): a message round trip through the session's server with aio-pika, and servers
of their own started side by side, each on its own ports and node, stopped for good."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest

from reactive_services.testing import local_rabbitmq

pytestmark = pytest.mark.timeout(120)


async def test_a_message_goes_through_the_sessions_server(rabbitmq_url: str) -> None:
    connection = await aio_pika.connect_robust(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b'{"n": 1}'), routing_key=queue.name)
        message = await queue.get(timeout=10)
        assert message is not None and message.body == b'{"n": 1}'
        await message.ack()
        assert await queue.get(fail=False) is None


def test_two_servers_run_side_by_side_and_stop(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    url_a = local_rabbitmq.start(first)
    try:
        url_b = local_rabbitmq.start(second)
        try:
            a, b = local_rabbitmq.status(first), local_rabbitmq.status(second)
            assert a["running"] and b["running"]
            assert a["port"] != b["port"] and a["node"] != b["node"]
            assert url_a == f"amqp://guest:guest@127.0.0.1:{a['port']}/" and url_b == b["url"]
            assert local_rabbitmq.start(first) == url_a  # running already: reused
            assert (first / "mnesia").is_dir() and (second / "mnesia").is_dir()  # state in its own folder
        finally:
            assert local_rabbitmq.stop(second)
        assert not local_rabbitmq.is_running(second)
        assert not local_rabbitmq.amqp_ok("127.0.0.1", b["port"])
        assert local_rabbitmq.is_running(first)  # the other one is untouched
        assert asyncio.run(_round_trip(url_a)) == b"still here"
    finally:
        local_rabbitmq.stop(first)
    assert not local_rabbitmq.stop(first)  # stopping twice: nothing to stop


async def _round_trip(url: str) -> bytes:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"still here"), routing_key=queue.name)
        message = await queue.get(timeout=10)
        assert message is not None
        await message.ack()
        return message.body


def test_a_missing_installation_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(local_rabbitmq, "_DEBIAN_BIN", tmp_path / "nowhere")
    with pytest.raises(local_rabbitmq.LocalRabbitMQError, match="apt-get install rabbitmq-server"):
        local_rabbitmq.start(tmp_path / "state")
