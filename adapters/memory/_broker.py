"""An in-memory broker with Kafka's model: topics, partitions, offsets, consumer groups, commits.

It is the embedded default of the demo and a test double users can import for their own
tests (as FastStream ships ``TestKafkaBroker``). It implements :class:`reactive_services.adapters.Broker`,
the same Protocol as :class:`reactive_services.adapters.kafka.KafkaBroker`, and passes the same contract tests.

What it models: records appended to partitions chosen from the key (same key, same
partition, so per-key order holds); per-group committed offsets; group members sharing
the partitions of their topics (range-style, reassigned whenever a member joins or leaves);
commit only after the Observer handled a record; a maximum record size. What it does not
model: replication, retention, transactions, wall-clock timeouts of members.
Everything runs on the one asyncio event loop that called :meth:`InMemoryBroker.start`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import reactivex
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.disposable import Disposable

from reactive_services.errors import ConfigError, PublishError

from .._codec import dead_letter_headers, dead_letter_topic, decode_json, encode_key, encode_value
from .._inflight import InFlight
from .._message import YIELD_EVERY, Headers, Message, RecordMetadata, deliver
from .._protocol import Decoder
from .._sink import BrokerSink

__all__ = ["InMemoryBroker"]

log = logging.getLogger("reactive_services.memory")


@dataclass(slots=True)
class _Record:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


@dataclass
class _Member:
    member_id: int
    topics: tuple[str, ...]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    assignment: list[tuple[str, int]] = field(default_factory=list)
    generation: int = 0


@dataclass
class _Group:
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    members: list[_Member] = field(default_factory=list)
    generation: int = 0


class InMemoryBroker:
    """A broker held in this process's memory.

    Args:
        partitions: partitions of a topic created implicitly (by a publish or a subscribe).
        max_record_bytes: the largest value accepted, in bytes (Kafka's default
            ``message.max.bytes`` is about 1 MiB); a larger record raises :class:`PublishError`.
        max_batch: records a source hands to its Observer between two commits.

    Raises:
        ConfigError: a setting is out of range (names the setting).
    """

    kind = "memory"

    def __init__(self, *, partitions: int = 3, max_record_bytes: int = 1_048_576, max_batch: int = 500) -> None:
        if partitions < 1:
            raise ConfigError("partitions", f"must be >= 1, got {partitions}")
        if max_record_bytes < 1:
            raise ConfigError("max_record_bytes", f"must be >= 1, got {max_record_bytes}")
        if max_batch < 1:
            raise ConfigError("max_batch", f"must be >= 1, got {max_batch}")
        self.default_partitions = partitions
        self.max_record_bytes = max_record_bytes
        self.max_batch = max_batch
        self._topics: dict[str, list[list[_Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._round_robin = itertools.count()
        self._member_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._sinks: list[BrokerSink] = []
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started

    async def start(self) -> None:
        """Mark the broker as running (there is nothing to connect to)."""
        self._started = True
        self._closing = asyncio.Event()

    async def stop(self, timeout: float = 10.0) -> None:
        """End every running source gracefully, then flush the sinks.

        As with Kafka, each source finishes the message in hand, commits and calls
        ``on_completed``; one still busy after ``timeout`` seconds is cancelled.

        Raises:
            PublishError: a record published through a sink failed (the first failure).
        """
        self._closing.set()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            for sink in self._sinks:
                await sink.flush()
        finally:
            self._started = False

    async def __aenter__(self) -> InMemoryBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- topics ----------------------------------------------------------------------------
    async def create_topics(self, topics: Sequence[str], *, partitions: int = 3) -> None:
        """Create the topics that do not exist yet, with ``partitions`` partitions each."""
        for topic in topics:
            self._topic(topic, partitions)

    def _topic(self, topic: str, partitions: int | None = None) -> list[list[_Record]]:
        parts = self._topics.get(topic)
        if parts is None:
            if not topic:
                raise ConfigError("topic", "must be a non-empty string")
            parts = self._topics[topic] = [[] for _ in range(partitions or self.default_partitions)]
        return parts

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to be written}`` of ``topic`` (empty if it does not exist)."""
        return {p: len(records) for p, records in enumerate(self._topics.get(topic, []))}

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """The committed offset of ``group_id`` on ``topic``/``partition``, or None."""
        group = self._groups.get(group_id)
        return None if group is None else group.committed.get((topic, partition))

    def records(self, topic: str) -> list[Message]:
        """Every record of ``topic`` as Messages (value: the raw bytes), partition by partition.

        A test helper: e.g. ``[m.value for m in broker.records("orders.DLT")]``.
        """
        out = []
        for p, records in enumerate(self._topics.get(topic, [])):
            for offset, rec in enumerate(records):
                out.append(Message(topic, p, offset, rec.key, rec.value, rec.headers, rec.timestamp_ms, rec.value))
        return out

    # -- producing -------------------------------------------------------------------------
    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Append one record; see :meth:`reactive_services.adapters.Broker.emit`.

        Raises:
            PublishError: the broker is not started, or the value is over ``max_record_bytes``.
            TypeError: ``value`` is not JSON-serialisable.
        """
        return self._append(topic, encode_key(key), encode_value(value), headers, timestamp_ms)

    async def emit_batch(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Append many ``(key, value)`` records in order; see :meth:`reactive_services.adapters.Broker.emit_batch`."""
        encoded = [(encode_key(k), encode_value(v)) for k, v in records]
        return [self._append(topic, k, v, None, None) for k, v in encoded]

    def _append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp_ms: int | None,
    ) -> RecordMetadata:
        if not self._started:
            raise PublishError(f"cannot publish to {topic!r}: the in-memory broker is not started")
        if value is not None and len(value) > self.max_record_bytes:
            raise PublishError(
                f"record of {len(value)} bytes to {topic!r} is over max_record_bytes={self.max_record_bytes}"
            )
        parts = self._topic(topic)
        if key is None:
            partition = next(self._round_robin) % len(parts)
        else:
            partition = zlib.crc32(key) % len(parts)
        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        records = parts[partition]
        records.append(_Record(key, value, tuple(headers or ()), ts))
        self._wake(topic)
        return RecordMetadata(topic, partition, len(records) - 1, ts)

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> BrokerSink:
        """An Observer publishing each value to ``topic``; see :class:`reactive_services.adapters.BrokerSink`."""
        sink = BrokerSink(self, topic, key=key)
        self._sinks.append(sink)
        return sink

    # -- consumer groups -------------------------------------------------------------------
    def _wake(self, topic: str) -> None:
        for group in self._groups.values():
            for member in group.members:
                if topic in member.topics:
                    member.wake.set()

    def _rebalance(self, group: _Group) -> None:
        group.generation += 1
        partitions: dict[str, list[int]] = {}
        for member in group.members:
            member.assignment = []
            member.generation = group.generation
            member.wake.set()
            for topic in member.topics:
                partitions.setdefault(topic, list(range(len(self._topic(topic)))))
        for topic, parts in partitions.items():
            subscribers = [m for m in group.members if topic in m.topics]
            for i, p in enumerate(parts):
                subscribers[i % len(subscribers)].assignment.append((topic, p))

    def assignment(self, group_id: str) -> list[list[tuple[str, int]]]:
        """The partitions each current member of ``group_id`` owns (a test helper)."""
        group = self._groups.get(group_id)
        return [] if group is None else [list(m.assignment) for m in group.members]

    def source(
        self,
        topics: str | Sequence[str],
        *,
        group_id: str,
        decode: Decoder = "json",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        stop: asyncio.Event | None = None,
        on_assigned: Callable[[], None] | None = None,
        concurrency: int = 1,
    ) -> Observable[Message]:
        """A cold Observable of ``topics`` read in consumer group ``group_id``.

        See :meth:`reactive_services.adapters.Broker.source` for the contract (commit after handling,
        dead-lettering of undecodable records, ``stop`` completes, dispose closes,
        ``on_assigned`` once the first assignment is positioned, ``concurrency``).

        With ``concurrency`` K > 1 the source stops delivering while K messages are in
        flight, a keyed message waits for the previous in-flight one of its key and
        partition, and each partition's committed offset is its lowest offset still in
        flight (updated whenever a message settles). When ``stop`` is set it waits for the
        messages in flight before committing and completing; after a failure it waits for
        the others at most ``drain_timeout_s`` (5) seconds.

        Raises:
            ConfigError: no topic, an empty group id, an unknown ``auto_offset_reset``, or
                ``concurrency`` not an int >= 1.
        """
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        if not names:
            raise ConfigError("topics", "at least one topic is required")
        if not group_id:
            raise ConfigError("group_id", "must be a non-empty string")
        if auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError("auto_offset_reset", f"must be 'earliest' or 'latest', got {auto_offset_reset!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError("concurrency", f"must be an int >= 1, got {concurrency!r}")

        def subscribe(observer: ObserverBase[Message], scheduler: SchedulerBase | None = None) -> DisposableBase:
            task = asyncio.get_running_loop().create_task(
                self._consume(observer, names, group_id, decode, auto_offset_reset, stop, on_assigned, concurrency),
                name=f"memory-source:{group_id}:{','.join(names)}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return Disposable(task.cancel)

        return reactivex.create(subscribe)

    async def _consume(
        self,
        observer: ObserverBase[Message],
        topics: tuple[str, ...],
        group_id: str,
        decode: Decoder,
        auto_offset_reset: str,
        stop: asyncio.Event | None,
        on_assigned: Callable[[], None] | None = None,
        concurrency: int = 1,
    ) -> None:
        for topic in topics:
            self._topic(topic)
        group = self._groups.setdefault(group_id, _Group())
        member = _Member(next(self._member_ids), topics)
        group.members.append(member)
        self._rebalance(group)
        stop = _AnyEvent(stop or asyncio.Event(), self._closing)
        positions: dict[tuple[str, int], int] = {}
        generation = -1
        window: InFlight | None = None
        if concurrency > 1:

            def commit_window() -> None:
                assert window is not None
                for tp in member.assignment:
                    offset = window.tracker.committable(tp)
                    if offset is not None:
                        group.committed[tp] = offset

            window = InFlight(concurrency, on_settled=commit_window)
            idle_stop = _AnyEvent(*stop.events, window.failed)
        try:
            while not stop.is_set():
                if window is not None and window.error is not None:
                    raise window.error
                if generation != member.generation:  # a rebalance: keep our place in partitions we kept
                    generation = member.generation
                    if window is not None:
                        for tp in positions:
                            if tp not in member.assignment:
                                window.forget(tp)  # its unfinished messages go to the new owner
                    positions = {
                        tp: positions[tp] if tp in positions else self._start_offset(group, tp, auto_offset_reset)
                        for tp in member.assignment
                    }
                    if on_assigned is not None and positions:  # assigned and positioned
                        signal, on_assigned = on_assigned, None
                        signal()
                member.wake.clear()
                delivered = 0
                for tp in list(positions):
                    records = self._topic(tp[0])[tp[1]]
                    while positions[tp] < len(records) and delivered < self.max_batch:
                        if stop.is_set() or generation != member.generation:
                            break
                        offset = positions[tp]
                        if window is not None:
                            if not await _admit(window, tp, records[offset].key, stop, member, generation):
                                break
                            await self._handle_concurrent(observer, window, tp, offset, records[offset], decode)
                            positions[tp] = offset + 1
                            commit_window()
                            delivered += 1
                            if delivered % YIELD_EVERY == 0:
                                await asyncio.sleep(0)
                            continue
                        await self._handle(observer, tp, offset, records[offset], decode)
                        positions[tp] = offset + 1
                        if tp in member.assignment:  # still ours after any rebalance meanwhile: commit
                            group.committed[tp] = offset + 1
                        delivered += 1
                        if delivered % YIELD_EVERY == 0:
                            await asyncio.sleep(0)  # let the loop's other tasks run
                if delivered == 0 and not stop.is_set():
                    await _wait_either(member.wake, stop if window is None else idle_stop)
                else:
                    await asyncio.sleep(0)  # let producers and other members run
            if window is not None:  # finish what is in flight, then commit
                await window.drain()
                if window.error is not None:
                    raise window.error
                commit_window()
            observer.on_completed()
        except asyncio.CancelledError:
            if window is not None:
                await window.cancel()
            raise
        except Exception as exc:  # the Observer or its tracked work failed: not committed
            if window is not None:  # let the other messages in flight finish (bounded)
                if not await window.drain(timeout=_DRAIN_TIMEOUT_S):
                    await window.cancel()
                commit_window()
            observer.on_error(exc)
        finally:
            group.members.remove(member)
            self._rebalance(group)

    async def _handle_concurrent(
        self,
        observer: ObserverBase[Message],
        window: InFlight,
        tp: tuple[str, int],
        offset: int,
        rec: _Record,
        decode: Decoder,
    ) -> None:
        msg = await self._decode(tp, offset, rec, decode)
        if msg is None:
            window.skip(tp, offset)
            return
        epoch = window.begin(tp, offset)
        deliver(observer, msg)  # raising ends the stream: the offset stays uncommitted
        window.settle(msg, tp, epoch)

    async def _decode(self, tp: tuple[str, int], offset: int, rec: _Record, decode: Decoder) -> Message | None:
        """The record as a Message, or None after sending it to ``<topic>.DLT`` when it does not decode."""
        msg = Message(tp[0], tp[1], offset, rec.key, rec.value, rec.headers, rec.timestamp_ms, rec.value)
        if decode is None:
            return msg
        try:
            msg.value = decode_json(rec.value) if decode == "json" else decode(rec.value)  # type: ignore[operator]
        except Exception as exc:
            await self.emit(dead_letter_topic(tp[0]), rec.value, key=rec.key, headers=dead_letter_headers(msg, exc))
            return None
        return msg

    def _start_offset(self, group: _Group, tp: tuple[str, int], reset: str) -> int:
        committed = group.committed.get(tp)
        if committed is not None:
            return committed
        return 0 if reset == "earliest" else len(self._topic(tp[0])[tp[1]])

    async def _handle(
        self, observer: ObserverBase[Message], tp: tuple[str, int], offset: int, rec: _Record, decode: Decoder
    ) -> None:
        msg = await self._decode(tp, offset, rec, decode)
        if msg is None:
            return
        deliver(observer, msg)
        await msg.settled()


#: Seconds a source with ``concurrency > 1`` waits, after a failure, for its other messages in flight.
_DRAIN_TIMEOUT_S = 5.0


async def _admit(
    window: InFlight, tp: tuple[str, int], key: bytes | None, stop: _AnyEvent, member: _Member, generation: int
) -> bool:
    """Wait until ``window`` has room and no earlier message of ``key`` is in flight.

    Returns False if the source must stop delivering first (stop, rebalance). Raises the
    window's failure.
    """
    while window.full() or window.key_busy(tp, key):
        if window.error is not None:
            raise window.error
        if stop.is_set() or generation != member.generation:
            return False
        await window.wait_changed(timeout=0.05)
    if window.error is not None:
        raise window.error
    return True


class _AnyEvent:
    """Set when any of its events is set."""

    def __init__(self, *events: asyncio.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


async def _wait_either(a: asyncio.Event, b: _AnyEvent) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in (a, *b.events)]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
