"""Resuming a websocket client from a cursor: the notification log, the cursor format and the
per-client catch-up reader.

A :class:`NotificationLog` says where a hub's notifications come from: the broker topics and the
pure mapping from a record to a :class:`~reactive_services.adapters.websocket.Notification`. The
hub keeps, for each partition of those topics, the position after the last notification it fanned
out (its *head*) and puts it, encoded as a cursor, in every event frame. A client that subscribes
with ``"since": <cursor>`` is caught up from the log's in-memory history of the frames the hub
fanned out last (when the cursor is that recent: a reconnect costs no broker read and no
encoding), else by a catch-up reader of its own
(:meth:`reactive_services.adapters.Broker.read_log`: no consumer group, nothing committed) that
reads the log from the cursor, maps each record with the same mapping and queues the events of
the client's channels; then the client switches to the live fan-out (see :func:`resume`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from reactive_services.errors import BrokerError, ConfigError

from .._codec import dumps
from .._message import Message
from .._protocol import Broker, Decoder, TopicPartition
from ._codec import encode_event, encode_recovery_failed

if TYPE_CHECKING:
    from ._hub import Notification, NotificationHub
    from ._server import Connection

__all__ = ["CursorError", "NotificationLog", "decode_cursor", "encode_cursor"]

logger = logging.getLogger("reactive_services.adapters.websocket")

_PREFIX = "v1."


class CursorError(ValueError):
    """A cursor that cannot be honoured: malformed, of another epoch, older than the log keeps or
    ahead of its end. ``reason`` is what the ``recovery_failed`` frame says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_cursor(epoch: str, topics: Sequence[str], positions: Mapping[TopicPartition, int]) -> str:
    """The cursor of ``positions`` (``{(topic, partition): next offset}``) over ``topics`` (in
    this order) in log ``epoch``: ``"v1."`` + unpadded base64url of the JSON ``{"e": epoch, "t":
    <8 hex digits of the topics' SHA-256>, "o": [[offset of partition 0, 1, ...] per topic]}``.
    Topic names are not repeated in every frame: the digest says which topics the offsets are
    of. Clients treat a cursor as opaque."""
    offsets = []
    for topic in topics:
        row: list[int] = []
        while (topic, len(row)) in positions:
            row.append(positions[(topic, len(row))])
        offsets.append(row)
    body = orjson.dumps({"e": epoch, "t": _digest(topics), "o": offsets})
    return _PREFIX + base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, topics: Sequence[str]) -> tuple[str, dict[TopicPartition, int]]:
    """``(epoch, {(topic, partition): next offset})`` of a cursor :func:`encode_cursor` made over
    ``topics`` (the same, in the same order).

    Raises:
        CursorError: not such a cursor (the reason starts with ``"malformed cursor: "`` and says
            which part is wrong and what was expected), or one made over other topics.
    """
    if not cursor.startswith(_PREFIX):
        raise CursorError(
            f"malformed cursor: expected {_PREFIX!r} followed by base64url, got one starting with "
            f"{cursor[: len(_PREFIX)]!r} (send back a cursor of this server's event frames, unchanged)"
        )
    text = cursor[len(_PREFIX) :]
    try:
        body = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CursorError(f"malformed cursor: the part after {_PREFIX!r} is not unpadded base64url ({exc})") from exc
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CursorError(f"malformed cursor: the part after {_PREFIX!r} does not decode to JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise CursorError(f"malformed cursor: expected a JSON object with keys e, t, o, got a {type(obj).__name__}")
    missing = [key for key in ("e", "t", "o") if key not in obj]
    if missing:
        raise CursorError(f"malformed cursor: the JSON object lacks the key(s) {', '.join(missing)} (expected e, t, o)")
    epoch, digest, offsets = obj["e"], obj["t"], obj["o"]
    if not isinstance(epoch, str):
        raise CursorError(f"malformed cursor: 'e' (the epoch) must be a string, got {type(epoch).__name__}")
    if not isinstance(digest, str):
        raise CursorError(f"malformed cursor: 't' (the topics' digest) must be a string, got {type(digest).__name__}")
    if not isinstance(offsets, list) or not all(isinstance(row, list) for row in offsets):
        raise CursorError("malformed cursor: 'o' must be a list of lists of offsets (one list per topic)")
    rows: list[list[int]] = offsets
    for index, row in enumerate(rows):
        for partition, offset in enumerate(row):
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                got = repr(offset) if isinstance(offset, int) else f"a {type(offset).__name__}"
                raise CursorError(
                    f"malformed cursor: 'o' of topic #{index}, partition {partition} must be an offset "
                    f"(an integer >= 0), got {got}"
                )
    if digest != _digest(topics) or len(rows) != len(topics):
        raise CursorError("cursor of another set of topics (the gateway reads other topics now)")
    return epoch, {(topic, p): o for topic, row in zip(topics, rows, strict=True) for p, o in enumerate(row)}


def _digest(topics: Sequence[str]) -> str:
    return _digest_of(tuple(topics))


@functools.lru_cache(maxsize=64)
def _digest_of(topics: tuple[str, ...]) -> str:
    # cached: every event frame of a hub with a log, and every catch-up frame, carries it
    return hashlib.sha256("\n".join(topics).encode()).hexdigest()[:8]


class NotificationLog:
    """Where a hub's notifications come from, so that a client can resume from a cursor.

    Give it to the server (``WebSocketServer(..., log=log)``: its default hub, ``server.hub``,
    puts cursors in frames and the server serves ``since`` with it) and :meth:`open` it before the
    live feed starts. Feed the hub
    with notifications that carry their record's position (``Notification(channel, event,
    position=(topic, partition, offset))``): :meth:`live` makes that feed (it reads the topics
    from the log end, without a consumer group, so every gateway instance gets every event), or
    any pipeline that sets ``position``.

    Args:
        broker: the broker holding the topics; it needs a log (Kafka, the in-memory broker).
        topics: the topics the notifications come from (every instance of a gateway must read
            the same ones: a cursor says which topics it is of).
        to_notification: ``Message -> Notification | None``, the mapping of a record to its
            notification (None: not forwarded). It must be pure: the catch-up readers call it
            again for records the live feed already mapped. The position is set by the caller.
        epoch: the identity of the log (e.g. ``"shop-2025-01"``): a cursor of another epoch is
            refused (``recovery_failed``). Change it when the topics are recreated or the
            deployment moves to another cluster, where the offsets mean something else.
        batch_size: records a catch-up reader takes at once at most (also bounded by the room
            left in the client's queue).
        decode: how record values are decoded (as :meth:`Broker.source
            <reactive_services.adapters.Broker.source>`).
        poll_timeout_s: how long a reader waits for records before looking again.
        max_readers: catch-up readers running at once at most (each is a broker consumer of its
            own); a client beyond that waits for one to finish, holding nothing meanwhile (the
            hub skips it until its catch-up ran).
        history: how many of the latest frames the hub fanned out are kept in memory (with
            their positions; 0: none). A client whose cursor is within them is caught up from
            memory, without a broker reader, an offset request or a slot of ``max_readers``, and
            gets the very frames the live clients got (in a reconnect storm every client's
            cursor is that recent). Memory: about ``history`` x the frame size.

    Attributes:
        head: ``{(topic, partition): next offset}``: where the hub's fan-out is (each partition's
            end at :meth:`open`, then after each notification fanned out). A cursor of this
            position resumes with what comes after.
        resumed: clients that caught up from a cursor and went live.
        recoveries_failed: ``recovery_failed`` frames sent.

    Raises:
        ConfigError: no topics, an empty ``epoch``, ``batch_size`` or ``max_readers`` < 1, or
            ``history`` < 0 (names the setting).
    """

    def __init__(
        self,
        broker: Broker,
        topics: Sequence[str],
        to_notification: Callable[[Message], Notification | None],
        *,
        epoch: str,
        batch_size: int = 500,
        decode: Decoder = "json",
        poll_timeout_s: float = 0.5,
        max_readers: int = 64,
        history: int = 10_000,
    ) -> None:
        if isinstance(topics, str) or not topics:
            raise ConfigError("topics", "must be a non-empty list of topic names")
        if not isinstance(epoch, str) or not epoch:
            raise ConfigError("epoch", f"must be a non-empty string, not {epoch!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError("batch_size", f"must be an int >= 1, not {batch_size!r}")
        if not poll_timeout_s > 0:
            raise ConfigError("poll_timeout_s", f"must be > 0 seconds, not {poll_timeout_s!r}")
        if not isinstance(max_readers, int) or max_readers < 1:
            raise ConfigError("max_readers", f"must be an int >= 1, not {max_readers!r}")
        if not isinstance(history, int) or history < 0:
            raise ConfigError("history", f"must be an int >= 0, not {history!r}")
        self.broker = broker
        self.topics = tuple(sorted(set(topics)))  # sorted: the order cursors list them in
        self._topic_set = frozenset(self.topics)
        self.to_notification = to_notification
        self.epoch = epoch
        self.batch_size = batch_size
        self.decode = decode
        self.poll_timeout_s = poll_timeout_s
        self.max_readers = max_readers
        self._slots = asyncio.Semaphore(max_readers)
        self.head: dict[TopicPartition, int] = {}
        self.resumed = 0
        self.resumed_from_history = 0
        self.recoveries_failed = 0
        self._cursor: str | None = None
        self._opened = False
        self.history = history
        #: the latest frames fanned out, oldest first: (topic, partition, offset, channel, frame
        #: (its cursor: the head after it)); entry i of the deque has the sequence number
        #: _first_seq + i
        self._frames: deque[tuple[str, int, int, str, bytes]] = deque()
        self._first_seq = 0
        #: per partition, the offset from which every notification fanned out is in _frames
        self._kept_from: dict[TopicPartition, int] = {}

    async def open(self) -> None:
        """Start :attr:`head` at the end of every partition of the topics (call it before the
        live feed starts: nothing before this point is fanned out live); a topic that does not
        exist yet is created first (``Broker.create_topics``, the broker's default partitions),
        so that the live feed has its partitions to read. Idempotent.

        Raises:
            BrokerError: the broker cannot be reached.
        """
        if self._opened:
            return
        # a topic no producer created yet would have no partition to read: the live feed would
        # stay empty for ever; created here (with the broker's defaults), existing ones untouched
        await self.broker.create_topics(list(self.topics))
        for topic in self.topics:
            for partition, end in (await self.broker.end_offsets(topic)).items():
                tp = (topic, partition)
                self.head[tp] = max(self.head.get(tp, 0), end)
                self._kept_from.setdefault(tp, self.head[tp])
        self._cursor = None
        self._opened = True

    def behind(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the record at ``offset`` is before :attr:`head`: fanned out already, or
        appended before the log was opened (a consumer group resuming from its committed
        offsets after a restart, or redelivering after a rebalance, hands such records again).
        A record of a topic that is not one of :attr:`topics` is never behind."""
        return topic in self._topic_set and offset < self.head.get((topic, partition), 0)

    def advance(self, topic: str, partition: int, offset: int) -> None:
        """The record at ``offset`` was fanned out (or mapped to nothing): move :attr:`head`
        past it. A record of a topic that is not one of :attr:`topics` is ignored (it cannot be
        read again: its notifications are live only)."""
        if topic not in self._topic_set:
            return
        tp = (topic, partition)
        if offset >= self.head.get(tp, 0):
            self.head[tp] = offset + 1
            self._cursor = None

    def keep(self, position: tuple[str, int, int], channel: str, frame: bytes) -> None:
        """Remember the ``frame`` the hub fanned out for the record at ``position`` (after
        :meth:`advance`), for the clients that resume from a recent cursor (``history``)."""
        if not self.history or position[0] not in self._topic_set:
            return
        topic, partition, offset = position
        self._kept_from.setdefault((topic, partition), offset)
        self._frames.append((topic, partition, offset, channel, frame))
        if len(self._frames) > self.history:
            old_topic, old_partition, old_offset, *_ = self._frames.popleft()
            self._first_seq += 1
            tp = (old_topic, old_partition)
            self._kept_from[tp] = max(self._kept_from.get(tp, 0), old_offset + 1)

    def recent(self, positions: Mapping[TopicPartition, int]) -> bool:
        """Whether a client at ``positions`` can be caught up from the history alone: it covers
        every partition of :attr:`head`, at or behind the head, and every notification after
        it is still kept."""
        if not self.history or positions.keys() != self.head.keys():
            return False
        kept = self._kept_from
        return all(kept.get(tp, offset) <= positions[tp] <= offset for tp, offset in self.head.items())

    def cursor(self) -> str:
        """The cursor of :attr:`head` (cached until it moves)."""
        if self._cursor is None:
            self._cursor = encode_cursor(self.epoch, self.topics, self.head)
        return self._cursor

    def caught_up(self, positions: Mapping[TopicPartition, int]) -> bool:
        """Whether ``positions`` are at or past :attr:`head` in every partition they cover (a
        partition created after a reader started is not waited for)."""
        return all(positions[tp] >= offset for tp, offset in self.head.items() if tp in positions)

    def notification(self, message: Message) -> Notification | None:
        """``to_notification(message)`` with the message's position set; None if not forwarded.

        Raises:
            Exception: whatever ``to_notification`` raises.
        """
        from ._hub import Notification

        n = self.to_notification(message)
        if n is None:
            return None
        return Notification(n.channel, n.event, (message.topic, message.partition, message.offset))

    async def start_positions(self, since: str) -> dict[TopicPartition, int]:
        """Where a client resuming after ``since`` starts reading, partition by partition.

        Raises:
            CursorError: a malformed cursor, one of another epoch, one below a partition's log
                start (deleted by retention) or past its end.
            BrokerError: the broker cannot be reached.
        """
        epoch, positions = decode_cursor(since, self.topics)
        if epoch != self.epoch:
            raise CursorError(f"cursor of another epoch ({epoch!r}, this log is {self.epoch!r})")
        start: dict[TopicPartition, int] = {}
        for topic in self.topics:
            begins = await self.broker.beginning_offsets(topic)
            for partition, end in (await self.broker.end_offsets(topic)).items():
                first = begins.get(partition, 0)
                at = positions.get((topic, partition), first)  # a partition the cursor does not know
                if at < first:
                    raise CursorError(
                        f"cursor too old: {topic}[{partition}] keeps offsets from {first}, the cursor is at {at}"
                        " (deleted by retention)"
                    )
                if at > end:
                    raise CursorError(
                        f"cursor ahead of the log: {topic}[{partition}] ends at {end}, the cursor is at {at}"
                    )
                start[(topic, partition)] = at
        return start

    def live(self) -> Observable[Notification]:
        """A cold Observable of the notifications of the records appended to the topics from
        :attr:`head` on (after :meth:`open`, done here if needed), each with its position. It
        reads without a consumer group and commits nothing; records mapped to None move
        :attr:`head` too. Subscribe the hub to it. It errors with
        :class:`~reactive_services.errors.BrokerError` when the log cannot be read; disposing
        stops the reader.
        """

        def on_subscribe(
            observer: abc.ObserverBase[Notification], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            task = asyncio.get_running_loop().create_task(self._read_live(observer))
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)

            def dispose() -> None:
                task.cancel()

            return Disposable(dispose)

        return Observable(on_subscribe)

    async def _read_live(self, observer: abc.ObserverBase[Notification]) -> None:
        try:
            await self.open()
            reader = await self.broker.read_log(dict(self.head), decode=self.decode)
        except Exception as exc:
            observer.on_error(exc)
            return
        try:
            while True:
                for message in await reader.read(self.batch_size, self.poll_timeout_s):
                    n = self.notification(message)
                    if n is None:
                        self.advance(message.topic, message.partition, message.offset)
                    else:
                        observer.on_next(n)  # the hub moves head
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            observer.on_error(exc)
        finally:
            await reader.close()


_tasks: set[asyncio.Task[None]] = set()


async def resume(log: NotificationLog, hub: NotificationHub, conn: Connection, since: str) -> None:
    """Catch ``conn`` up from ``since``, then switch it to the live fan-out (a task of the
    connection; ``conn._catching_up`` was set when its subscribe was applied, so the hub skips it
    meanwhile: nothing is buffered for it).

    Bounded: the reader takes at most ``min(batch_size, room left in the client's queue)``
    records, and only once the client's queue is empty, so it reads as fast as the client reads.

    No gap, no duplicate: the switch happens synchronously (no await) once the reader's
    positions are at or past the hub's head in every partition, so every record the hub fans out
    after that is after what the reader covered, or (the live feed behind the reader) is at or
    before the reader's position: those are skipped for this client (``conn._after``).

    A cursor that cannot be honoured (or a failing log) gets a ``recovery_failed`` frame with the
    reason and the live cursor, then the live fan-out.
    """
    try:
        epoch, positions = decode_cursor(since, log.topics)
        if epoch == log.epoch and log.recent(positions):
            vector = await _catch_up_from_history(log, hub, conn, positions)
            if vector is None:  # caught up (or closed)
                return
            since = encode_cursor(log.epoch, log.topics, vector)  # fell out of the history: the log then
        async with log._slots:
            await _catch_up(log, hub, conn, since)
    except (CursorError, BrokerError) as exc:
        _failed(log, conn, exc.reason if isinstance(exc, CursorError) else f"the log cannot be read: {exc}")
    except Exception as exc:
        logger.exception("connection %s: resuming failed", conn.id)
        _failed(log, conn, f"resuming failed: {type(exc).__name__}")
    finally:
        conn._catching_up = False


async def _catch_up(log: NotificationLog, hub: NotificationHub, conn: Connection, since: str) -> None:
    if not conn.is_open:
        return
    positions = await log.start_positions(since)
    reader = await log.broker.read_log(positions, decode=log.decode)
    try:
        vector = dict(positions)
        queue_size = conn._server.queue_size
        while conn.is_open:
            if log.caught_up(vector):
                after = {tp: off for tp, off in vector.items() if off > log.head.get(tp, 0)}
                conn._after = after or None
                conn._catching_up = False
                log.resumed += 1
                return
            await conn._idle.wait()
            if not conn.is_open:
                return
            room = max(1, min(log.batch_size, queue_size - conn.queued))
            for message in await reader.read(room, log.poll_timeout_s):
                vector[(message.topic, message.partition)] = message.offset + 1
                n = log.notification(message)
                if n is None or n.channel not in conn.channels:
                    continue
                conn._enqueue(
                    encode_event(n.channel, n.event, cursor=encode_cursor(log.epoch, log.topics, vector)), hub
                )
            for tp, offset in reader.positions.items():
                vector[tp] = max(vector.get(tp, 0), offset)
            await asyncio.sleep(0)  # a reader that never waits (records at hand) lets the others run
    finally:
        await reader.close()


async def _catch_up_from_history(
    log: NotificationLog, hub: NotificationHub, conn: Connection, positions: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int] | None:
    """Catch ``conn`` up from the history (:meth:`NotificationLog.recent` said it can): the frames
    kept after ``positions``, of its channels, then the switch to the live fan-out, as
    :func:`_catch_up` does with a reader. Returns None when done (or the client left), or the
    client's position if the history moved past it meanwhile (the live rate outran the client):
    then the log takes over from there."""
    vector = dict(positions)
    frames = log._frames
    seq = log._first_seq  # the first entry not looked at yet
    shared = False  # True once the entries' head is at or past the client's positions everywhere
    queue_size = conn._server.queue_size
    while conn.is_open:
        end = log._first_seq + len(frames)
        if seq >= end:  # every frame fanned out so far is covered: live from here, no await
            conn._after = None
            conn._catching_up = False
            log.resumed += 1
            log.resumed_from_history += 1
            return None
        await conn._idle.wait()
        if not conn.is_open:
            return None
        if seq < log._first_seq:  # dropped from the history while the client read: the log
            return vector
        room = max(1, min(log.batch_size, queue_size - conn.queued))
        start = seq - log._first_seq
        taken = 0
        channels = conn.channels
        for index in range(start, min(start + room, len(frames))):
            topic, partition, offset, channel, frame = frames[index]
            seq += 1
            taken += 1
            tp = (topic, partition)
            if offset < vector[tp]:
                continue  # at or before where the client is
            vector[tp] = offset + 1
            if channel not in channels:
                continue
            if not shared:  # the frame's cursor is the hub's head: the client's position only
                # once the head passed where the client started in every partition (at once
                # when the client's cursor came from this hub)
                payload = orjson.loads(frame)
                head = decode_cursor(payload["cursor"], log.topics)[1]
                shared = all(head.get(p, 0) >= at for p, at in vector.items())
                if not shared:
                    merged = {p: max(head.get(p, 0), at) for p, at in vector.items()}
                    payload["cursor"] = encode_cursor(log.epoch, log.topics, merged)
                    conn._enqueue(dumps(payload), hub)
                    continue
            conn._enqueue(frame, hub)
        await asyncio.sleep(0)  # let the others run
    return None


def _failed(log: NotificationLog, conn: Connection, reason: str) -> None:
    conn._catching_up = False
    conn._after = None
    log.recoveries_failed += 1
    logger.info("connection %s: recovery failed: %s", conn.id, reason)
    conn._enqueue(encode_recovery_failed(reason, log.cursor()))


def frame_after(
    log: NotificationLog,
    conn: Connection,
    after: dict[TopicPartition, int],
    channel: str,
    event: Any,
    position: tuple[str, int, int] | None,
    frame: bytes,
) -> bytes | None:
    """The frame for a client that went live ahead of the hub's head (``after``): None for a
    record the catch-up already delivered; else the shared ``frame`` once the head passed
    ``after`` everywhere (``conn._after`` is then dropped), or a frame of its own whose cursor
    covers what the catch-up delivered."""
    if position is not None:
        mark = after.get((position[0], position[1]))
        if mark is not None and position[2] < mark:
            return None
    pending = {tp: off for tp, off in after.items() if log.head.get(tp, 0) < off}
    if not pending:
        conn._after = None
        return frame
    conn._after = pending
    merged = {**log.head, **pending}
    return encode_event(channel, event, cursor=encode_cursor(log.epoch, log.topics, merged))
