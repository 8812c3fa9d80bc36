"""The Kafka consume loop: one ``AIOKafkaConsumer`` task per subscription to a source.

Every subscription delivers through the shared in-flight window
(:class:`~reactive_services.adapters._inflight.InFlight`), ``concurrency=1`` included, so the
fetch loop keeps polling (and stays in the group) while a message is being handled. Decoding,
dead-lettering and delivering one record is the shared
:func:`~reactive_services.adapters._source.hand_over` (and, for a service's payload handlers,
:func:`~reactive_services.adapters._source.hand_over_payload` and
:func:`~reactive_services.adapters._source.await_payload`), written out here for Kafka's records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from contextvars import Token
from dataclasses import dataclass, field
from inspect import isawaitable
from operator import attrgetter
from types import CoroutineType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import TopicPartition
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.disposable import Disposable

from reactive_services.errors import BrokerUnavailableError, CommitError

from .._codec import decode_json
from .._inflight import InFlight
from .._message import YIELD_AFTER_S, Message, current_message, current_transaction
from .._protocol import Emitter
from .._source import (
    BATCH_KEY,
    BrokerSource,
    PayloadRoute,
    SourceArgs,
    Subscription,
    dead_letter_undecodable,
    decode_error,
    hand_over_batch,
    handler_cancelled,
    payload_routes,
    release_holds,
)
from ._admin import close_quietly
from ._codec import KafkaSettings, fmt_offsets, headers_from_kafka, unavailable
from ._transaction import KafkaTransaction, default_transactional_id

__all__ = ["KafkaSources", "SourceStats"]

log = logging.getLogger("reactive_services.adapters.kafka")


@dataclass(eq=False)
class SourceStats:
    """Live counters of one subscription to a Kafka source (see :meth:`KafkaBroker.source_stats`).

    The source updates them as it runs; they are meant for tests, metrics and debugging.

    Attributes:
        group_id: the consumer group of the source.
        concurrency: the ``concurrency`` it was subscribed with.
        in_flight: messages in flight now.
        max_in_flight: the most messages in flight at once so far (never above ``concurrency``).
        buffered: fetched records waiting for room in the window.
        max_buffered: the most records buffered at once (bounded by ``max_batch`` per fetch).
        pauses: times the source paused its partitions because its window was full.
        resumes: times it resumed them.
        paused: the partitions paused now, as ``consumer.paused()`` reports them.
        assignments: partition assignments received from the group coordinator.
        revocations: non-empty revocations received (a rebalance took partitions away).
    """

    group_id: str
    concurrency: int = 1
    in_flight: int = 0
    max_in_flight: int = 0
    buffered: int = 0
    max_buffered: int = 0
    pauses: int = 0
    resumes: int = 0
    paused: frozenset[TopicPartition] = frozenset()
    assignments: int = 0
    revocations: int = 0


def _never() -> bool:
    return False


def _pause(consumer: AIOKafkaConsumer, stats: SourceStats) -> None:
    """Pause the assigned partitions (stop fetching while a fetched backlog is delivered), counted."""
    consumer.pause(*consumer.assignment())
    stats.pauses += 1
    stats.paused = frozenset(consumer.paused())


_value_of = attrgetter("value")


def message_of(record: Any) -> Message:
    """The :class:`Message` of an aiokafka ``ConsumerRecord`` (value not decoded yet)."""
    headers = record.headers
    return Message(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        None,
        headers_from_kafka(headers) if headers else (),
        record.timestamp,
        record.value,
    )


_set_current = current_message.var.set
_reset_current = current_message.var.reset


@dataclass(eq=False, kw_only=True)
class _SourceRun(Subscription):
    """The state of one subscription to a Kafka source."""

    args: SourceArgs
    stop: asyncio.Event | None
    window: InFlight  # the messages in flight and their offsets
    stats: SourceStats
    on_assigned: Callable[[], None] | None = None
    halt: bool = False  # broker.stop(): end like the stop event (commit, complete)
    consumer: AIOKafkaConsumer | None = None
    #: fetched, not yet delivered: ``[tp, records, index of the next one]`` per partition and fetch
    backlog: deque[list[Any]] = field(default_factory=deque)
    yielded: bool = False  # the last delivery pass ran for YIELD_AFTER_S: yield to the loop first
    txn: KafkaTransaction | None = None  # exactly-once: the transaction offsets and outputs commit in
    txn_error: Exception | None = None  # exactly-once: the commit that failed (the stream ends with it)
    revoking: set[TopicPartition] = field(default_factory=set)  # being revoked: deliver no more of them
    #: the payload route of each topic (:class:`PayloadObserver`), asked for once; None: ``on_next``
    routes: dict[str, PayloadRoute | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        routes = payload_routes(self.observer)
        if routes is not None and not self.args.batches:
            self.routes = {topic: routes(topic) for topic in self.args.topics}

    @property
    def group_id(self) -> str:
        return self.args.group_id

    def stopping(self) -> bool:
        return self.halt or self.detached or (self.stop is not None and self.stop.is_set())


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type information
    """Commits the handled offsets of partitions taken away by a rebalance."""

    def __init__(self, sources: KafkaSources, run: _SourceRun) -> None:
        self._sources = sources
        self._run = run

    async def on_partitions_revoked(self, revoked: Any) -> None:
        run = self._run
        if revoked:
            run.stats.revocations += 1
        await self._revoke_window(set(revoked))

    async def _revoke_window(self, revoked: set[TopicPartition]) -> None:
        """Wait (at most ``revoke_timeout_s``) for the messages in
        flight of ``revoked``, commit what is contiguous-complete, abandon the rest."""
        run, window = self._run, self._run.window
        if not revoked:
            return
        timeout_s = self._sources.settings.revoke_timeout_s
        run.revoking |= revoked
        try:
            kept = [chunk for chunk in run.backlog if chunk[0] not in revoked]
            run.backlog.clear()
            run.backlog.extend(kept)
            if not await window.drain(revoked, timeout=timeout_s):
                log.warning(
                    "group %s: messages of %s still in flight after %g s at revocation; "
                    "they are not committed and will be redelivered to the new owner",
                    run.group_id,
                    sorted(revoked),
                    timeout_s,
                )
            if run.consumer is not None:
                await self._sources.commit(run, only=revoked)
        finally:
            for tp in revoked:
                window.forget(tp)
            run.revoking -= revoked

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._run.stats.assignments += 1
        log.debug("group %s: assigned %s", self._run.group_id, sorted(assigned))


class KafkaSources:
    """The running source subscriptions of one :class:`~reactive_services.adapters.kafka.KafkaBroker`.

    Args:
        settings: the broker's settings (batch size, commit interval, poll and revoke timeouts).
        emitter: what undecodable records are dead-lettered through (the broker).
    """

    def __init__(self, settings: KafkaSettings, emitter: Emitter) -> None:
        self.settings = settings
        self._emitter = emitter
        self._runs: set[_SourceRun] = set()

    def __len__(self) -> int:
        return len(self._runs)

    def observable(
        self,
        args: SourceArgs,
        *,
        stop: asyncio.Event | None,
        on_assigned: Callable[[], None] | None,
        on_closed: Callable[[], None] | None = None,
    ) -> BrokerSource:
        """The cold Observable of :meth:`KafkaBroker.source` for checked ``args``."""

        def subscribe(observer: ObserverBase[Any], scheduler: SchedulerBase | None = None) -> DisposableBase:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                observer.on_error(RuntimeError("subscribe to a Kafka source from a running asyncio event loop"))
                return Disposable()
            run = _SourceRun(
                observer=observer,
                args=args,
                stop=stop,
                window=InFlight(args.concurrency),
                stats=SourceStats(args.group_id, args.concurrency),
                on_assigned=on_assigned,
                on_closed=on_closed,
            )
            run.task = loop.create_task(self._consume(run))
            self._runs.add(run)
            run.task.add_done_callback(lambda t: self._source_done(run, t))
            return Disposable(run.dispose)

        return BrokerSource(subscribe)

    def stats(self, group_id: str | None = None) -> list[SourceStats]:
        """The live counters of the running subscriptions (of ``group_id``, if given)."""
        return [r.stats for r in self._runs if group_id in (None, r.group_id)]

    async def stop(self, timeout_s: float) -> None:
        """End every running subscription like its ``stop`` event (commit, close, ``on_completed``);
        one still busy after ``timeout_s`` seconds is cancelled (then waited for as long again)."""
        runs = list(self._runs)
        for run in runs:
            run.halt = True
        tasks = [r.task for r in runs if r.task is not None and not r.task.done()]
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=timeout_s)

    def _source_done(self, run: _SourceRun, task: asyncio.Task[None]) -> None:
        self._runs.discard(run)
        if not task.cancelled() and task.exception() is not None:
            log.error("Kafka source %s crashed", list(run.args.topics), exc_info=task.exception())

    async def commit(self, run: _SourceRun, only: set[TopicPartition] | None = None) -> None:
        """Commit the handled offsets of ``run`` not committed yet; failures are logged.

        Exactly-once: commit the open transaction with every handled offset instead (``only``
        is ignored: a transaction commits everything delivered, see :meth:`_commit_transaction`).
        """
        consumer = run.consumer
        if consumer is None:
            return
        if run.txn is not None:
            await self._commit_transaction(run, run.txn)
            return
        window = run.window
        todo = window.tracker.to_commit()
        if only is not None:
            todo = {tp: off for tp, off in todo.items() if tp in only}
        if not todo:
            return
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                await consumer.commit(todo)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(
                "group %s: commit of %s failed after a rebalance (%s); those records will be redelivered",
                run.group_id,
                fmt_offsets(todo),
                exc,
            )
            assigned = consumer.assignment()
            for tp in window.tracker.partitions():
                if tp not in assigned:
                    window.forget(tp)
        except (KafkaError, TimeoutError) as exc:
            log.warning("group %s: commit of %s failed: %s", run.group_id, fmt_offsets(todo), exc)
        else:
            window.tracker.mark_committed(todo)

    async def _commit_transaction(self, run: _SourceRun, txn: KafkaTransaction) -> None:
        """Exactly-once commit point: wait for the work in flight (its records go into the open
        transaction), then commit the transaction with the offsets handled. A failure aborts it
        and is kept in ``run.txn_error``: the stream ends with a retriable :class:`CommitError`,
        and the records since the last commit are read again (their aborted outputs are never
        visible to ``read_committed`` readers)."""
        window = run.window
        if not txn.open and not window.tracker.to_commit():
            return
        await window.drain()
        # the records whose outputs are in the transaction must be committed with it: wait for the
        # holds too (a sink's acknowledgements: milliseconds); an operator holding records longer
        # (a window) is given one commit interval, then its records stay out (see the guarantees page)
        await window.drain(timeout=max(0.1, self.settings.commit_interval_s), holds=True)
        if window.error is not None:
            await txn.abort()  # the stream ends with that error; nothing of this transaction counts
            return
        todo = window.tracker.to_commit()
        try:
            await txn.commit(todo)
        except (KafkaError, TimeoutError) as exc:
            await txn.abort()
            log.warning("group %s: transaction of %s aborted: %s", run.group_id, fmt_offsets(todo), exc)
            error = CommitError(
                f"group {run.group_id}: the transaction committing {fmt_offsets(todo)} failed "
                f"({type(exc).__name__}: {exc}); the records since the last commit are read again"
            )
            error.__cause__ = exc
            run.txn_error = run.txn_error or error
            return
        window.tracker.mark_committed(todo)

    async def _consume(self, run: _SourceRun) -> None:
        s = self.settings
        options: dict[str, Any] = {"request_timeout_ms": s.request_timeout_ms, **s.consumer_options}
        if run.args.exactly_once:
            options["isolation_level"] = "read_committed"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=s.client_id,
            group_id=run.group_id,
            enable_auto_commit=False,
            auto_offset_reset=run.args.auto_offset_reset,
            **options,
        )
        error: BaseException | None = None
        # this task's records (and its Observer's tasks') go through the transaction, if any
        current_transaction.set(None)
        try:
            try:
                async with asyncio.timeout(s.connect_timeout_s):
                    await consumer.start()
                if run.args.exactly_once:
                    txn = KafkaTransaction(s, default_transactional_id(run.group_id, run.args.topics), run.group_id)
                    await txn.start()
                    run.txn = txn
                    current_transaction.set(txn)
            except (KafkaError, OSError, TimeoutError, BrokerUnavailableError) as exc:
                await close_quietly(consumer.stop())
                failure = (
                    exc
                    if isinstance(exc, BrokerUnavailableError)
                    else unavailable(s.bootstrap_servers, exc, s.connect_timeout_s)
                )
                if failure is not exc:
                    failure.__cause__ = exc
                run.closed()
                run.end(failure)
                return
            run.consumer = consumer
            consumer.subscribe(topics=list(run.args.topics), listener=_Listener(self, run))
            error = await self._fetch_loop(run, consumer)
        except asyncio.CancelledError:
            # Disposed (or broker.stop() gave up waiting): commit what was handled, close.
            # Exactly-once: the work in flight was cancelled, so its transaction is aborted.
            run.terminating = True
            await close_quietly(run.window.cancel())
            if run.txn is not None:
                await close_quietly(run.txn.stop())
            else:
                await close_quietly(self.commit(run))
            await close_quietly(consumer.stop())
            run.closed()
            raise
        run.terminating = True
        if run.txn is not None and error is not None:
            await run.txn.abort()  # exactly-once: nothing of the failed transaction counts
        else:
            await self.commit(run)
            error = error or run.txn_error
        ended = False
        if error is None and not run.detached:
            # Complete first, so that operators holding records (batches, windows) emit them;
            # then commit what their outputs' handling released, and only then leave the group.
            run.end(None)
            ended = True
            await release_holds(run.window, s.revoke_timeout_s, run.group_id)
            await self.commit(run)
        if run.txn is not None:
            await close_quietly(run.txn.stop())
        await close_quietly(consumer.stop())
        run.closed()
        if not ended:
            run.end(error)

    async def _fetch_loop(self, run: _SourceRun, consumer: AIOKafkaConsumer) -> Exception | None:
        """Fetch and deliver through the in-flight window until stopped, then
        settle what is in flight; returns the error that ended it, if any."""
        window, stats = run.window, run.stats
        error = await self._deliver(run, consumer)
        if run.detached:
            await window.cancel()
        elif error is None:
            await window.drain()  # stop: finish what is in flight (broker.stop() bounds it)
            error = window.error
        elif not await window.drain(timeout=self.settings.revoke_timeout_s):
            await window.cancel()
        stats.in_flight = len(window)
        return error

    async def _deliver(self, run: _SourceRun, consumer: AIOKafkaConsumer) -> Exception | None:
        s = self.settings
        window, stats = run.window, run.stats
        poll_ms = max(1, int(s.poll_timeout_s * 1000))
        max_batch = s.max_batch
        interval = s.commit_interval_s
        last_commit = last_poll = time.monotonic()
        paused = False
        while not run.stopping():
            if window.error is not None:
                return window.error
            try:
                await self._deliver_backlog(run, consumer.assignment())
            except Exception as exc:  # noqa: BLE001 - the observer's failure ends the stream
                return exc
            if run.detached or run.stopping():
                break
            if window.error is not None:
                return window.error
            backlog = run.backlog
            stats.in_flight = len(window)
            stats.max_in_flight = window.max_seen
            stats.buffered = sum(len(chunk[1]) - chunk[2] for chunk in backlog)
            if backlog and run.yielded:
                run.yielded = False
                await asyncio.sleep(0)  # handled for YIELD_AFTER_S: let the loop's other tasks run
                now = time.monotonic()
                if now - last_poll < s.poll_timeout_s and now - last_commit < interval:
                    continue
                # A long backlog (handlers awaited in place take their time): keep calling
                # getmany, paused, so that aiokafka does not count us idle (max_poll_interval_ms),
                # and commit what was handled on schedule.
                if not paused:
                    _pause(consumer, stats)
                    paused = True
                batches = await consumer.getmany(timeout_ms=0, max_records=max_batch)
                last_poll = time.monotonic()
            elif backlog:
                # Blocked on a full window (or a busy key): stop fetching, but keep calling
                # getmany (at least every poll_timeout_s) so that aiokafka does not count us idle
                # (max_poll_interval_ms); a message settling wakes us to deliver on at once.
                if not paused:
                    _pause(consumer, stats)
                    paused = True
                await window.wait_room(timeout=s.poll_timeout_s)
                if time.monotonic() - last_poll < s.poll_timeout_s:
                    continue
                batches = await consumer.getmany(timeout_ms=0, max_records=max_batch)
                last_poll = time.monotonic()
            else:
                if paused:
                    consumer.resume(*consumer.paused())
                    paused = False
                    stats.resumes += 1
                    stats.paused = frozenset(consumer.paused())
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=max_batch)
                last_poll = time.monotonic()
                failure = await self._signal_assigned(run, consumer)
                if failure is not None:
                    return failure
            for tp, records in batches.items():
                if records:
                    backlog.append([tp, records, 0])
            stats.buffered += sum(len(records) for records in batches.values())
            stats.max_buffered = max(stats.max_buffered, stats.buffered)
            if time.monotonic() - last_commit >= interval:
                await self.commit(run)
                last_commit = time.monotonic()
                if run.txn_error is not None:
                    return run.txn_error
        return None

    async def _deliver_backlog(self, run: _SourceRun, assigned: Any) -> None:
        """Deliver the fetched records of ``run.backlog`` in order until it is empty, the window
        is full (or the next record's key busy), the source is stopping, or it has run for
        :data:`YIELD_AFTER_S` seconds (then ``run.yielded`` is set: the caller yields to the loop).

        The per-record hot path, :func:`~reactive_services.adapters._source.hand_over` written
        out for Kafka records: one :class:`Message`, the decoder, ``on_next`` with
        :data:`current_message` set. A message the Observer tracked no work on and took no hold
        on is handled: the offset to advance to is noted, and the window advances once per
        fetched chunk (before any later message of the partition enters it, and when this
        returns or raises), so such a record costs no task, no future and no bookkeeping call.

        The records of a topic with a payload route (a service's payload handler, see
        :class:`~reactive_services.adapters._source.PayloadObserver`) go through
        :meth:`_deliver_payloads` instead.

        Raises:
            Exception: whatever ``on_next`` (or a payload route) raised (that record stays
                uncommitted; the records before it were handled and advance).
        """
        backlog, window, emitter, decoder = run.backlog, run.window, self._emitter, run.args.decoder
        decode = orjson.loads if decoder is decode_json else decoder  # decode_json's errors, re-made on failure
        on_next = run.observer.on_next
        stop_set = run.stop.is_set if run.stop is not None else _never
        deadline = time.perf_counter() + YIELD_AFTER_S
        limit = window.limit
        batches = run.args.batches
        routes = run.routes
        while backlog:
            chunk = backlog[0]
            tp, records, i = chunk
            if tp not in assigned or tp in run.revoking:  # revoked meanwhile
                backlog.popleft()
                continue
            end = len(records)
            if batches:
                if window.count >= limit or window.key_busy(tp, BATCH_KEY):
                    return  # blocked: the caller waits for a batch to settle
                chunk[2] = end
                hand_over_batch(emitter, window, run, tp, records[i:], decoder, raw=_value_of, make=message_of)
                backlog.popleft()
                if run.detached or run.halt or stop_set():
                    return
                if time.perf_counter() >= deadline:
                    run.yielded = True
                    return
                continue
            route = routes.get(tp.topic) if routes else None
            if route is not None:
                if await self._deliver_payloads(run, chunk, route, deadline):
                    return
                continue
            handled = -1  # the last offset of tp handled synchronously and not advanced to yet
            first: Token[Any] | None = None  # current_message restored once per chunk, as in _deliver_payloads
            try:
                while i < end:
                    record = records[i]
                    key = record.key
                    if window.count >= limit or (key is not None and window.key_busy(tp, key)):
                        return  # blocked: the caller waits for a message to settle
                    i += 1
                    headers = record.headers
                    raw = record.value
                    message = Message(
                        record.topic,
                        record.partition,
                        record.offset,
                        key,
                        None,
                        headers_from_kafka(headers) if headers else (),
                        record.timestamp,
                        raw,
                    )
                    try:
                        message.value = decode(raw)
                    except Exception:  # noqa: BLE001 - any decoder failure dead-letters
                        if handled >= 0:
                            window.advance(tp, handled)
                            handled = -1
                        if first is not None:
                            _set_current(None)  # its dead letter is sent outside of any delivery
                        dead_letter_undecodable(emitter, window, tp, message, decode_error(decoder, raw))
                        continue
                    token = _set_current(message)
                    if first is None:
                        first = token
                    on_next(message)
                    if run.detached:
                        return  # disposed from on_next: this message stays uncommitted
                    if message._pending or message._holds:
                        if handled >= 0:
                            window.advance(tp, handled)
                            handled = -1
                        window.settle(message, tp, window.begin(tp, message.offset))
                    else:
                        handled = message.offset
                    if run.halt or stop_set():
                        return
                    if not i & 31 and time.perf_counter() >= deadline:
                        run.yielded = True
                        return
            finally:
                if first is not None:
                    _reset_current(first)
                chunk[2] = i
                if handled >= 0:
                    window.advance(tp, handled)
            backlog.popleft()

    async def _deliver_payloads(self, run: _SourceRun, chunk: list[Any], route: PayloadRoute, deadline: float) -> bool:
        """Deliver the records of ``chunk`` (the first of ``run.backlog``) through ``route``
        (:class:`~reactive_services.adapters._source.PayloadObserver`): per record, the decoder,
        then ``route.call(value)`` with :data:`current_message` set to a pending delivery, whose
        :class:`Message` is only made if something asks for it. A record whose message took no
        work and no hold is handled: the offset to advance to is noted, and the window advances
        once per chunk, as in :meth:`_deliver_backlog`. An awaitable the call returned (an
        ``async def`` handler) is awaited here, before the next record
        (:func:`~reactive_services.adapters._source.await_payload`); after it, the partition is
        checked again (a rebalance may have taken it meanwhile).

        Returns:
            True when the caller must return (blocked on the window, stopping, disposed, or
            yielding: ``run.yielded``); False when the chunk is done (or a rebalance took it).

        Raises:
            Exception: whatever ``route.failed`` raised (that record stays uncommitted; the
                records before it were handled and advance).
        """
        backlog, window, emitter, decoder = run.backlog, run.window, self._emitter, run.args.decoder
        decode = orjson.loads if decoder is decode_json else decoder  # decode_json's errors, re-made on failure
        call, failed = route.call, route.failed
        stats = run.stats
        stop_set = run.stop.is_set if run.stop is not None else _never
        limit = window.limit
        tp, records, i = chunk
        end = len(records)
        handled = -1  # the last offset of tp handled synchronously and not advanced to yet
        ok = 0  # records handled without error, not reported yet
        # current_message is set per record and restored once, when the chunk ends (a reset per
        # record costs as much as the set): between records it names the last one delivered,
        # seen by nothing but this loop (a failed decode clears it before its dead letter).
        first: Token[Any] | None = None
        try:
            while i < end:
                record = records[i]
                key = record.key
                if window.count >= limit or (key is not None and window.key_busy(tp, key)):
                    return True  # blocked: the caller waits for a message to settle
                i += 1
                raw = record.value
                try:
                    value = decode(raw)
                except Exception:  # noqa: BLE001 - any decoder failure dead-letters
                    if handled >= 0:
                        window.advance(tp, handled)
                        handled = -1
                    if first is not None:
                        _set_current(None)  # its dead letter is sent outside of any delivery
                    dead_letter_undecodable(emitter, window, tp, message_of(record), decode_error(decoder, raw))
                    continue
                delivery = [record, value, None, message_of]
                awaited = False
                settle = True
                token = _set_current(delivery)
                if first is None:
                    first = token
                try:
                    result = call(value)
                    if result is None:
                        ok += 1
                    elif result.__class__ is CoroutineType or isawaitable(result):
                        # an async handler: awaited here, before the next record (await_payload written
                        # out; current_message stays set meanwhile, in this task's context only)
                        if handled >= 0:
                            window.advance(tp, handled)
                            handled = -1
                        chunk[2] = i
                        awaited = True
                        offset = record.offset
                        epoch = window.epoch_at(tp, offset)
                        revocations = stats.revocations
                        window.inline = tp
                        try:
                            await result
                        finally:
                            window.inline_done()
                        ok += 1
                    else:
                        ok += 1
                except asyncio.CancelledError:
                    if not awaited:  # a def handler raised it (a cancelled future's result(), say)
                        if handled >= 0:
                            window.advance(tp, handled)
                            handled = -1
                        offset = record.offset
                        epoch = window.epoch_at(tp, offset)
                    if not handler_cancelled(window, tp, offset, epoch, delivery):
                        return False  # a rebalance took the partition meanwhile
                    settle = False  # it stays uncommitted
                except Exception as exc:  # noqa: BLE001 - the route decides (a service dead-letters it)
                    failed(exc)
                if run.detached:
                    return True  # disposed from the handler: this record stays uncommitted
                if awaited and stats.revocations != revocations and window.tracker.epoch(tp) != epoch:
                    return False  # a rebalance took the partition meanwhile: its next owner reads it
                if settle:
                    message = delivery[2]
                    if message is not None and (message._pending or message._holds):
                        if handled >= 0:
                            window.advance(tp, handled)
                            handled = -1
                        window.settle(message, tp, window.begin(tp, record.offset))
                    else:
                        handled = record.offset
                if stop_set():
                    return True
                if awaited:
                    if run.halt or window.error is not None:
                        return True
                    if tp in run.revoking or not backlog or backlog[0] is not chunk:
                        return False  # being revoked: what was handled is advanced, for its commit
                    if time.perf_counter() >= deadline:  # (a handler takes its time: look each record)
                        run.yielded = True
                        return True
                elif not i & 31 and time.perf_counter() >= deadline:
                    run.yielded = True
                    return True
        finally:
            if first is not None:
                _reset_current(first)
            chunk[2] = i
            if handled >= 0:
                window.advance(tp, handled)
            if ok:
                route.handled(ok)
        backlog.popleft()
        return False

    async def _signal_assigned(self, run: _SourceRun, consumer: AIOKafkaConsumer) -> Exception | None:
        """Call ``run.on_assigned`` once partitions are assigned and positioned."""
        if run.on_assigned is None or not consumer.assignment():
            return None
        try:
            for tp in consumer.assignment():  # resolve "latest"/committed positions first
                await consumer.position(tp)
        except IllegalStateError:
            return None  # revoked meanwhile: try again after the next fetch
        signal, run.on_assigned = run.on_assigned, None
        try:
            signal()
        except Exception as exc:  # noqa: BLE001 - the callback's failure ends the stream
            return exc
        return None
