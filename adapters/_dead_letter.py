"""The one dead-letter path: every broker source, operator and service dead-letters through here.

A record that cannot be handled (it does not decode, its parse or handler raised, its retries
ran out) becomes a :class:`DeadLetter`; :func:`publish_dead_letter` publishes it to
``<topic>.DLT`` with the original key and raw bytes and the reason headers of
:func:`~reactive_services.adapters.dead_letter_headers`, tracked on the message being
delivered, so the failed record's offset is committed only once its dead letter is
acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ._codec import dead_letter_headers, dead_letter_topic
from ._message import Message, RecordMetadata, current_message, track
from ._protocol import Emitter

__all__ = ["DeadLetter", "publish_dead_letter"]

log = logging.getLogger("reactive_services.adapters.dead_letter")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be handled, on its way to ``<topic>.DLT``.

    Attributes:
        message: the original message (its ``raw`` bytes and ``key`` are what gets dead-lettered).
        error: why it failed.
        attempts: how many times it was tried (>= 1).
    """

    message: Message
    error: BaseException
    attempts: int = 1

    @property
    def topic(self) -> str:
        """The dead-letter topic: ``<original topic>.DLT``."""
        return dead_letter_topic(self.message.topic)

    @property
    def reason(self) -> str:
        """``"<exception type>: <message>"``, for logs."""
        return f"{type(self.error).__name__}: {self.error}"

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """The original headers plus ``dlt.*`` headers (see :func:`reactive_services.adapters.dead_letter_headers`)."""
        return dead_letter_headers(self.message, self.error, attempts=self.attempts)


def publish_dead_letter(
    broker: Emitter, letter: DeadLetter, *, on: Message | None = None
) -> asyncio.Future[RecordMetadata]:
    """Publish ``letter`` to :attr:`DeadLetter.topic` and track the publish.

    The record keeps the original key and raw value bytes (``None`` for a tombstone); its
    headers are :attr:`DeadLetter.headers`. The publish is tracked on ``on`` when given,
    else on the message being delivered (:data:`~reactive_services.adapters.current_message`,
    as :func:`~reactive_services.adapters.track` does), so that message's offset is committed
    only after the broker acknowledged the dead letter. Must be called on a running asyncio
    event loop.

    Args:
        broker: anything with ``async emit(topic, value, *, key=..., headers=...)``.
        letter: the dead letter.
        on: the message to hold the commit of (default: the one being delivered, if any).

    Returns:
        The publish as a future: its result is the :class:`RecordMetadata` of the dead letter;
        it raises what ``broker.emit`` raises (e.g. :class:`~reactive_services.errors.PublishError`).
    """
    message = letter.message
    log.warning(
        "%s[%d]@%d dead-lettered to %s: %s",
        message.topic,
        message.partition,
        message.offset,
        letter.topic,
        letter.reason,
    )
    work = broker.emit(letter.topic, message.raw, key=message.key, headers=letter.headers)
    if on is None:
        return track(work)
    token = current_message.set(on)
    try:
        return track(work)
    finally:
        current_message.reset(token)
