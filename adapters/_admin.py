"""Topic administration shared by every broker: waiting until topics are visible, declaring a
consumer group before anything is published for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence

from reactive_services.errors import BrokerUnavailableError

from ._protocol import Broker

__all__ = ["declare_group", "wait_visible"]


async def declare_group(broker: Broker, group_id: str, topics: Sequence[str]) -> None:
    """Make consumer group ``group_id`` receive what is published to ``topics`` from now on,
    before any member subscribed: a broker without a log (RabbitMQ, whose group queue keeps
    only what arrives after it exists) declares the group's queues through its optional
    ``declare_group(group_id, topics)`` method; a broker with a log (Kafka, the in-memory one)
    needs nothing, and has no such method.

    Raises:
        BrokerUnavailableError: the broker's declaration failed.
    """
    declare = getattr(broker, "declare_group", None)
    if declare is not None:
        await declare(group_id, list(topics))


#: Seconds between two looks at the metadata while waiting for topics.
POLL_INTERVAL_S = 0.05

#: ``pending topics -> the ones visible now``.
Probe = Callable[[list[str]], Awaitable[Collection[str]]]


def end_offsets_probe(broker: Broker) -> Probe:
    """A probe that counts a topic visible once ``broker.end_offsets(topic)`` lists partitions."""

    async def probe(pending: list[str]) -> Collection[str]:
        return [topic for topic in pending if await broker.end_offsets(topic)]

    return probe


async def wait_visible(
    broker: Broker | None,
    topics: Sequence[str],
    timeout: float,
    *,
    probe: Probe | None = None,
    what: str = "did not appear",
) -> None:
    """Wait until every topic of ``topics`` is visible, polling every 50 ms.

    A Kafka controller answers CreateTopics before every broker's metadata cache knows the
    topic, and a consumer that subscribes to a topic its first metadata answer does not list
    gets no partitions of it until its next metadata refresh (aiokafka's
    ``metadata_max_age_ms``, 5 minutes). By default a topic is visible once
    ``broker.end_offsets(topic)`` lists its partitions; a broker may pass its own ``probe``
    (``pending topics -> the visible ones``, e.g. "every partition has a leader").

    Args:
        broker: the broker whose ``end_offsets`` the default probe calls (unused with ``probe``).
        topics: the topic names.
        timeout: seconds to wait in all.
        probe: ``async (pending topics) -> the ones visible now``; an exception it raises ends the wait.
        what: the end of the error message, after the topic names.

    Raises:
        BrokerUnavailableError: a topic is still not visible after ``timeout`` seconds.
        ValueError: neither ``broker`` nor ``probe`` is given.
    """
    if probe is None:
        if broker is None:
            raise ValueError("wait_visible needs a broker or a probe")
        probe = end_offsets_probe(broker)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(dict.fromkeys(topics))
    while pending:
        visible = set(await probe(pending))
        pending = [topic for topic in pending if topic not in visible]
        if not pending:
            return
        if loop.time() > deadline:
            names = repr(pending[0]) if len(pending) == 1 else str(sorted(pending))
            raise BrokerUnavailableError(f"topic{'s' if len(pending) > 1 else ''} {names} {what} within {timeout:g} s")
        await asyncio.sleep(POLL_INTERVAL_S)
