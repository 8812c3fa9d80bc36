"""What both brokers share, written once at the adapters level: the source-argument checks, the
decoders, the topic-visibility wait, the dead-letter path and the sinks."""

from __future__ import annotations

import asyncio

import pytest

from reactive_services.adapters import (
    DeadLetter,
    DeadLetterSink,
    Message,
    current_message,
    decode_json,
    headers_to_dict,
    publish_dead_letter,
    wait_visible,
)
from reactive_services.adapters._codec import encode_headers, resolve_decoder
from reactive_services.adapters._sink import Sinks
from reactive_services.adapters._source import source_args, topic_list
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.memory._codec import assign_range, partition_for
from reactive_services.errors import BrokerUnavailableError, ConfigError, DecodeError, PublishError


def test_resolve_decoder() -> None:
    assert resolve_decoder("json") is decode_json
    assert resolve_decoder(None)(b"\x00raw") == b"\x00raw"
    assert resolve_decoder(len)(b"abc") == 3
    with pytest.raises(ConfigError, match="decode"):
        resolve_decoder("xml")


def test_json_decoder_raises_decode_error_on_bad_bytes() -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        resolve_decoder("json")(b"{oops")
    with pytest.raises(DecodeError, match="tombstone"):
        resolve_decoder("json")(None)


def test_topic_list() -> None:
    assert topic_list("a") == ["a"]
    assert topic_list(("a", "b")) == ["a", "b"]
    for bad in ([], [""], ""):
        with pytest.raises(ConfigError):
            topic_list(bad)


def test_source_args_are_checked_once_for_every_broker() -> None:
    args = source_args(["a", "b"], "g", None, "latest", 4)
    assert (args.topics, args.group_id, args.auto_offset_reset, args.concurrency) == (("a", "b"), "g", "latest", 4)
    assert args.decoder(b"x") == b"x"
    bad: list[tuple[tuple[object, ...], str]] = [
        (([], "g", "json", "earliest", 1), "topics"),
        (("t", "", "json", "earliest", 1), "group_id"),
        (("t", "g", "xml", "earliest", 1), "decode"),
        (("t", "g", "json", "newest", 1), "auto_offset_reset"),
        (("t", "g", "json", "earliest", 0), "concurrency"),
        (("t", "g", "json", "earliest", True), "concurrency"),
    ]
    for call, key in bad:
        with pytest.raises(ConfigError) as info:
            source_args(*call)  # type: ignore[arg-type]
        assert info.value.key == key
    for broker in (InMemoryBroker(),):
        with pytest.raises(ConfigError) as info:
            broker.source("t", group_id="g", decode="xml")  # type: ignore[arg-type]
        assert info.value.key == "decode"


async def test_wait_visible_polls_until_every_topic_is_listed() -> None:
    broker = InMemoryBroker()
    await broker.start()

    async def create_later() -> None:
        await asyncio.sleep(0.12)
        await broker.create_topics(["late"], partitions=1)

    await broker.create_topics(["early"], partitions=1)
    task = asyncio.create_task(create_later())
    await wait_visible(broker, ["early", "late"], timeout=5)
    await task
    with pytest.raises(BrokerUnavailableError, match="'never' did not appear within 0.1 s"):
        await wait_visible(broker, ["never"], timeout=0.1)


async def test_wait_visible_with_a_probe() -> None:
    seen: list[list[str]] = []

    async def probe(pending: list[str]) -> list[str]:
        seen.append(list(pending))
        return pending[:1]  # one more topic becomes visible per look

    await wait_visible(None, ["a", "b", "a"], timeout=5, probe=probe)
    assert seen == [["a", "b"], ["b"]]

    async def never(pending: list[str]) -> list[str]:
        return []

    with pytest.raises(BrokerUnavailableError, match=r"topics \['x', 'y'\] had no leader within"):
        await wait_visible(None, ["y", "x"], timeout=0.06, probe=never, what="had no leader")


def _message(offset: int = 4) -> Message:
    return Message("orders", 1, offset, b"k", None, [("trace", b"t1")], 0, b"{bad")


async def test_publish_dead_letter_builds_the_record_and_holds_the_commit() -> None:
    async with InMemoryBroker(partitions=1) as broker:
        source = _message()
        letter = DeadLetter(source, ValueError("no id"), attempts=3)
        assert letter.topic == "orders.DLT" and letter.reason == "ValueError: no id"
        future = publish_dead_letter(broker, letter, on=source)
        assert source._pending == [future]  # the commit of the failed record waits for it
        meta = await future
        assert (meta.topic, meta.offset) == ("orders.DLT", 0)
        [dead] = broker.records("orders.DLT")
        assert dead.raw == b"{bad" and dead.key == b"k"
        h = headers_to_dict(dead.headers)
        assert h["trace"] == "t1"
        assert (h["dlt.original.topic"], h["dlt.original.partition"], h["dlt.original.offset"]) == ("orders", "1", "4")
        assert (h["dlt.attempts"], h["dlt.exception.type"], h["dlt.reason"]) == ("3", "ValueError", "no id")

        # without ``on``: tracked on the message being delivered
        delivered = _message(5)
        token = current_message.set(delivered)
        try:
            future = publish_dead_letter(broker, DeadLetter(delivered, ValueError("x")))
        finally:
            current_message.reset(token)
        assert delivered._pending == [future]
        await future


async def test_the_dead_letter_sink_publishes_through_the_same_path_and_raises_failures() -> None:
    broker = InMemoryBroker(partitions=1)
    await broker.start()
    sink = DeadLetterSink(broker)
    sink.on_next(DeadLetter(_message(), ValueError("bad")))
    await sink.flush()
    assert sink.sent == 1 and len(broker.records("orders.DLT")) == 1
    await broker.stop()  # not started: the next publish fails
    sink.on_next(DeadLetter(_message(), ValueError("bad")))
    with pytest.raises(PublishError):
        await sink.flush()
    assert sink.sent == 1 and len(sink.errors) == 1


async def test_sinks_flush_every_sink_and_raise_the_first_failure() -> None:
    broker = InMemoryBroker(partitions=1)
    sinks = Sinks(broker)
    ok, failing = sinks.new("a"), sinks.new("b")
    await broker.start()
    ok.on_next({"n": 1})
    await ok.flush()
    await broker.stop()
    failing.on_next({"n": 2})  # not started any more: fails
    with pytest.raises(PublishError):
        await sinks.flush()
    assert ok.sent == 1 and len(failing.errors) == 1
    await sinks.flush()  # flushed sinks are forgotten


def test_memory_partitioning_and_assignment_are_pure() -> None:
    assert partition_for(b"k", 3, 99) == partition_for(b"k", 3, 0)  # the key decides
    assert [partition_for(None, 3, i) for i in range(4)] == [0, 1, 2, 0]  # round robin
    assert assign_range([("a",), ("a", "b")], {"a": 3, "b": 2}) == [
        [("a", 0), ("a", 2)],
        [("a", 1), ("b", 0), ("b", 1)],
    ]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (None, ()),
        ({}, ()),
        ({"trace-id": "abc", "raw": b"\x00", "empty": None}, (("trace-id", b"abc"), ("raw", b"\x00"), ("empty", b""))),
        ([("a", b"1"), ("a", "2")], (("a", b"1"), ("a", b"2"))),  # a name may repeat
        ((("a", bytearray(b"x")),), (("a", b"x"),)),
    ],
)
def test_encode_headers_accepts_a_mapping_or_pairs(given: object, stored: tuple[tuple[str, bytes], ...]) -> None:
    assert encode_headers(given) == stored  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("trace-id=abc", "headers must be a mapping or a sequence of (name, value) pairs, got str"),
        (["trace-id"], "headers[0] must be a (name, value) pair, got 'trace-id'"),
        ([("ab",)], "headers[0] must be a (name, value) pair, got ('ab',)"),
        ([("a", b"1"), ("a", b"2", b"3")], "headers[1] must be a (name, value) pair"),
        ([(1, b"x")], "header 0 name must be a str, got 1"),
        ({"n": 5}, "header 'n' value must be bytes, str or None, got int"),
        (5, "got int"),
    ],
)
def test_encode_headers_names_the_bad_header(given: object, message: str) -> None:
    with pytest.raises(TypeError) as failure:
        encode_headers(given)  # type: ignore[arg-type]
    assert message in str(failure.value)
