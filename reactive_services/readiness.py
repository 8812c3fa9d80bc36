"""Readiness for ``/readyz``: is the broker up and does every service have its partitions?

Wired by the process that serves HTTP (the gateway), next to :mod:`reactive_services.metrics`::

    broker = MeteredBroker(KafkaBroker("localhost:9092"), metrics)
    services = [Microservice(broker, [Orders()], name="orders"), ...]
    check = readiness(broker, services)

    GET /readyz   -> status = await check(); 200 if ready(status) else 503; body: status
    GET /healthz  -> 200 while the process runs (no check here: liveness, not readiness)

:func:`consumer_groups` gives the ``{group: topics}`` that
:meth:`reactive_services.metrics.ServiceMetrics.refresh_lag` reports the lag of.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from reactive_services.adapters import Broker
from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.adapters.memory import InMemoryBroker

from ._runtime import Microservice
from .errors import ConfigError
from .metrics import MeteredBroker

__all__ = ["consumer_groups", "readiness", "ready"]


def consumer_groups(services: Iterable[Microservice]) -> dict[str, list[str]]:
    """``{consumer group: topics}`` read by ``services``, for
    :meth:`reactive_services.metrics.ServiceMetrics.refresh_lag` (topics in first-seen order)."""
    groups: dict[str, list[str]] = {}
    for service in services:
        for group, topics in service.sources:
            known = groups.setdefault(group, [])
            known.extend(t for t in topics if t not in known)
    return groups


def ready(status: Mapping[str, Any]) -> bool:
    """Whether a :func:`readiness` answer means "ready": every top-level bool is True
    (and every bool of a nested mapping such as ``"services"``)."""
    for value in status.values():
        if isinstance(value, bool) and not value:
            return False
        if isinstance(value, Mapping) and not all(v for v in value.values() if isinstance(v, bool)):
            return False
    return True


def readiness(
    broker: Broker, services: Iterable[Microservice], *, probe_timeout_s: float = 2.0, probe_topic: str | None = None
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A check for ``/readyz``: ``status = await check()``, then :func:`ready` (status)
    -> 200, else 503 with the status as body.

    The answer::

        {"broker": bool, "partitions_assigned": bool, "services": {name: started}}

    - ``broker``: the broker is started and, for Kafka, answers a metadata request within
      ``probe_timeout_s`` seconds (``end_offsets`` of a topic a service reads, else of
      ``probe_topic``; with neither, the started flag alone). A probe that outlives the
      timeout is left to finish in the background and reused by the next check, so
      checks never pile up. For the in-memory broker: started.
    - ``partitions_assigned``: every service is started and each of its sources
      (:attr:`Microservice.sources`) has a live subscription that was assigned
      partitions. Read from the :class:`~reactive_services.metrics.MeteredBroker` the
      services (or ``broker``) use;
      without one, from the broker's own counters (Kafka ``source_stats``: an assignment
      was received in the group; memory ``assignment``: a member owns a partition of the
      topics). A consumer group with more members than partitions leaves some member
      without any: that process then reports not ready, by design of this rule.
    - ``services``: ``{service name: Microservice.started}``.

    "Ready" iff every top-level bool is True (a stopped service makes
    ``partitions_assigned`` False too, so the top-level bools suffice).

    Args:
        broker: the broker the services use (a :class:`~reactive_services.metrics.MeteredBroker`
            or the raw one).
        services: the :class:`~reactive_services.Microservice` objects to report on.
        probe_timeout_s: seconds the Kafka metadata probe may take.
        probe_topic: the topic to probe when no service reads one.

    Raises:
        ConfigError: ``probe_timeout_s`` is not > 0.
    """
    if not probe_timeout_s > 0:
        raise ConfigError("probe_timeout_s", f"must be > 0 seconds, got {probe_timeout_s!r}")
    services = list(services)
    probe: asyncio.Task[dict[int, int]] | None = None

    async def broker_ok() -> bool:
        nonlocal probe
        if not broker.started:
            return False
        if broker.kind == "memory":
            return True
        topic = next((t for s in services for _, ts in s.sources for t in ts), probe_topic)
        if topic is None:
            return True
        if probe is None or probe.done():
            probe = asyncio.ensure_future(broker.end_offsets(topic))
            probe.add_done_callback(_consume_result)
        try:
            await asyncio.wait_for(asyncio.shield(probe), probe_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - timeout or broker error: not ready
            return False
        return True

    async def check() -> dict[str, Any]:
        started: dict[str, bool] = {}
        for s in services:
            started[s.name] = started.get(s.name, True) and bool(s.started)
        assigned = all(
            s.started
            and all(
                _assigned(s.broker if isinstance(s.broker, MeteredBroker) else broker, g, ts) for g, ts in s.sources
            )
            for s in services
        )
        return {"broker": await broker_ok(), "partitions_assigned": assigned, "services": started}

    return check


def _assigned(broker: Broker, group: str, topics: Sequence[str]) -> bool:
    """Whether a live source of ``group`` reading ``topics`` was assigned partitions, from what
    ``broker`` records (a broker of another kind, unwrapped, reports False)."""
    if isinstance(broker, MeteredBroker):
        return broker.assigned(group, topics)
    if isinstance(broker, KafkaBroker):  # an assignment was received by a running source of the group
        return any(st.assignments > 0 for st in broker.source_stats(group))
    if isinstance(broker, InMemoryBroker):  # a member of the group owns a partition of these topics
        return any(tp[0] in topics for member in broker.assignment(group) for tp in member)
    return False


def _consume_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "exception was never retrieved" warning
