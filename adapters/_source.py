"""What every broker source shares: its argument checks and the step that hands one record over.

The Kafka and in-memory sources differ in how they fetch and commit; the rest is written once
here: :func:`source_args` validates ``source(...)``'s arguments (at call time, not at
subscription), and :func:`hand_over` decodes one record and either dead-letters it or
delivers it through the in-flight window (:class:`~reactive_services.adapters._inflight.InFlight`),
which every source uses, ``concurrency=1`` included. An Observer that takes payloads
(:class:`PayloadObserver`: a service's payload handlers) gets the decoded values instead
(:func:`hand_over_payload`, :func:`await_payload`), under the same commit rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass
from inspect import isawaitable
from operator import attrgetter
from typing import Any, Literal

import orjson
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase
from reactivex.disposable import Disposable

from reactive_services.errors import ConfigError, DecodeError

from ._codec import decode_json, resolve_decoder
from ._dead_letter import DeadLetter, publish_dead_letter
from ._inflight import InFlight
from ._message import Batch, Message, current_message, pending_message
from ._protocol import Emitter, ProcessingGuarantee

__all__ = [
    "BrokerSource",
    "SourceArgs",
    "SourceTasks",
    "Subscription",
    "check_auto_offset_reset",
    "ProcessingGuarantee",
    "check_concurrency",
    "check_processing_guarantee",
    "BATCH_KEY",
    "dead_letter_undecodable",
    "decode_error",
    "hand_over",
    "hand_over_batch",
    "PayloadObserver",
    "PayloadRoute",
    "await_payload",
    "hand_over_payload",
    "handler_cancelled",
    "payload_routes",
    "settle_payload",
    "release_holds",
    "source_args",
    "topic_list",
]

log = logging.getLogger("reactive_services.adapters.source")

OffsetReset = Literal["earliest", "latest"]


@dataclass(frozen=True, slots=True)
class SourceArgs:
    """The checked arguments of a ``source(...)`` call.

    Attributes:
        topics: one or more non-empty topic names, in the order given.
        group_id: the consumer group (non-empty).
        decoder: ``bytes | None -> value`` (see :func:`~reactive_services.adapters._codec.resolve_decoder`).
        auto_offset_reset: ``"earliest"`` or ``"latest"``.
        concurrency: messages (a batch source: batches) in flight at most (>= 1).
        batches: emit each fetched chunk of a partition as one :class:`Batch` (``source_batches``).
        exactly_once: ``processing_guarantee="exactly_once"`` (see ``Broker.source``).
    """

    topics: tuple[str, ...]
    group_id: str
    decoder: Callable[[bytes | None], Any]
    auto_offset_reset: OffsetReset
    concurrency: int
    batches: bool = False
    exactly_once: bool = False


def topic_list(topics: str | Sequence[str]) -> list[str]:
    """``topics`` as a non-empty list of names.

    Raises:
        ConfigError: no topic, or an empty name (key ``"topics"``).
    """
    names = [topics] if isinstance(topics, str) else list(topics)
    if not names or not all(isinstance(t, str) and t for t in names):
        raise ConfigError("topics", f"need one or more non-empty topic names, got {topics!r}")
    return names


def check_auto_offset_reset(value: Any) -> OffsetReset:
    """``value`` if it is ``"earliest"`` or ``"latest"``.

    Raises:
        ConfigError: anything else (key ``"auto_offset_reset"``).
    """
    if value == "earliest":
        return "earliest"
    if value == "latest":
        return "latest"
    raise ConfigError("auto_offset_reset", f"must be 'earliest' or 'latest', got {value!r}")


def check_concurrency(value: Any) -> int:
    """``value`` if it is an ``int >= 1`` (not a bool).

    Raises:
        ConfigError: anything else (key ``"concurrency"``).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("concurrency", f"must be an int >= 1, got {value!r}")
    return value


def check_processing_guarantee(value: Any) -> ProcessingGuarantee:
    """``value`` if it is ``"at_least_once"`` or ``"exactly_once"``.

    Raises:
        ConfigError: anything else (key ``"processing_guarantee"``).
    """
    if value == "at_least_once":
        return "at_least_once"
    if value == "exactly_once":
        return "exactly_once"
    raise ConfigError("processing_guarantee", f"must be 'at_least_once' or 'exactly_once', got {value!r}")


def source_args(
    topics: str | Sequence[str],
    group_id: Any,
    decode: Any,
    auto_offset_reset: Any,
    concurrency: Any,
    *,
    batches: bool = False,
    processing_guarantee: Any = "at_least_once",
) -> SourceArgs:
    """Check the arguments of ``Broker.source`` (every broker calls this once per call).

    Raises:
        ConfigError: no topics or an empty name, an empty ``group_id``, a bad ``decode``,
            ``auto_offset_reset`` or ``concurrency`` (the key names the argument).
    """
    names = tuple(topic_list(topics))
    if not isinstance(group_id, str) or not group_id:
        raise ConfigError("group_id", "must be a non-empty string")
    return SourceArgs(
        names,
        group_id,
        resolve_decoder(decode),
        check_auto_offset_reset(auto_offset_reset),
        check_concurrency(concurrency),
        batches,
        check_processing_guarantee(processing_guarantee) == "exactly_once",
    )


class BrokerSource(Observable[Message]):
    """The cold Observable of ``Broker.source``: subscribe to it as to any Observable.

    :meth:`subscribe_observer` subscribes an Observer without reactivex's auto-detaching
    wrapper, one call less per record; the services' payload and request handlers use it. The
    source already gives such an Observer what the wrapper would: one terminal call, no
    ``on_next`` after it, and an ``on_next`` that raises ends the stream (``on_error``).
    """

    def subscribe_observer(self, observer: ObserverBase[Message]) -> DisposableBase:
        """Subscribe ``observer`` itself (no wrapper); returns the subscription's disposable."""
        return self._subscribe_core(observer, None)


@dataclass(eq=False, kw_only=True)
class Subscription:
    """One subscription to a broker source: its Observer, its task, and how it is being ended.

    Shared by both brokers so that disposing behaves the same: disposed from inside ``on_next``
    (``take(n)``, an operator failing upstream), the source finishes that call, does not count
    the message as handled (it stays uncommitted: redelivered), and ends without a terminal
    call; disposed otherwise, its task is cancelled.

    Attributes:
        observer: the subscriber.
        task: the consume task (set right after subscribing).
        detached: disposed from the source's own task (while ``on_next``, a payload handler or
            the work the source awaits for it was running).
        terminating: the task is ending by itself; disposing must not cancel it any more.
    """

    observer: ObserverBase[Any]  # of Message, or of Batch for a batch source
    task: asyncio.Task[None] | None = None
    detached: bool = False
    terminating: bool = False
    on_closed: Callable[[], None] | None = None

    def closed(self) -> None:
        """Call ``on_closed`` once: the subscription committed for the last time and left the group.

        An exception from it is logged, not raised.
        """
        callback, self.on_closed = self.on_closed, None
        if callback is None:
            return
        try:
            callback()
        except Exception:  # noqa: BLE001 - the source is over anyway
            log.exception("on_closed of a broker source raised")

    def dispose(self) -> None:
        """The subscription's disposal (idempotent).

        Called from the source's own task (from ``on_next``, or a handler the source awaits), it
        marks the subscription :attr:`detached`: the source finishes that call and ends. Called
        from anywhere else, it cancels the task.
        """
        task = self.task
        if self.terminating or task is None or task.done():
            return
        try:
            own = asyncio.current_task() is task
        except RuntimeError:  # no event loop running in this thread
            own = False
        if own:
            self.detached = True
        else:
            task.cancel()

    def end(self, error: BaseException | None = None) -> None:
        """Call ``on_error(error)`` or ``on_completed()`` once, unless detached.

        An exception raised by the Observer's terminal method (reactivex's default
        ``on_error`` re-raises) is logged, not raised.
        """
        self.terminating = True
        if self.detached:
            return
        try:
            if error is None:
                self.observer.on_completed()
            else:
                self.observer.on_error(error)  # type: ignore[arg-type]  # reactivex types it Exception
        except Exception:  # noqa: BLE001 - the source is ending anyway
            log.exception("the observer of a broker source raised from its terminal call")


class SourceTasks:
    """The consume tasks of one broker's sources (the in-memory and RabbitMQ brokers): one task
    per subscription, ended together by :meth:`stop`.

    Attributes:
        closing: set by :meth:`stop`; a source ends as when its own ``stop`` event is set.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()

    def open(self) -> None:
        """Accept sources again after :meth:`stop` (a fresh :attr:`closing` event)."""
        self.closing = asyncio.Event()

    async def stop(self, timeout_s: float) -> None:
        """End every running source (:attr:`closing`); cancel one still busy after ``timeout_s`` seconds."""
        self.closing.set()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, run: Subscription, work: Coroutine[Any, Any, None], name: str) -> DisposableBase:
        """Run ``work`` (the consume loop of subscription ``run``) as a task of its own, kept
        until it ends; returns the subscription's disposable."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        run.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Disposable(run.dispose)


def hand_over(
    broker: Emitter,
    window: InFlight,
    subscription: Subscription,
    tp: Hashable,
    message: Message,
    decoder: Callable[[bytes | None], Any],
) -> bool:
    """Decode ``message.raw`` into ``message.value``, then dead-letter or deliver it, in ``window``.

    The caller has checked that ``window`` has room (and that the key is not busy). Either way
    the commit of ``tp`` never passes the message before it was handled:

    - the decoder raises: a :class:`DeadLetter` is published with
      :func:`publish_dead_letter`, tracked on the message (the record counts as handled once
      the dead letter is acknowledged; a failed publish ends the stream like failed work);
    - otherwise ``subscription.observer.on_next(message)`` is called with
      :data:`~reactive_services.adapters.current_message` set to the message. Then, when the
      Observer tracked no work and took no hold on it, its offset completes at once
      (:meth:`InFlight.advance`: no task, no future); otherwise it enters the window and its
      work is awaited in the background (:meth:`InFlight.handled`). If the subscription was
      disposed meanwhile (:attr:`Subscription.detached`), the message stays uncommitted.

    Returns:
        True when the message was delivered to the Observer.

    Raises:
        Exception: whatever ``on_next`` raises (the message stays uncommitted).
    """
    try:
        message.value = decoder(message.raw)
    except Exception as exc:  # noqa: BLE001 - any decoder failure dead-letters
        dead_letter_undecodable(broker, window, tp, message, exc)
        return False
    token = _set_current(message)
    try:
        subscription.observer.on_next(message)
    finally:
        _reset_current(token)
    if subscription.detached:
        return False
    if message._pending or message._holds:
        window.settle(message, tp, window.begin(tp, message.offset))
    else:
        window.advance(tp, message.offset)
    return True


_set_current = current_message.var.set
_reset_current = current_message.var.reset


@dataclass(frozen=True, slots=True, eq=False)
class PayloadRoute:
    """How a source hands the records of one topic to a payload handler (see :class:`PayloadObserver`).

    Attributes:
        call: ``value -> None | awaitable``: the handler, given a record's decoded value. An
            awaitable it returns is awaited by the source before it delivers the next record
            (any other result is ignored).
        failed: ``(error: Exception) -> None``: ``call``, or the awaitable it returned, raised
            ``error``. Called with :data:`~reactive_services.adapters.current_message` still set
            (a dead letter it publishes holds back the record's commit). What it raises ends the
            stream, as an ``on_next`` that raises does.
        handled: ``(n: int) -> None``: ``n`` more records were handled without error (a source
            may report them in bulk, e.g. once per fetched chunk).
    """

    call: Callable[[Any], Any]
    failed: Callable[[Exception], None]
    handled: Callable[[int], None]


class PayloadObserver(ObserverBase[Message]):
    """An Observer that a broker source may hand decoded values instead of :class:`Message` objects.

    Both brokers' sources ask :meth:`payload_route` once per topic; for a topic with a route,
    each record that decodes is delivered as ``route.call(value)``, with
    :data:`~reactive_services.adapters.current_message` set to a pending delivery (its
    :class:`Message` is made only if something asks for it: the handler, :func:`track`,
    :func:`hold`, ``emit``, a dead letter). The commit rules are ``on_next``'s: the record is
    committed once the call returned and the work and holds its message took finished. An
    awaitable the call returns is awaited by the source itself before the next record, as
    ``async for record in consumer: await handler(record)`` would (:func:`await_payload`). Any
    other source, and every topic without a route, gets ``on_next(message)``, so an Observer
    of this kind must handle that too.

    This is how a service runs its payload handlers (``concurrency=1``, at-least-once) without a
    :class:`Message`, an Observer call and a task per record.
    """

    def payload_route(self, topic: str) -> PayloadRoute | None:
        """The route of ``topic``'s records, or None to get ``on_next(message)`` for them."""
        return None


def payload_routes(observer: ObserverBase[Any]) -> Callable[[str], PayloadRoute | None] | None:
    """``observer.payload_route`` if ``observer`` is a :class:`PayloadObserver`, else None."""
    return observer.payload_route if isinstance(observer, PayloadObserver) else None


def hand_over_payload(
    broker: Emitter,
    window: InFlight,
    subscription: Subscription,
    tp: Hashable,
    message: Message,
    decoder: Callable[[bytes | None], Any],
    route: PayloadRoute,
) -> Awaitable[Any] | None:
    """:func:`hand_over` for a topic with a :class:`PayloadRoute`: decode ``message.raw`` into
    ``message.value``, then dead-letter it, or call ``route.call(value)`` with
    :data:`~reactive_services.adapters.current_message` set to it (a source that has the message
    anyway) and settle it as ``on_next``'s messages are; ``route.failed(error)`` if the call
    raised.

    A ``CancelledError`` the call raises is :func:`handler_cancelled`'s: the record stays
    uncommitted and the source goes on.

    Returns:
        The awaitable ``route.call`` returned, to :func:`await_payload` before the next record
        (nothing is settled then), or None.

    Raises:
        Exception: whatever ``route.failed`` raises (the message stays uncommitted).
        asyncio.CancelledError: the source's own task is being cancelled.
    """
    try:
        value = message.value = decoder(message.raw)
    except Exception as exc:  # noqa: BLE001 - any decoder failure dead-letters
        dead_letter_undecodable(broker, window, tp, message, exc)
        return None
    delivery = [message, value, message, None]
    token = _set_current(delivery)
    try:
        result = route.call(value)
    except asyncio.CancelledError:  # a def handler raised it (a cancelled future's result(), say)
        handler_cancelled(window, tp, message.offset, window.epoch_at(tp, message.offset), delivery)
        return None
    except Exception as exc:  # noqa: BLE001 - the route decides (a service dead-letters it)
        route.failed(exc)
    else:
        if result is not None and isawaitable(result):
            return result  # the caller awaits it (and settles the record) before the next record
        route.handled(1)
    finally:
        _reset_current(token)
    if not subscription.detached:  # disposed from the handler: it stays uncommitted
        settle_payload(window, tp, message.offset, delivery)
    return None


def settle_payload(window: InFlight, tp: Hashable, offset: int, delivery: list[Any]) -> None:
    """After a payload call (and the work the source awaited for it): complete ``offset`` of
    ``tp`` at once, or after the work and holds its message took (if it was made)."""
    message = delivery[2]
    if message is not None and (message._pending or message._holds):
        window.settle(message, tp, window.begin(tp, offset))
    else:
        window.advance(tp, offset)


async def await_payload(
    window: InFlight,
    subscription: Subscription,
    tp: Hashable,
    offset: int,
    delivery: list[Any],
    work: Awaitable[Any],
    route: PayloadRoute,
) -> bool:
    """Await ``work``, which ``route.call`` returned for ``offset`` of ``tp`` (a service's
    ``async def`` payload handler), in the source's own task, before the next record is
    delivered: what ``async for record in consumer: await handler(record)`` does, with the
    commit rules of ``on_next``.

    The caller advanced every record of ``tp`` handled before it, so the commit of ``tp`` stays
    below ``offset`` while the work runs (nothing advances ``tp`` meanwhile: the source is
    here), at no cost per record; a revocation waits for it (:attr:`InFlight.inline`), as for
    tracked work. ``current_message`` is set to ``delivery`` meanwhile. If the work raises,
    ``route.failed(error)`` is called (else ``route.handled(1)``); then ``offset`` completes at
    once, or after the work and holds its message took (:func:`settle_payload`), unless the
    subscription was disposed meanwhile (:attr:`Subscription.detached`: it stays uncommitted,
    as for ``on_next``). A ``CancelledError`` raised by the work itself is
    :func:`handler_cancelled`'s.

    Returns:
        True if ``tp`` is still tracked in the same assignment (False: revoked meanwhile; the
        record is not counted: its next owner reads it again).

    Raises:
        Exception: whatever ``route.failed`` raises (the record stays uncommitted; the stream
            ends with it, as when ``on_next`` raises).
        asyncio.CancelledError: the source's task was cancelled meanwhile.
    """
    epoch = window.epoch_at(tp, offset)
    window.inline = tp
    token = _set_current(delivery)
    try:
        await work
    except asyncio.CancelledError:
        return handler_cancelled(window, tp, offset, epoch, delivery)
    except Exception as exc:  # noqa: BLE001 - the route decides (a service dead-letters it)
        route.failed(exc)
    else:
        route.handled(1)
    finally:
        _reset_current(token)
        window.inline_done()
    if window.tracker.epoch(tp) != epoch:
        return False
    if not subscription.detached:
        settle_payload(window, tp, offset, delivery)
    return True


def handler_cancelled(window: InFlight, tp: Hashable, offset: int, epoch: int, delivery: list[Any]) -> bool:
    """A payload handler for ``offset`` of ``tp``, or the work a source awaited for it
    (:func:`await_payload`), raised ``CancelledError``; call it from that ``except`` block.

    When the source's own task is being cancelled, the error is raised again. Otherwise the
    work cancelled itself: the record stays uncommitted (its partition commits nothing past it
    until it is read again), which is logged, and the source goes on.

    Returns:
        True if ``tp`` is still tracked in epoch ``epoch`` (False: revoked meanwhile).

    Raises:
        asyncio.CancelledError: the source's task is being cancelled.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise  # noqa: PLE0704 - called from the except block of that CancelledError
    message = pending_message(delivery)
    log.warning(
        "the handler of %s[%d]@%d was cancelled; the record stays uncommitted",
        message.topic,
        message.partition,
        offset,
    )
    if window.tracker.epoch(tp) != epoch:
        return False
    window.keep_uncommitted(tp, offset)
    return True


#: The ordering key of a batch in the in-flight window: a partition's next batch waits for the
#: previous one (per-partition order, hence per-key order, under ``concurrency`` > 1).
BATCH_KEY = b"\x00reactive-services:batch"


def _same(message: Message) -> Message:
    return message


#: a Message's undecoded value (the default ``raw`` of :func:`hand_over_batch`)
_raw: Callable[[Message], bytes | None] = attrgetter("raw")


def hand_over_batch(
    broker: Emitter,
    window: InFlight,
    subscription: Subscription,
    tp: tuple[str, int],
    records: Sequence[Any],
    decoder: Callable[[bytes | None], Any],
    *,
    raw: Callable[[Any], bytes | None] = _raw,
    make: Callable[[Any], Message] = _same,
) -> bool:
    """Decode ``records`` (consecutive records of ``tp``), dead-letter those that do not decode,
    and deliver the others as one :class:`Batch`, in ``window`` as one unit.

    ``records`` are the source's own records: :class:`Message` objects (the default ``raw`` and
    ``make``), or e.g. aiokafka's ``ConsumerRecord`` with ``raw=attrgetter("value")`` and ``make``
    building a :class:`Message` (value not set); a record's message is made only if a handler
    asks the batch for it (or it is dead-lettered). Each needs ``offset``.

    The caller has checked that ``window`` has room and that no batch of ``tp`` is in flight
    (``window.key_busy(tp, BATCH_KEY)``). The batch takes the offsets of ``records[0]`` to
    ``records[-1]`` in the window (:meth:`InFlight.begin` with ``last``); ``on_next(batch)`` is
    called with :data:`~reactive_services.adapters.current_message` set to the message of the
    last record (the *carrier*), so :func:`~reactive_services.adapters.track` and
    :func:`~reactive_services.adapters.hold` called during it hold back the whole batch (and so do
    a message's own :meth:`Message.track` / :meth:`Message.hold`: its messages share the
    carrier's). The dead letters are tracked on the carrier too. Nothing of the batch is
    committed before all of that settled; then all of it is.

    Returns:
        True when a batch was delivered (False: every record was dead-lettered, or the
        subscription was disposed during ``on_next``; then nothing of it is committed).

    Raises:
        Exception: whatever ``on_next`` raises (nothing of the batch is committed).
    """
    first, carrier = records[0].offset, make(records[-1])
    epoch = window.begin(tp, first, carrier.offset)
    # decode_json's errors are re-made on failure
    decode: Callable[[Any], Any] = orjson.loads if decoder is decode_json else decoder
    try:
        values = list(map(decode, map(raw, records)))  # the common case: every record decodes
        kept = records
    except Exception:  # noqa: BLE001 - one did not: go record by record, dead-lettering those
        values, kept = [], []
        for record in records:
            data = raw(record)
            try:
                values.append(decode(data))
            except Exception:  # noqa: BLE001 - any decoder failure dead-letters
                message = carrier if record is records[-1] else make(record)
                publish_dead_letter(broker, DeadLetter(message, decode_error(decoder, data)), on=carrier)
            else:
                kept.append(record)
    if values:
        batch = Batch(tp[0], tp[1], values, kept, make, carrier)
        if kept[-1] is records[-1]:
            carrier.value = values[-1]
        token = _set_current(carrier)
        try:
            subscription.observer.on_next(batch)
        finally:
            _reset_current(token)
        if subscription.detached:
            window.abandon(tp, first)
            return False
    window.settle(carrier, tp, epoch, first, BATCH_KEY)
    return bool(values)


def decode_error(decoder: Callable[[bytes | None], Any], raw: bytes | None) -> Exception:
    """The error ``decoder`` raises for ``raw`` (a fast path's decoder, e.g. ``orjson.loads``
    for :func:`decode_json`, failed on it; the dead letter gets the reason ``decoder`` gives)."""
    try:
        decoder(raw)
    except Exception as exc:  # noqa: BLE001 - returned, to dead-letter the record with it
        return exc
    return DecodeError("the value did not decode")


def dead_letter_undecodable(
    broker: Emitter, window: InFlight, tp: Hashable, message: Message, error: Exception
) -> None:
    """Publish ``message``, whose value did not decode (``error``), to its dead-letter topic,
    tracked on it in ``window``: its offset completes once the dead letter is acknowledged (a
    failed publish ends the stream like failed work)."""
    epoch = window.begin(tp, message.offset)
    publish_dead_letter(broker, DeadLetter(message, error), on=message)
    window.settle(message, tp, epoch)


async def release_holds(window: InFlight, timeout_s: float, group_id: str) -> None:
    """After the source completed its Observer: wait at most ``timeout_s`` seconds for the
    operators that held records (:meth:`Message.hold`) to release them; those still held then
    stay uncommitted (redelivered on restart), which is logged."""
    if not window.held:
        return
    if not await window.drain(timeout=timeout_s, holds=True):
        log.warning(
            "group %s: %d handled message(s) still held by an operator %g s after the source completed; "
            "they are not committed and will be redelivered",
            group_id,
            window.held,
            timeout_s,
        )
