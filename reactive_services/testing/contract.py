"""The broker contract as pytest test classes: subclass them to check your own broker or broker wrapper.

Every :class:`~reactive_services.adapters.Broker` of the library passes these tests (the
in-memory broker, Kafka, :class:`~reactive_services.metrics.MeteredBroker`). To run them on
yours, subclass and say how to make one::

    # tests/test_my_broker.py
    from reactive_services.testing.contract import BrokerContract, ConcurrencyContract

    class TestMyBroker(BrokerContract, ConcurrencyContract):
        async def make_broker(self) -> Broker:
            return MyBroker(url="memory://")       # not started: the fixture starts and stops it

A broker without a log (a queue broker such as RabbitMQ) sets ``has_log = False`` in its
subclass; see :class:`BrokerFixture`.

The ``broker`` fixture calls :meth:`BrokerFixture.make_broker` for each test, starts the
broker, hands it to the test and stops it afterwards. A broker that needs other fixtures
(a Kafka address) can take them in an autouse fixture of the subclass, or override
``broker`` altogether::

    class TestKafka(BrokerContract):
        @pytest.fixture(autouse=True)
        def _address(self, kafka_bootstrap: str) -> None:
            self.bootstrap = kafka_bootstrap

        def make_broker(self) -> Broker:
            return KafkaBroker(self.bootstrap)

:class:`BrokerContract` covers the lifecycle (``started``), publishing and reading (every field
round-trips, per-key order, commit only after handling, failed tracked work, dead letters, cold
sources, stopping, a dispose or an exception from inside ``on_next``, records held by an
operator); :class:`ConcurrencyContract` covers ``source(..., concurrency=K)`` (the commit never
passes an unfinished message, per-key order, at most K in flight, a failed message is not
committed). The tests use fresh topic and group names, so they may share one broker.

This module needs pytest and pytest-asyncio (the ``test`` extra); the rest of
:mod:`reactive_services.testing` does not. The tests are ``async def`` and marked
``pytest.mark.asyncio``, so they run in pytest-asyncio's strict and auto modes alike.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
import pytest_asyncio
import reactivex.operators as ops

from reactive_services.adapters import Batch, Broker, Message, declare_group, headers_to_dict, track
from reactive_services.errors import BrokerError, ConfigError
from reactive_services.operators import batch

from ._waiting import collect, consume, unique_name, wait_for

__all__ = ["BrokerContract", "BrokerFixture", "ConcurrencyContract"]


class BrokerFixture:
    """The ``broker`` fixture of the contract classes; subclasses provide :meth:`make_broker`.

    A broker without a log (RabbitMQ: a consumer group's queue keeps only what was published
    after it was declared) sets :attr:`has_log` to False: every case declares its groups before it
    publishes (:meth:`prepare`), and the cases that need a log check what the broker does instead
    (exactly-once is refused; offsets are not known at publish; committed offsets are counted
    rather than compared with ``end_offsets``).
    """

    #: The broker keeps a log (Kafka, the in-memory broker): False for a queue broker (RabbitMQ).
    has_log: bool = True

    async def prepare(self, broker: Broker, topics: list[str], *groups: str) -> None:
        """Before a case publishes: make ``groups`` receive what is published to ``topics`` from
        now on (:func:`~reactive_services.adapters.declare_group`: RabbitMQ declares the groups'
        queues; a log needs nothing)."""
        for group in groups:
            await declare_group(broker, group, topics)

    def make_broker(self) -> Broker | Awaitable[Broker]:
        """The broker under test, not started yet (a plain or an ``async def`` method).

        Raises:
            NotImplementedError: the subclass did not provide it.
        """
        raise NotImplementedError(f"{type(self).__name__} must define make_broker()")

    @pytest_asyncio.fixture
    async def broker(self) -> AsyncIterator[Broker]:
        """A started broker from :meth:`make_broker`; stopped after the test."""
        made = self.make_broker()
        broker = await made if inspect.isawaitable(made) else made
        await broker.start()
        try:
            yield broker
        finally:
            await broker.stop()


@pytest.mark.asyncio
class BrokerContract(BrokerFixture):
    """Publishing, reading and committing: what every :class:`~reactive_services.adapters.Broker` must do."""

    async def test_is_a_broker(self, broker: Broker) -> None:
        assert isinstance(broker, Broker)
        assert isinstance(broker.kind, str) and broker.kind

    async def test_started_is_true_between_start_and_stop(self, broker: Broker) -> None:
        assert broker.started
        await broker.stop()
        assert not broker.started
        await broker.start()
        assert broker.started

    async def test_round_trip_carries_every_field(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=3)
        await self.prepare(broker, [topic], group)
        await self.prepare(broker, [topic], group)
        meta = await broker.emit(
            topic, {"n": 1, "s": "é"}, key="order-1", headers=[("trace", b"abc")], timestamp_ms=1_600_000_000_123
        )
        got = await consume(broker, topic, 1, group_id=group)
        assert got.error is None and got.completed
        m = got.items[0]
        assert (m.topic, m.partition) == (meta.topic, meta.partition)
        assert m.offset == (meta.offset if self.has_log else 0)  # a queue broker: no offset at publish
        assert m.key == b"order-1"
        assert m.value == {"n": 1, "s": "é"}
        assert headers_to_dict(m.headers) == {"trace": "abc"}
        assert m.timestamp_ms == 1_600_000_000_123
        assert m.raw == '{"n":1,"s":"é"}'.encode()

    async def test_same_key_same_partition_in_order(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=3)
        await self.prepare(broker, [topic], group)
        await self.prepare(broker, [topic], group)
        for i in range(30):
            await broker.emit(topic, {"i": i}, key=f"k{i % 3}")
        got = await consume(broker, topic, 30, group_id=group)
        assert got.error is None
        by_key: dict[bytes | None, list[int]] = {}
        parts: dict[bytes | None, set[int]] = {}
        for m in got.items:
            by_key.setdefault(m.key, []).append(m.value["i"])
            parts.setdefault(m.key, set()).add(m.partition)
        assert all(v == sorted(v) and len(v) == 10 for v in by_key.values())
        assert all(len(p) == 1 for p in parts.values())

    async def test_offsets_are_committed_after_handling_only(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        for i in range(5):
            await broker.emit(topic, {"i": i})
        got = await consume(broker, topic, 3, group_id=group)
        assert got.completed and [m.value["i"] for m in got.items] == [0, 1, 2]
        assert await broker.committed(group, topic, 0) == 3
        rest = await consume(broker, topic, 2, group_id=group)
        assert [m.value["i"] for m in rest.items] == [3, 4]
        assert await broker.committed(group, topic, 0) == 5

    async def test_failed_tracked_work_stops_the_stream_without_commit(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        for i in range(3):
            await broker.emit(topic, {"i": i})

        async def fails() -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("database down")

        def on_each(m: Message) -> None:
            if m.value["i"] == 1:
                m.track(fails())

        got = await consume(broker, topic, 3, group_id=group, on_each=on_each)
        assert isinstance(got.error, RuntimeError) and not got.completed
        assert [m.value["i"] for m in got.items] == [0, 1]
        assert await broker.committed(group, topic, 0) == 1  # message 1 not committed: redelivered
        again = await consume(broker, topic, 2, group_id=group)
        assert [m.value["i"] for m in again.items] == [1, 2]

    async def test_a_record_that_is_not_json_goes_to_the_dead_letter_topic(self, broker: Broker) -> None:
        topic, group, ops_group = unique_name("contract"), unique_name("g"), unique_name("ops")
        await broker.create_topics([topic, f"{topic}.DLT"], partitions=1)
        await self.prepare(broker, [topic], group)
        await self.prepare(broker, [f"{topic}.DLT"], ops_group)
        await broker.emit(topic, {"i": 0})
        await broker.emit(topic, b"{not json", key="bad")
        await broker.emit(topic, {"i": 2})
        got = await consume(broker, topic, 2, group_id=group)
        assert got.error is None
        assert [m.value["i"] for m in got.items] == [0, 2]
        assert await broker.committed(group, topic, 0) == 3
        dead = await consume(broker, f"{topic}.DLT", 1, decode=None, group_id=ops_group)
        assert dead.items[0].raw == b"{not json" and dead.items[0].key == b"bad"
        h = headers_to_dict(dead.items[0].headers)
        assert h["dlt.original.topic"] == topic
        assert h["dlt.original.offset"] == "1"
        assert h["dlt.exception.type"] == "DecodeError"
        assert h["dlt.reason"].startswith("not JSON")

    async def test_subscribing_twice_consumes_twice_cold(self, broker: Broker) -> None:
        topic, group_a, group_b = unique_name("contract"), unique_name("a"), unique_name("b")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group_a, group_b)
        await broker.emit(topic, {"i": 0})
        a = await consume(broker, topic, 1, group_id=group_a)
        b = await consume(broker, topic, 1, group_id=group_b)
        assert a.items[0].value == b.items[0].value == {"i": 0}

    async def test_emit_of_unserialisable_value_raises_type_error(self, broker: Broker) -> None:
        with pytest.raises(TypeError):
            await broker.emit(unique_name("contract"), {"x": object()})

    async def test_stopping_the_broker_completes_running_sources_after_commit(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit(topic, {"i": 0})
        got: list[Message] = []
        done = asyncio.Event()
        broker.source(topic, group_id=group).subscribe(got.append, lambda e: done.set(), done.set)
        await wait_for(lambda: got, what="the first message")
        await broker.stop()
        await asyncio.wait_for(done.wait(), 10)
        assert [m.value for m in got] == [{"i": 0}]
        await broker.start()
        assert await broker.committed(group, topic, 0) == 1

    @pytest.mark.parametrize(
        "headers",
        [
            {"trace-id": "abc", "bin": b"\x00\x01", "none": None},
            [("trace-id", "abc"), ("bin", b"\x00\x01"), ("none", None)],
        ],
        ids=["mapping", "pairs"],
    )
    async def test_headers_of_every_accepted_shape_arrive_as_bytes(self, broker: Broker, headers: Any) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit(topic, {"i": 0}, headers=headers)
        got = await consume(broker, topic, 1, group_id=group)
        assert list(got.items[0].headers) == [("trace-id", b"abc"), ("bin", b"\x00\x01"), ("none", b"")]
        assert got.items[0].header("trace-id") == b"abc"

    @pytest.mark.parametrize(
        ("headers", "names"),
        [(["trace-id"], "headers[0]"), ([("n", 5)], "header 'n'"), ("trace=abc", "mapping or a sequence")],
    )
    async def test_headers_of_another_shape_are_refused_with_type_error(
        self, broker: Broker, headers: Any, names: str
    ) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        with pytest.raises(TypeError, match=re.escape(names)):
            await broker.emit(topic, {"i": 0}, headers=headers)
        await broker.emit(topic, {"i": 1})  # nothing was stored: the next record is offset 0
        got = await consume(broker, topic, 1, group_id=group)
        assert [(m.offset, m.value) for m in got.items] == [(0, {"i": 1})]

    async def test_dispose_from_on_next_leaves_that_message_uncommitted(self, broker: Broker) -> None:
        # take(2) disposes the subscription inside on_next of offset 1: the source cannot know
        # that message was handled, so it stays uncommitted (redelivered), and nothing after it
        # (fetched, never delivered) is committed either
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(40)])
        got = await collect(broker.source(topic, group_id=group).pipe(ops.take(2)))
        assert got.completed and [m.offset for m in got.items] == [0, 1]

        async def committed_one() -> bool:
            return await broker.committed(group, topic, 0) == 1

        await wait_for(committed_one, what="offset 1 committed (the handled message 0)")
        again = await consume(broker, topic, 1, group_id=group)
        assert [m.offset for m in again.items] == [1]

    async def test_an_observer_that_raises_ends_the_stream_and_its_message_stays_uncommitted(
        self, broker: Broker
    ) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(5)])

        def on_each(m: Message) -> None:
            if m.value["i"] == 2:
                raise ValueError("bad record")

        got = await consume(broker, topic, 5, group_id=group, on_each=on_each)
        assert isinstance(got.error, ValueError) and [m.offset for m in got.items] == [0, 1]
        assert await broker.committed(group, topic, 0) == 2
        again = await consume(broker, topic, 1, group_id=group)
        assert [m.offset for m in again.items] == [2]

    async def test_records_kept_in_a_batch_are_not_committed_and_come_again_after_a_crash(self, broker: Broker) -> None:
        # the records wait in a batch that is never emitted (30 s); the subscription is disposed,
        # as a crash would end it: nothing was committed, a restart of the group gets them all
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(10)])
        seen: list[int] = []
        batches: list[list[Message]] = []

        def see(m: Message) -> None:
            seen.append(m.offset)

        subscription = (
            broker.source(topic, group_id=group).pipe(ops.do_action(see), batch(30.0, 100)).subscribe(batches.append)
        )
        await wait_for(lambda: len(seen) == 10, what="the ten records delivered")
        await asyncio.sleep(1.5)  # longer than a commit interval: a wrong commit would be made by now
        assert await broker.committed(group, topic, 0) in (None, 0)
        subscription.dispose()
        assert batches == []
        again = await consume(broker, topic, 10, group_id=group)
        assert [m.offset for m in again.items] == list(range(10))

    async def test_a_batch_flushed_by_a_graceful_stop_is_committed_once_handled(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(10)])
        stop, closed = asyncio.Event(), asyncio.Event()
        closings: list[int] = []
        seen: list[int] = []
        inserted: list[list[int]] = []

        def see(m: Message) -> None:
            seen.append(m.offset)

        async def insert(rows: list[int]) -> None:
            await asyncio.sleep(0.05)
            inserted.append(rows)

        def insert_batch(batch_: list[Message]) -> None:
            track(insert([m.value["i"] for m in batch_]))

        def on_closed() -> None:
            closings.append(len(inserted))
            closed.set()

        got = asyncio.ensure_future(
            collect(
                broker.source(topic, group_id=group, stop=stop, on_closed=on_closed).pipe(
                    ops.do_action(see), batch(30.0, 100), ops.do_action(insert_batch)
                )
            )
        )
        await wait_for(lambda: len(seen) == 10, what="the ten records delivered")
        stop.set()
        result = await got
        assert result.completed
        # on_closed comes after the completion, the final batch's insert and the last commit
        await asyncio.wait_for(closed.wait(), 30)
        assert closings == [1] and inserted == [list(range(10))]
        assert await broker.committed(group, topic, 0) == 10

    async def test_on_closed_is_called_once_however_the_subscription_ends(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit(topic, {"i": 0})
        calls: list[str] = []
        first = asyncio.Event()
        subscription = broker.source(topic, group_id=group, on_closed=lambda: calls.append("disposed")).subscribe(
            lambda m: first.set()
        )
        await asyncio.wait_for(first.wait(), 30)
        subscription.dispose()
        await wait_for(lambda: calls == ["disposed"], what="on_closed after a dispose")
        stopped = asyncio.Event()
        stopped.set()  # stopped at once: completes without a record
        got = await collect(
            broker.source(topic, group_id=unique_name("g"), stop=stopped, on_closed=lambda: calls.append("stopped"))
        )
        assert got.completed
        await wait_for(lambda: calls == ["disposed", "stopped"], what="on_closed after a stop")

    # -- source_batches -------------------------------------------------------------------

    async def test_source_batches_gives_lists_of_one_partition_in_offset_order(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=3)
        await self.prepare(broker, [topic], group)
        for i in range(60):
            await broker.emit(topic, {"i": i}, key=f"k{i % 5}")
        stop = asyncio.Event()
        seen: list[Batch] = []
        values: list[list[Any]] = []

        def on_batch(batch: Batch) -> None:
            values.append(list(batch.values))  # read before the messages are made
            seen.append(batch)
            if sum(map(len, seen)) >= 60:
                stop.set()

        got = await collect(broker.source_batches(topic, group_id=group, stop=stop), None, on_each=on_batch)
        assert got.error is None and got.completed
        assert sum(len(b) for b in seen) == 60
        for records, vals in zip(seen, values, strict=True):
            assert records and len({m.partition for m in records}) == 1
            assert {(m.topic, m.partition) for m in records} == {(records.topic, records.partition)}
            offsets = [m.offset for m in records]
            assert offsets == list(range(offsets[0], offsets[0] + len(records))) == records.offsets
            assert [m.value for m in records] == vals == records.values
            assert records[0] is records[0] and records[-1].offset == offsets[-1]  # made once, then kept
        by_key: dict[bytes | None, list[int]] = {}
        for m in (m for b in seen for m in b):
            by_key.setdefault(m.key, []).append(m.value["i"])
        assert all(v == sorted(v) and len(v) == 12 for v in by_key.values())
        await _committed_to_the_end(broker, group, topic, 60, self.has_log)

    async def test_tracked_work_holds_back_the_whole_batch(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        for i in range(5):
            await broker.emit(topic, {"i": i})
        release = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        seen: list[int] = []

        def on_batch(batch: Batch) -> None:
            seen.extend(m.value["i"] for m in batch)
            track(release)  # the whole list waits for it

        subscription = broker.source_batches(topic, group_id=group, stop=stop).subscribe(on_batch)
        try:
            await wait_for(lambda: seen, what="a first list")
            await asyncio.sleep(0.3)
            assert await broker.committed(group, topic, 0) in (None, 0)  # nothing of the list yet
            release.set_result(None)
            await wait_for(lambda: len(seen) == 5, what="every record")
            stop.set()
            await wait_for(lambda: broker.committed(group, topic, 0), what="a commit")
            await wait_for(lambda: _eq(broker.committed(group, topic, 0), 5), what="offset 5 committed")
        finally:
            subscription.dispose()

    async def test_a_message_of_a_batch_tracking_work_holds_back_the_whole_batch(self, broker: Broker) -> None:
        """``Message.track`` / ``Message.hold`` on any message of a batch (not only ``track()``
        during ``on_next``) keep every record of the batch uncommitted until they settle."""
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        for i in range(4):
            await broker.emit(topic, {"i": i})
        release = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        seen: list[int] = []
        holds: list[Any] = []

        def on_batch(batch: Batch) -> None:
            seen.extend(batch.values[j]["i"] for j in range(len(batch)))
            batch[0].track(release)  # the first record's work, not the carrier's
            holds.append(batch[1].hold() if len(batch) > 1 else batch[0].hold())

        subscription = broker.source_batches(topic, group_id=group, stop=stop).subscribe(on_batch)
        try:
            await wait_for(lambda: len(seen) == 4, what="every record")
            await asyncio.sleep(0.3)
            assert await broker.committed(group, topic, 0) in (None, 0)
            release.set_result(None)
            await asyncio.sleep(0.3)
            assert await broker.committed(group, topic, 0) in (None, 0)  # the holds are still taken
            for held in holds:
                held.release()
            stop.set()
            await wait_for(lambda: _eq(broker.committed(group, topic, 0), 4), what="offset 4 committed")
        finally:
            subscription.dispose()

    async def test_an_undecodable_record_is_dead_lettered_and_left_out_of_its_list(self, broker: Broker) -> None:
        topic, group, ops_group = unique_name("contract"), unique_name("g"), unique_name("ops")
        await broker.create_topics([topic, f"{topic}.DLT"], partitions=1)
        await self.prepare(broker, [topic], group)
        await self.prepare(broker, [f"{topic}.DLT"], ops_group)
        await broker.emit(topic, {"i": 0})
        await broker.emit(topic, b"{not json", key="bad")
        await broker.emit(topic, {"i": 2})
        stop = asyncio.Event()
        seen: list[int] = []

        def on_batch(batch: Batch) -> None:
            seen.extend(m.value["i"] for m in batch)
            if len(seen) == 2:
                stop.set()

        got = await collect(broker.source_batches(topic, group_id=group, stop=stop), None, on_each=on_batch)
        assert got.error is None and seen == [0, 2]
        assert await broker.committed(group, topic, 0) == 3
        dead = await consume(broker, f"{topic}.DLT", 1, decode=None, group_id=ops_group)
        assert dead.items[0].raw == b"{not json"
        assert headers_to_dict(dead.items[0].headers)["dlt.original.offset"] == "1"

    async def test_a_batch_whose_on_next_raises_is_not_committed_and_comes_again(self, broker: Broker) -> None:
        topic, group = unique_name("contract"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        for i in range(4):
            await broker.emit(topic, {"i": i})

        def fail(batch: Batch) -> None:
            raise RuntimeError("handler bug")

        got = await collect(broker.source_batches(topic, group_id=group), None, on_each=fail)
        assert isinstance(got.error, RuntimeError)
        assert await broker.committed(group, topic, 0) in (None, 0)  # nothing of the list
        stop = asyncio.Event()
        again: list[int] = []

        def take(batch: Batch) -> None:
            again.extend(m.value["i"] for m in batch)
            if len(again) >= 4:
                stop.set()

        second = await collect(broker.source_batches(topic, group_id=group, stop=stop), None, on_each=take)
        assert second.error is None and again == [0, 1, 2, 3]
        assert await broker.committed(group, topic, 0) == 4

    # -- exactly-once ---------------------------------------------------------------------

    async def _transform(
        self, broker: Broker, topic: str, out: str, group: str, *, fail_at: int | None = None, n: int = 6
    ) -> Any:
        """Read ``topic`` exactly-once, emitting ``{"i": i}`` to ``out`` per record (tracked);
        record ``fail_at``'s emit is followed by failing work. Returns what ``collect`` got."""
        stop = asyncio.Event()
        seen: list[int] = []

        async def fails() -> None:
            raise RuntimeError("handler failed after its emit")

        def on_each(m: Message) -> None:
            i = m.value["i"]
            seen.append(i)
            track(broker.emit(out, {"i": i}, key=str(i)))
            if i == fail_at:
                track(fails())
            if len(seen) >= n:
                stop.set()

        source = broker.source(topic, group_id=group, stop=stop, processing_guarantee="exactly_once")
        return await collect(source, None, on_each=on_each)

    async def _read_committed(self, broker: Broker, topic: str, n: int) -> list[int]:
        """The values of ``topic`` a read-committed reader sees, once it saw ``n`` (or after 1 s)."""
        stop = asyncio.Event()
        seen: list[int] = []

        def on_each(m: Message) -> None:
            seen.append(m.value["i"])
            if len(seen) >= n:
                stop.set()

        source = broker.source(topic, group_id=unique_name("reader"), stop=stop, processing_guarantee="exactly_once")
        subscription = source.subscribe(on_each)
        try:
            await wait_for(lambda: len(seen) >= n, timeout=30.0, what=f"{n} committed records of {topic}")
            await asyncio.sleep(0.5)  # and nothing more
        finally:
            stop.set()
            await asyncio.sleep(0)
            subscription.dispose()
        return sorted(seen)

    async def test_exactly_once_outputs_and_offsets_commit_together(self, broker: Broker) -> None:
        if not self.has_log:  # exactly-once needs a log's transactions: refused with the key named
            with pytest.raises(ConfigError, match="^processing_guarantee"):
                broker.source("t", group_id="g", processing_guarantee="exactly_once")
            return
        topic, out, group = unique_name("contract"), unique_name("out"), unique_name("g")
        await broker.create_topics([topic, out], partitions=2)
        for i in range(6):
            await broker.emit(topic, {"i": i}, key=str(i))
        got = await self._transform(broker, topic, out, group)
        assert got.error is None and got.completed
        ends = await broker.end_offsets(topic)
        for partition, end in ends.items():  # Kafka: a transaction's offsets are readable once its markers are written

            async def at_end(partition: int = partition, end: int = end) -> bool:
                return await broker.committed(group, topic, partition) == (end or None)

            await wait_for(at_end, 10.0, what=f"partition {partition} committed to its end")
        assert await self._read_committed(broker, out, 6) == [0, 1, 2, 3, 4, 5]

    async def test_exactly_once_a_failure_aborts_the_outputs_and_the_records_come_again(self, broker: Broker) -> None:
        if not self.has_log:  # exactly-once needs a log's transactions: refused with the key named
            with pytest.raises(ConfigError, match="^processing_guarantee"):
                broker.source("t", group_id="g", processing_guarantee="exactly_once")
            return
        topic, out, group = unique_name("contract"), unique_name("out"), unique_name("g")
        await broker.create_topics([topic, out], partitions=1)
        for i in range(6):
            await broker.emit(topic, {"i": i}, key=str(i))
        failed = await self._transform(broker, topic, out, group, fail_at=3)
        assert isinstance(failed.error, RuntimeError)
        assert await broker.committed(group, topic, 0) in (None, 0)  # nothing of the transaction
        again = await self._transform(broker, topic, out, group)
        assert again.error is None and again.completed
        await wait_for(lambda: _eq(broker.committed(group, topic, 0), 6), 10.0, what="offset 6 committed")
        # the first run's outputs were aborted with its transaction: each input's output once
        assert await self._read_committed(broker, out, 6) == [0, 1, 2, 3, 4, 5]

    async def test_read_log_reads_from_offsets_without_a_group(self, broker: Broker) -> None:
        topic = unique_name("contract")
        await broker.create_topics([topic], partitions=2)
        if not self.has_log:  # a queue broker keeps no log to read again: refused, saying why
            with pytest.raises(BrokerError, match="no log"):
                await broker.read_log({(topic, 0): 0})
            return
        metas = [await broker.emit(topic, {"i": i}, key="k") for i in range(10)]
        await broker.emit(topic, b"not json", key="k")
        p = metas[0].partition
        other = 1 - p
        assert (await broker.beginning_offsets(topic)) == {0: 0, 1: 0}
        assert await broker.beginning_offsets(unique_name("missing")) == {}
        # two readers read the same records independently
        readers = [await broker.read_log({(topic, p): metas[3].offset, (topic, other): 0}) for _ in range(2)]
        try:
            for reader in readers:
                got: list[Message] = []
                async with asyncio.timeout(20):
                    while len(got) < 7:
                        got.extend(await reader.read(4, 0.5))
                assert [m.value["i"] for m in got] == list(range(3, 10))
                assert [m.offset for m in got] == [meta.offset for meta in metas[3:]]
                assert all(m.topic == topic and m.partition == p and m.key == b"k" for m in got)
                async with asyncio.timeout(20):  # the undecodable record is skipped, its offset passed
                    while reader.positions[(topic, p)] < metas[-1].offset + 2:
                        assert await reader.read(4, 0.3) == []
                assert reader.positions == {(topic, p): metas[-1].offset + 2, (topic, other): 0}
            await broker.emit(topic, {"i": 10}, key="k")
            for reader in readers:
                async with asyncio.timeout(20):
                    while not (more := await reader.read(10, 0.5)):
                        pass
                assert [m.value for m in more] == [{"i": 10}]
        finally:
            for reader in readers:
                await reader.close()
        assert await broker.committed("any-group", topic, p) is None

    async def test_read_log_refuses_a_position_outside_the_log(self, broker: Broker) -> None:
        if not self.has_log:
            return
        topic = unique_name("contract")
        await broker.create_topics([topic], partitions=1)
        await broker.emit(topic, {"i": 0})
        reader = await broker.read_log({(topic, 0): 5})
        try:
            with pytest.raises(BrokerError, match="out of range"):
                async with asyncio.timeout(20):
                    while True:
                        await reader.read(10, 0.5)
        finally:
            await reader.close()

    async def test_processing_guarantee_must_be_known(self, broker: Broker) -> None:
        with pytest.raises(ConfigError, match="processing_guarantee"):
            broker.source("t", group_id="g", processing_guarantee="at_most_once")  # type: ignore[arg-type]


async def _committed_to_the_end(broker: Broker, group: str, topic: str, published: int, has_log: bool) -> None:
    """Every partition of ``topic`` committed to its end by ``group`` (a broker without a log:
    the committed counts add up to the ``published`` records)."""
    ends = await broker.end_offsets(topic)
    committed = {p: await broker.committed(group, topic, p) for p in ends}
    if has_log:
        assert committed == {p: end or None for p, end in ends.items()}
    else:
        assert sum(c or 0 for c in committed.values()) == published


async def _eq(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


class _Held:
    """An Observer whose every message tracks a future the test resolves; counts in flight."""

    def __init__(self) -> None:
        self.futures: dict[int, asyncio.Future[None]] = {}
        self.order: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.completed = False
        self.error: BaseException | None = None
        self.done = asyncio.Event()

    def on_next(self, m: Message) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures[m.offset] = fut
        self.order.append(m.offset)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        m.track(fut)

    def resolve(self, offset: int, exc: BaseException | None = None) -> None:
        self.in_flight -= 1
        if exc is None:
            self.futures[offset].set_result(None)
        else:
            self.futures[offset].set_exception(exc)

    def on_error(self, e: BaseException) -> None:
        self.error = e
        self.done.set()

    def on_completed(self) -> None:
        self.completed = True
        self.done.set()


@pytest.mark.asyncio
class ConcurrencyContract(BrokerFixture):
    """``source(..., concurrency=K)``: several messages in flight, commits that never pass an unfinished one.

    Handlers track futures the test resolves in a chosen order, so the order in which messages
    complete is under the test's control (no timing assumptions beyond "eventually").
    """

    async def test_commit_never_passes_an_unfinished_message(self, broker: Broker) -> None:
        topic, group = unique_name("conc"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(8)])
        held, stop = _Held(), asyncio.Event()
        sub = broker.source(topic, group_id=group, stop=stop, concurrency=4).subscribe(
            held.on_next, held.on_error, held.on_completed
        )
        try:
            await wait_for(lambda: len(held.order) == 4, what="4 messages in flight")
            for offset in (3, 2, 1):  # everything but the oldest
                held.resolve(offset)
            await wait_for(lambda: len(held.order) == 7, what="3 more delivered")
            assert held.order == list(range(7))
            assert held.max_in_flight == 4
            for _ in range(15):  # spans more than one commit interval of the Kafka source
                assert await broker.committed(group, topic, 0) in (None, 0)
                await asyncio.sleep(0.1)
            held.resolve(0)  # 0..3 done, 4..6 in flight -> 4
            for offset in (6, 5):
                held.resolve(offset)
            await wait_for(lambda: len(held.order) == 8, what="the last message")

            async def reached_4() -> bool:
                committed = await broker.committed(group, topic, 0) or 0
                assert committed <= 4
                return committed == 4

            await wait_for(reached_4, timeout=10, interval=0.05, what="the commit to reach 4")
            held.resolve(4)
            held.resolve(7)
            stop.set()
            await asyncio.wait_for(held.done.wait(), 30)
        finally:
            sub.dispose()
        assert held.completed and held.error is None
        assert await broker.committed(group, topic, 0) == 8

    async def test_per_key_order_is_kept(self, broker: Broker) -> None:
        topic, group = unique_name("conc-key"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        keys = [f"k{i % 3}" for i in range(15)] + [None] * 3
        await broker.emit_batch(topic, [(k, {"i": i}) for i, k in enumerate(keys)])
        events: list[tuple[str, Any, int]] = []
        held, stop = _Held(), asyncio.Event()
        on_next = held.on_next

        def record(m: Message) -> None:
            events.append(("next", m.key, m.offset))
            on_next(m)

        sub = broker.source(topic, group_id=group, stop=stop, concurrency=4).subscribe(
            record, held.on_error, held.on_completed
        )
        rng = random.Random(7)
        try:
            finished: set[int] = set()
            while len(finished) < len(keys):
                await wait_for(lambda: len(held.futures) > len(finished), what="a message in flight")
                await asyncio.sleep(0.02)  # let the source deliver whatever it may
                pending = [o for o in held.futures if o not in finished]
                offset = pending[-1] if rng.random() < 0.7 else rng.choice(pending)  # mostly newest first
                held.resolve(offset)
                finished.add(offset)
                key = keys[offset]
                events.append(("done", key.encode() if key else None, offset))
            stop.set()
            await asyncio.wait_for(held.done.wait(), 30)
        finally:
            sub.dispose()
        assert held.error is None and held.completed
        assert held.max_in_flight <= 4
        # Per key: delivered in offset order, and never before the previous one of its key completed.
        busy: dict[bytes, int] = {}
        seen: dict[bytes, list[int]] = {}
        for kind, k, offset in events:
            if k is None:
                continue
            if kind == "next":
                assert k not in busy, f"{k!r}@{offset} delivered while {busy.get(k)} was in flight"
                busy[k] = offset
                seen.setdefault(k, []).append(offset)
            else:
                assert busy.pop(k) == offset
        for k, offsets in seen.items():
            assert offsets == sorted(offsets) and len(offsets) == 5, k
        assert await broker.committed(group, topic, 0) == len(keys)

    async def test_at_most_k_in_flight_and_everything_committed(self, broker: Broker) -> None:
        topic, group = unique_name("conc-many"), unique_name("g")
        await broker.create_topics([topic], partitions=3)
        await self.prepare(broker, [topic], group)
        n = 300
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(n)])
        state = {"in_flight": 0, "max": 0, "handled": 0}
        stop = asyncio.Event()
        rng = random.Random(3)

        async def work() -> None:
            await asyncio.sleep(rng.random() * 0.004)
            state["in_flight"] -= 1
            state["handled"] += 1
            if state["handled"] == n:
                stop.set()

        def on_next(m: Message) -> None:
            state["in_flight"] += 1
            state["max"] = max(state["max"], state["in_flight"])
            m.track(work())

        got = await collect(broker.source(topic, group_id=group, stop=stop, concurrency=4), timeout=60, on_each=on_next)
        assert got.error is None
        assert state["handled"] == n
        assert state["max"] == 4  # the bound is reached and never passed
        await _committed_to_the_end(broker, group, topic, n, self.has_log)

    async def test_a_failed_message_is_not_committed(self, broker: Broker) -> None:
        topic, group = unique_name("conc-fail"), unique_name("g")
        await broker.create_topics([topic], partitions=1)
        await self.prepare(broker, [topic], group)
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(6)])
        held = _Held()
        sub = broker.source(topic, group_id=group, concurrency=3).subscribe(
            held.on_next, held.on_error, held.on_completed
        )
        boom = RuntimeError("write failed")
        try:
            await wait_for(lambda: len(held.order) == 3)
            held.resolve(0)
            held.resolve(2)
            await wait_for(lambda: len(held.order) == 5)
            held.resolve(3)
            held.resolve(4)
            await wait_for(lambda: len(held.order) == 6)
            held.resolve(5)
            held.resolve(1, boom)  # everything after 1 is done, 1 fails
            await asyncio.wait_for(held.done.wait(), 30)
        finally:
            sub.dispose()
        assert held.error is boom and not held.completed
        assert await broker.committed(group, topic, 0) == 1

    async def test_concurrency_must_be_a_positive_int(self, broker: Broker) -> None:
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ConfigError):
                broker.source("t", group_id="g", concurrency=bad)  # type: ignore[arg-type]
