"""The RabbitMQ consume loop: one asyncio task per subscription, one channel per partition queue.

Each subscription opens a connection of its own, declares its group's quorum queue for every
partition of its topics (:func:`~._codec.queue_name`), binds it, and consumes it on a channel
of its own with ``basic.qos(prefetch)``: so the delivery tags of a channel number that
partition's deliveries 1, 2, 3, ..., and a message's offset is ``base + tag - 1``, where
``base`` is how many messages of the partition this broker's sources had acknowledged for the
group when the channel's first message arrived (so, in one process, offsets run on across
subscriptions as on a log, and :meth:`RabbitBroker.committed` is the next one). Delivery
goes through the shared in-flight window (:class:`~reactive_services.adapters._inflight.InFlight`)
and :func:`~reactive_services.adapters._source.hand_over` as on the other brokers; "commit" is
``basic.ack(position - base, multiple=True)`` of the partition's committable position, so a message is
acknowledged only after the Observer handled it and the work it tracked settled, and never
before an unfinished message of its partition.

A lost connection is a rebalance: the messages not acknowledged are redelivered by RabbitMQ
(to this source once it reconnected, or to another member of the group), so the window forgets
them, and the source reconnects with backoff for up to ``reconnect_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase

from reactive_services.errors import BrokerUnavailableError

from .._inflight import InFlight
from .._message import Message
from .._protocol import Emitter
from .._source import (
    BATCH_KEY,
    BrokerSource,
    SourceArgs,
    SourceTasks,
    Subscription,
    await_payload,
    hand_over,
    hand_over_batch,
    hand_over_payload,
    payload_routes,
    release_holds,
)
from ._codec import RabbitSettings, message_of
from ._producer import CONNECTION_ERRORS, RabbitProducer, declare_group_queues

__all__ = ["RabbitSources"]

log = logging.getLogger("reactive_services.adapters.rabbitmq")

#: Seconds a source waits, after a failure, for its other messages in flight.
DRAIN_TIMEOUT_S = 5.0

#: Seconds between two looks at a full window (a settle also wakes the source at once).
ADMIT_POLL_S = 0.05

#: First and largest pause between two reconnection attempts, in seconds (doubled, with jitter).
BACKOFF_S = (0.2, 5.0)

#: Seconds a partition may sit at its prefetch limit without an acknowledgement before the
#: source logs a warning (see :meth:`RabbitSources._check_stalls`).
STALL_WARNING_S = 30.0

TP = tuple[str, int]


class _ConnectionLost(Exception):
    """The source's connection or one of its channels closed under it."""


@dataclass(eq=False, kw_only=True)
class _Run(Subscription):
    """One subscription: its connection, channels, window and the deliveries not handed over yet."""

    args: SourceArgs
    stop: asyncio.Event
    closing: asyncio.Event
    on_assigned: Callable[[], None] | None = None
    window: InFlight = field(init=False)
    connection: AbstractConnection | None = None
    #: the aiormq channel each partition is consumed on
    channels: dict[TP, aiormq.abc.AbstractChannel] = field(default_factory=dict)
    #: deliveries received and not handed over yet, in arrival order
    buffer: deque[tuple[TP, DeliveredMessage]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    generation: int = 0
    #: per partition of this connection: the offset of delivery tag 1 (what the group had
    #: acknowledged in this process when the channel's first message arrived)
    bases: dict[TP, int] = field(default_factory=dict)
    #: per partition of this connection: the highest delivery tag received, the tag acknowledged
    #: last, and when (loop time, seconds) that acknowledgement moved or the partition last had room
    tags: dict[TP, int] = field(default_factory=dict)
    acked_tags: dict[TP, int] = field(default_factory=dict)
    progress_at: dict[TP, float] = field(default_factory=dict)
    #: partitions already warned about as stalled (warned again only after they moved)
    stalled: set[TP] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.window = InFlight(self.args.concurrency, on_settled=self.wake.set)

    def stopping(self) -> bool:
        return self.stop.is_set() or self.closing.is_set()


class RabbitSources(SourceTasks):
    """The running source subscriptions of one :class:`~reactive_services.adapters.rabbitmq.RabbitBroker`.

    Args:
        settings: the broker's settings.
        producer: the broker's producer (it knows each topic's partitions and declares exchanges).
        emitter: what undecodable records are dead-lettered through (the broker).
    """

    def __init__(self, settings: RabbitSettings, producer: RabbitProducer, emitter: Emitter) -> None:
        self.settings = settings
        self._producer = producer
        self._emitter = emitter
        super().__init__()
        #: ``{(group, topic, partition): messages acknowledged}`` by this broker's sources
        self.acknowledged: dict[tuple[str, str, int], int] = {}

    def observable(
        self,
        args: SourceArgs,
        *,
        stop: asyncio.Event | None,
        on_assigned: Callable[[], None] | None,
        on_closed: Callable[[], None] | None = None,
    ) -> BrokerSource:
        """The cold Observable of :meth:`RabbitBroker.source` for checked ``args``."""

        def subscribe(observer: ObserverBase[Any], scheduler: SchedulerBase | None = None) -> DisposableBase:
            run = _Run(
                observer=observer,
                args=args,
                stop=stop or asyncio.Event(),
                closing=self.closing,
                on_assigned=on_assigned,
                on_closed=on_closed,
            )
            return self.spawn(run, self._consume(run), f"rabbitmq-source:{args.group_id}:{','.join(args.topics)}")

        return BrokerSource(subscribe)

    # -- the subscription's task -------------------------------------------------------------
    async def _consume(self, run: _Run) -> None:
        window = run.window
        ended = False
        error: Exception | None = None
        try:
            try:
                error = await self._run(run)
            except Exception as exc:  # noqa: BLE001 - the Observer raised: that message stays unacknowledged
                error = exc
            if run.detached:
                await window.cancel()
            elif error is None:  # stop: finish what is in flight, then acknowledge
                await window.drain()
                error = window.error
            elif not await window.drain(timeout=DRAIN_TIMEOUT_S):
                await window.cancel()
            run.terminating = True
            await self._final_ack(run)
            if error is None and not run.detached:
                # Complete first, so that operators holding records (batches, windows) emit
                # them; then acknowledge what their outputs' handling released.
                run.end(None)
                ended = True
                await release_holds(window, DRAIN_TIMEOUT_S, run.args.group_id)
                await window.drain()
                await self._final_ack(run)
        except asyncio.CancelledError:  # disposed, or stop() gave up waiting
            await window.cancel()
            raise
        finally:
            await self._disconnect(run)  # what was not acknowledged goes back to its queue
            run.closed()
        if not ended:
            run.end(error)

    async def _run(self, run: _Run) -> Exception | None:
        """Connect, consume, deliver; reconnect after a lost connection. Returns the error that
        ended the stream (None: stopped)."""
        while not run.stopping():
            try:
                await self._connect(run)
            except BrokerUnavailableError as exc:
                return exc
            if run.stopping():
                return None
            if run.on_assigned is not None:  # consuming every partition queue: once per subscription
                signal, run.on_assigned = run.on_assigned, None
                try:
                    signal()
                except Exception as exc:  # noqa: BLE001 - the callback's failure ends the stream
                    return exc
            try:
                return await self._deliver(run)
            except _ConnectionLost:
                if run.stopping():
                    return None
                log.warning(
                    "group %s: the connection to RabbitMQ was lost; reconnecting (unacknowledged messages "
                    "are redelivered)",
                    run.args.group_id,
                )
                for tp in run.channels:
                    run.window.forget(tp)  # RabbitMQ redelivers them: their settles are ignored
                run.buffer.clear()
                await self._disconnect(run)
        return None

    async def _connect(self, run: _Run) -> None:
        """Open the connection, declare and bind the group's queues, consume each on a channel.

        Retries with backoff (doubling from ``BACKOFF_S[0]`` to ``BACKOFF_S[1]`` seconds, with
        jitter) for up to ``reconnect_timeout_s`` seconds.

        Raises:
            BrokerUnavailableError: still failing after ``reconnect_timeout_s`` seconds.
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.reconnect_timeout_s
        pause = BACKOFF_S[0]
        while True:
            try:
                await asyncio.wait_for(self._open(run), s.connect_timeout_s)
                return
            except (*CONNECTION_ERRORS, BrokerUnavailableError) as exc:
                await self._disconnect(run)
                if loop.time() + pause >= deadline or run.stopping():
                    raise BrokerUnavailableError(
                        f"group {run.args.group_id}: cannot consume from RabbitMQ: {exc!r}"
                    ) from exc
                log.info("group %s: RabbitMQ not reachable (%r); retrying in %.1f s", run.args.group_id, exc, pause)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(run.stop.wait(), pause * random.uniform(0.5, 1.0))  # noqa: S311
                pause = min(pause * 2, BACKOFF_S[1])

    async def _open(self, run: _Run) -> None:
        s = self.settings
        connection = await aio_pika.connect(s.url, timeout=s.connect_timeout_s)
        run.connection = connection
        run.lost.clear()
        connection.close_callbacks.add(lambda *_: _lost(run))
        declaring = await connection.channel()
        run.generation += 1
        generation = run.generation
        for topic in run.args.topics:
            names = await declare_group_queues(
                declaring, s, run.args.group_id, topic, self._producer.partitions_of(topic)
            )
            for p, name in enumerate(names):
                tp = (topic, p)
                channel = await (await connection.channel()).get_underlay_channel()
                await channel.basic_qos(prefetch_count=s.prefetch)
                run.channels[tp] = channel
                key = (run.args.group_id, topic, p)

                async def received(message: DeliveredMessage, tp: TP = tp, key: tuple[str, str, int] = key) -> None:
                    if run.generation != generation:
                        return
                    if tp not in run.bases:  # the channel's first message: number from what was acknowledged
                        run.bases[tp] = base = self.acknowledged.get(key, 0)
                        run.window.tracker.assign(tp, base)
                    run.tags[tp] = message.delivery_tag or 0
                    run.buffer.append((tp, message))
                    run.wake.set()

                await channel.basic_consume(name, received, no_ack=False)
        await declaring.close()

    async def _disconnect(self, run: _Run) -> None:
        connection, run.connection = run.connection, None
        run.channels = {}
        run.bases = {}
        run.tags, run.acked_tags, run.progress_at = {}, {}, {}
        run.stalled.clear()
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*CONNECTION_ERRORS, asyncio.CancelledError):
                await asyncio.wait_for(connection.close(), self.settings.connect_timeout_s)

    async def _final_ack(self, run: _Run) -> None:
        """:meth:`_ack` as the subscription ends: a connection lost meanwhile is logged (RabbitMQ
        redelivers what was not acknowledged: at-least-once), not raised."""
        try:
            await self._ack(run)
        except _ConnectionLost:
            log.warning(
                "group %s: the connection was lost before the last acknowledgements; RabbitMQ redelivers "
                "those messages",
                run.args.group_id,
            )

    async def _ack(self, run: _Run) -> None:
        """Acknowledge, per partition, every delivery below its committable position (its lowest
        offset still in flight): ``basic.ack(position, multiple=True)``.

        Raises:
            _ConnectionLost: the channel is gone (RabbitMQ redelivers what was not acknowledged).
        """
        tracker = run.window.tracker
        todo = tracker.to_commit([tp for tp in run.channels if tp in run.bases])
        group = run.args.group_id
        for tp, position in todo.items():
            tag = position - run.bases[tp]  # offsets base .. position - 1 are tags 1 .. tag
            if tag > 0:
                try:
                    await run.channels[tp].basic_ack(tag, multiple=True)
                except CONNECTION_ERRORS as exc:
                    raise _ConnectionLost from exc
                key = (group, *tp)
                self.acknowledged[key] = max(self.acknowledged.get(key, 0), position)
                run.acked_tags[tp] = tag
        tracker.mark_committed(todo)

    def _check_stalls(self, run: _Run, now: float) -> None:
        """Log a warning for each partition that has had ``prefetch`` messages unacknowledged,
        with no acknowledgement, for ``STALL_WARNING_S`` seconds (once, until it moves again).

        RabbitMQ sends a partition nothing more while ``prefetch`` of its messages are not
        acknowledged. When the Observer has handled them all and operators hold them (a batch
        or an event-time window waiting for more records to close), nothing will release
        them: the stream waits for ever. The warning names the partition, the numbers and the
        remedy (a ``prefetch`` above what the pipeline holds per partition).
        """
        prefetch = self.settings.prefetch
        for tp in run.channels:
            unacked = run.tags.get(tp, 0) - run.acked_tags.get(tp, 0)
            if unacked < prefetch:
                run.progress_at[tp] = now
                run.stalled.discard(tp)
                continue
            since = run.progress_at.setdefault(tp, now)
            if tp in run.stalled or now - since < STALL_WARNING_S:
                continue
            run.stalled.add(tp)
            log.warning(
                "group %s: partition %s[%d] has had %d messages unacknowledged (the prefetch) for %.0f s; "
                "%d handled messages of this source wait for operators holding them (batches, windows). "
                "RabbitMQ sends this partition nothing more until some are acknowledged: if an operator "
                "holds records until more arrive, give the broker a prefetch above what it holds per "
                "partition (RabbitBroker(prefetch=...))",
                run.args.group_id,
                tp[0],
                tp[1],
                unacked,
                now - since,
                run.window.held,
            )

    async def _deliver(self, run: _Run) -> Exception | None:
        """Hand deliveries over until stopped; returns the error that ended it, if any.

        Raises:
            _ConnectionLost: the connection closed under it.
            Exception: whatever ``on_next`` (or a payload handler's route) raised.
        """
        window, buffer = run.window, run.buffer
        decoder, max_batch = run.args.decoder, self.settings.max_batch
        routes = payload_routes(run.observer) if not run.args.batches else None
        route_of = {topic: routes(topic) if routes is not None else None for topic in run.args.topics}
        emitter = self._emitter
        while not run.stopping():
            if window.error is not None:
                return window.error
            if run.lost.is_set():
                raise _ConnectionLost
            run.wake.clear()
            delivered = 0
            blocked = False
            while buffer and delivered < max_batch and not run.stopping():
                tp, delivery = buffer[0]
                if tp not in run.channels:  # of a channel closed meanwhile
                    buffer.popleft()
                    continue
                if run.args.batches:
                    if window.full() or window.key_busy(tp, BATCH_KEY):
                        blocked = True
                        break
                    base = run.bases[tp]
                    records = [_message(tp, buffer.popleft()[1], base)]
                    while buffer and buffer[0][0] == tp and len(records) < max_batch:
                        records.append(_message(tp, buffer.popleft()[1], base))
                    hand_over_batch(emitter, window, run, tp, records, decoder)
                    delivered += len(records)
                else:
                    message = _message(tp, delivery, run.bases[tp])
                    if window.full() or window.key_busy(tp, message.key):
                        blocked = True
                        break
                    buffer.popleft()
                    route = route_of[tp[0]]
                    if route is None:
                        hand_over(emitter, window, run, tp, message, decoder)
                    else:
                        work = hand_over_payload(emitter, window, run, tp, message, decoder, route)
                        if work is not None and not run.detached:  # an async handler: awaited here
                            delivery_ = [message, message.value, message, None]
                            await await_payload(window, run, tp, message.offset, delivery_, work, route)
                    delivered += 1
                if run.detached:
                    return None
                if window.error is not None:
                    return window.error
            await self._ack(run)
            if run.stopping():
                break
            if blocked:
                await window.wait_room(timeout=ADMIT_POLL_S)
            elif delivered and buffer:
                await asyncio.sleep(0)  # let the loop's other tasks run
            elif not buffer:
                await _wait_any(run, timeout=STALL_WARNING_S / 2)
                self._check_stalls(run, asyncio.get_running_loop().time())
        return None


def _lost(run: _Run) -> None:
    run.lost.set()
    run.wake.set()


async def _wait_any(run: _Run, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) for a delivery, a settle, stop, closing, a lost
    connection or failed work."""
    waiters = [asyncio.ensure_future(e.wait()) for e in (run.wake, run.stop, run.closing, run.lost, run.window.failed)]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _message(tp: TP, delivery: DeliveredMessage, base: int) -> Message:
    tag = delivery.delivery_tag or 0  # set on every basic.deliver
    return message_of(tp[0], tp[1], base + tag - 1, delivery.header.properties.headers, delivery.body)
