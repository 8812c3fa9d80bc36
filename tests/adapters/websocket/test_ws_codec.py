"""The websocket protocol codec, tested with plain strings and bytes (no sockets, no asyncio)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from reactive_services.adapters.websocket import (
    MAX_CHANNEL_LENGTH,
    MAX_CHANNELS,
    ClientFrame,
    decode_server_frame,
    encode_error,
    encode_event,
    encode_pong,
    encode_subscribe,
    encode_subscribed,
    encode_unsubscribe,
    parse_client_frame,
    validate_channels,
)
from reactive_services.errors import DecodeError, ValidationError


def test_parse_subscribe_text_and_bytes() -> None:
    text = '{"op": "subscribe", "channels": ["inventory", "orders"]}'
    assert parse_client_frame(text) == ClientFrame("subscribe", ("inventory", "orders"))
    assert parse_client_frame(text.encode()) == ClientFrame("subscribe", ("inventory", "orders"))


def test_parse_deduplicates_channels_keeping_first_order() -> None:
    frame = parse_client_frame('{"op": "unsubscribe", "channels": ["b", "a", "b"]}')
    assert frame == ClientFrame("unsubscribe", ("b", "a"))


def test_parse_ping_ignores_other_keys() -> None:
    assert parse_client_frame('{"op": "ping", "id": 7}') == ClientFrame("ping", ())


def test_client_frame_is_frozen() -> None:
    frame = ClientFrame("ping")
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.op = "subscribe"  # type: ignore[misc]


@pytest.mark.parametrize("data", ["not json", "{", b"\xff\xfe", ""])
def test_not_json_is_a_decode_error(data: str | bytes) -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        parse_client_frame(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("[1, 2]", "JSON object, not an array"),
        ('"subscribe"', "JSON object, not a string"),
        ("42", "JSON object, not a number"),
        ("null", "JSON object, not null"),
        ("{}", "no 'op'"),
        ('{"op": "subscrbe", "channels": ["a"]}', "unknown op 'subscrbe'"),
        ('{"op": 3}', "unknown op 3"),
        ('{"op": "subscribe"}', "'subscribe' needs 'channels'"),
        ('{"op": "subscribe", "channels": "orders"}', "must be a list of strings, not str"),
        ('{"op": "subscribe", "channels": ["a", 1]}', "found int 1"),
        ('{"op": "unsubscribe", "channels": [null]}', "found NoneType"),
        ('{"op": "subscribe", "channels": [""]}', "non-empty"),
    ],
)
def test_bad_frames_are_validation_errors(data: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_client_frame(data)


def test_channel_name_length_limit() -> None:
    assert validate_channels(["x" * MAX_CHANNEL_LENGTH]) == ("x" * MAX_CHANNEL_LENGTH,)
    with pytest.raises(ValidationError, match=f"{MAX_CHANNEL_LENGTH + 1} characters long"):
        validate_channels(["x" * (MAX_CHANNEL_LENGTH + 1)])


def test_channel_count_limit() -> None:
    names = [f"c{i}" for i in range(MAX_CHANNELS)]
    assert len(validate_channels(names)) == MAX_CHANNELS
    with pytest.raises(ValidationError, match=f"too many channels: {MAX_CHANNELS + 1} given"):
        validate_channels(names + ["one-more"])
    # Duplicates do not count twice.
    assert len(validate_channels(names + names)) == MAX_CHANNELS


def test_server_frames_are_utf8_json_bytes() -> None:
    assert orjson.loads(encode_subscribed({"orders", "inventory"})) == {
        "type": "subscribed",
        "channels": ["inventory", "orders"],
    }
    assert orjson.loads(encode_event("orders", {"id": 1, "name": "é"})) == {
        "type": "event",
        "channel": "orders",
        "event": {"id": 1, "name": "é"},
    }
    assert orjson.loads(encode_pong()) == {"type": "pong"}
    assert orjson.loads(encode_error("bad")) == {"type": "error", "error": "bad"}
    for frame in (encode_subscribed([]), encode_event("c", None), encode_pong(), encode_error("x")):
        assert isinstance(frame, bytes)
        frame.decode("utf-8")


def test_encode_event_rejects_unserialisable() -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        encode_event("orders", object())


def test_client_frames_round_trip_through_the_parser() -> None:
    assert parse_client_frame(encode_subscribe(["a", "b"])) == ClientFrame("subscribe", ("a", "b"))
    assert parse_client_frame(encode_unsubscribe(["a"])) == ClientFrame("unsubscribe", ("a",))


def test_decode_server_frame() -> None:
    assert decode_server_frame(b'{"type": "pong"}') == {"type": "pong"}
    assert decode_server_frame('{"type": "event", "channel": "a", "event": 1}')["event"] == 1
    with pytest.raises(DecodeError):
        decode_server_frame("nope")
    with pytest.raises(ValidationError):
        decode_server_frame("[]")
    with pytest.raises(ValidationError):
        decode_server_frame('{"kind": "pong"}')
