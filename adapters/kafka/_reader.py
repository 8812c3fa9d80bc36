"""The Kafka broker's :class:`~reactive_services.adapters.LogReader`: an ``AIOKafkaConsumer``
without a group that assigns partitions and seeks to given offsets; it never commits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, OffsetOutOfRangeError
from aiokafka.structs import TopicPartition as KafkaTopicPartition

from reactive_services.errors import BrokerError

from .._message import Message
from .._protocol import TopicPartition
from ._admin import close_quietly, start_client
from ._codec import UNAVAILABLE, KafkaSettings, message_from_record, unavailable

__all__ = ["KafkaLogReader"]

logger = logging.getLogger("reactive_services.adapters.kafka")


class KafkaLogReader:
    """Reads the partitions of ``positions`` from their offsets (see
    :meth:`reactive_services.adapters.Broker.read_log`). ``auto_offset_reset="none"``: a position
    outside the log raises instead of jumping to either end. Memory: the records a
    :meth:`read` returns plus the consumer's fetch buffer (``fetch_max_bytes``,
    ``max_partition_fetch_bytes`` of ``consumer_options``)."""

    def __init__(
        self, settings: KafkaSettings, positions: Mapping[TopicPartition, int], decoder: Callable[[bytes | None], Any]
    ) -> None:
        self._settings = settings
        self._positions = dict(positions)
        self._decoder = decoder
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def positions(self) -> dict[TopicPartition, int]:
        return dict(self._positions)

    async def start(self) -> None:
        s = self._settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=s.client_id + "-reader",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",
            request_timeout_ms=s.request_timeout_ms,
            **s.consumer_options,
        )
        await start_client(consumer.start, consumer.stop, s)
        tps = [KafkaTopicPartition(topic, partition) for topic, partition in self._positions]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, self._positions[(tp.topic, tp.partition)])
        self._consumer = consumer

    async def read(self, max_records: int, timeout_s: float = 0.5) -> list[Message]:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, not {max_records}")
        consumer = self._consumer
        if consumer is None:
            raise BrokerError("the log reader is not started or closed")
        s = self._settings
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except OffsetOutOfRangeError as exc:
            raise BrokerError(f"offsets out of range (deleted by retention, or past the end): {exc}") from exc
        except UNAVAILABLE as exc:
            raise unavailable(s.bootstrap_servers, exc, s.request_timeout_s) from exc
        except KafkaError as exc:
            raise BrokerError(f"reading the log failed: {exc}") from exc
        out: list[Message] = []
        for tp, records in batches.items():
            for record in records:
                try:
                    value = self._decoder(record.value)
                except Exception as exc:
                    logger.warning("%s[%d]@%d does not decode, skipped: %s", tp.topic, tp.partition, record.offset, exc)
                    continue
                out.append(message_from_record(record, value))
            if records:
                self._positions[(tp.topic, tp.partition)] = records[-1].offset + 1
        try:
            for tp in consumer.assignment():
                # past transaction markers too; position() answers at once once a position is known
                key = (tp.topic, tp.partition)
                self._positions[key] = max(self._positions[key], int(await consumer.position(tp)))
        except KafkaError as exc:
            raise BrokerError(f"reading the log failed: {exc}") from exc
        return out

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await close_quietly(consumer.stop())
