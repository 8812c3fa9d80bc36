"""Publishing to the in-memory broker: records appended to partitions chosen from the key."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

from reactive_services.errors import PublishError

from .._codec import encode_headers, encode_key, encode_value
from .._message import HeadersIn, RecordMetadata, current_transaction
from .._protocol import Emitter
from .._sink import BrokerSink, Sinks
from ._admin import MemoryCluster
from ._codec import PartitionLog, StoredRecord, Transaction, partition_for

__all__ = ["MemoryProducer", "MemoryTransactions"]


class MemoryTransactions:
    """The transactions of one exactly-once source of the in-memory broker: the value of
    :data:`~reactive_services.adapters._message.current_transaction` in its task.

    Records its Observer publishes join the open transaction (:meth:`writing` begins one when
    none is); the source ends it in the same step as its offset commit (:meth:`commit`), or
    aborts it (:meth:`abort`); see :class:`Transaction` for what readers see.

    Attributes:
        committed: transactions committed.
        aborted: transactions aborted.
    """

    def __init__(self, cluster: MemoryCluster) -> None:
        self.cluster = cluster
        self.current: Transaction | None = None
        self.committed = 0
        self.aborted = 0
        #: the source ended: records published later (by a task it left behind) join no transaction
        self.closed = False

    def writing(self, topic: str) -> Transaction:
        """The open transaction a record to ``topic`` joins (begun now if none is open)."""
        txn = self.current
        if txn is None:
            txn = self.current = Transaction()
        txn.topics.add(topic)
        return txn

    def commit(self, committed: dict[Any, int], offsets: dict[Any, int]) -> None:
        """Store ``offsets`` in the group's ``committed`` and commit the open transaction, in one step."""
        committed.update(offsets)
        self._end("committed")

    def abort(self) -> None:
        """Abort the open transaction, if any: readers skip its records."""
        self._end("aborted")

    def _end(self, state: str) -> None:
        txn, self.current = self.current, None
        if txn is None:
            return
        txn.state = state
        if state == "committed":
            self.committed += 1
        else:
            self.aborted += 1
        for topic in txn.topics:
            self.cluster.wake(topic)


class MemoryProducer:
    """The producer of one :class:`~reactive_services.adapters.memory.InMemoryBroker`.

    Args:
        cluster: where records are appended.
        max_record_bytes: the largest value accepted, in bytes.
        started: ``() -> bool``, whether the broker is started (publishing needs it).
        emitter: what the sinks publish through (the broker).
    """

    def __init__(
        self, cluster: MemoryCluster, max_record_bytes: int, started: Callable[[], bool], emitter: Emitter
    ) -> None:
        self._cluster = cluster
        self.max_record_bytes = max_record_bytes
        self._started = started
        self._round_robin = itertools.count()
        self._sinks = Sinks(emitter)

    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Append one record; see :meth:`InMemoryBroker.emit`."""
        return self._append(topic, [(encode_key(key), encode_value(value))], encode_headers(headers), timestamp_ms)[0]

    async def emit_batch(
        self,
        topic: str,
        records: Sequence[tuple[str | bytes | None, Any]],
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> list[RecordMetadata]:
        """Append many ``(key, value)`` records in order (all encoded first), each with ``headers``."""
        if not records:
            return []
        return self._append(topic, [(encode_key(k), encode_value(v)) for k, v in records], headers, None)

    def _append(
        self,
        topic: str,
        records: list[tuple[bytes | None, bytes | None]],
        headers: tuple[tuple[str, bytes], ...],
        timestamp_ms: int | None,
    ) -> list[RecordMetadata]:
        """Append encoded ``(key, value)`` records to ``topic`` in order, all with ``headers`` and
        ``timestamp_ms`` (None: now); the topic's readers are woken once the records are appended.

        Raises:
            PublishError: the broker is not started, or a value is over ``max_record_bytes`` (the
                records before it are appended, as they were when each was appended alone).
        """
        if not self._started():
            raise PublishError(f"cannot publish to {topic!r}: the in-memory broker is not started")
        limit = self.max_record_bytes
        cluster = self._cluster
        now_ms = int(time.time() * 1000)
        ts = now_ms if timestamp_ms is None else int(timestamp_ms)
        retention = cluster.retention
        parts: list[PartitionLog] | None = None  # the topic, created on the first record accepted
        txn = None
        out: list[RecordMetadata] = []
        try:
            for key, value in records:
                if value is not None and len(value) > limit:
                    raise PublishError(f"record of {len(value)} bytes to {topic!r} is over max_record_bytes={limit}")
                if parts is None:
                    parts = cluster.topic(topic)
                    txns = current_transaction.get()
                    if isinstance(txns, MemoryTransactions) and txns.cluster is cluster and not txns.closed:
                        txn = txns.writing(topic)  # visible to readers once that transaction commits
                partition = partition_for(key, len(parts), next(self._round_robin) if key is None else 0)
                record = StoredRecord(key, value, headers, ts)
                if txn is not None:
                    record.txn = txn
                out.append(RecordMetadata(topic, partition, parts[partition].append(record, retention, now_ms), ts))
        finally:
            if out:
                cluster.wake(topic)
        return out

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> BrokerSink:
        """A :class:`~reactive_services.adapters.BrokerSink` to ``topic``, flushed by :meth:`flush_sinks`."""
        return self._sinks.new(topic, key=key)

    async def flush_sinks(self) -> None:
        """Flush every sink handed out (then forget them).

        Raises:
            Exception: the first sink failure.
        """
        await self._sinks.flush()
