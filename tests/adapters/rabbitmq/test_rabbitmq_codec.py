"""The RabbitMQ adapter's pure mapping: names, arguments, headers to AMQP tables and back."""

from __future__ import annotations

import pytest

from reactive_services.adapters.rabbitmq._codec import (
    RabbitSettings,
    amqp_headers,
    message_of,
    queue_arguments,
    queue_name,
    record_headers,
)
from reactive_services.errors import ConfigError


def test_headers_round_trip_with_repeated_names_key_timestamp_and_tombstone() -> None:
    table = amqp_headers(b"k", [("a", b"1"), ("b", b"\xff"), ("a", b"2")], 42, null=True)
    assert table == {
        "a": [bytearray(b"1"), bytearray(b"2")],
        "b": bytearray(b"\xff"),
        "rs-key": b"k",
        "rs-ts": 42,
        "rs-null": True,
        "rs-names": ["a", "b", "a"],
    }
    key, headers, ts, null = record_headers(dict(sorted(table.items())))  # RabbitMQ sorts the names
    assert (key, ts, null) == (b"k", 42, True)
    assert headers == [("a", b"1"), ("b", b"\xff"), ("a", b"2")]  # in the order given


def test_rabbitmq_headers_and_other_clients_values_are_read_sensibly() -> None:
    key, headers, ts, null = record_headers({"x-death": [{"count": 1}], "s": "text", "n": 7})
    assert (key, ts, null) == (None, 0, False)
    assert headers == [("s", b"text"), ("n", b"7")]
    assert record_headers(None) == (None, [], 0, False)
    message = message_of("t", 2, 9, {"rs-null": True, "rs-ts": 5}, b"")
    assert (message.topic, message.partition, message.offset, message.raw, message.timestamp_ms) == ("t", 2, 9, None, 5)


def test_reserved_header_names_are_refused() -> None:
    with pytest.raises(ValueError, match="rs-key"):
        amqp_headers(None, [("rs-key", b"x")], 0)


def test_queue_names_and_arguments() -> None:
    assert queue_name("inventory", "orders", 2) == "inventory.orders.2"
    with pytest.raises(ConfigError, match="^group_id"):
        queue_name("g" * 250, "orders", 0)
    with pytest.raises(ConfigError, match="^group_id"):
        queue_name("amq.g", "orders", 0)
    plain = queue_arguments(RabbitSettings("amqp://h/"), "orders")
    assert plain == {"x-queue-type": "quorum", "x-single-active-consumer": True}
    limited = queue_arguments(RabbitSettings("amqp://h/", queue_expires_s=60, delivery_limit=5), "orders")
    assert limited["x-expires"] == 60_000 and limited["x-delivery-limit"] == 5
    assert limited["x-dead-letter-exchange"] == "orders.DLT"


@pytest.mark.parametrize(
    ("field", "value"),
    [("partitions", 0), ("max_batch", True), ("publish_timeout_s", 0), ("queue_expires_s", 0.5), ("delivery_limit", 0)],
)
def test_settings_name_the_offending_key(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        RabbitSettings("amqp://h/", **{field: value})  # type: ignore[arg-type]
