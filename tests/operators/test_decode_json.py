"""Marble tests of reactive_services.operators.decode_json in virtual time."""

from reactivex.testing import ReactiveTest, TestScheduler

from reactive_services.adapters import Message
from reactive_services.errors import DecodeError, ValidationError
from reactive_services.operators import DeadLetter, decode_json

on_next, on_completed, on_error = ReactiveTest.on_next, ReactiveTest.on_completed, ReactiveTest.on_error


def msg(offset: int, raw: bytes) -> Message:
    return Message("orders", 0, offset, b"k", raw, (), 0, raw)


def parse(value: object) -> dict:
    if not isinstance(value, dict) or "id" not in value:
        raise ValidationError("id: missing")
    return value


def run(source_msgs, parse_fn=parse):
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*source_msgs)
    dead = scheduler.create_observer()
    results = scheduler.start(lambda: xs.pipe(decode_json(dead, parse=parse_fn)))
    return results.messages, dead.messages


def test_good_records_pass_bad_ones_go_to_dead_letter_and_stream_goes_on():
    out, dead = run(
        [
            on_next(210, msg(0, b'{"id": 1}')),
            on_next(220, msg(1, b"not json")),
            on_next(230, msg(2, b'{"nope": 2}')),
            on_next(240, msg(3, b'{"id": 3}')),
            on_completed(250),
        ]
    )
    assert [(t.time, t.value.value.value) for t in out[:-1]] == [(210, {"id": 1}), (240, {"id": 3})]
    assert out[-1] == on_completed(250)
    assert [t.time for t in dead] == [220, 230]
    letters = [t.value.value for t in dead]
    assert all(isinstance(d, DeadLetter) for d in letters)
    assert isinstance(letters[0].error, DecodeError)
    assert isinstance(letters[1].error, ValidationError)
    assert letters[0].topic == "orders.DLT"
    headers = dict(letters[1].headers)
    assert headers["dlt.original.offset"] == b"2"
    assert headers["dlt.exception.type"] == b"ValidationError"
    assert b"id: missing" in headers["dlt.reason"]


def test_already_decoded_values_are_only_parsed():
    decoded = Message("orders", 0, 0, None, {"id": 7}, (), 0, b'{"id": 7}')
    out, dead = run([on_next(210, decoded), on_completed(220)])
    assert out[0].value.value.value == {"id": 7}
    assert dead == []


def test_upstream_error_passes_through():
    err = RuntimeError("broker gone")
    out, _ = run([on_next(210, msg(0, b'{"id": 1}')), on_error(220, err)])
    assert out[-1] == on_error(220, err)


def test_dead_letter_observer_that_raises_goes_to_on_error():
    class Broken:
        def on_next(self, value):
            raise RuntimeError("cannot publish")

        def on_error(self, error):
            pass

        def on_completed(self):
            pass

    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, msg(0, b"bad")), on_completed(220))
    results = scheduler.start(lambda: xs.pipe(decode_json(Broken())))
    assert results.messages[0].time == 210
    assert str(results.messages[0].value.exception) == "cannot publish"


def test_parse_callback_that_raises_is_a_dead_letter_not_an_error():
    def boom(value):
        raise KeyError("x")

    out, dead = run([on_next(210, msg(0, b"{}")), on_completed(220)], parse_fn=boom)
    assert out == [on_completed(220)]
    assert isinstance(dead[0].value.value.error, KeyError)


def test_a_record_over_max_bytes_is_dead_lettered_before_decoding():
    scheduler = TestScheduler()
    big = msg(1, b'{"id": "' + b"x" * 100 + b'"}')
    xs = scheduler.create_hot_observable(on_next(210, msg(0, b'{"id": 1}')), on_next(220, big), on_completed(230))
    dead = scheduler.create_observer()
    results = scheduler.start(lambda: xs.pipe(decode_json(dead, parse=parse, max_bytes=50)))
    assert [t.value.value.value for t in results.messages[:-1]] == [{"id": 1}]
    [letter] = [t.value.value for t in dead.messages]
    assert isinstance(letter.error, ValidationError)
    assert str(letter.error) == "record of 110 bytes is over the limit of 50 bytes"
