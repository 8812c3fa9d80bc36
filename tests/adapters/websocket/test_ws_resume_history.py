"""Resuming from the log's in-memory history (``NotificationLog(history=N)``): a recent cursor is
caught up from the frames the hub fanned out, without a broker reader; an older one, or a client
the history outran, reads the log. Exactly the missed events, in order, either way."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from resumekit import events, gateway, nothing_more, numbers, publish, subscribe, to_notification
from websockets.asyncio.client import connect as ws_connect

from reactive_services.adapters import TopicPartition
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.websocket import (
    Notification,
    NotificationLog,
    WebSocketServer,
    decode_cursor,
    encode_cursor,
)
from reactive_services.adapters.websocket._resume import _catch_up_from_history

TOPIC = "feed"


class CountingBroker(InMemoryBroker):
    """Counts the log readers opened (the live feed opens one)."""

    readers = 0

    async def read_log(self, positions: Mapping[TopicPartition, int], **kwargs: Any) -> Any:
        type(self).readers += 1
        return await super().read_log(positions, **kwargs)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_recent_cursor_is_caught_up_from_memory_without_a_reader() -> None:
    CountingBroker.readers = 0
    async with CountingBroker() as broker:
        await broker.create_topics([TOPIC], partitions=3)
        async with gateway(broker, [TOPIC]) as server:
            log = server.hub.log
            assert log is not None
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"])
                await publish(broker, TOPIC, range(5))
                seen = await events(ws, 5)
            cursor = seen[-1]["cursor"]
            await publish(broker, TOPIC, range(5, 12))  # missed
            await wait_for(lambda: server.hub.published["c"] == 12)
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=cursor)
                missed = await events(ws, 7)
                assert numbers(missed) == list(range(5, 12))
                await wait_for(lambda: not server.clients[0].catching_up)
                await publish(broker, TOPIC, range(12, 14))
                live = await events(ws, 2)
                assert numbers(live) == [12, 13]
                await nothing_more(ws)
            assert (log.resumed, log.resumed_from_history) == (1, 1)
            assert CountingBroker.readers == 1  # the live feed's, no catch-up reader
            # the frames' cursors are exact: resuming from the last one gives nothing again
            assert decode_cursor(live[-1]["cursor"], [TOPIC])[1] == log.head
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=missed[3]["cursor"])  # after event 8
                assert numbers(await events(ws, 5)) == [9, 10, 11, 12, 13]
                await nothing_more(ws)


async def test_a_cursor_older_than_the_history_reads_the_log() -> None:
    CountingBroker.readers = 0
    async with CountingBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC], history=3) as server:
            log = server.hub.log
            assert log is not None
            cursor = log.cursor()
            await publish(broker, TOPIC, range(10))
            await wait_for(lambda: server.hub.published["c"] == 10)
            assert len(log._frames) == 3
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=cursor)
                assert numbers(await events(ws, 10)) == list(range(10))
                await nothing_more(ws)
            assert (log.resumed, log.resumed_from_history) == (1, 0)
            assert CountingBroker.readers == 2  # the live feed's and one catch-up reader


class FakeConnection:
    """What the history catch-up uses of a connection; the test says when its queue is empty."""

    def __init__(self, channels: set[str]) -> None:
        self.is_open = True
        self.channels = channels
        self.queued = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._server = type("S", (), {"queue_size": 2})()
        self._after: Any = "unset"
        self._catching_up = True
        self.frames: list[dict[str, Any]] = []

    def _enqueue(self, frame: bytes, hub: Any) -> None:
        self.frames.append(orjson.loads(frame))
        self._idle.clear()  # the test empties the queue


async def test_a_client_the_history_outran_goes_on_from_where_it_is() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        log = NotificationLog(broker, [TOPIC], to_notification, epoch="e1", history=4)
        await log.open()
        async with WebSocketServer("127.0.0.1", 0, log=log, ping_interval=None) as server:

            async def fan_out(n: int) -> None:
                meta = await broker.emit(TOPIC, {"n": n}, key="k")
                server.hub.on_next(Notification("c", {"n": n}, (meta.topic, meta.partition, meta.offset)))

            start = dict(log.head)
            for n in range(4):
                await fan_out(n)
            assert log.recent(start)
            conn = FakeConnection({"c"})
            task = asyncio.create_task(_catch_up_from_history(log, server.hub, conn, start))  # type: ignore[arg-type]
            await wait_for(lambda: len(conn.frames) == 2)  # room for 2: the queue is full now
            for n in range(4, 10):  # the live feed goes on: frames 0-5 leave the history
                await fan_out(n)
            conn._idle.set()
            position = await task
            assert [f["event"]["n"] for f in conn.frames] == [0, 1]
            assert position == {(TOPIC, 0): 2}  # the log takes over after the 2 it was sent
            assert conn._catching_up and log.resumed_from_history == 0


async def test_a_client_behind_on_one_partition_gets_cursors_of_its_own_until_the_head_passes_it() -> None:
    # a cursor from another gateway instance, whose fan-out order differed: ahead of this hub's
    # head at the time of the first kept frames on one partition (p1), behind on the other
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=2)
        log = NotificationLog(broker, [TOPIC], to_notification, epoch="e1")
        await log.open()
        async with WebSocketServer("127.0.0.1", 0, log=log, ping_interval=None) as server:
            p0 = [(TOPIC, 0, n) for n in range(3)]
            p1 = [(TOPIC, 1, n) for n in range(3)]
            for position in (p0[0], p0[1], p1[0], p1[1], p0[2], p1[2]):  # this hub's order
                server.hub.on_next(Notification("c", {"at": list(position[1:])}, position))
            since = {(TOPIC, 0): 1, (TOPIC, 1): 2}  # the other instance had sent p0[0], p1[0], p1[1]
            assert log.recent(since)
            conn = FakeConnection({"c"})
            conn._server.queue_size = 100
            assert await _catch_up_from_history(log, server.hub, conn, since) is None  # type: ignore[arg-type]
            assert [f["event"]["at"] for f in conn.frames] == [[0, 1], [0, 2], [1, 2]]
            cursors = [decode_cursor(f["cursor"], [TOPIC])[1] for f in conn.frames]
            # p0[1]'s shared cursor would say p1 at 0 (this hub's head then): a resume from it
            # would send p1[0] and p1[1] again; its own cursor keeps p1 at 2
            assert cursors == [
                {(TOPIC, 0): 2, (TOPIC, 1): 2},
                {(TOPIC, 0): 3, (TOPIC, 1): 2},
                {(TOPIC, 0): 3, (TOPIC, 1): 3},
            ]
            assert conn.frames[-1]["cursor"] == encode_cursor("e1", [TOPIC], log.head)
            assert not conn._catching_up and conn._after is None and log.resumed_from_history == 1


async def test_a_log_of_a_topic_no_one_created_yet_still_feeds_the_hub() -> None:
    async with InMemoryBroker(partitions=2) as broker:  # the topic does not exist before open()
        async with gateway(broker, ["new-topic"]) as server, ws_connect(server.url) as ws:
            await subscribe(ws, ["c"])
            await publish(broker, "new-topic", range(3))
            assert numbers(await events(ws, 3)) == [0, 1, 2]
        assert sorted(await broker.end_offsets("new-topic")) == [0, 1]  # the broker's partitions
