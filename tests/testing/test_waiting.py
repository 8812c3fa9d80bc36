"""wait_for, wait_for_sync, collect, consume, unique_name."""

from __future__ import annotations

import asyncio
import re

import pytest
import reactivex
from reactivex.subject import Subject

from reactive_services.adapters import Message
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.testing import collect, consume, unique_name, wait_for, wait_for_sync
from reactive_services.testing.contract import BrokerContract


def test_unique_name() -> None:
    names = {unique_name("orders") for _ in range(100)}
    assert len(names) == 100 and all(re.fullmatch(r"orders-[0-9a-f]{10}", n) for n in names)


async def test_wait_for_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    def predicate() -> list[int]:
        calls.append(1)
        return calls if len(calls) >= 3 else []

    assert await wait_for(predicate, timeout=1, interval=0.001) == [1, 1, 1]


async def test_wait_for_awaits_an_async_predicate() -> None:
    calls = 0

    async def third_time() -> str | None:
        nonlocal calls
        await asyncio.sleep(0)
        calls += 1
        return "yes" if calls == 3 else None

    assert await wait_for(third_time, timeout=2, interval=0.001) == "yes"


async def test_wait_for_fails_the_test_after_the_timeout() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the moon"):
        await wait_for(lambda: False, timeout=0.05, what="the moon")


def test_wait_for_sync() -> None:
    assert wait_for_sync(lambda: 42, timeout=0.1) == 42
    with pytest.raises(AssertionError, match="waiting for nothing"):
        wait_for_sync(lambda: None, timeout=0.05, interval=0.01, what="nothing")


async def test_collect_until_the_end() -> None:
    got = await collect(reactivex.of(1, 2, 3))
    assert got.items == [1, 2, 3] and got.completed and got.error is None and got.ended
    boom = ValueError("boom")
    failed = await collect(reactivex.concat(reactivex.of(1), reactivex.throw(boom)))
    assert failed.items == [1] and failed.error is boom and not failed.completed


async def test_collect_n_items_disposes_or_stops() -> None:
    subject: Subject[int] = Subject()
    loop = asyncio.get_running_loop()
    for i in range(5):
        loop.call_later(0.01 * (i + 1), subject.on_next, i)
    got = await collect(subject, 2, timeout=2)
    assert got.items == [0, 1] and not got.ended
    assert not subject.observers  # disposed

    stop = asyncio.Event()
    subject2: Subject[int] = Subject()
    stop_task = asyncio.ensure_future(stop.wait())
    stop_task.add_done_callback(lambda _: subject2.on_completed())
    loop.call_soon(subject2.on_next, "a")
    loop.call_soon(subject2.on_next, "b")
    got2 = await collect(subject2, 1, stop=stop, timeout=2)
    assert got2.items == ["a", "b"] and got2.completed  # stop was set after 1; the end was awaited


async def test_collect_times_out_with_what_arrived() -> None:
    with pytest.raises(AssertionError, match=r"waiting for 3 items; got 1"):
        await collect(reactivex.concat(reactivex.of(1), reactivex.never()), 3, timeout=0.05)
    with pytest.raises(AssertionError, match=r"waiting for the end of the stream; got 0"):
        await collect(reactivex.never(), timeout=0.05)


async def test_consume_reads_n_then_commits_and_completes() -> None:
    async with InMemoryBroker(partitions=1) as broker:
        for i in range(5):
            await broker.emit("orders", {"i": i})
        seen: list[int] = []

        def on_each(m: Message) -> None:
            seen.append(m.offset)

        got = await consume(broker, "orders", 3, group_id="billing", on_each=on_each)
        assert got.values() == [{"i": 0}, {"i": 1}, {"i": 2}] and got.completed and seen == [0, 1, 2]
        assert await broker.committed("billing", "orders", 0) == 3
        raw = await consume(broker, "orders", 5, decode=None)  # a fresh group, source options passed on
        assert [m.value for m in raw.items][:1] == [b'{"i":0}']


def test_a_contract_subclass_must_say_how_to_make_its_broker() -> None:
    with pytest.raises(NotImplementedError, match="must define make_broker"):
        BrokerContract().make_broker()
