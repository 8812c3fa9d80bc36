"""The pure part of the Kafka adapter, with plain values and aiokafka's record types only."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata as AioRecordMetadata

import reactive_services.adapters.kafka
from reactive_services.adapters import Message, RecordMetadata
from reactive_services.adapters.kafka._codec import (
    KafkaSettings,
    fmt_offsets,
    headers_from_kafka,
    message_from_record,
    parse_bootstrap,
    record_metadata,
    topics_with_leaders,
    unavailable,
)
from reactive_services.errors import BrokerUnavailableError, ConfigError


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


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("connect_timeout_s", 0),
        ("request_timeout_s", -1),
        ("poll_timeout_s", 0),
        ("revoke_timeout_s", 0),
        ("max_batch", 0),
        ("commit_interval_s", -0.5),
    ],
)
def test_settings_reject_out_of_range_values(setting: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        KafkaSettings("127.0.0.1:9092", **{setting: value})
    assert info.value.key == setting


def test_settings_refuse_consumer_options_the_source_sets_itself() -> None:
    with pytest.raises(ConfigError, match="group_id") as info:
        KafkaSettings("127.0.0.1:9092", consumer_options={"group_id": "x", "session_timeout_ms": 1})
    assert info.value.key == "consumer_options"
    settings = KafkaSettings("127.0.0.1:9092", request_timeout_s=2, consumer_options={"session_timeout_ms": 1})
    assert settings.request_timeout_s == 2.0 and settings.request_timeout_ms == 2000
    assert settings.consumer_options == {"session_timeout_ms": 1}


def test_unavailable_names_the_cluster_and_the_reason() -> None:
    err = unavailable("h:1", TimeoutError(), 2.5)
    assert isinstance(err, BrokerUnavailableError)
    assert str(err) == "cannot reach Kafka at h:1: no answer within 2.5 s"
    assert "connection refused" in str(unavailable("h:1", KafkaConnectionError(), 1))
    assert "OSError: boom" in str(unavailable("h:1", OSError("boom"), 1))


def test_topics_with_leaders_needs_every_partition_led() -> None:
    described = [
        {"topic": "a", "error_code": 0, "partitions": [{"error_code": 0, "leader": 1}, {"error_code": 0, "leader": 2}]},
        {
            "topic": "b",
            "error_code": 0,
            "partitions": [{"error_code": 0, "leader": 1}, {"error_code": 5, "leader": -1}],
        },
        {"topic": "c", "error_code": 3, "partitions": []},
        {"topic": "d", "error_code": 0, "partitions": []},
    ]
    assert topics_with_leaders(described) == ["a"]


def test_fmt_offsets_sorts_by_partition() -> None:
    assert fmt_offsets({TopicPartition("t", 1): 5, TopicPartition("t", 0): 3}) == "t[0]=3, t[1]=5"


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
