"""make_message builds what a broker source delivers."""

from __future__ import annotations

import doctest

import pytest

from reactive_services.adapters import Message
from reactive_services.testing import make_message


def test_defaults() -> None:
    m = make_message({"id": 1})
    assert m == Message("t", 0, 0, None, {"id": 1}, (), 0, b'{"id":1}')


def test_every_field() -> None:
    m = make_message(
        b"\x00raw",
        topic="orders",
        partition=2,
        offset=41,
        key="k1",
        headers=[("trace", b"t1")],
        timestamp_ms=1_600_000_000_123,
    )
    assert (m.topic, m.partition, m.offset, m.key, m.value, m.raw) == ("orders", 2, 41, b"k1", b"\x00raw", b"\x00raw")
    assert m.header("trace") == b"t1" and m.timestamp == 1_600_000_000.123


def test_headers_from_a_mapping_and_an_explicit_raw() -> None:
    m = make_message({"a": 1}, headers={"trace": "abc", "bin": b"\x01"}, raw=b"not what value says")
    assert list(m.headers) == [("trace", b"abc"), ("bin", b"\x01")]
    assert m.raw == b"not what value says"
    assert make_message(None).raw is None  # a tombstone


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_message(1, offset=-1)
    with pytest.raises(ValueError):
        make_message(1, partition=-1)
    with pytest.raises(TypeError):
        make_message(object())
    with pytest.raises(TypeError):
        make_message(1, key=7)  # type: ignore[arg-type]


def test_docstring_examples_run() -> None:
    import reactive_services.testing._marbles as marbles
    import reactive_services.testing._messages as messages
    import reactive_services.testing._waiting as waiting

    for module in (messages, marbles, waiting):
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0, module.__name__
