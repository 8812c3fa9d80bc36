"""The testing kit: helpers for testing services, pipelines and brokers built on reactive-services.

What it offers, each with examples in its own docstring:

- :func:`make_message`: a :class:`~reactive_services.adapters.Message` as a broker source
  delivers it, for unit tests of handlers and operators.
- :func:`wait_for`, :func:`wait_for_sync`, :func:`collect`, :func:`consume`, :func:`unique_name`:
  wait for a condition, gather what an Observable emits, read ``n`` records from a broker
  (then stop, commit and complete), make names no other test uses.
- Marble tests in virtual time (:func:`expect_marbles`, :func:`run_marbles`,
  :class:`MarbleSource`, :class:`MarbleScheduler`): input records as marbles, a pipeline
  ``Observable[Message] -> Observable[T]``, expected output marbles *and* expected commit
  marbles, following the library's commit rule (an offset is committed once ``on_next``
  returned and the work ``track()``-ed on it settled).
- :func:`check_at_least_once`: a crash checker: runs a pipeline over records on the in-memory
  broker, kills the consumer at many points, restarts it from the committed offsets, and
  reports every input whose effect never reached the sink (:class:`CrashReport`).
- :mod:`reactive_services.testing.contract`: the broker contract as pytest test classes to
  subclass for your own broker or broker wrapper (needs the ``test`` extra: pytest and
  pytest-asyncio; importing this package does not).
- :mod:`reactive_services.testing.local_kafka`: a local single-node Apache Kafka broker
  (KRaft) for integration tests.

Example, a pipeline whose commits wait for its asynchronous work::

    from reactive_services.operators import map_async
    from reactive_services.testing import MarbleScheduler, expect_marbles

    def test_a_commit_waits_for_the_write() -> None:
        scheduler = MarbleScheduler()

        async def write(m):
            await scheduler.wait(3)           # 3 s of virtual time
            return m.value

        expect_marbles(
            "-a-|",
            lambda source: source.pipe(map_async(write)),
            values={"a": 1},
            scheduler=scheduler,
            output="----(1,|)",
            commits="----a",                  # not at 1, when a was delivered
        )
"""

from ._crash import CrashPoint, CrashReport, LostRecord, check_at_least_once
from ._marbles import (
    SUBSCRIBED,
    Commit,
    MarbleRun,
    MarbleScheduler,
    MarbleSource,
    expect_marbles,
    marble_records,
    run_marbles,
    run_marbles_async,
)
from ._messages import make_message
from ._waiting import Collected, collect, consume, unique_name, wait_for, wait_for_sync

__all__ = [
    "SUBSCRIBED",
    "Collected",
    "Commit",
    "CrashPoint",
    "CrashReport",
    "LostRecord",
    "MarbleRun",
    "MarbleScheduler",
    "MarbleSource",
    "check_at_least_once",
    "collect",
    "consume",
    "expect_marbles",
    "make_message",
    "marble_records",
    "run_marbles",
    "run_marbles_async",
    "unique_name",
    "wait_for",
    "wait_for_sync",
]
