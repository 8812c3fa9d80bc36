"""Exactly-once consume-transform-produce on Kafka: one transactional producer per source subscription.

A source subscribed with ``processing_guarantee="exactly_once"`` runs, besides its consumer
(``isolation_level="read_committed"``), a :class:`KafkaTransaction`: an ``AIOKafkaProducer``
with a ``transactional_id``. While the source delivers, :data:`current_transaction` is set in
its task (and so in every task its Observer starts), and the broker's ``emit``,
``emit_batch``, sinks and dead letters send through the transaction instead of the shared
idempotent producer. At each commit point the source waits for the work in flight, adds the
offsets it handled to the transaction (``send_offsets_to_transaction``) and commits it: the
records written for a set of input records and the offsets of those input records become
visible together, or not at all (Kafka's transactions, KIP-98; a ``read_committed`` consumer
never sees the records of an aborted transaction).

A restarted instance with the same ``transactional_id`` fences the previous one (its open
transaction is aborted by the coordinator at once), so a crash costs no wait for
``transaction_timeout_ms``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from reactive_services.errors import PublishError

from .._codec import encode_headers, encode_key, encode_value
from .._message import Headers, HeadersIn, RecordMetadata
from ._admin import close_quietly, start_client
from ._codec import KafkaSettings, publish_failed, record_metadata

__all__ = ["TRANSACTION_TIMEOUT_MS", "KafkaTransaction", "SendQueue", "default_transactional_id"]

log = logging.getLogger("reactive_services.adapters.kafka")


@asynccontextmanager
async def acknowledged(topic: str, timeout_s: float) -> AsyncIterator[None]:
    """The publish of one record to ``topic`` in the block must be acknowledged within
    ``timeout_s`` seconds.

    Raises:
        PublishError: no acknowledgement in time, or the producer refused the record
            (a ``KafkaError``, kept as ``__cause__``).
    """
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as exc:
        raise PublishError(f"no acknowledgement for a record to {topic!r} within {timeout_s:g} s") from exc
    except KafkaError as exc:
        raise publish_failed(topic, exc) from exc


#: How long the coordinator lets a transaction stay open (ms) before aborting it: bounds how long
#: ``read_committed`` readers wait after an instance died and was not restarted.
TRANSACTION_TIMEOUT_MS = 15_000


class SendQueue:
    """Encoded records handed to aiokafka in order by one task, each with a callback on its delivery.

    What the sinks publish through (the broker's producer, or an exactly-once source's
    transaction): ``send`` waits only when aiokafka's buffer is full (the backpressure), and a
    record costs a queue entry and one callback on aiokafka's delivery future, no future or task
    of its own.

    Args:
        send: ``(topic, value bytes, key bytes) -> aiokafka's delivery future`` (a coroutine).
    """

    def __init__(self, send: Callable[..., Awaitable[asyncio.Future[Any]]]) -> None:
        self._send = send
        self._queue: deque[
            tuple[str, bytes | None, bytes | None, Callable[[asyncio.Future[Any]], None], Headers | None]
        ] = deque()
        self._drainer: asyncio.Task[None] | None = None

    def put(
        self,
        topic: str,
        data: bytes | None,
        key: bytes | None,
        on_delivery: Callable[[asyncio.Future[Any]], None],
        headers: Headers | None = None,
    ) -> None:
        """Queue a record; ``on_delivery`` is called with its delivery future once done (a failure
        to send it is a failed future too: :class:`PublishError`, or what ``send`` raised)."""
        self._queue.append((topic, data, key, on_delivery, headers))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        queue = self._queue
        while queue:
            topic, data, key, on_delivery, headers = queue.popleft()
            try:
                delivery = await self._send(topic, data, key, headers)
            except (KafkaError, TimeoutError) as exc:
                error: Exception = publish_failed(topic, exc)
            except Exception as exc:  # noqa: BLE001 - e.g. the producer cannot start: the record fails with it
                error = exc
            else:
                delivery.add_done_callback(on_delivery)
                continue
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            on_delivery(failed)

    async def handed_over(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s`` seconds) until every queued record was handed to aiokafka."""
        drainer = self._drainer
        if drainer is None or drainer.done():
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(drainer)
        except TimeoutError:
            return False
        return True

    def cancel(self) -> None:
        """Stop handing records over (what is still queued is dropped)."""
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
        self._queue.clear()


def default_transactional_id(group_id: str, topics: tuple[str, ...]) -> str:
    """``"<group_id>:<topic>+<topic>..."``: stable across restarts of the same subscription, so a
    restarted instance fences its predecessor. Two instances of one group reading the same topics
    at once need ids of their own (``transactional_id=``)."""
    return f"{group_id}:{'+'.join(sorted(topics))}"


class KafkaTransaction:
    """The transactional producer of one exactly-once source subscription.

    Args:
        settings: the broker's settings (bootstrap, client id, timeouts in seconds).
        transactional_id: the producer's ``transactional_id`` (see :func:`default_transactional_id`).
        group_id: the consumer group whose offsets are committed in the transactions.

    Attributes:
        committed: transactions committed.
        aborted: transactions aborted.
    """

    def __init__(self, settings: KafkaSettings, transactional_id: str, group_id: str) -> None:
        self.settings = settings
        self.transactional_id = transactional_id
        self.group_id = group_id
        self.open = False
        self.stopped = False
        self.committed = 0
        self.aborted = 0
        self._lock = asyncio.Lock()
        self._sends = SendQueue(self._send)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=settings.client_id,
            transactional_id=transactional_id,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=settings.request_timeout_ms,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
        )

    def serves(self, bootstrap_servers: str) -> bool:
        """True when records for the cluster at ``bootstrap_servers`` may go through this transaction
        (not once it was stopped: a task the source left behind publishes outside it)."""
        return not self.stopped and bootstrap_servers == self.settings.bootstrap_servers

    async def start(self) -> None:
        """Start the producer (``InitProducerId``: fences an earlier producer with the same id).

        Raises:
            BrokerUnavailableError: no answer within ``connect_timeout_s`` seconds.
        """
        s = self.settings
        await start_client(self._producer.start, self._producer.stop, s)

    async def emit(
        self, topic: str, value: Any, *, key: str | bytes | None = None, headers: HeadersIn | None = None
    ) -> RecordMetadata:
        """Send one record in the transaction (beginning one if none is open) and wait for its
        acknowledgement; it becomes visible to ``read_committed`` readers when the transaction commits.

        Raises:
            PublishError: refused, or not acknowledged within ``request_timeout_s`` seconds.
            TypeError: a value, key or header that does not encode.
        """
        data, kbytes = encode_value(value), encode_key(key)
        kheaders = list(encode_headers(headers)) or None
        timeout_s = self.settings.request_timeout_s
        async with acknowledged(topic, timeout_s):
            async with self._lock:
                await self._begin()
                delivery = await self._producer.send(topic, data, key=kbytes, headers=kheaders)
            md = await delivery
        return record_metadata(md)

    def enqueue(
        self,
        topic: str,
        data: bytes | None,
        key: bytes | None,
        on_delivery: Callable[[asyncio.Future[Any]], None],
        headers: Headers | None = None,
    ) -> None:
        """Queue an encoded record for the transaction (beginning it first, see :class:`SendQueue`):
        what a sink publishes through under an exactly-once source, no task per record."""
        self._sends.put(topic, data, key, on_delivery, headers)

    async def _send(
        self, topic: str, data: bytes | None, key: bytes | None, headers: Headers | None = None
    ) -> asyncio.Future[Any]:
        async with self._lock:
            await self._begin()
            return await self._producer.send(  # type: ignore[no-any-return]
                topic, data, key=key, headers=list(headers) if headers else None
            )

    async def _begin(self) -> None:
        if not self.open:
            await self._producer.begin_transaction()
            self.open = True

    async def commit(self, offsets: Mapping[Any, int]) -> None:
        """Add ``offsets`` (``{TopicPartition: next offset to read}``) to the open transaction
        (opening one if needed) and commit it.

        Raises:
            KafkaError: the commit failed (e.g. ``ProducerFenced``); the caller aborts.
            TimeoutError: no answer within ``request_timeout_s`` seconds.
        """
        async with asyncio.timeout(self.settings.request_timeout_s), self._lock:
            if not self.open and not offsets:
                return
            await self._begin()
            if offsets:
                await self._producer.send_offsets_to_transaction(dict(offsets), self.group_id)
            await self._producer.commit_transaction()
            self.open = False
            self.committed += 1

    async def abort(self) -> None:
        """Abort the open transaction, if any (its records are never visible to ``read_committed``
        readers); failures are logged, not raised (a fenced producer cannot abort: the coordinator
        already did)."""
        if not self.open:
            return
        self.open = False
        self.aborted += 1
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                await self._producer.abort_transaction()
        except (KafkaError, TimeoutError) as exc:
            log.warning("transaction %s: abort failed (%s); the coordinator aborts it", self.transactional_id, exc)

    async def stop(self) -> None:
        """Abort what is open, then stop the producer."""
        self.stopped = True
        self._sends.cancel()
        await self.abort()
        await close_quietly(self._producer.stop())
