"""How the time-based operators pick their scheduler (shared, private)."""

from __future__ import annotations

import asyncio

from reactivex.abc import SchedulerBase
from reactivex.scheduler import TimeoutScheduler
from reactivex.scheduler.eventloop import AsyncIOThreadSafeScheduler

__all__ = ["pick_scheduler"]


def pick_scheduler(explicit: SchedulerBase | None, subscribed: SchedulerBase | None) -> SchedulerBase:
    """The scheduler a time-based operator uses, in this order of preference:

    1. the one given to the operator (``scheduler=``);
    2. the one given to ``subscribe(..., scheduler=)``;
    3. an :class:`~reactivex.scheduler.eventloop.AsyncIOThreadSafeScheduler` on the asyncio
       loop running in the subscribing thread (thread-safe, so a timer started from another
       thread still fires on the loop);
    4. reactivex's :class:`~reactivex.scheduler.TimeoutScheduler` (timers on threads) when no
       loop is running.
    """
    if explicit is not None:
        return explicit
    if subscribed is not None:
        return subscribed
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return TimeoutScheduler.singleton()
    return AsyncIOThreadSafeScheduler(loop)
