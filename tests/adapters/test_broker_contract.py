"""One contract, two brokers: the in-memory broker and a real Apache Kafka broker.

Every test here runs against both (see the ``broker`` fixture in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from reactive_services.adapters import Broker, Message, headers_to_dict


def topic_name(prefix: str = "contract") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def consume(broker: Broker, topic: str, group: str, n: int, *, on_each=None, timeout: float = 30.0):
    """Read until ``n`` messages were handled, then stop the source; returns (messages, completed, error)."""
    got: list[Message] = []
    stop = asyncio.Event()
    done = asyncio.Event()
    state: dict = {"completed": False, "error": None}

    def on_next(m: Message) -> None:
        if on_each is not None:
            on_each(m)
        got.append(m)
        if len(got) >= n:
            stop.set()

    def on_error(e: Exception) -> None:
        state["error"] = e
        done.set()

    def on_completed() -> None:
        state["completed"] = True
        done.set()

    sub = broker.source(topic, group_id=group, stop=stop).subscribe(on_next, on_error, on_completed)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        sub.dispose()
    return got, state["completed"], state["error"]


async def total_committed(broker: Broker, group: str, topic: str) -> int:
    ends = await broker.end_offsets(topic)
    return sum((await broker.committed(group, topic, p)) or 0 for p in ends)


async def test_round_trip_carries_every_field(broker: Broker) -> None:
    topic = topic_name()
    await broker.create_topics([topic], partitions=3)
    meta = await broker.emit(
        topic, {"n": 1, "s": "é"}, key="order-1", headers=[("trace", b"abc")], timestamp_ms=1_600_000_000_123
    )
    got, completed, error = await consume(broker, topic, topic_name("g"), 1)
    assert error is None and completed
    m = got[0]
    assert (m.topic, m.partition, m.offset) == (meta.topic, meta.partition, meta.offset)
    assert m.key == b"order-1"
    assert m.value == {"n": 1, "s": "é"}
    assert headers_to_dict(m.headers) == {"trace": "abc"}
    assert m.timestamp_ms == 1_600_000_000_123
    assert m.raw == '{"n":1,"s":"é"}'.encode()


async def test_same_key_same_partition_in_order(broker: Broker) -> None:
    topic = topic_name()
    await broker.create_topics([topic], partitions=3)
    for i in range(30):
        await broker.emit(topic, {"i": i}, key=f"k{i % 3}")
    got, _, error = await consume(broker, topic, topic_name("g"), 30)
    assert error is None
    by_key: dict[bytes, list[int]] = {}
    parts: dict[bytes, set[int]] = {}
    for m in got:
        by_key.setdefault(m.key, []).append(m.value["i"])
        parts.setdefault(m.key, set()).add(m.partition)
    assert all(v == sorted(v) and len(v) == 10 for v in by_key.values())
    assert all(len(p) == 1 for p in parts.values())


async def test_offsets_are_committed_after_handling_only(broker: Broker) -> None:
    topic, group = topic_name(), topic_name("g")
    await broker.create_topics([topic], partitions=1)
    for i in range(5):
        await broker.emit(topic, {"i": i})
    got, completed, _ = await consume(broker, topic, group, 3)
    assert completed and [m.value["i"] for m in got] == [0, 1, 2]
    assert await broker.committed(group, topic, 0) == 3
    rest, _, _ = await consume(broker, topic, group, 2)
    assert [m.value["i"] for m in rest] == [3, 4]
    assert await broker.committed(group, topic, 0) == 5


async def test_failed_tracked_work_stops_the_stream_without_commit(broker: Broker) -> None:
    topic, group = topic_name(), topic_name("g")
    await broker.create_topics([topic], partitions=1)
    for i in range(3):
        await broker.emit(topic, {"i": i})

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("database down")

    def on_each(m: Message) -> None:
        if m.value["i"] == 1:
            m.track(fails())

    got, completed, error = await consume(broker, topic, group, 3, on_each=on_each)
    assert isinstance(error, RuntimeError) and not completed
    assert [m.value["i"] for m in got] == [0, 1]
    assert await broker.committed(group, topic, 0) == 1  # message 1 not committed: redelivered
    again, _, _ = await consume(broker, topic, group, 2)
    assert [m.value["i"] for m in again] == [1, 2]


async def test_a_record_that_is_not_json_goes_to_the_dead_letter_topic(broker: Broker) -> None:
    topic, group = topic_name(), topic_name("g")
    await broker.create_topics([topic, f"{topic}.DLT"], partitions=1)
    await broker.emit(topic, {"i": 0})
    await broker.emit(topic, b"{not json", key="bad")
    await broker.emit(topic, {"i": 2})
    got, _, error = await consume(broker, topic, group, 2)
    assert error is None
    assert [m.value["i"] for m in got] == [0, 2]
    assert await broker.committed(group, topic, 0) == 3
    dead, _, _ = await _raw(broker, f"{topic}.DLT", 1)
    assert dead[0].raw == b"{not json" and dead[0].key == b"bad"
    h = headers_to_dict(dead[0].headers)
    assert h["dlt.original.topic"] == topic
    assert h["dlt.original.offset"] == "1"
    assert h["dlt.exception.type"] == "DecodeError"
    assert h["dlt.reason"].startswith("not JSON")


async def _raw(broker: Broker, topic: str, n: int):
    got: list[Message] = []
    stop, done = asyncio.Event(), asyncio.Event()

    def on_next(m: Message) -> None:
        got.append(m)
        if len(got) >= n:
            stop.set()

    sub = broker.source(topic, group_id=topic_name("raw"), decode=None, stop=stop).subscribe(
        on_next, lambda e: done.set(), done.set
    )
    await asyncio.wait_for(done.wait(), 30)
    sub.dispose()
    return got, True, None


async def test_subscribing_twice_consumes_twice_cold(broker: Broker) -> None:
    topic = topic_name()
    await broker.create_topics([topic], partitions=1)
    await broker.emit(topic, {"i": 0})
    source_groups = [topic_name("g"), topic_name("g")]
    a, _, _ = await consume(broker, topic, source_groups[0], 1)
    b, _, _ = await consume(broker, topic, source_groups[1], 1)
    assert a[0].value == b[0].value == {"i": 0}


async def test_emit_of_unserialisable_value_raises_type_error(broker: Broker) -> None:
    with pytest.raises(TypeError):
        await broker.emit(topic_name(), {"x": object()})


async def test_stopping_the_broker_completes_running_sources_after_commit(broker: Broker) -> None:
    topic, group = topic_name(), topic_name("g")
    await broker.create_topics([topic], partitions=1)
    await broker.emit(topic, {"i": 0})
    got: list[Message] = []
    done = asyncio.Event()
    broker.source(topic, group_id=group).subscribe(got.append, lambda e: done.set(), done.set)
    for _ in range(600):
        if got:
            break
        await asyncio.sleep(0.05)
    await broker.stop()
    await asyncio.wait_for(done.wait(), 10)
    assert [m.value for m in got] == [{"i": 0}]
    await broker.start()
    assert await broker.committed(group, topic, 0) == 1
