"""Publishing to Kafka: one idempotent producer (``acks="all"``) for emit, emit_batch, sinks and dead letters."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from reactive_services.errors import PublishError

from .._codec import encode_headers, encode_key, encode_value
from .._message import HeadersIn, RecordMetadata
from .._protocol import Emitter
from .._sink import BrokerSink, Sinks
from ._admin import close_quietly
from ._codec import KafkaSettings, record_metadata, unavailable

__all__ = ["KafkaProducer"]

log = logging.getLogger("reactive_services.adapters.kafka")


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class KafkaProducer:
    """The producer of one :class:`~reactive_services.adapters.kafka.KafkaBroker`.

    Args:
        settings: the broker's settings (timeouts in seconds).
        emitter: what the sinks publish through (the broker, so that a wrapper sees every publish).
    """

    def __init__(self, settings: KafkaSettings, emitter: Emitter) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock: asyncio.Lock | None = None
        self._sinks = Sinks(emitter)

    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._producer is not None

    async def start(self) -> None:
        """Start the producer (idempotent; concurrent calls start one).

        Raises:
            BrokerUnavailableError: no answer within ``connect_timeout_s`` seconds; nothing
                is left running.
        """
        if self._producer is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._producer is not None:
                return
            s = self._settings
            producer = AIOKafkaProducer(
                bootstrap_servers=s.bootstrap_servers,
                client_id=s.client_id,
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=s.request_timeout_ms,
                linger_ms=0,
            )
            try:
                async with asyncio.timeout(s.connect_timeout_s):
                    await producer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                await close_quietly(producer.stop())
                raise unavailable(s.bootstrap_servers, exc, s.connect_timeout_s) from exc
            except BaseException:
                await close_quietly(producer.stop())
                raise
            self._producer = producer

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        return self._producer

    async def flush_sinks(self) -> None:
        """Wait for every sink's publishes in flight and forget the sinks.

        Raises:
            Exception: the first sink failure (every sink is flushed first).
        """
        await self._sinks.flush()

    async def stop(self) -> None:
        """Flush and stop the producer; give up flushing after ``request_timeout_s`` seconds."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # flushing waits for the broker; a record it can no longer take (broker down) has
        # already failed its emit, so give up after request_timeout_s instead of hanging
        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                await close_quietly(producer.stop())
        except TimeoutError:
            log.warning(
                "producer did not flush within %g s (broker unreachable); closed without it",
                self._settings.request_timeout_s,
            )

    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish one record and wait for its acknowledgement; see :meth:`KafkaBroker.emit`."""
        data = encode_value(value)
        kbytes = encode_key(key)
        kheaders = list(encode_headers(headers)) or None
        producer = await self._ensure()
        timeout_s = self._settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                md = await producer.send_and_wait(topic, data, key=kbytes, headers=kheaders, timestamp_ms=timestamp_ms)
        except TimeoutError as exc:
            raise PublishError(f"no acknowledgement for a record to {topic!r} within {timeout_s:g} s") from exc
        except KafkaError as exc:
            raise PublishError(f"publishing to {topic!r} failed: {type(exc).__name__}: {exc}") from exc
        return record_metadata(md)

    async def emit_batch(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` records in order; see :meth:`KafkaBroker.emit_batch`."""
        encoded = [(encode_key(k), encode_value(v)) for k, v in records]
        producer = await self._ensure()
        timeout_s = self._settings.request_timeout_s
        futures: list[asyncio.Future[Any]] = []
        try:
            for kbytes, data in encoded:
                futures.append(await producer.send(topic, data, key=kbytes))
            async with asyncio.timeout(timeout_s):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError as exc:
            for fut in futures:
                fut.add_done_callback(_consume_exception)
            raise PublishError(
                f"no acknowledgement for {len(encoded)} record(s) to {topic!r} within {timeout_s:g} s"
            ) from exc
        except KafkaError as exc:
            for fut in futures:
                fut.add_done_callback(_consume_exception)
            raise PublishError(f"publishing to {topic!r} failed: {type(exc).__name__}: {exc}") from exc
        for res in results:
            if isinstance(res, BaseException):
                raise PublishError(f"publishing to {topic!r} failed: {type(res).__name__}: {res}") from res
        return [record_metadata(md) for md in results]

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> BrokerSink:
        """A :class:`~reactive_services.adapters.BrokerSink` to ``topic``, flushed by :meth:`flush_sinks`."""
        return self._sinks.new(topic, key=key)
