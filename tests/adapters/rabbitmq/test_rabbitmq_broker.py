"""RabbitBroker against a real RabbitMQ server (the session's ``rabbitmq_url``).

Queues keep what was published after a group's queue exists, so every test subscribes first
(``on_assigned``) and publishes after. "Committed" here is "acknowledged": a message handled is
gone from the group's queue; one not acknowledged comes again to the group's next member.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import reactivex

from reactive_services import ClientProxy, Controller, Microservice, event_pattern, message_pattern
from reactive_services.adapters import Message, headers_to_dict, track
from reactive_services.adapters.rabbitmq import RabbitBroker
from reactive_services.errors import BrokerUnavailableError, ConfigError, RemoteError
from reactive_services.testing import unique_name, wait_for


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[RabbitBroker]:
    b = RabbitBroker(rabbitmq_url)
    await b.start()
    yield b
    await b.stop()


class Reader:
    """A subscription of ``broker.source(...)`` that collects what it gets."""

    def __init__(self, broker: RabbitBroker, topics: str | list[str], group: str, **kwargs: Any) -> None:
        self.messages: list[Message] = []
        self.error: Exception | None = None
        self.assigned, self.stop, self.done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.on_next = kwargs.pop("on_next", None)
        self.subscription = broker.source(
            topics, group_id=group, on_assigned=self.assigned.set, stop=self.stop, **kwargs
        ).subscribe(self._next, self._error, self.done.set)

    def _next(self, message: Message) -> None:
        self.messages.append(message)
        if self.on_next is not None:
            self.on_next(message)

    def _error(self, error: Exception) -> None:
        self.error = error
        self.done.set()

    async def ready(self) -> Reader:
        await asyncio.wait_for(self.assigned.wait(), 20)
        return self

    async def end(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.done.wait(), 20)


async def test_every_field_round_trips_and_a_key_keeps_its_partition(broker: RabbitBroker) -> None:
    topic, group = unique_name("rt"), unique_name("g")
    await broker.create_topics([topic], partitions=3)
    reader = await Reader(broker, topic, group, decode=None).ready()
    await broker.emit(topic, {"a": 1}, key="k", headers=[("h", b"\xff\x00"), ("h", b"2"), ("t", "text")])
    await broker.emit(topic, None, key="k", timestamp_ms=1_700_000_000_123)  # a tombstone
    await broker.emit(topic, b"raw bytes")
    await wait_for(lambda: len(reader.messages) == 3, what="three records")
    await reader.end()
    first, tombstone, keyless = reader.messages
    assert (first.key, first.raw, first.headers) == (
        b"k",
        b'{"a":1}',
        [("h", b"\xff\x00"), ("h", b"2"), ("t", b"text")],
    )
    assert first.partition == tombstone.partition  # same key, same partition
    assert (tombstone.raw, tombstone.timestamp_ms, tombstone.key) == (None, 1_700_000_000_123, b"k")
    assert (keyless.key, keyless.raw, keyless.headers) == (None, b"raw bytes", [])
    assert first.timestamp_ms > 1_700_000_000_123
    assert reader.error is None
    assert await broker.queue_depths(group, topic) == {0: 0, 1: 0, 2: 0}  # every one acknowledged


async def test_what_was_not_handled_comes_again_and_what_was_does_not(broker: RabbitBroker) -> None:
    topic, group = unique_name("ack"), unique_name("g")

    def refuse_three(message: Message) -> None:
        if message.value["i"] == 3:
            raise ValueError("refused")

    first = await Reader(broker, topic, group, on_next=refuse_three).ready()
    await broker.emit_batch(topic, [(None, {"i": i}) for i in range(6)])
    await asyncio.wait_for(first.done.wait(), 20)
    assert isinstance(first.error, ValueError)  # the Observer raised: the stream ended
    assert [m.value["i"] for m in first.messages] == [0, 1, 2, 3]
    await wait_for(lambda: _depth_is(broker, group, topic, 3), what="3, 4 and 5 back in the queue")
    second = await Reader(broker, topic, group).ready()
    await wait_for(lambda: len(second.messages) == 3, what="the rest")
    await asyncio.sleep(0.2)
    await second.end()
    assert [m.value["i"] for m in second.messages] == [3, 4, 5]  # 0..2 were acknowledged
    assert await broker.queue_depths(group, topic) == {0: 0}


async def _depth_is(broker: RabbitBroker, group: str, topic: str, n: int) -> bool:
    return sum((await broker.queue_depths(group, topic)).values()) == n


async def test_tracked_work_holds_the_acknowledgement_until_it_finished(broker: RabbitBroker) -> None:
    topic, group = unique_name("tw"), unique_name("g")
    write: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def slow_second(message: Message) -> None:
        if message.value["i"] == 1:
            track(write)

    reader = await Reader(broker, topic, group, on_next=slow_second, concurrency=4).ready()
    await broker.emit_batch(topic, [(None, {"i": i}) for i in range(4)])
    await wait_for(lambda: len(reader.messages) == 4, what="all four delivered (concurrency 4)")
    reader.subscription.dispose()  # leaves with 1 unfinished: 1, 2 and 3 stay unacknowledged
    await wait_for(lambda: _depth_is(broker, group, topic, 3), what="1, 2 and 3 back in the queue")
    assert write.cancelled()  # disposing cancelled the unfinished work
    again = await Reader(broker, topic, group).ready()
    await wait_for(lambda: len(again.messages) == 3, what="1, 2 and 3 again")
    await again.end()
    assert [m.value["i"] for m in again.messages] == [1, 2, 3]


async def test_per_key_order_holds_with_concurrency_and_partitions(broker: RabbitBroker) -> None:
    topic, group = unique_name("order"), unique_name("g")
    await broker.create_topics([topic], partitions=2)
    seen: dict[str, list[int]] = {}

    async def work(message: Message) -> None:
        await asyncio.sleep(random.uniform(0, 0.01))  # noqa: S311
        seen.setdefault(message.key.decode(), []).append(message.value["n"])  # type: ignore[union-attr]

    reader = await Reader(broker, topic, group, on_next=lambda m: track(work(m)), concurrency=8).ready()
    records = [(f"k{i % 5}", {"n": i}) for i in range(100)]
    await broker.emit_batch(topic, records)
    await wait_for(lambda: sum(map(len, seen.values())) == 100, what="every record handled")
    await reader.end()
    for key, numbers in seen.items():
        assert numbers == sorted(numbers), key
    assert await broker.queue_depths(group, topic) == {0: 0, 1: 0}


async def test_a_record_that_is_not_json_goes_to_the_dead_letter_topic(broker: RabbitBroker) -> None:
    topic, group = unique_name("dlt"), unique_name("g")
    letters = await Reader(broker, topic + ".DLT", unique_name("ops"), decode=None).ready()
    reader = await Reader(broker, topic, group).ready()
    await broker.emit(topic, b"{not json", key="bad", headers={"origin": "test"})
    await broker.emit(topic, {"ok": True})
    await wait_for(lambda: len(reader.messages) == 1 and len(letters.messages) == 1, what="the dead letter")
    await reader.end()
    await letters.end()
    letter = letters.messages[0]
    heads = headers_to_dict(letter.headers)
    assert (letter.key, letter.raw, heads["origin"]) == (b"bad", b"{not json", "test")
    assert heads["dlt.original.topic"] == topic and heads["dlt.exception.type"] == "DecodeError"
    assert heads["dlt.reason"].startswith("not JSON")
    assert await broker.queue_depths(group, topic) == {0: 0}


async def test_records_no_group_reads_yet_are_kept_in_the_unrouted_queue(broker: RabbitBroker) -> None:
    topic = unique_name("nobody")
    before = await broker.queue_depth("rs.unrouted")
    assert before is not None  # declared by start()
    await broker.emit(topic, {"lost": False})
    assert await broker.queue_depth("rs.unrouted") == before + 1
    assert await broker.queue_depth(unique_name("missing")) is None


async def test_a_standby_member_takes_over_when_the_active_one_leaves(broker: RabbitBroker) -> None:
    topic, group = unique_name("sac"), unique_name("g")
    active = await Reader(broker, topic, group).ready()
    standby = await Reader(broker, topic, group).ready()
    await broker.emit(topic, {"i": 0})
    await wait_for(lambda: len(active.messages) == 1, what="the active member reads")
    assert standby.messages == []  # single active consumer: one member reads the partition
    await active.end()
    await broker.emit(topic, {"i": 1})
    await wait_for(lambda: len(standby.messages) == 1, what="the standby member takes over")
    await standby.end()
    assert standby.messages[0].value == {"i": 1}


class Calculator(Controller):
    @message_pattern("math.add")
    def add(self, payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    @message_pattern("math.divide")
    def divide(self, payload: dict[str, int]) -> float:
        return payload["x"] / payload["by"]

    @message_pattern("math.totals")
    def totals(self, payload: list[int]) -> reactivex.Observable[int]:
        return reactivex.from_iterable(payload).pipe(reactivex.operators.scan(lambda a, x: a + x, 0))


async def test_request_reply_over_rabbitmq(broker: RabbitBroker) -> None:
    ns = unique_name("rr") + "."
    service = Microservice(broker, [Calculator()], name=f"{ns}calc", namespace=ns)
    await service.start()
    try:
        async with ClientProxy(broker, namespace=ns) as client:
            assert await client.send("math.add", {"a": 40, "b": 2}, timeout=20) == 42
            assert await client.send("math.totals", [1, 2, 3], timeout=20) == 6
            with pytest.raises(RemoteError, match="ZeroDivisionError"):
                await client.send("math.divide", {"x": 1, "by": 0}, timeout=20)
    finally:
        await service.stop()


class Tally(Controller):
    def __init__(self) -> None:
        self.seen: list[int] = []

    @event_pattern("counted")
    def count(self, payload: dict[str, int]) -> None:
        self.seen.append(payload["n"])

    @event_pattern("piped", pipeline=True)
    def piped(self, messages: reactivex.Observable[Message]) -> reactivex.Observable[Any]:
        return messages.pipe(reactivex.operators.do_action(lambda m: self.seen.append(m.value["n"])))


async def test_a_service_started_receives_every_record_published_right_after(broker: RabbitBroker) -> None:
    """start() declares its groups' queues (bound to the topics), so nothing
    published after it goes to rs.unrouted, for payload handlers and pipelines alike."""
    ns = unique_name("started") + "."
    counter = Tally()
    service = Microservice(broker, [counter], name=f"{ns}counter", namespace=ns)
    await service.start()
    try:
        await broker.emit_batch(ns + "counted", [(str(n), {"n": n}) for n in range(20)])
        await broker.emit_batch(ns + "piped", [(str(n), {"n": n}) for n in range(20, 40)])
        await wait_for(lambda: len(counter.seen) >= 40, 20, what="every record")
        assert sorted(counter.seen) == list(range(40))
    finally:
        await service.stop()


async def test_settings_are_checked_and_exactly_once_is_refused(rabbitmq_url: str) -> None:
    with pytest.raises(ConfigError, match="^prefetch"):
        RabbitBroker(rabbitmq_url, prefetch=0)
    with pytest.raises(ConfigError, match="^url"):
        RabbitBroker("http://localhost/")
    with pytest.raises(ConfigError, match="^delivery_limit"):
        RabbitBroker(rabbitmq_url, delivery_limit=0)
    with pytest.raises(ConfigError, match="^processing_guarantee"):
        RabbitBroker(rabbitmq_url).source("t", group_id="g", processing_guarantee="exactly_once")


async def test_consumer_lag_is_what_waits_in_the_groups_queues(broker: RabbitBroker) -> None:
    from reactive_services.metrics import MeteredBroker, ServiceMetrics

    metrics = ServiceMetrics()
    metered = MeteredBroker(broker, metrics)
    topic, group = unique_name("lag"), unique_name("g")
    await metered.create_topics([topic], partitions=2)
    await metered.declare_group(group, [topic])
    await metered.emit_batch(topic, [(f"k{i}", {"i": i}) for i in range(10)])
    before = await metrics.refresh_lag(metered, {group: [topic]})
    assert set(before) == {(group, topic, 0), (group, topic, 1)} and sum(before.values()) == 10
    reader = await Reader(broker, topic, group).ready()
    await wait_for(lambda: len(reader.messages) == 10, what="every record")
    await reader.end()
    after = await metrics.refresh_lag(metered, {group: [topic]})
    assert after == {(group, topic, 0): 0, (group, topic, 1): 0}


async def test_a_partition_stalled_by_holds_at_the_prefetch_is_reported(
    rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator that keeps records until more arrive (here: every record held) stops a
    # partition once `prefetch` of them are unacknowledged: RabbitMQ sends nothing more. The
    # source cannot fix that, but it must say so, with the remedy, rather than wait in silence.
    from reactive_services.adapters.rabbitmq import _source  # noqa: PLC0415 - the module whose warning delay is shortened

    monkeypatch.setattr(_source, "STALL_WARNING_S", 0.5)
    topic, group = unique_name("stall"), unique_name("g")
    broker = RabbitBroker(rabbitmq_url, prefetch=4)
    await broker.start()
    holds: list[Any] = []
    try:
        reader = await Reader(broker, topic, group, on_next=lambda m: holds.append(m.hold())).ready()
        with caplog.at_level("WARNING", logger="reactive_services.adapters.rabbitmq"):
            await broker.emit_batch(topic, [(None, {"i": i}) for i in range(10)])
            await wait_for(lambda: len(reader.messages) == 4, what="the first 4 (the prefetch)")
            await wait_for(lambda: "prefetch" in caplog.text, timeout=10, what="the stall warning")
        assert len(reader.messages) == 4  # nothing more came while they were held
        warning = caplog.text
        assert f"{topic}[0] has had 4 messages unacknowledged" in warning
        assert "RabbitBroker(prefetch=...)" in warning
        for h in holds[:2]:  # two released: two acknowledged, two more delivered
            h.release()
        await wait_for(lambda: len(reader.messages) == 6, what="two more after two were acknowledged")
        for h in holds[2:]:
            h.release()
        await wait_for(lambda: len(reader.messages) == 10, what="the rest once released")
        for h in holds[6:]:
            h.release()
        await reader.end()
        assert reader.error is None
        assert await broker.queue_depths(group, topic) == {0: 0}
    finally:
        await broker.stop()


async def test_queue_depths_while_the_connection_is_down_is_broker_unavailable(broker: RabbitBroker) -> None:
    # aio-pika's robust connection raises RuntimeError("Connection was not opened") for a new
    # channel until it has reconnected; a caller polling queue depths gets the retriable error
    connection = broker._producer._connection  # the private connection, made to look down
    assert connection is not None

    async def down(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("Connection was not opened")

    real = connection.channel
    connection.channel = down  # type: ignore[method-assign]
    try:
        with pytest.raises(BrokerUnavailableError, match="connection to RabbitMQ is down") as raised:
            await broker.queue_depths("g", "t")
        assert raised.value.retriable
    finally:
        connection.channel = real  # type: ignore[method-assign]
