from __future__ import annotations

from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase

from reactive_services.adapters import DeadLetter, Message
from reactive_services.adapters import decode_json as _decode_bytes
from reactive_services.errors import ValidationError

__all__ = ["DeadLetter", "decode_json"]


def decode_json(
    dead_letter: ObserverBase[DeadLetter],
    *,
    parse: Callable[[Any], Any] | None = None,
    max_bytes: int | None = None,
) -> Callable[[Observable[Message]], Observable[Message]]:
    """Decode each message's JSON value (and validate it); route bad records to a dead-letter Observer.

    ::

        source:      --a--x--b--y--|        x: not JSON, y: JSON of the wrong shape
        decode_json(dead_letter=dlt, parse=parse_order)
        result:      --A-----B-----|        A, B: Messages whose value is parse(json)
        dlt:         -----X-----Y--         DeadLetter(x, DecodeError), DeadLetter(y, ValidationError)

    A message whose ``value`` is ``bytes`` (a source with ``decode=None``) is decoded
    with orjson; a value already decoded (the default source) is passed to ``parse``
    as it is. When decoding or ``parse`` raises, a :class:`DeadLetter` carrying the
    message and the exception goes to ``dead_letter`` (typically
    :class:`reactive_services.adapters.DeadLetterSink`, which publishes it to ``<topic>.DLT`` with the
    reason in its headers) and the stream goes on; nothing is lost or silently dropped.

    Example::

        messages.pipe(decode_json(DeadLetterSink(broker), parse=parse_order))

    Args:
        dead_letter: receives one DeadLetter per rejected record.
        parse: optional ``value -> value`` check/conversion; raise (e.g.
            :class:`reactive_services.errors.ValidationError`) to reject the record.
        max_bytes: records whose raw value is longer than this (bytes) are rejected with a
            ValidationError before decoding (None: no limit).

    Returns:
        An operator from ``Observable[Message]`` to ``Observable[Message]``; each output
        Message is the input's with ``value`` replaced (its commit tracking is shared).

    Errors: nothing is raised on bad records. An exception raised by ``dead_letter.on_next``
    itself goes to ``on_error``.
    """

    def operator(source: Observable[Message]) -> Observable[Message]:
        def subscribe(observer: ObserverBase[Message], scheduler: SchedulerBase | None = None) -> DisposableBase:
            def on_next(msg: Message) -> None:
                try:
                    if max_bytes is not None and msg.raw is not None and len(msg.raw) > max_bytes:
                        raise ValidationError(f"record of {len(msg.raw)} bytes is over the limit of {max_bytes} bytes")
                    value = _decode_bytes(msg.value) if isinstance(msg.value, (bytes, type(None))) else msg.value
                    if parse is not None:
                        value = parse(value)
                except Exception as exc:  # a bad record: dead-letter it, keep going
                    try:
                        dead_letter.on_next(DeadLetter(msg, exc))
                    except Exception as dl_exc:
                        observer.on_error(dl_exc)
                    return
                # the new message shares the original's tracked work and holds (one commit)
                if msg._pending is None:
                    msg._pending = []
                if msg._holds is None:
                    msg._holds = []
                observer.on_next(
                    Message(
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        msg.key,
                        value,
                        msg.headers,
                        msg.timestamp_ms,
                        msg.raw,
                        msg._pending,
                        msg._holds,
                    )
                )

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator
