"""The in-memory consume loop: one asyncio task per subscription, a member of its consumer group.

Every subscription delivers through the shared in-flight window
(:class:`~reactive_services.adapters._inflight.InFlight`), ``concurrency=1`` included, exactly
as the Kafka source does; decoding, dead-lettering and delivering one record is the shared
:func:`~reactive_services.adapters._source.hand_over` (for a service's payload handlers,
:func:`~reactive_services.adapters._source.hand_over_payload`). A partition's committed offset is its
lowest offset still in flight, updated whenever a message settles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase

from .._inflight import InFlight
from .._message import YIELD_EVERY, Message, current_transaction
from .._protocol import Emitter
from .._source import (
    BATCH_KEY,
    BrokerSource,
    PayloadRoute,
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
from ._admin import Group, Member, MemoryCluster
from ._codec import StoredRecord, message_of
from ._producer import MemoryTransactions

__all__ = ["MemorySources"]

log = logging.getLogger("reactive_services.adapters.memory")

#: Seconds a source waits, after a failure, for its other messages in flight (Kafka: ``revoke_timeout_s``).
DRAIN_TIMEOUT_S = 5.0

#: Seconds between two looks at a full window (a settle also wakes the source at once).
ADMIT_POLL_S = 0.05


class _AnyEvent:
    """Set when any of its events is set."""

    def __init__(self, *events: asyncio.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    async def wait(self, *more: asyncio.Event) -> None:
        """Wait until one of its events, or of ``more``, is set."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (*more, *self.events)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


@dataclass(eq=False, kw_only=True)
class _Run(Subscription):
    """One subscription: its group membership, window and positions."""

    args: SourceArgs
    stop: _AnyEvent
    on_assigned: Callable[[], None] | None = None
    window: InFlight = field(init=False)
    group: Group = field(init=False)  # set when the task starts (joins the group)
    member: Member = field(init=False)

    def __post_init__(self) -> None:
        self.window = InFlight(self.args.concurrency, on_settled=self.commit)

    txns: MemoryTransactions | None = None  # exactly-once: the transactions outputs and offsets commit in

    def commit(self) -> None:
        """Commit, for each partition still ours, its lowest offset still in flight (when it moved).

        Exactly-once: nothing here (the window calls this after each message); offsets commit
        with the transaction, in :meth:`checkpoint`.
        """
        if self.txns is not None:
            return
        tracker = self.window.tracker
        todo = tracker.to_commit(self.member.assignment)
        if todo:
            self.group.committed.update(todo)
            tracker.mark_committed(todo)

    def checkpoint(self) -> None:
        """Commit what was handled: :meth:`commit`, or, exactly-once, the open transaction together
        with every handled offset (call it when no work is in flight)."""
        if self.txns is None:
            self.commit()
            return
        tracker = self.window.tracker
        todo = tracker.to_commit(self.member.assignment)
        self.txns.commit(self.group.committed, todo)
        tracker.mark_committed(todo)


class MemorySources(SourceTasks):
    """The running source subscriptions of one :class:`~reactive_services.adapters.memory.InMemoryBroker`.

    Args:
        cluster: the topics and groups read and committed in.
        max_batch: records a source hands to its Observer per partition pass before it yields.
        emitter: what undecodable records are dead-lettered through (the broker).
    """

    def __init__(self, cluster: MemoryCluster, max_batch: int, emitter: Emitter) -> None:
        self._cluster = cluster
        self.max_batch = max_batch
        self._emitter = emitter
        super().__init__()

    def observable(
        self,
        args: SourceArgs,
        *,
        stop: asyncio.Event | None,
        on_assigned: Callable[[], None] | None,
        on_closed: Callable[[], None] | None = None,
    ) -> BrokerSource:
        """The cold Observable of :meth:`InMemoryBroker.source` for checked ``args``."""

        def subscribe(observer: ObserverBase[Any], scheduler: SchedulerBase | None = None) -> DisposableBase:
            run = _Run(
                observer=observer,
                args=args,
                stop=_AnyEvent(stop or asyncio.Event(), self.closing),
                on_assigned=on_assigned,
                on_closed=on_closed,
            )
            return self.spawn(run, self._consume(run), f"memory-source:{args.group_id}:{','.join(args.topics)}")

        return BrokerSource(subscribe)

    async def _consume(self, run: _Run) -> None:
        window = run.window
        ended = False
        run.group, run.member = self._cluster.join(run.args.group_id, run.args.topics)
        # this task's records (and its Observer's tasks') go into the transaction, if any
        run.txns = MemoryTransactions(self._cluster) if run.args.exactly_once else None
        current_transaction.set(run.txns)
        try:
            try:
                error = await self._deliver(run)
            except Exception as exc:  # noqa: BLE001 - the Observer raised: that message stays uncommitted
                error = exc
            if run.detached:
                await window.cancel()
            elif error is None:  # stop: finish what is in flight, then commit
                await window.drain()
                error = window.error
            elif not await window.drain(timeout=DRAIN_TIMEOUT_S):  # let the others finish (bounded)
                await window.cancel()
            run.terminating = True
            if run.txns is not None and (error is not None or run.detached):
                run.txns.abort()  # its records are never read; the records since the last commit come again
            else:
                run.checkpoint()
            if error is None and not run.detached:
                # Complete first, so that operators holding records (batches, windows) emit
                # them; then commit what their outputs' handling released.
                run.end(None)
                ended = True
                await release_holds(window, DRAIN_TIMEOUT_S, run.args.group_id)
                await window.drain()
                run.checkpoint()
        except asyncio.CancelledError:  # disposed, or stop() gave up waiting
            await window.cancel()
            if run.txns is not None:
                run.txns.abort()
            raise
        finally:
            if run.txns is not None:
                run.txns.abort()  # nothing is left open (a graceful end committed it already)
                run.txns.closed = True
            self._cluster.leave(run.group, run.member)
            run.closed()
        if not ended:
            run.end(error)

    async def _deliver(self, run: _Run) -> Exception | None:
        """Deliver records until stopped; returns the error that ended it (tracked work failed), if any."""
        cluster, window, member, stop = self._cluster, run.window, run.member, run.stop
        decoder = run.args.decoder
        routes = payload_routes(run.observer)
        route_of = {topic: routes(topic) if routes is not None else None for topic in run.args.topics}
        positions: dict[tuple[str, int], int] = {}
        generation = -1
        while not stop.is_set():
            if window.error is not None:
                return window.error
            if generation != member.generation:  # a rebalance: keep our place in partitions we kept
                if run.txns is not None and positions:  # exactly-once: commit before partitions move
                    await window.drain()
                    if window.error is not None:
                        return window.error
                    run.checkpoint()
                generation = member.generation
                lost, member.lost = member.lost, set()  # taken away since we last looked (maybe back now)
                for tp in positions:
                    if tp not in member.assignment or tp in lost:
                        window.forget(tp)  # its unfinished messages go to the new owner
                kept = {tp: offset for tp, offset in positions.items() if tp not in lost}
                positions = {}
                for tp in member.assignment:
                    if tp in kept:
                        positions[tp] = kept[tp]
                    else:  # newly ours: start at the committed offset (or the reset position)
                        await self._await_previous_owner(run, tp)
                        positions[tp] = cluster.start_offset(run.group, tp, run.args.auto_offset_reset)
                        window.tracker.assign(tp, positions[tp])
                if run.on_assigned is not None and positions:  # assigned and positioned
                    signal, run.on_assigned = run.on_assigned, None
                    signal()
            member.wake.clear()
            delivered = 0
            for tp in list(positions):
                part = cluster.topic(tp[0])[tp[1]]
                route = route_of[tp[0]]
                if run.args.batches:
                    delivered += await self._deliver_batch(run, tp, positions, generation)
                    if run.detached:
                        return None
                    continue
                while positions[tp] < len(part) and delivered < self.max_batch:
                    if stop.is_set() or generation != member.generation:
                        break
                    offset = positions[tp]
                    if offset < part.start:  # deleted by retention before this group read them
                        positions[tp] = self._skip_deleted(run, tp, offset, part.start)
                        continue
                    txn = part[offset].txn
                    if txn is not None and txn.state != "committed":
                        if txn.state == "open":  # the last stable offset: read on once it ends
                            break
                        window.skip(tp, offset)  # aborted: never read
                        positions[tp] = offset + 1
                        run.commit()
                        continue
                    if not await self._admit(run, tp, part[offset].key, generation):
                        break
                    if offset < part.start:  # deleted while waiting for room in the window
                        continue
                    message = message_of(tp[0], tp[1], offset, part[offset])
                    if route is None:
                        hand_over(self._emitter, window, run, tp, message, decoder)
                        if run.detached:
                            return None
                    else:
                        work = hand_over_payload(self._emitter, window, run, tp, message, decoder, route)
                        if run.detached:
                            return None
                        if work is not None:  # an async handler: awaited before the next record
                            if not await self._await_inline(run, tp, message, work, route):
                                break  # a rebalance took the partition meanwhile
                            if run.detached:
                                return None
                    positions[tp] = offset + 1
                    run.commit()
                    delivered += 1
                    if delivered % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let the loop's other tasks run
            if window.error is not None:
                return window.error
            if run.txns is not None and delivered:  # exactly-once: one transaction per pass
                await window.drain()
                if window.error is not None:
                    return window.error
                run.checkpoint()
            if delivered == 0 and not stop.is_set():
                await stop.wait(member.wake, window.failed)
            else:
                await asyncio.sleep(0)  # let producers and other members run
        return None

    async def _deliver_batch(
        self, run: _Run, tp: tuple[str, int], positions: dict[tuple[str, int], int], generation: int
    ) -> int:
        """Deliver the records of ``tp`` from its position on (at most ``max_batch``) as one list
        (:func:`hand_over_batch`); returns how many records it took."""
        part = self._cluster.topic(tp[0])[tp[1]]
        if positions[tp] < part.start:  # deleted by retention before this group read them
            positions[tp] = self._skip_deleted(run, tp, positions[tp], part.start)
        start = positions[tp]
        if start >= len(part) or not await self._admit(run, tp, BATCH_KEY, generation):
            return 0
        start = max(positions[tp], part.start)  # retention may have moved on while waiting
        end = min(len(part), start + self.max_batch)
        chunk = part.slice(start, end)
        for i, record in enumerate(chunk):  # the last stable offset: read on once that transaction ends
            txn = record.txn
            if txn is not None and txn.state == "open":
                end = start + i
                del chunk[i:]
                break
        if start >= end:
            return 0
        kept = [r for r in chunk if r.txn is None or r.txn.state == "committed"]
        if not kept:  # all of an aborted transaction: never read
            for offset in range(start, end):
                run.window.skip(tp, offset)
            positions[tp] = end
            run.commit()
            return end - start
        topic, partition = tp

        def make(record: StoredRecord) -> Message:
            return message_of(topic, partition, record.offset, record)

        # the stored records themselves: a Message is made only for the carrier and on demand
        hand_over_batch(self._emitter, run.window, run, tp, kept, run.args.decoder, raw=_stored_value, make=make)
        if not run.detached:
            positions[tp] = end
            run.commit()
        return end - start

    def _skip_deleted(self, run: _Run, tp: tuple[str, int], position: int, start: int) -> int:
        """Tell (log, count) that records ``position .. start - 1`` of ``tp`` were deleted by
        retention before ``run``'s group read them; returns where the group goes on: ``start``."""
        lost = start - position
        group = run.args.group_id
        self._cluster.lost_to_retention[group] = self._cluster.lost_to_retention.get(group, 0) + lost
        log.warning(
            "group %s: %d record(s) of %s[%d] (offsets %d..%d) were deleted by retention before this group "
            "read them; it goes on from offset %d",
            group,
            lost,
            tp[0],
            tp[1],
            position,
            start - 1,
            start,
        )
        return start

    async def _await_inline(
        self, run: _Run, tp: tuple[str, int], message: Message, work: Awaitable[Any], route: PayloadRoute
    ) -> bool:
        """:func:`await_payload`, with the partition marked in the group (``Group.inline``) meanwhile.

        Returns False when a rebalance took ``tp`` meanwhile: then, if its new owner waited for
        this handler, what was handled of ``tp`` is committed first (as Kafka's revocation does);
        the caller goes back to the rebalance, which forgets ``tp``.
        """
        group, member = run.group, run.member
        group.inline[tp] = member
        try:
            delivery = [message, message.value, message, None]
            ours = await await_payload(run.window, run, tp, message.offset, delivery, work, route)
        except BaseException:
            if group.inline.get(tp) is member:
                del group.inline[tp]
            raise
        claimed = group.inline.get(tp) is member
        if tp in member.assignment and tp not in member.lost:
            if claimed:
                del group.inline[tp]
            return True
        if claimed:  # its new owner waits for us: commit what we handled of it, then let it read on
            if ours and run.txns is None:
                tracker = run.window.tracker
                todo = tracker.to_commit([tp])
                group.committed.update(todo)
                tracker.mark_committed(todo)
            del group.inline[tp]
        return False

    async def _await_previous_owner(self, run: _Run, tp: tuple[str, int]) -> None:
        """Before reading ``tp``, newly ours: wait while its previous owner's source awaits a
        handler of it (``Group.inline``), at most ``DRAIN_TIMEOUT_S``; then read on anyway (the
        record is read again here: at-least-once), as Kafka's ``revoke_timeout_s``."""
        group = run.group
        deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT_S
        while (owner := group.inline.get(tp)) is not None and owner is not run.member:
            if asyncio.get_running_loop().time() >= deadline:
                log.warning(
                    "group %s: the handler of %s[%d] still runs at its previous owner after %g s; "
                    "its record is read again here",
                    run.args.group_id,
                    tp[0],
                    tp[1],
                    DRAIN_TIMEOUT_S,
                )
                del group.inline[tp]
                return
            await asyncio.sleep(ADMIT_POLL_S / 5)

    async def _admit(self, run: _Run, tp: tuple[str, int], key: bytes | None, generation: int) -> bool:
        """Wait until the window has room and no earlier message of ``key`` is in flight.

        Returns False if the source must stop delivering first (stop, rebalance, failed work).
        """
        window = run.window
        while window.full() or window.key_busy(tp, key):
            if window.error is not None or run.stop.is_set() or generation != run.member.generation:
                return False
            await window.wait_room(timeout=ADMIT_POLL_S)
        return window.error is None


#: a stored record's value bytes (``raw`` of :func:`hand_over_batch`)
_stored_value: Callable[[StoredRecord], bytes | None] = attrgetter("value")
