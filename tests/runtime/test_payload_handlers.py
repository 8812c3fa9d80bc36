"""Payload handlers (``@event_pattern`` without a pipeline) on both brokers, and through
MeteredBroker: the source hands them the decoded value (a payload route), makes the record's
Message only when something asks for it, and keeps every commit rule of ``on_next``."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from reactive_services import Controller, Microservice, event_pattern
from reactive_services.adapters import (
    Broker,
    Hold,
    Message,
    current_message,
    declare_group,
    headers_to_dict,
    hold,
    track,
)
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.metrics import MeteredBroker, ServiceMetrics
from reactive_services.testing import unique_name, wait_for


async def committed(broker: Broker, group: str, topic: str) -> int:
    return await broker.committed(group, topic, 0) or 0


async def at_least(broker: Broker, group: str, topic: str, offset: int) -> bool:
    return await committed(broker, group, topic) >= offset


async def test_a_handler_taking_only_the_payload_still_finds_its_message(broker: Broker) -> None:
    ns = unique_name("pm") + "."
    seen: list[tuple[Message | None, Message | None, Any]] = []

    class Looks(Controller):
        @event_pattern("looks")
        def handle(self, payload: dict[str, Any]) -> None:
            seen.append((current_message.get(), current_message.get(), payload))

    await broker.create_topics([ns + "looks"], partitions=1)
    service = Microservice(broker, [Looks()], name="looks", namespace=ns)
    await service.start()
    try:
        await broker.emit(ns + "looks", {"i": 0}, key="k-0", headers={"trace": "t0"})
        await broker.emit(ns + "looks", {"i": 1})
        await wait_for(lambda: len(seen) == 2, what="both records")
    finally:
        await service.stop()
    (first, again, payload), (second, _, payload2) = seen
    assert first is again  # made once per record
    assert isinstance(first, Message) and isinstance(second, Message)
    assert (first.topic, first.partition, first.offset, first.key) == (ns + "looks", 0, 0, b"k-0")
    assert first.value == payload == {"i": 0} and first.raw == b'{"i":0}'
    assert headers_to_dict(first.headers)["trace"] == "t0"
    assert (second.offset, second.key, second.value) == (1, None, payload2)
    assert current_message.get() is None  # outside of a delivery
    assert service.handled == {ns + "looks": 2}


async def test_track_and_hold_in_a_payload_only_handler_keep_the_commit_back(broker: Broker) -> None:
    ns = unique_name("ph") + "."
    topic = ns + "held"
    loop = asyncio.get_running_loop()
    write: asyncio.Future[None] = loop.create_future()
    holds: list[Hold] = []
    handled: list[int] = []

    class Holds(Controller):
        @event_pattern("held")
        def handle(self, payload: dict[str, Any]) -> None:
            if payload["i"] == 1:
                track(write)  # an unfinished write: records 1.. stay uncommitted
            if payload["i"] == 3:
                holds.append(hold())
            handled.append(payload["i"])

    await broker.create_topics([topic], partitions=1)
    service = Microservice(broker, [Holds()], name="holds", namespace=ns)
    await service.start()
    try:
        await broker.emit_batch(topic, [(None, {"i": i}) for i in range(6)])
        await wait_for(lambda: len(handled) == 2, what="records 0 and 1")
        await asyncio.sleep(0.3)
        assert handled == [0, 1]  # concurrency 1: the tracked write keeps the next record waiting
        assert await committed(broker, service.group_id, topic) <= 1
        write.set_result(None)
        await wait_for(lambda: len(handled) == 6, what="every record handled")  # a hold does not block
        await wait_for(lambda: at_least(broker, service.group_id, topic, 3), what="commit up to the hold")
        await asyncio.sleep(0.3)
        assert await committed(broker, service.group_id, topic) == 3
        holds[0].release()
        await wait_for(lambda: at_least(broker, service.group_id, topic, 6), what="commit of everything")
    finally:
        await service.stop()
    assert await committed(broker, service.group_id, topic) == 6


async def test_failing_payload_handlers_dead_letter_the_record_as_it_came(broker: Broker) -> None:
    ns = unique_name("pf") + "."

    class Fails(Controller):
        @event_pattern("sync")
        def refuse(self, payload: dict[str, Any]) -> None:
            if payload["i"] % 2:
                raise ValueError(f"refused {payload['i']}")

        @event_pattern("async")
        async def refuse_later(self, payload: dict[str, Any]) -> None:
            await asyncio.sleep(0)
            if payload["i"] % 2:
                raise ValueError(f"refused later {payload['i']}")

    topics = [ns + "sync", ns + "async"]
    await broker.create_topics(topics, partitions=1)
    reader = unique_name("read")  # reads the dead letters (declared first: RabbitMQ keeps no log)
    await declare_group(broker, reader, [t + ".DLT" for t in topics])
    service = Microservice(broker, [Fails()], name="fails", namespace=ns)
    await service.start()
    try:
        for topic in topics:
            for i in range(4):
                await broker.emit(topic, {"i": i}, key=f"k{i}", headers={"origin": f"o{i}"})
        await wait_for(lambda: service.dead_lettered == {topics[0]: 2, topics[1]: 2}, what="the dead letters")
        for topic in topics:
            await wait_for(lambda t=topic: at_least(broker, service.group_id, t, 4), what=f"{topic} committed")
    finally:
        await service.stop()
    assert service.handled == {topics[0]: 2, topics[1]: 2}
    for topic, reason in ((topics[0], "refused"), (topics[1], "refused later")):
        letters = await broker_records(broker, topic + ".DLT", 2, group=reader)  # (the broker's default partitions)
        letters.sort(key=lambda r: int(headers_to_dict(r.headers)["dlt.original.offset"]))
        assert [(r.key, r.raw) for r in letters] == [(b"k1", b'{"i":1}'), (b"k3", b'{"i":3}')]
        heads = [headers_to_dict(r.headers) for r in letters]
        assert [h["origin"] for h in heads] == ["o1", "o3"]
        assert [h["dlt.reason"] for h in heads] == [f"{reason} 1", f"{reason} 3"]
        assert [h["dlt.original.offset"] for h in heads] == ["1", "3"]


@pytest.mark.parametrize("pipeline", [False, True], ids=["payload", "on_next"])
async def test_a_task_started_in_a_handler_sees_its_own_record_after_later_ones_were_delivered(
    broker: Broker, pipeline: bool
) -> None:
    """The source sets current_message per record; a task copies the context, so ``get()`` in it
    returns the record it was started for even when it runs after the next records (one fetch:
    one chunk), and an undecodable record between them is dead-lettered without touching them."""
    ns = unique_name("pt") + "."
    topic = ns + "tasks"
    release = asyncio.Event()
    seen: dict[int, int | None] = {}
    tasks: list[asyncio.Task[None]] = []

    async def later(i: int) -> None:
        await release.wait()  # after every record of the fetch was delivered
        message = current_message.get()
        seen[i] = None if message is None else message.offset

    def start(i: int) -> None:
        tasks.append(asyncio.get_running_loop().create_task(later(i)))

    class Starts(Controller):
        @event_pattern("tasks")
        def handle(self, payload: dict[str, Any]) -> None:
            start(payload["i"])

    await broker.create_topics([topic], partitions=1)
    reader, group = unique_name("read"), unique_name("g")
    await declare_group(broker, reader, [topic + ".DLT"])
    await declare_group(broker, group, [topic])
    # the records first, so that one fetch brings them all
    await broker.emit(topic, {"i": 0})
    await broker.emit(topic, {"i": 1})
    await broker.emit(topic, b"{not json")
    await broker.emit(topic, {"i": 3})
    service = None
    stop, done = asyncio.Event(), asyncio.Event()
    if pipeline:
        broker.source(topic, group_id=group, stop=stop).subscribe(
            lambda m: start(m.value["i"]), lambda e: done.set(), done.set
        )
    else:
        service = Microservice(broker, [Starts()], name="starts", namespace=ns, group_id=group)
        await service.start()
    try:
        await wait_for(lambda: len(tasks) == 3, what="three records delivered")
        release.set()
        await asyncio.gather(*tasks)
        assert seen == {0: 0, 1: 1, 3: 3}
        if service is not None:
            await wait_for(lambda: at_least(broker, service.group_id, topic, 4), what="everything committed")
    finally:
        if service is not None:
            await service.stop()
        stop.set()
    letters = await broker_records(broker, topic + ".DLT", 1, decode=None, group=reader)
    assert letters[0].raw == b"{not json" and headers_to_dict(letters[0].headers)["dlt.original.offset"] == "2"


async def broker_records(
    broker: Broker, topic: str, n: int, decode: Any = "json", group: str | None = None
) -> list[Message]:
    """The first ``n`` records of ``topic``, read with a source of its own (in ``group``, declared
    before the records were published on a broker without a log; default: a new group)."""
    got: list[Message] = []
    stop, done = asyncio.Event(), asyncio.Event()

    def on_next(message: Message) -> None:
        got.append(message)
        if len(got) == n:
            stop.set()

    broker.source(topic, group_id=group or unique_name("read"), stop=stop, decode=decode).subscribe(
        on_next, lambda e: done.set(), done.set
    )
    await asyncio.wait_for(done.wait(), 30)
    return got


_SEEN: contextvars.ContextVar[object] = contextvars.ContextVar("seen", default=None)


@pytest.mark.parametrize("metered", [False, True], ids=["plain", "metered"])
async def test_async_payload_handlers_are_awaited_by_the_source_one_after_another(metered: bool) -> None:
    """The source awaits each call before the next (context variables carry over, as in one
    task), through a MeteredBroker too, which still counts every record in."""
    log: list[tuple[str, int, object]] = []

    class Sequential(Controller):
        @event_pattern("seq")
        async def handle(self, payload: dict[str, Any]) -> None:
            log.append(("start", payload["i"], _SEEN.get()))
            _SEEN.set(payload["i"])
            await asyncio.sleep(0.001)
            log.append(("end", payload["i"], current_message.get().offset))  # type: ignore[union-attr]

    inner = InMemoryBroker()
    async with inner:
        broker: Any = MeteredBroker(inner, ServiceMetrics()) if metered else inner
        await broker.create_topics(["seq"], partitions=1)
        service = Microservice(broker, [Sequential()], name="seq")
        await service.start()
        await broker.emit_batch("seq", [(None, {"i": i}) for i in range(4)])
        await wait_for(lambda: len(log) == 8, what="four handlers")
        await service.stop()
        assert log == [
            ("start", 0, None),
            ("end", 0, 0),
            ("start", 1, 0),
            ("end", 1, 1),
            ("start", 2, 1),
            ("end", 2, 2),
            ("start", 3, 2),
            ("end", 3, 3),
        ]
        assert await inner.committed("seq", "seq", 0) == 4
        if metered:
            assert broker.messages_in == {("seq", "seq"): 4}


async def test_a_handler_cancelled_from_inside_leaves_its_record_uncommitted_and_the_next_ones_are_handled(
    broker: Broker,
) -> None:
    ns = unique_name("pc") + "."
    seen: list[int] = []

    class CancelledInside(Controller):
        @event_pattern("t")
        async def handle(self, payload: dict[str, Any]) -> None:
            seen.append(payload["i"])
            if payload["i"] == 1:  # a sub-request cancelled elsewhere: CancelledError out of the handler
                task = asyncio.ensure_future(asyncio.sleep(10))
                asyncio.get_running_loop().call_later(0.01, task.cancel)
                await task

    await broker.create_topics([ns + "t"], partitions=1)
    service = Microservice(broker, [CancelledInside()], name="cancelled", namespace=ns)
    await service.start()
    try:
        await broker.emit_batch(ns + "t", [(None, {"i": i}) for i in range(5)])
        await wait_for(lambda: seen == [0, 1, 2, 3, 4], what="every record")
        await asyncio.sleep(0.1)
    finally:
        await service.stop()
    assert service.handled == {ns + "t": 4} and service.errors == []
    assert await committed(broker, service.group_id, ns + "t") == 1  # record 1 is read again on restart


async def test_a_def_handler_raising_cancelled_error_leaves_its_record_uncommitted_and_the_stream_goes_on(
    broker: Broker,
) -> None:
    ns = unique_name("ps") + "."
    seen: list[int] = []
    cancelled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cancelled.cancel()

    class ReadsACancelledFuture(Controller):
        @event_pattern("t")
        def handle(self, payload: dict[str, Any]) -> None:
            seen.append(payload["i"])
            if payload["i"] == 1:
                cancelled.result()  # raises CancelledError

    await broker.create_topics([ns + "t"], partitions=1)
    service = Microservice(broker, [ReadsACancelledFuture()], name="sync-cancelled", namespace=ns)
    await service.start()
    try:
        await broker.emit_batch(ns + "t", [(None, {"i": i}) for i in range(5)])
        await wait_for(lambda: seen == [0, 1, 2, 3, 4], what="every record")
        await asyncio.sleep(0.1)
    finally:
        await service.stop(timeout=10)
    assert service.handled == {ns + "t": 4} and service.errors == []
    assert await committed(broker, service.group_id, ns + "t") == 1  # record 1 is read again on restart
