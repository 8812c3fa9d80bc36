"""The message type every broker source emits, and the record metadata every producer returns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, overload

from reactivex.abc import ObserverBase
from typing_extensions import TypeVar

__all__ = [
    "Batch",
    "Headers",
    "HeadersIn",
    "Hold",
    "CurrentMessage",
    "Message",
    "RecordMetadata",
    "current_message",
    "current_transaction",
    "deliver",
    "header",
    "hold",
    "pending_message",
    "track",
]

#: Record headers as Kafka carries them: an ordered sequence of (name, value) pairs.
Headers = Sequence[tuple[str, bytes]]

#: Headers as ``emit`` accepts them: a mapping ``{name: value}`` or a sequence of ``(name, value)``
#: pairs, each value ``bytes``, ``str`` (UTF-8) or ``None`` (see ``encode_headers``).
HeadersIn = Mapping[str, bytes | str | None] | Sequence[tuple[str, bytes | str | None]]


#: The type of a :class:`Message`'s value (``Message[Order]``); ``Any`` when not given.
V = TypeVar("V", default=Any)


@dataclass(slots=True)
class Message(Generic[V]):
    """One record read from a topic (``Message[V]``: its ``value`` is a ``V``).

    Attributes:
        topic: the topic it was read from.
        partition: the partition number (0-based).
        offset: its offset within the partition.
        key: the record key as bytes, or None.
        value: the decoded value (JSON-decoded with orjson by default; the raw bytes
            when the source was asked for ``decode=None``).
        headers: the record headers, ``[(name, bytes), ...]``.
        timestamp_ms: the record timestamp, milliseconds since the Unix epoch.
        raw: the undecoded value bytes (``None`` for a tombstone).

    A consumer commits the offset of a message only after the Observer's ``on_next``
    has returned, every awaitable registered with :meth:`track` has finished, and every
    :meth:`hold` taken on it has been released (at-least-once delivery).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: V
    headers: Headers = ()
    timestamp_ms: int = 0
    raw: bytes | None = None
    # Created on first use: most messages are handled synchronously and need neither.
    _pending: list[Awaitable[Any]] | None = field(default=None, repr=False, compare=False)
    _holds: list[asyncio.Future[None]] | None = field(default=None, repr=False, compare=False)

    @property
    def timestamp(self) -> float:
        """The record timestamp in seconds since the Unix epoch."""
        return self.timestamp_ms / 1000.0

    @property
    def key_str(self) -> str | None:
        """The key decoded as UTF-8, or None."""
        return None if self.key is None else self.key.decode("utf-8", "replace")

    def header(self, name: str) -> bytes | None:
        """The value of the last header called ``name``, or None."""
        return header(self.headers, name)

    def track(self, work: Awaitable[Any]) -> None:
        """Hold back this message's offset commit until ``work`` has finished.

        Use it from an Observer whose ``on_next`` starts asynchronous work (a database
        write, a publish): the source awaits ``work`` before it counts the message as
        handled. If ``work`` raises, the source stops with that error (``on_error``) and
        the offset is not committed, so the record is redelivered on restart.
        """
        future = asyncio.ensure_future(work)
        if self._pending is None:
            self._pending = [future]
        else:
            self._pending.append(future)

    def hold(self) -> Hold:
        """Keep this message's offset uncommitted until the returned :class:`Hold` is released.

        For operators that keep a record for a later output (a batch, a window, keyed state):
        unlike :meth:`track`, a hold does not keep the message *in flight*, so the source goes
        on delivering (``concurrency`` and per-key order are not held up), but the committed
        offset of the partition stays below this message until :meth:`Hold.release`. A hold
        that is failed (:meth:`Hold.fail`) ends the stream like failed tracked work; one that is
        never released (the operator's output was lost to an error, a dispose or a crash) leaves
        the message uncommitted, so it is redelivered on restart.

        Outside a running asyncio loop nothing can wait for it: the hold does nothing.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return Hold(None, None)
        future: asyncio.Future[None] = loop.create_future()
        if self._holds is None:
            self._holds = [future]
        else:
            self._holds.append(future)
        return Hold(future, loop)

    async def settled(self) -> None:
        """Await every tracked awaitable (in order); re-raises the first failure."""
        while self._pending:
            pending = list(self._pending)
            self._pending.clear()  # in place: a derived message (decode_json) shares the list
            for work in pending:
                await work

    async def released(self) -> None:
        """Await every :meth:`hold` (in order); re-raises the first failure."""
        while self._holds:
            holds = list(self._holds)
            self._holds.clear()
            for held in holds:
                await held


class Hold:
    """A hold on a message's commit (see :meth:`Message.hold`).

    :meth:`release` and :meth:`fail` may be called from any thread, and more than once (only
    the first call counts).
    """

    __slots__ = ("_future", "_loop")

    def __init__(self, future: asyncio.Future[None] | None, loop: asyncio.AbstractEventLoop | None) -> None:
        self._future = future
        self._loop = loop

    @property
    def active(self) -> bool:
        """True while the hold keeps a commit back (taken on a running loop, not settled yet)."""
        return self._future is not None and not self._future.done()

    def release(self) -> None:
        """Let the commit go on: the record was handled."""
        self._settle(None)

    def fail(self, error: BaseException) -> None:
        """The record's handling failed: the source ends with ``error``; the offset stays uncommitted."""
        self._settle(error)

    def cancel(self) -> None:
        """The work was abandoned (the subscription is ending): the offset stays uncommitted."""
        self._settle(None, cancel=True)

    def _settle(self, error: BaseException | None, *, cancel: bool = False) -> None:
        future, loop = self._future, self._loop
        if future is None or loop is None or future.done():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _settle_future(future, error, cancel)
            return
        try:
            loop.call_soon_threadsafe(_settle_future, future, error, cancel)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _settle_future(future: asyncio.Future[None], error: BaseException | None, cancel: bool) -> None:
    """Settle a hold's future (in its loop's thread): cancelled, done, or failed with ``error``."""
    if future.done():
        return
    if cancel:
        future.cancel()
    elif error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class Batch(Sequence[Message]):
    """The records of one partition from one fetch, as ``source_batches`` delivers them.

    A sequence of :class:`Message` in offset order (``len``, indexing, iteration), with the
    decoded values at hand in :attr:`values`. A message is made on first use and kept (indexing
    makes that one; iteration and :attr:`messages` make them all); a handler that reads only
    :attr:`values` (and :attr:`topic`, :attr:`partition`, :attr:`offsets`) makes none, which is
    what lets a batch handler run at the raw client's speed (see the benchmarks page). A record
    that did not decode was dead-lettered and is not in the batch.

    The batch is committed as one unit: :func:`track` and :func:`hold` called during
    ``on_next``, or :meth:`Message.track` / :meth:`Message.hold` on any of its messages,
    hold back the commit of every record of the batch.

    Attributes:
        topic: the topic of every record.
        partition: the partition of every record.
        values: the decoded values, in offset order (``list``; one per message).
    """

    __slots__ = ("_carrier", "_made", "_make", "_messages", "_records", "partition", "topic", "values")

    def __init__(
        self,
        topic: str,
        partition: int,
        values: list[Any],
        records: Sequence[Any],
        make: Callable[[Any], Message],
        carrier: Message,
    ) -> None:
        """Made by the sources. ``records[i]`` is the source's record of ``values[i]``;
        ``make(record)`` is its :class:`Message` (value not set yet); ``carrier`` is the message
        whose commit stands for the batch's (the one :data:`current_message` is set to)."""
        self.topic = topic
        self.partition = partition
        self.values = values
        self._records = records
        self._make = make
        self._carrier = carrier
        self._messages: list[Message] | None = None
        self._made: list[Message | None] | None = None  # the messages made so far, by index

    def _message(self, index: int) -> Message:
        """The message of ``values[index]`` (``0 <= index < len``), made on first use and kept."""
        made = self._made
        if made is None:
            made = self._made = [None] * len(self.values)
        message = made[index]
        if message is None:
            carrier = self._carrier
            if carrier._pending is None:
                carrier._pending = []
            if carrier._holds is None:
                carrier._holds = []
            message = made[index] = self._make(self._records[index])
            message.value = self.values[index]
            message._pending = carrier._pending  # what a message tracks or holds, the whole batch waits for
            message._holds = carrier._holds
        return message

    @property
    def messages(self) -> list[Message]:
        """The messages of the batch (a list made on first use; the same list afterwards)."""
        if self._messages is None:
            self._messages = [self._message(index) for index in range(len(self.values))]
        return self._messages

    @property
    def offsets(self) -> list[int]:
        """The offsets of the records, in order (without those that were dead-lettered)."""
        return [r.offset for r in self._records]

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> list[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | list[Message]:
        if isinstance(index, slice):
            return self.messages[index]
        return self._message(range(len(self.values))[index])  # negative and out-of-range as a list's

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def __repr__(self) -> str:
        offsets = self.offsets
        span = f"{offsets[0]}..{offsets[-1]}" if offsets else "-"
        return f"Batch(topic={self.topic!r}, partition={self.partition}, offsets={span}, {len(self)} records)"


class RecordMetadata(NamedTuple):
    """Where the broker stored a produced record (immutable; a named tuple, cheap to make
    once per acknowledged record)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


def header(headers: Headers | None, name: str) -> bytes | None:
    """The value of the last header called ``name`` in ``headers``, or None."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = value
    return found


#: Messages a source delivers before it yields to the event loop once (``await asyncio.sleep(0)``),
#: so that other tasks on the loop (websocket senders, producers) run while a large fetched
#: batch is handled synchronously (the in-memory source).
YIELD_EVERY = 32

#: Seconds a source delivers fetched records synchronously, at most, before it yields to the
#: event loop once (the Kafka source; it looks at the clock every 32 records).
YIELD_AFTER_S = 0.002


class CurrentMessage:
    """The message whose ``on_next`` (or payload handler) a broker source is running right now:
    a context variable, with :class:`contextvars.ContextVar`'s ``get``, ``set`` and ``reset``.

    Every broker source sets it while it delivers a record, so that code further down a
    synchronous operator chain can find the message: :func:`track`, :func:`hold`, ``emit`` and
    the sinks hold back its commit through it, as long as they are called before the delivery
    returns (for an ``async def`` payload handler the source awaits: before the handler
    returns). A task started meanwhile copies the context, so ``get()`` in it returns that
    same record's message; work it tracks after the delivery returned no longer holds the
    commit (track the task itself instead). ``get()`` returns a :class:`Message` or None, never
    anything else.

    A source that hands a payload handler only the decoded value (the services' payload
    handlers, see ``PayloadRoute``) sets it to a *pending delivery* instead, the list
    ``[record, value, message, make]``: ``get()`` makes the message then, once, with
    ``make(record)`` and ``value`` (and keeps it in ``message``, where the source looks for
    tracked work and holds after the handler returned). So a record whose handler never asks
    for its message costs no :class:`Message`.
    """

    __slots__ = ("var",)

    #: The name of the underlying :class:`contextvars.ContextVar`.
    name = "current_message"

    def __init__(self) -> None:
        #: the context variable itself: a :class:`Message`, a pending delivery, or None
        self.var: ContextVar[Any] = ContextVar("current_message", default=None)

    def get(self, default: Message | None = None) -> Message | None:
        """The message being delivered in this context, or ``default`` (None) outside of a delivery."""
        value = self.var.get()
        if value.__class__ is list:
            return value[2] if value[2] is not None else pending_message(value)
        return default if value is None else value

    def set(self, message: Message | None) -> Token[Any]:
        """Make ``message`` the current message of this context; returns the token to :meth:`reset` with."""
        return self.var.set(message)

    def reset(self, token: Token[Any]) -> None:
        """Restore what was current before the :meth:`set` that returned ``token``."""
        self.var.reset(token)


def pending_message(delivery: list[Any]) -> Message:
    """The message of a pending delivery ``[record, value, message, make]`` (see
    :class:`CurrentMessage`), made now if it was not yet."""
    message: Message | None = delivery[2]
    if message is None:
        message = delivery[3](delivery[0])
        message.value = delivery[1]
        delivery[2] = message
    return message


#: The message whose ``on_next`` is running right now (set by every broker source).
current_message = CurrentMessage()

#: The transaction of the exactly-once source whose task is running (set for the whole task, so
#: every task its Observer starts sees it too), or None: a broker's ``emit``,
#: ``emit_batch``, sinks and dead letters send through it when it is one of that broker's.
current_transaction: ContextVar[Any] = ContextVar("current_transaction", default=None)


def deliver(observer: ObserverBase[Message], message: Message) -> None:
    """Call ``observer.on_next(message)`` with :data:`current_message` set to ``message``.

    Every broker source delivers through this function, so that an Observer further
    down a synchronous operator chain, which no longer sees the Message itself, can
    still hold back its commit with :func:`track`.
    """
    var = current_message.var
    token = var.set(message)
    try:
        observer.on_next(message)
    finally:
        var.reset(token)


def hold() -> Hold:
    """Hold back the commit of the message being delivered until the returned :class:`Hold` is released.

    Called from inside an ``on_next`` that a broker source is running (directly or through
    synchronous operators), it is ``current_message.get().hold()`` (see :meth:`Message.hold`).
    Called outside of a delivery it returns a hold that does nothing.
    """
    message = current_message.get()
    return message.hold() if message is not None else Hold(None, None)


def track(work: Awaitable[Any]) -> asyncio.Future[Any]:
    """Hold back the commit of the message being delivered until ``work`` has finished.

    Called from inside an ``on_next`` that a broker source is running (directly or
    through synchronous operators), it is ``current_message.get().track(work)``. Called
    outside of a delivery, the work is only scheduled. Returns the scheduled future.
    """
    future = asyncio.ensure_future(work)
    message = current_message.get()
    if message is not None:
        if message._pending is None:
            message._pending = [future]
        else:
            message._pending.append(future)
    return future
