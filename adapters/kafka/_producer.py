"""Publishing to Kafka: one idempotent producer (``acks="all"``) for emit, emit_batch, sinks and dead letters."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from reactive_services.errors import PublishError

from .._codec import encode_headers, encode_key, encode_value
from .._message import (
    Headers,
    HeadersIn,
    Hold,
    RecordMetadata,
    current_message,
    current_transaction,
    pending_message,
    track,
)
from .._protocol import Emitter
from .._sink import BrokerSink, Sinks
from ..tracing import publish_span, tracing_enabled
from ._admin import close_quietly, start_client
from ._codec import KafkaSettings, publish_failed, record_metadata
from ._transaction import KafkaTransaction, SendQueue, acknowledged

__all__ = ["KafkaProducer"]

log = logging.getLogger("reactive_services.adapters.kafka")
_current = current_message.var.get  # the sink reads it per record


class KafkaSink(BrokerSink):
    """The sink of :meth:`KafkaProducer.sink`: a :class:`BrokerSink` publishing through the producer's
    queue without a future of its own per record (one callback on aiokafka's delivery future).

    Each record's commit is held until its acknowledgement (the producer keeps the order); above
    :attr:`max_unacknowledged` publishes not acknowledged, a record is tracked instead
    (backpressure). Under an exactly-once source it publishes through the source's transaction
    (:meth:`KafkaTransaction.enqueue`). A value that does not encode raises ``TypeError`` from ``on_next``
    (the source's stream ends with it).
    """

    #: Publishes of one sink not acknowledged yet above which a record stays in flight until its
    #: own acknowledgement (so the source stops delivering: the sink's backpressure, and its bound on memory).
    max_unacknowledged = 1_000

    def __init__(
        self, producer: KafkaProducer, broker: Emitter, topic: str, key: Callable[[Any], str | bytes | None] | None
    ) -> None:
        super().__init__(broker, topic, key=key)
        self._producer = producer
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def on_next(self, value: Any) -> None:
        producer = self._producer
        txn = producer._transaction()
        key = self._key(value) if self._key else None
        try:
            data, kbytes = encode_value(value), encode_key(key)
        except TypeError as exc:
            self.errors.append(exc)
            log.error("publish to %s failed: %s", self.topic, exc)
            raise
        message = _current()
        if message.__class__ is list:  # a pending delivery (see CurrentMessage): its message
            message = pending_message(message)
        held = message.hold() if message is not None else None
        self._outstanding += 1
        if self._outstanding == 1:
            self._idle.clear()
        on_delivery: Callable[[asyncio.Future[Any]], None]
        if self._outstanding > self.max_unacknowledged:  # backpressure: this one stays in flight
            gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            track(gate)
            on_delivery = partial(self._delivered, held, gate)
        elif held is not None:
            on_delivery = partial(self._delivered, held, None)
        else:  # outside a delivery (nothing to hold): no callable made per record
            on_delivery = self._delivered_free
        if tracing_enabled():  # a send span; the record carries its context
            with publish_span("kafka", self.topic, key=key) as trace_headers:
                (txn or producer).enqueue(self.topic, data, kbytes, on_delivery, trace_headers)
        elif txn is not None:  # under an exactly-once source: in its transaction
            txn.enqueue(self.topic, data, kbytes, on_delivery)
        else:
            producer.enqueue(self.topic, data, kbytes, on_delivery)

    def _delivered_free(self, delivery: asyncio.Future[Any]) -> None:
        self._delivered(None, None, delivery)

    def _delivered(self, held: Hold | None, gate: asyncio.Future[None] | None, delivery: asyncio.Future[Any]) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()
        if delivery.cancelled():
            if held is not None:
                held.cancel()
            if gate is not None:
                gate.cancel()
            return
        exc = delivery.exception()
        if exc is None:
            self.sent += 1
            if held is not None:
                held.release()
            if gate is not None:
                gate.set_result(None)
            return
        error = exc if isinstance(exc, PublishError) else PublishError(f"publishing to {self.topic!r} failed: {exc}")
        if error is not exc:
            error.__cause__ = exc
        self.errors.append(error)
        log.error("publish to %s failed: %s", self.topic, error)
        if held is not None:
            held.fail(error)
        if gate is not None:
            gate.set_exception(error)

    async def flush(self) -> None:
        """Wait for every publish in flight (acknowledged or failed).

        Raises:
            Exception: the first publish failure (or upstream error) seen so far.
        """
        await self._idle.wait()
        await super().flush()


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class _Batch:
    """One aiokafka record batch being filled for :meth:`KafkaProducer.emit_batch`."""

    __slots__ = ("builder", "indices", "partition")

    def __init__(self, builder: Any, partition: int) -> None:
        self.builder = builder
        self.partition = partition
        self.indices: list[int] = []  # the positions in emit_batch's records, in offset order


class _Batches:
    """The record batches of one :meth:`KafkaProducer.emit_batch` call, per partition, in order."""

    def __init__(self, producer: AIOKafkaProducer, partitions: list[int], headers: list[tuple[str, bytes]]) -> None:
        self._producer = producer
        self._headers = headers  # of every record
        self._partitions = partitions
        self._partitioner = DefaultPartitioner()
        self._open: dict[int, _Batch] = {}
        self._next = random.randrange(len(partitions))  # the last partition a keyless record went to (an index)
        self.by_partition: dict[int, list[_Batch]] = {}
        self.timestamp_ms = int(time.time() * 1000)  # the create time of every record of the call
        self._count = 0

    def add(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:  # round robin, as the in-memory broker spreads keyless records
            self._next = (self._next + 1) % len(self._partitions)
            partition = self._partitions[self._next]
        else:
            partition = self._partitioner(key, self._partitions, self._partitions)
        batch = self._open.get(partition)
        if (
            batch is None
            or batch.builder.append(timestamp=self.timestamp_ms, key=key, value=value, headers=self._headers) is None
        ):
            batch = _Batch(self._producer.create_batch(), partition)
            self._open[partition] = batch
            self.by_partition.setdefault(partition, []).append(batch)
            # an empty batch takes any record (one over max_batch_size too: the broker judges it)
            batch.builder.append(timestamp=self.timestamp_ms, key=key, value=value, headers=self._headers)
        batch.indices.append(self._count)
        self._count += 1


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
        self._sinks = Sinks(emitter, lambda topic, key: KafkaSink(self, emitter, topic, key))
        self._sends = SendQueue(self._send)

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
            await start_client(producer.start, producer.stop, s)
            self._producer = producer

    def _transaction(self) -> KafkaTransaction | None:
        """The transaction of the exactly-once source running this code, if it writes to our cluster."""
        txn = current_transaction.get()
        if isinstance(txn, KafkaTransaction) and txn.serves(self._settings.bootstrap_servers):
            return txn
        return None

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
        # hand what the sinks queued to aiokafka first
        if not await self._sends.handed_over(self._settings.request_timeout_s):
            log.warning("records queued by sinks not handed to the producer within the timeout")
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
        txn = self._transaction()
        if txn is not None:
            return await txn.emit(topic, value, key=key, headers=headers)
        data = encode_value(value)
        kbytes = encode_key(key)
        kheaders = list(encode_headers(headers)) or None
        producer = await self._ensure()
        timeout_s = self._settings.request_timeout_s
        async with acknowledged(topic, timeout_s):
            md = await producer.send_and_wait(topic, data, key=kbytes, headers=kheaders, timestamp_ms=timestamp_ms)
        return record_metadata(md)

    def enqueue(
        self,
        topic: str,
        data: bytes | None,
        key: bytes | None,
        on_delivery: Callable[[asyncio.Future[Any]], None],
        headers: Headers | None = None,
    ) -> None:
        """Queue an encoded record, handed to aiokafka in order (see :class:`SendQueue`); what
        :class:`KafkaSink` publishes through."""
        self._sends.put(topic, data, key, on_delivery, headers)

    async def _send(
        self, topic: str, data: bytes | None, key: bytes | None, headers: Headers | None = None
    ) -> asyncio.Future[Any]:
        producer = self._producer if self._producer is not None else await self._ensure()
        return await producer.send(  # type: ignore[no-any-return]
            topic, data, key=key, headers=list(headers) if headers else None
        )

    async def emit_batch(
        self,
        topic: str,
        records: Sequence[tuple[str | bytes | None, Any]],
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` records in order, each with ``headers``; see
        :meth:`KafkaBroker.emit_batch`.

        The records are written into aiokafka's record batches (``create_batch``, one
        ``send_batch`` per batch of ``max_batch_size`` bytes, 16 KiB by default), so a record
        costs no future and no coroutine of its own. A key's records go to the partition
        ``send`` would choose (aiokafka's default murmur2 partitioner); keyless records go round
        robin over the partitions, as the in-memory broker spreads them.
        Every record is encoded before the first batch is sent.
        """
        txn = self._transaction()
        if txn is not None:
            return [await txn.emit(topic, value, key=key, headers=headers) for key, value in records]
        if not records:
            return []
        producer = await self._ensure()
        timeout_s = self._settings.request_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                partitions = sorted(await producer.partitions_for(topic))
        except TimeoutError as exc:
            raise PublishError(f"no metadata for {topic!r} within {timeout_s:g} s") from exc
        except KafkaError as exc:
            raise publish_failed(topic, exc) from exc
        batches = _Batches(producer, partitions, list(headers))
        for key, value in records:  # a value that does not encode raises here: nothing is sent
            batches.add(encode_key(key), encode_value(value))
        pending: list[tuple[_Batch, asyncio.Future[Any]]] = []

        async def send(partition: int, queued: list[_Batch]) -> None:
            for batch in queued:  # in order: send_batch returns once the batch is queued after the last
                pending.append((batch, await producer.send_batch(batch.builder, topic, partition=partition)))

        try:
            sent = await asyncio.gather(*(send(p, q) for p, q in batches.by_partition.items()), return_exceptions=True)
            async with asyncio.timeout(timeout_s):
                acks = await asyncio.gather(*(f for _b, f in pending), return_exceptions=True)
        except TimeoutError as exc:
            for _b, fut in pending:
                fut.add_done_callback(_consume_exception)
            raise PublishError(
                f"no acknowledgement for {len(records)} record(s) to {topic!r} within {timeout_s:g} s"
            ) from exc
        for res in (*sent, *acks):
            if isinstance(res, BaseException):
                raise publish_failed(topic, res) from res
        out: list[RecordMetadata | None] = [None] * len(records)
        for (batch, _f), md in zip(pending, acks, strict=True):
            assert not isinstance(md, BaseException)  # raised above
            timestamp = batches.timestamp_ms if md.timestamp == -1 else md.timestamp  # create / log-append time
            base = md.offset
            for j, i in enumerate(batch.indices):
                out[i] = RecordMetadata(topic, batch.partition, base + j, timestamp)
        return out  # type: ignore[return-value]  # every index was filled

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> BrokerSink:
        """A :class:`~reactive_services.adapters.BrokerSink` to ``topic``, flushed by :meth:`flush_sinks`."""
        return self._sinks.new(topic, key=key)
