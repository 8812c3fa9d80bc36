"""The pure part of the Kafka adapter, with plain values and aiokafka's record types only."""

from __future__ import annotations

import pytest
import reactive_services.adapters.kafka
from aiokafka.structs import ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata as AioRecordMetadata
from reactive_services.adapters import Message, RecordMetadata, decode_json
from reactive_services.adapters.kafka._codec import (
    headers_from_kafka,
    headers_to_kafka,
    message_from_record,
    parse_bootstrap,
    record_metadata,
    resolve_decoder,
    topic_list,
)

from reactive_services.errors import ConfigError, DecodeError


def record(
    value: bytes | None = b'{"a":1}',
    *,
    key: bytes | None = b"k",
    headers: tuple[tuple[str, bytes], ...] = (("h", b"v"),),
) -> ConsumerRecord:
    return ConsumerRecord(
        topic="orders",
        partition=2,
        offset=41,
        timestamp=1_700_000_000_500,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value or b""),
        headers=headers,
    )


def test_exported_names() -> None:
    assert reactive_services.adapters.kafka.__all__ == ["KafkaBroker", "SourceStats"]


def test_message_from_record_maps_every_field() -> None:
    m = message_from_record(record(), {"a": 1})
    assert isinstance(m, Message)
    assert (m.topic, m.partition, m.offset) == ("orders", 2, 41)
    assert m.key == b"k" and m.value == {"a": 1} and m.raw == b'{"a":1}'
    assert m.headers == [("h", b"v")] and isinstance(m.headers, list)
    assert m.timestamp_ms == 1_700_000_000_500 and m.timestamp == 1_700_000_000.5


def test_message_from_a_tombstone_keeps_raw_none() -> None:
    m = message_from_record(record(None, key=None, headers=()), None)
    assert m.raw is None and m.key is None and m.headers == []


def test_headers_from_kafka_turns_null_values_into_empty_bytes() -> None:
    assert headers_from_kafka([("a", b"1"), ("b", None), ("a", b"2")]) == [("a", b"1"), ("b", b""), ("a", b"2")]
    assert headers_from_kafka(None) == [] and headers_from_kafka(()) == []


def test_headers_to_kafka_validates_and_copies() -> None:
    assert headers_to_kafka(None) is None and headers_to_kafka([]) is None
    mutable: list[tuple[str, bytes]] = [("t", bytearray(b"x"))]  # type: ignore[list-item]
    assert headers_to_kafka(mutable) == [("t", b"x")]
    with pytest.raises(TypeError, match="headers"):
        headers_to_kafka([("t", "text")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        headers_to_kafka([(1, b"x")])  # type: ignore[list-item]


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


def test_record_metadata_from_aiokafka() -> None:
    md = AioRecordMetadata("t", 1, TopicPartition("t", 1), 9, 1234, 0, 0)
    assert record_metadata(md) == RecordMetadata("t", 1, 9, 1234)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9092", [("127.0.0.1", 9092)]),
        ("a:1, b:2", [("a", 1), ("b", 2)]),
        ("[::1]:9092", [("::1", 9092)]),
    ],
)
def test_parse_bootstrap(text: str, expected: list[tuple[str, int]]) -> None:
    assert parse_bootstrap(text) == expected


@pytest.mark.parametrize("bad", ["", "  ", "host", "host:", ":9092", "host:port", "host:0", "host:70000"])
def test_parse_bootstrap_rejects(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bootstrap(bad)
    assert info.value.key == "bootstrap_servers"


def test_topic_list() -> None:
    assert topic_list("a") == ["a"]
    assert topic_list(("a", "b")) == ["a", "b"]
    for bad in ([], [""], ""):
        with pytest.raises(ConfigError):
            topic_list(bad)


def test_kafka_broker_matches_the_broker_protocol_exactly() -> None:
    import inspect

    from reactive_services.adapters import Broker
    from reactive_services.adapters.kafka import KafkaBroker

    broker = KafkaBroker("127.0.0.1:9092")
    assert isinstance(broker, Broker) and broker.kind == "kafka"
    for name in ("start", "stop", "create_topics", "emit", "emit_batch", "sink", "source", "committed", "end_offsets"):
        want = inspect.signature(getattr(Broker, name))
        got = inspect.signature(getattr(KafkaBroker, name))
        assert [(p.name, p.kind, p.default) for p in got.parameters.values()] == [
            (p.name, p.kind, p.default) for p in want.parameters.values()
        ], name
        assert inspect.iscoroutinefunction(getattr(KafkaBroker, name)) == inspect.iscoroutinefunction(
            getattr(Broker, name)
        ), name
