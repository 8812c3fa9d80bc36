"""KafkaBroker against a real Apache Kafka broker (the ``kafka_bootstrap`` fixture).

No mocks: every test produces and consumes through the broker, with unique topics and
groups so that tests do not see each other's records.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import reactivex
from aiokafka.admin import AIOKafkaAdminClient
from reactivex import operators as ops

from reactive_services.adapters import Message, headers_to_dict
from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.errors import BrokerError, BrokerUnavailableError, ConfigError, PublishError
from reactive_services.testing import wait_for


@dataclass
class Collected:
    messages: list[Message] = field(default_factory=list)
    completed: bool = False
    error: Exception | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def values(self) -> list[Any]:
        return [m.value for m in self.messages]


def collect(
    source: reactivex.Observable[Message],
    *,
    stop_after: int | None = None,
    stop: asyncio.Event | None = None,
    on_each: Callable[[Message], None] | None = None,
) -> tuple[Collected, Any]:
    """Subscribe and record everything; sets ``stop`` once ``stop_after`` messages arrived."""
    out = Collected()

    def on_next(m: Message) -> None:
        out.messages.append(m)
        if on_each is not None:
            on_each(m)
        if stop is not None and stop_after is not None and len(out.messages) >= stop_after:
            stop.set()

    def on_error(e: Exception) -> None:
        out.error = e
        out.done.set()

    def on_completed() -> None:
        out.completed = True
        out.done.set()

    return out, source.subscribe(on_next, on_error, on_completed)


async def read_n(broker: KafkaBroker, topic: str, group: str, n: int, **kw: Any) -> Collected:
    stop = asyncio.Event()
    out, sub = collect(broker.source(topic, group_id=group, stop=stop, **kw), stop_after=n, stop=stop)
    try:
        await asyncio.wait_for(out.done.wait(), 30)
    finally:
        sub.dispose()
    return out


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, number of members) of a consumer group, as the broker reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [resp] = await admin.describe_consumer_groups([group])
        entry = resp.groups[0]
        return entry[2], len(entry[5])
    finally:
        await admin.close()


# ---------------------------------------------------------------------------- round trip


async def test_emit_and_source_round_trip_carries_every_field(kafka_broker: KafkaBroker, unique_topic) -> None:
    topic = unique_topic()
    await kafka_broker.create_topics([topic], partitions=3)
    meta = await kafka_broker.emit(
        topic,
        {"order": 7, "item": "café"},
        key="customer-1",
        headers=[("trace", b"t-1"), ("empty", b""), ("trace", b"t-2")],
        timestamp_ms=1_700_000_000_123,
    )
    assert meta.topic == topic and meta.offset == 0 and meta.timestamp_ms == 1_700_000_000_123
    tomb = await kafka_broker.emit(topic, b"raw-bytes", key=b"customer-1")
    assert tomb.partition == meta.partition and tomb.offset == 1  # same key, same partition

    out = await read_n(kafka_broker, topic, unique_topic("g"), 1)
    assert out.error is None and out.completed
    m = out.messages[0]
    assert (m.topic, m.partition, m.offset) == (topic, meta.partition, 0)
    assert m.key == b"customer-1" and m.key_str == "customer-1"
    assert m.value == {"order": 7, "item": "café"}
    assert m.raw == '{"order":7,"item":"café"}'.encode()
    assert list(m.headers) == [("trace", b"t-1"), ("empty", b""), ("trace", b"t-2")]
    assert m.header("trace") == b"t-2"
    assert m.timestamp_ms == 1_700_000_000_123 and m.timestamp == pytest.approx(1_700_000_000.123)

    raw = await read_n(kafka_broker, topic, unique_topic("g"), 2, decode=None)
    assert [x.value for x in raw.messages] == ['{"order":7,"item":"café"}'.encode(), b"raw-bytes"]


async def test_emit_batch_keeps_order_and_returns_metadata(kafka_broker: KafkaBroker, unique_topic) -> None:
    topic = unique_topic()
    await kafka_broker.create_topics([topic], partitions=1)
    metas = await kafka_broker.emit_batch(topic, [(f"k{i}", {"i": i}) for i in range(20)])
    assert [md.offset for md in metas] == list(range(20))
    assert await kafka_broker.end_offsets(topic) == {0: 20}
    out = await read_n(kafka_broker, topic, unique_topic("g"), 20)
    assert [v["i"] for v in out.values()] == list(range(20))


async def test_emit_batch_over_many_record_batches_and_partitions(kafka_broker: KafkaBroker, unique_topic) -> None:
    """emit_batch writes aiokafka record batches itself: more records than one batch holds, keyed
    and keyless, over 3 partitions. Each key lands where ``emit`` puts it, the metadata of every
    record points at that record, each partition keeps the call's order, and a value that does
    not encode sends nothing."""
    topic = unique_topic()
    await kafka_broker.create_topics([topic], partitions=3)
    before = int(time.time() * 1000)
    pad = "x" * 180
    records: list[tuple[str | None, dict[str, Any]]] = [
        (None if i % 3 == 0 else f"k{i % 7}", {"i": i, "pad": pad}) for i in range(600)
    ]  # ~120 KB: several 16 KiB batches per partition
    metas = await kafka_broker.emit_batch(topic, records)
    assert len(metas) == 600
    where = {(md.partition, md.offset): i for i, md in enumerate(metas)}
    assert len(where) == 600  # no two records share a position
    assert all(md.topic == topic and md.timestamp_ms >= before for md in metas)
    for key in {k for k, _v in records if k is not None}:  # the partition emit would choose
        single = await kafka_broker.emit(topic, {"probe": key}, key=key)
        assert {md.partition for (k, _v), md in zip(records, metas, strict=True) if k == key} == {single.partition}
    keyless = {md.partition for (k, _v), md in zip(records, metas, strict=True) if k is None}
    assert keyless == {0, 1, 2}  # spread round robin, as the in-memory broker does
    out = await read_n(kafka_broker, topic, unique_topic("g"), 600 + 7)
    for m in out.messages:
        if "probe" in m.value:
            continue
        assert where[(m.partition, m.offset)] == m.value["i"]  # the metadata points at this record
    for partition in range(3):  # each partition holds its records in the order of the call
        mine = [m.value["i"] for m in out.messages if m.partition == partition and "i" in m.value]
        assert mine == sorted(mine)

    ends = await kafka_broker.end_offsets(topic)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await kafka_broker.emit_batch(topic, [(None, {"i": 1}), (None, {"bad": object()})])
    assert await kafka_broker.end_offsets(topic) == ends  # nothing of that batch was sent


async def test_create_topics_is_idempotent_and_end_offsets_cover_partitions(
    kafka_broker: KafkaBroker, unique_topic
) -> None:
    topic = unique_topic()
    await kafka_broker.create_topics([topic], partitions=3)
    await kafka_broker.create_topics([topic], partitions=5)  # exists: left as it is
    assert await kafka_broker.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
    assert await kafka_broker.end_offsets(unique_topic("missing")) == {}
    assert await kafka_broker.committed(unique_topic("g"), topic, 0) is None


async def test_concurrent_first_calls_share_one_admin_client_and_one_offsets_consumer(
    kafka_bootstrap: str, unique_topic, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reactive_services.adapters.kafka._admin as kafka_module

    created: list[str] = []
    for name in ("AIOKafkaAdminClient", "AIOKafkaConsumer"):
        original = getattr(kafka_module, name)
        counting = type(
            name,
            (original,),
            {
                "__init__": lambda self, *a, _o=original, _n=name, **k: (
                    created.append(_n),
                    _o.__init__(self, *a, **k),
                )[1]
            },
        )
        monkeypatch.setattr(kafka_module, name, counting)
    topic = unique_topic()
    broker = KafkaBroker(kafka_bootstrap)
    await broker.start()
    try:
        await broker.create_topics([topic], partitions=2)
        created.clear()
        fresh = KafkaBroker(kafka_bootstrap)
        await fresh.start()
        try:
            results = await asyncio.gather(*(fresh.end_offsets(topic) for _ in range(5)))
        finally:
            await fresh.stop()
        assert results == [{0: 0, 1: 0}] * 5
        assert sorted(created) == ["AIOKafkaAdminClient", "AIOKafkaConsumer"]
    finally:
        await broker.stop()


async def test_create_topics_reports_a_refusal(kafka_broker: KafkaBroker) -> None:
    with pytest.raises(BrokerError, match="creating topic"):
        await kafka_broker.create_topics(["bad/name"], partitions=1)


# ---------------------------------------------------------------------------- commits


async def test_offsets_are_committed_only_after_processing(kafka_broker: KafkaBroker, unique_topic) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await kafka_broker.create_topics([topic], partitions=1)
    for i in range(5):
        await kafka_broker.emit(topic, {"i": i})

    first = await read_n(kafka_broker, topic, group, 3)
    assert first.completed and [v["i"] for v in first.values()] == [0, 1, 2]
    assert await kafka_broker.committed(group, topic, 0) == 3

    second = await read_n(kafka_broker, topic, group, 2)
    assert [v["i"] for v in second.values()] == [3, 4]
    assert [m.offset for m in second.messages] == [3, 4]
    assert await kafka_broker.committed(group, topic, 0) == 5


async def test_a_message_with_pending_tracked_work_is_not_committed(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, unique_topic
) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await kafka_broker.create_topics([topic], partitions=1)
    for i in range(3):
        await kafka_broker.emit(topic, {"i": i})
    never = asyncio.get_running_loop().create_future()
    done_work = asyncio.get_running_loop().create_future()
    done_work.set_result(None)

    def on_each(m: Message) -> None:
        m.track(done_work if m.offset == 0 else never)

    out, sub = collect(kafka_broker.source(topic, group_id=group), on_each=on_each)
    await wait_for(lambda: len(out.messages) == 2)
    await asyncio.sleep(0.3)  # the source is now waiting on message 1's work
    assert len(out.messages) == 2  # message 2 is not delivered while 1 is pending
    sub.dispose()
    await wait_for(lambda: kafka_broker.running_sources == 0)
    assert await kafka_broker.committed(group, topic, 0) == 1  # message 0 only
    assert not out.completed and out.error is None
    never.cancel()

    again = await read_n(kafka_broker, topic, group, 2)
    assert [m.offset for m in again.messages] == [1, 2]


async def test_failed_tracked_work_ends_with_on_error_and_no_commit(kafka_broker: KafkaBroker, unique_topic) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await kafka_broker.create_topics([topic], partitions=1)
    for i in range(3):
        await kafka_broker.emit(topic, {"i": i})

    async def write_fails() -> None:
        raise OSError("disk full")

    def on_each(m: Message) -> None:
        if m.offset == 1:
            m.track(write_fails())

    out, sub = collect(kafka_broker.source(topic, group_id=group), on_each=on_each)
    await asyncio.wait_for(out.done.wait(), 30)
    assert isinstance(out.error, OSError) and not out.completed
    assert [m.offset for m in out.messages] == [0, 1]
    assert await kafka_broker.committed(group, topic, 0) == 1
    assert kafka_broker.running_sources == 0
    sub.dispose()


async def test_on_next_raising_ends_with_on_error_and_no_commit(kafka_broker: KafkaBroker, unique_topic) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await kafka_broker.create_topics([topic], partitions=1)
    for i in range(3):
        await kafka_broker.emit(topic, {"i": i})
    seen: list[int] = []
    failed = asyncio.Event()
    errors: list[Exception] = []

    class Boom(Exception):
        pass

    def on_next(m: Message) -> None:
        seen.append(m.offset)
        if m.offset == 1:
            raise Boom("handler bug")

    def on_error(e: Exception) -> None:
        errors.append(e)
        failed.set()

    # A bare observer object, so that on_next's exception reaches the source itself.
    class Obs:
        def on_next(self, m: Message) -> None:
            on_next(m)

        def on_error(self, e: Exception) -> None:
            on_error(e)

        def on_completed(self) -> None:
            raise AssertionError("must not complete")

    sub = kafka_broker.source(topic, group_id=group).subscribe(Obs())
    await asyncio.wait_for(failed.wait(), 30)
    assert isinstance(errors[0], Boom) and seen == [0, 1]
    assert await kafka_broker.committed(group, topic, 0) == 1
    sub.dispose()


# ---------------------------------------------------------------------------- dead letters


async def test_a_record_that_is_not_json_goes_to_the_dlt_and_the_stream_goes_on(
    kafka_broker: KafkaBroker, unique_topic
) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await kafka_broker.create_topics([topic, f"{topic}.DLT"], partitions=1)
    await kafka_broker.emit(topic, {"i": 0})
    await kafka_broker.emit(topic, b"{oops", key="bad", headers=[("trace", b"x")])
    await kafka_broker.emit(topic, {"i": 2})

    out = await read_n(kafka_broker, topic, group, 2)
    assert out.error is None and [m.value for m in out.messages] == [{"i": 0}, {"i": 2}]
    assert await kafka_broker.committed(group, topic, 0) == 3  # the bad record counts as handled

    dead = await read_n(kafka_broker, f"{topic}.DLT", unique_topic("g"), 1, decode=None)
    d = dead.messages[0]
    assert d.value == b"{oops" and d.key == b"bad"
    h = headers_to_dict(d.headers)
    assert h["trace"] == "x"
    assert h["dlt.original.topic"] == topic
    assert h["dlt.original.partition"] == "0" and h["dlt.original.offset"] == "1"
    assert h["dlt.exception.type"] == "DecodeError" and h["dlt.reason"].startswith("not JSON")


async def test_a_custom_decoder_failure_is_dead_lettered_too(kafka_broker: KafkaBroker, unique_topic) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await kafka_broker.create_topics([topic, f"{topic}.DLT"], partitions=1)
    await kafka_broker.emit(topic, b"12")
    await kafka_broker.emit(topic, b"twelve")
    await kafka_broker.emit(topic, b"13")

    def to_int(raw: bytes | None) -> int:
        return int(raw or b"")

    out = await read_n(kafka_broker, topic, group, 2, decode=to_int)
    assert [m.value for m in out.messages] == [12, 13]
    dead = await read_n(kafka_broker, f"{topic}.DLT", unique_topic("g"), 1, decode=None)
    assert dead.messages[0].value == b"twelve"
    assert headers_to_dict(dead.messages[0].headers)["dlt.exception.type"] == "ValueError"


# ---------------------------------------------------------------------------- endings


async def test_stop_event_commits_then_completes(kafka_bootstrap: str, unique_topic) -> None:
    topic, group = unique_topic(), unique_topic("g")
    # Commits only when the stream ends, so the committed offset proves the final commit.
    async with KafkaBroker(kafka_bootstrap, commit_interval_s=3600) as broker:
        await broker.create_topics([topic], partitions=1)
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(4)])
        stop = asyncio.Event()
        out, sub = collect(broker.source(topic, group_id=group, stop=stop), stop_after=4, stop=stop)
        await asyncio.wait_for(out.done.wait(), 30)
        assert out.completed and out.error is None
        assert await broker.committed(group, topic, 0) == 4
        await wait_for(lambda: broker.running_sources == 0)
        sub.dispose()


async def test_dispose_closes_the_consumer_without_a_terminal_call(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, unique_topic
) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await kafka_broker.create_topics([topic], partitions=1)
    await kafka_broker.emit(topic, {"i": 0})
    out, sub = collect(kafka_broker.source(topic, group_id=group))
    await wait_for(lambda: len(out.messages) == 1)
    assert await group_state(kafka_bootstrap, group) == ("Stable", 1)
    sub.dispose()
    await wait_for(lambda: kafka_broker.running_sources == 0)
    assert (await group_state(kafka_bootstrap, group))[1] == 0  # the member left the group
    assert await kafka_broker.committed(group, topic, 0) == 1  # handled before dispose
    assert not out.completed and out.error is None


async def test_broker_stop_completes_running_sources(kafka_bootstrap: str, unique_topic) -> None:
    topic, group = unique_topic(), unique_topic("g")
    broker = KafkaBroker(kafka_bootstrap)
    await broker.start()
    await broker.emit(topic, {"i": 0})
    out, _sub = collect(broker.source(topic, group_id=group))
    await wait_for(lambda: len(out.messages) == 1)
    await asyncio.wait_for(broker.stop(), 20)
    assert out.completed and broker.running_sources == 0 and not broker.started
    async with KafkaBroker(kafka_bootstrap) as other:
        assert await other.committed(group, topic, out.messages[0].partition) == 1


# ---------------------------------------------------------------------------- sink


async def test_sink_publishes_and_holds_back_the_input_commit(kafka_broker: KafkaBroker, unique_topic) -> None:
    src, dst, group = unique_topic("in"), unique_topic("out"), unique_topic("g")
    await kafka_broker.create_topics([src, dst], partitions=1)
    await kafka_broker.emit_batch(src, [(None, {"n": n}) for n in range(3)])
    sink = kafka_broker.sink(dst, key=lambda v: str(v["n"]))
    stop = asyncio.Event()
    count = 0

    def counted(m: Message) -> dict[str, int]:
        nonlocal count
        count += 1
        if count == 3:
            stop.set()
        return {"n": m.value["n"] * 10}

    kafka_broker.source(src, group_id=group, stop=stop).pipe(ops.map(counted)).subscribe(sink)
    await wait_for(lambda: sink.completed, timeout=30)
    await sink.flush()
    await wait_for(lambda: kafka_broker.running_sources == 0)
    assert await kafka_broker.committed(group, src, 0) == 3
    out = await read_n(kafka_broker, dst, unique_topic("g"), 3)
    assert [(m.key, m.value) for m in out.messages] == [(b"0", {"n": 0}), (b"10", {"n": 10}), (b"20", {"n": 20})]


# ---------------------------------------------------------------------------- failures


async def test_start_against_an_unreachable_broker_fails_fast() -> None:
    broker = KafkaBroker("127.0.0.1:1", connect_timeout_s=2.0, request_timeout_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=r"cannot reach Kafka at 127\.0\.0\.1:1") as info:
        await broker.start()
    assert time.monotonic() - t0 < 5.0
    assert info.value.__cause__ is not None and info.value.retriable
    assert not broker.started
    with pytest.raises((BrokerUnavailableError, PublishError)):
        await asyncio.wait_for(broker.emit("anything", {"x": 1}), 10)
    await broker.stop()


async def test_a_source_on_an_unreachable_broker_errors(unique_topic) -> None:
    broker = KafkaBroker("127.0.0.1:1", connect_timeout_s=2.0, request_timeout_s=2.0)
    out, sub = collect(broker.source(unique_topic(), group_id=unique_topic("g")))
    await asyncio.wait_for(out.done.wait(), 10)
    assert isinstance(out.error, BrokerUnavailableError) and not out.completed
    await wait_for(lambda: broker.running_sources == 0)
    sub.dispose()


def test_bad_configuration_is_rejected_early() -> None:
    with pytest.raises(ConfigError, match="bootstrap_servers"):
        KafkaBroker("no-port")
    broker = KafkaBroker("127.0.0.1:9092")
    with pytest.raises(ConfigError, match="auto_offset_reset"):
        broker.source("t", group_id="g", auto_offset_reset="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="group_id"):
        broker.source("t", group_id="")
    with pytest.raises(ConfigError, match="decode"):
        broker.source("t", group_id="g", decode="xml")  # type: ignore[arg-type]


async def test_two_members_of_a_group_share_partitions_through_a_rebalance(
    kafka_broker: KafkaBroker, unique_topic
) -> None:
    topic, group = unique_topic(), unique_topic("g")
    await kafka_broker.create_topics([topic], partitions=3)
    await kafka_broker.emit_batch(topic, [(f"k{i}", {"i": i}) for i in range(30)])
    stop = asyncio.Event()
    first, sub1 = collect(kafka_broker.source(topic, group_id=group, stop=stop))
    await wait_for(lambda: len(first.messages) == 30)
    # A second member joins: the group rebalances, the first member commits what it
    # handled for the partitions it gives up, and both keep running without errors.
    second, sub2 = collect(kafka_broker.source(topic, group_id=group, stop=stop))
    await kafka_broker.emit_batch(topic, [(f"k{i}", {"i": i}) for i in range(30, 60)])
    await wait_for(lambda: len({m.value["i"] for m in first.messages + second.messages}) == 60, timeout=30)
    stop.set()
    await asyncio.wait_for(asyncio.gather(first.done.wait(), second.done.wait()), 30)
    assert first.error is None and second.error is None and first.completed and second.completed
    ends = await kafka_broker.end_offsets(topic)
    assert sum(ends.values()) == 60
    for p, end in ends.items():
        assert await kafka_broker.committed(group, topic, p) == end
    sub1.dispose()
    sub2.dispose()
