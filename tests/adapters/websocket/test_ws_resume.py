"""Resuming from a cursor (issue 15): cursors in frames, ``since``, ``recovery_failed``, the
switch from catch-up to live, bounded catch-up, on the in-memory broker."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from resumekit import events, gateway, nothing_more, numbers, publish, recv, subscribe, to_notification
from websockets.asyncio.client import connect as ws_connect

from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.websocket import (
    CursorError,
    Notification,
    NotificationLog,
    WebSocketServer,
    decode_cursor,
    encode_cursor,
)
from reactive_services.errors import ConfigError

pytestmark = pytest.mark.timeout(30)

TOPIC = "ev"


async def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_cursor_round_trip_and_malformed() -> None:
    cursor = encode_cursor("e1", ["a", "b"], {("a", 1): 5, ("a", 0): 3, ("b", 0): 7})
    assert cursor.startswith("v1.")
    assert decode_cursor(cursor, ["a", "b"]) == ("e1", {("a", 0): 3, ("a", 1): 5, ("b", 0): 7})
    for bad in ["", "v2.abc", "v1.!!!", "v1." + "e30"]:
        with pytest.raises(CursorError, match="malformed"):
            decode_cursor(bad, ["a", "b"])
    with pytest.raises(CursorError, match="another set of topics"):
        decode_cursor(cursor, ["a", "c"])
    # compact: the topic names are not in it (6 topics x 3 partitions, as the shop's gateway reads)
    topics = [f"some-namespace.topic-{i}" for i in range(6)]
    assert len(encode_cursor("kafka:some-namespace.", topics, {(t, p): 123456 for t in topics for p in range(3)})) < 300


def test_log_settings_are_checked() -> None:
    broker = InMemoryBroker()
    with pytest.raises(ConfigError, match="epoch"):
        NotificationLog(broker, ["t"], to_notification, epoch="")
    with pytest.raises(ConfigError, match="topics"):
        NotificationLog(broker, [], to_notification, epoch="e")
    with pytest.raises(ConfigError, match="batch_size"):
        NotificationLog(broker, ["t"], to_notification, epoch="e", batch_size=0)


async def test_every_event_frame_and_the_subscribed_reply_carry_a_cursor() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=2)
        async with gateway(broker, [TOPIC]) as server, ws_connect(server.url) as ws:
            reply = await subscribe(ws, ["c"])
            assert reply["type"] == "subscribed"
            assert decode_cursor(reply["cursor"], [TOPIC]) == ("e1", {(TOPIC, 0): 0, (TOPIC, 1): 0})
            await publish(broker, TOPIC, range(3))
            got = await events(ws, 3)
            assert numbers(got) == [0, 1, 2]
            epoch, positions = decode_cursor(got[-1]["cursor"], [TOPIC])
            assert epoch == "e1" and sum(positions.values()) == 3


async def test_resume_gets_exactly_the_missed_events_in_order_then_live() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=3)
        async with gateway(broker, [TOPIC]) as server:
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"])
                await publish(broker, TOPIC, range(3))
                cursor = (await events(ws, 3))[-1]["cursor"]
            await publish(broker, TOPIC, range(3, 10))  # missed while disconnected
            await wait_for(lambda: server.hub.published["c"] == 10)
            async with ws_connect(server.url) as ws:
                assert (await subscribe(ws, ["c"], since=cursor)) == {"type": "subscribed", "channels": ["c"]}
                assert numbers(await events(ws, 7)) == list(range(3, 10))
                await publish(broker, TOPIC, range(10, 12))
                assert numbers(await events(ws, 2)) == [10, 11]
                await nothing_more(ws)
            assert server.hub.log is not None and server.hub.log.resumed == 1


async def test_resume_on_another_gateway_instance() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=2)
        async with gateway(broker, [TOPIC]) as a:
            async with ws_connect(a.url) as ws:
                await subscribe(ws, ["c"])
                await publish(broker, TOPIC, range(2))
                cursor = (await events(ws, 2))[-1]["cursor"]
            await publish(broker, TOPIC, range(2, 6))
            async with gateway(broker, [TOPIC]) as b, ws_connect(b.url) as ws:  # started after the cut
                await subscribe(ws, ["c"], since=cursor)
                assert numbers(await events(ws, 4)) == [2, 3, 4, 5]
                await publish(broker, TOPIC, range(6, 8))
                assert numbers(await events(ws, 2)) == [6, 7]
                await nothing_more(ws)


async def test_live_events_published_during_the_catch_up_come_once_in_order() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC]) as server:
            cursor = server.hub.log.cursor()  # type: ignore[union-attr]
            await publish(broker, TOPIC, range(300))
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=cursor)
                publishing = asyncio.create_task(publish(broker, TOPIC, range(300, 600)))
                got = await events(ws, 600)
                await publishing
                assert numbers(got) == list(range(600))
                await nothing_more(ws)


async def test_a_client_ahead_of_the_live_feed_gets_no_duplicates_and_keeps_its_cursor() -> None:
    """The hub's feed lags behind the log: the catch-up reads past the hub's head, and the hub
    fans those records out later: this client skips them."""
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        log = NotificationLog(broker, [TOPIC], to_notification, epoch="e1", poll_timeout_s=0.05, history=0)
        await log.open()
        async with WebSocketServer("127.0.0.1", 0, log=log, ping_interval=None) as server:
            cursor = log.cursor()
            await publish(broker, TOPIC, range(5))  # in the log; the feed fans out only 2 of them
            records = broker.records(TOPIC)

            def feed(i: int, n: int) -> None:
                m = records[i] if i < len(records) else broker.records(TOPIC)[i]
                server.hub.on_next(Notification("c", {"n": n}, (m.topic, m.partition, m.offset)))

            feed(0, 0)
            feed(1, 1)
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=cursor)
                assert numbers(await events(ws, 5)) == list(range(5))  # the reader read past the head (2)
                await wait_for(lambda: not server.clients[0].catching_up)
                assert server.clients[0]._after == {(TOPIC, 0): 5}
                for i in (2, 3, 4):
                    feed(i, -1)  # the lagging feed: already delivered to this client
                await publish(broker, TOPIC, range(5, 6))
                feed(5, 5)
                last = (await events(ws, 1))[0]
                assert last["event"] == {"n": 5}
                assert decode_cursor(last["cursor"], [TOPIC])[1] == {(TOPIC, 0): 6}
                assert server.clients[0]._after is None
                await nothing_more(ws)


async def test_cursor_older_than_retention_gets_recovery_failed_then_live() -> None:
    async with InMemoryBroker(retention_bytes=200) as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC], history=0) as server:  # nothing kept in memory either
            old = server.hub.log.cursor()  # type: ignore[union-attr]
            for n in range(50):  # retention deletes the oldest (the live feed keeps up)
                await publish(broker, TOPIC, range(n, n + 1))
                await wait_for(lambda n=n: server.hub.published["c"] == n + 1)  # type: ignore[misc]
            assert (await broker.beginning_offsets(TOPIC))[0] > 0
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=old)
                failed = await recv(ws)
                assert failed["type"] == "recovery_failed"
                assert "cursor too old" in failed["reason"] and f"{TOPIC}[0]" in failed["reason"]
                assert decode_cursor(failed["cursor"], [TOPIC])[1] == {(TOPIC, 0): 50}
                await publish(broker, TOPIC, range(50, 52))
                assert numbers(await events(ws, 2)) == [50, 51]
            assert server.hub.log.recoveries_failed == 1  # type: ignore[union-attr]


def _cursor_of(body: bytes) -> str:
    return "v1." + base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize(
    ("cursor", "says"),
    [
        ("v2.abc", "expected 'v1.' followed by base64url, got one starting with 'v2.'"),
        ("v1.a", "the part after 'v1.' is not unpadded base64url"),
        ("v1.ab*d", "the part after 'v1.' is not unpadded base64url"),
        ("v1.not-a-cursor", "the part after 'v1.' does not decode to JSON"),
        (_cursor_of(b"[1, 2]"), "expected a JSON object with keys e, t, o, got a list"),
        (_cursor_of(b'{"e": "e1", "t": "x"}'), "lacks the key(s) o (expected e, t, o)"),
        (_cursor_of(b'{"e": 1, "t": "x", "o": []}'), "'e' (the epoch) must be a string, got int"),
        (_cursor_of(b'{"e": "e1", "t": null, "o": []}'), "'t' (the topics' digest) must be a string, got NoneType"),
        (_cursor_of(b'{"e": "e1", "t": "x", "o": [1]}'), "'o' must be a list of lists of offsets"),
        (_cursor_of(b'{"e": "e1", "t": "x", "o": [[0, -1]]}'), "'o' of topic #0, partition 1 must be an offset"),
        (_cursor_of(b'{"e": "e1", "t": "x", "o": [["5"]]}'), "(an integer >= 0), got a str"),
    ],
)
def test_a_malformed_cursor_says_which_part_is_wrong_and_what_was_expected(cursor: str, says: str) -> None:
    with pytest.raises(CursorError) as bad:
        decode_cursor(cursor, [TOPIC])
    assert bad.value.reason.startswith("malformed cursor: ") and says in bad.value.reason, bad.value.reason


@pytest.mark.parametrize(
    ("since", "reason"),
    [
        (encode_cursor("other", [TOPIC], {(TOPIC, 0): 0}), "another epoch"),
        (encode_cursor("e1", [TOPIC], {(TOPIC, 0): 99}), "ahead of the log"),
        (encode_cursor("e1", [TOPIC, "more"], {(TOPIC, 0): 0}), "another set of topics"),
        ("v1.not-a-cursor", "malformed cursor"),
    ],
)
async def test_cursors_that_cannot_be_honoured_get_recovery_failed(since: str, reason: str) -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC]) as server, ws_connect(server.url) as ws:
            await subscribe(ws, ["c"], since=since)
            failed = await recv(ws)
            assert failed["type"] == "recovery_failed" and reason in failed["reason"]
            await publish(broker, TOPIC, range(1))
            assert numbers(await events(ws, 1)) == [0]


async def test_since_on_a_server_without_a_log_gets_recovery_failed() -> None:
    async with WebSocketServer("127.0.0.1", 0, ping_interval=None) as server, ws_connect(server.url) as ws:
        reply = await subscribe(ws, ["c"], since="v1.x")
        assert reply == {"type": "subscribed", "channels": ["c"]}
        failed = await recv(ws)
        assert failed == {"type": "recovery_failed", "reason": "this server keeps no history to resume from"}


async def test_since_must_be_a_string_on_a_subscribe() -> None:
    async with WebSocketServer("127.0.0.1", 0, ping_interval=None) as server, ws_connect(server.url) as ws:
        await ws.send('{"op": "subscribe", "channels": ["c"], "since": 5}')
        assert (await recv(ws))["type"] == "error"
        await ws.send('{"op": "unsubscribe", "channels": ["c"], "since": "v1.x"}')
        assert "only allowed on subscribe" in (await recv(ws))["error"]


async def test_records_mapped_to_nothing_and_other_channels_are_skipped_by_the_catch_up() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC]) as server:
            cursor = server.hub.log.cursor()  # type: ignore[union-attr]
            await broker.emit(TOPIC, "skip")
            await publish(broker, TOPIC, range(2))
            await broker.emit(TOPIC, "skip")
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=cursor)
                got = await events(ws, 2)
                assert numbers(got) == [0, 1]
                await wait_for(lambda: not server.clients[0].catching_up)
                await nothing_more(ws)


async def test_catch_up_memory_is_bounded_by_the_queue_for_a_slow_client() -> None:
    queue_size = 8
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC], queue_size=queue_size, write_limit=1024) as server:
            cursor = server.hub.log.cursor()  # type: ignore[union-attr]
            await publish(broker, TOPIC, range(2000))
            peak = 0
            async with ws_connect(server.url, max_queue=4) as ws:
                await subscribe(ws, ["c"], since=cursor)
                for _ in range(20):  # the client does not read: the catch-up must not run ahead
                    await asyncio.sleep(0.01)
                    peak = max(peak, server.clients[0].queued)
                got = []
                while len(got) < 2000:
                    got.extend(await events(ws, 1))
                    peak = max(peak, server.clients[0].queued)
                assert numbers(got) == list(range(2000))
            assert peak <= queue_size
            assert server.slow_clients_closed == 0 and server.dropped == 0


async def test_catch_up_readers_are_bounded_the_others_wait_their_turn() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        open_readers, most = 0, 0
        real_read_log = broker.read_log

        async def read_log(positions: Any, **kwargs: Any) -> Any:  # counts the readers open at once
            nonlocal open_readers, most
            reader = await real_read_log(positions, **kwargs)
            open_readers += 1
            most = max(most, open_readers)
            close = reader.close

            async def closed() -> None:
                nonlocal open_readers
                open_readers -= 1
                await close()

            reader.close = closed  # type: ignore[method-assign]
            return reader

        log = NotificationLog(
            broker, [TOPIC], to_notification, epoch="e1", poll_timeout_s=0.05, batch_size=10, max_readers=2, history=0
        )
        await log.open()
        async with WebSocketServer("127.0.0.1", 0, log=log, ping_interval=None) as server:
            feed = log.live().subscribe(server.hub)
            await asyncio.sleep(0.1)  # the live feed's reader is open: count the catch-up readers only
            broker.read_log = read_log  # type: ignore[method-assign]
            cursor = log.cursor()
            await publish(broker, TOPIC, range(300))
            async with ws_connect(server.url) as a, ws_connect(server.url) as b, ws_connect(server.url) as c:
                for ws in (a, b, c):
                    await subscribe(ws, ["c"], since=cursor)
                for ws in (a, b, c):
                    assert numbers(await events(ws, 300)) == list(range(300))
                assert [conn.catching_up for conn in server.clients] == [False] * 3
                await publish(broker, TOPIC, range(300, 301))
                for ws in (a, b, c):
                    assert numbers(await events(ws, 1)) == [300]
            assert log.resumed == 3
            assert most == 2 and open_readers == 0
            feed.dispose()


async def test_a_client_waiting_for_a_reader_slot_that_leaves_is_let_go() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC], history=0) as server:
            log = server.hub.log
            assert log is not None
            cursor = log.cursor()
            log._slots = asyncio.Semaphore(0)  # every catch-up reader slot taken
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=cursor)
                await wait_for(lambda: len(server.clients) == 1 and server.clients[0].catching_up)
            async with asyncio.timeout(2):  # its handler ends though its catch-up never started
                while server.clients:
                    await asyncio.sleep(0.01)


async def test_notifications_of_a_topic_outside_the_log_do_not_hold_a_resume_back() -> None:
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        async with gateway(broker, [TOPIC]) as server:
            cursor = server.hub.log.cursor()  # type: ignore[union-attr]
            server.hub.on_next(Notification("c", {"n": -1}, ("elsewhere", 0, 41)))
            assert ("elsewhere", 0) not in server.hub.log.head  # type: ignore[union-attr]
            await publish(broker, TOPIC, range(2))
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=cursor)
                assert numbers(await events(ws, 2)) == [0, 1]
                await wait_for(lambda: not server.clients[0].catching_up)
                await publish(broker, TOPIC, range(2, 3))
                assert numbers(await events(ws, 1)) == [2]


async def test_a_client_ahead_on_one_partition_gets_cursors_covering_what_it_was_sent() -> None:
    """Live frames to a client that went live ahead of the hub's head carry a cursor of their
    own (the head, raised to what the catch-up sent) until the head passes it; then the shared
    frames."""
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=2)
        # the reader's way (history=0): the history would serve only what the lagging feed fanned out
        log = NotificationLog(broker, [TOPIC], to_notification, epoch="e1", poll_timeout_s=0.05, history=0)
        await log.open()
        await broker.create_topics(["probe"], partitions=2)
        keys = {}
        for i in range(20):  # a key for each partition
            keys.setdefault((await broker.emit("probe", {}, key=f"k{i}")).partition, f"k{i}")
        async with WebSocketServer("127.0.0.1", 0, log=log, ping_interval=None) as server:

            def feed(meta: Any, n: int) -> None:
                server.hub.on_next(Notification("c", {"n": n}, (meta.topic, meta.partition, meta.offset)))

            cursor = log.cursor()
            p0 = [await broker.emit(TOPIC, {"n": n}, key=keys[0]) for n in range(3)]
            feed(p0[0], 0)  # the feed lags: 1 of the 3 fanned out, the catch-up reads past it
            async with ws_connect(server.url) as ws:
                await subscribe(ws, ["c"], since=cursor)
                assert numbers(await events(ws, 3)) == [0, 1, 2]
                await wait_for(lambda: not server.clients[0].catching_up)
                p = p0[0].partition
                q = 1 - p
                assert server.clients[0]._after == {(TOPIC, p): 3}
                other = await broker.emit(TOPIC, {"n": 10}, key=keys[1])
                assert other.partition == q
                feed(other, 10)
                frame = (await events(ws, 1))[0]
                assert decode_cursor(frame["cursor"], [TOPIC])[1] == {(TOPIC, p): 3, (TOPIC, q): 1}
                for meta in p0[1:]:
                    feed(meta, -1)  # the lagging feed: skipped for this client
                last = await broker.emit(TOPIC, {"n": 11}, key=keys[1])
                feed(last, 11)
                frame = (await events(ws, 1))[0]
                assert frame["event"] == {"n": 11}
                assert decode_cursor(frame["cursor"], [TOPIC])[1] == {(TOPIC, p): 3, (TOPIC, q): 2} == log.head
                assert server.clients[0]._after is None
                await nothing_more(ws)


async def test_records_handed_to_the_hub_again_are_not_sent_again() -> None:
    # A gateway fed by a consumer group (the shop's) that restarts resumes from the group's
    # committed offsets: the records published while it was down come to the hub although its
    # log opened after them (a resuming client reads them from the log; a live one connected
    # after them), and a rebalance redelivers records already fanned out. Neither is sent.
    async with InMemoryBroker() as broker:
        await broker.create_topics([TOPIC], partitions=1)
        await publish(broker, TOPIC, range(2))  # before the gateway (re)started
        async with gateway(broker, [TOPIC]) as server, ws_connect(server.url) as ws:
            await subscribe(ws, ["c"])
            hub = server.hub
            for offset in (0, 1):  # the group hands the downtime's records over
                hub.on_next(Notification("c", {"n": offset}, position=(TOPIC, 0, offset)))
            await publish(broker, TOPIC, range(2, 4))  # live: 2 and 3 (fed by log.live())
            assert numbers(await events(ws, 2)) == [2, 3]
            hub.on_next(Notification("c", {"n": 3}, position=(TOPIC, 0, 3)))  # redelivered
            await nothing_more(ws)
            assert hub.behind == 3
