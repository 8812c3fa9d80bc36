"""The Kafka I/O driver: :class:`KafkaBroker`, the :class:`reactive_services.adapters.Broker` Protocol on aiokafka.

Pure mapping (records to messages, settings) lives in :mod:`reactive_services.adapters.kafka._codec`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import reactivex
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import TopicPartition
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.disposable import Disposable

from reactive_services.errors import (
    BrokerError,
    BrokerUnavailableError,
    ConfigError,
    PublishError,
)

from .._codec import dead_letter_headers, dead_letter_topic, encode_key, encode_value
from .._inflight import InFlight
from .._message import YIELD_EVERY, Headers, Message, RecordMetadata, current_message
from .._protocol import Decoder
from .._sink import BrokerSink
from ._codec import (
    headers_to_kafka,
    message_from_record,
    parse_bootstrap,
    record_metadata,
    resolve_decoder,
    topic_list,
)

__all__ = ["KafkaBroker", "SourceStats"]

log = logging.getLogger("reactive_services.adapters.kafka")

_UNAVAILABLE = (KafkaConnectionError, NodeNotReadyError, KafkaTimeoutError, RequestTimedOutError, OSError, TimeoutError)


def _reason(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, KafkaTimeoutError, RequestTimedOutError)):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, KafkaConnectionError):
        return "no broker answered (connection refused or closed)"
    return f"{type(exc).__name__}: {exc}"


#: AIOKafkaConsumer arguments a source sets itself; ``consumer_options`` may not override them.
_RESERVED_CONSUMER_OPTIONS = frozenset(
    {
        "bootstrap_servers",
        "group_id",
        "enable_auto_commit",
        "auto_offset_reset",
        "loop",
        "key_deserializer",
        "value_deserializer",
    }
)


@dataclass(eq=False)
class SourceStats:
    """Live counters of one subscription to a Kafka source (see :meth:`KafkaBroker.source_stats`).

    The source updates them as it runs; they are meant for tests, metrics and debugging.

    Attributes:
        group_id: the consumer group of the source.
        concurrency: the ``concurrency`` it was subscribed with.
        in_flight: messages in flight now.
        max_in_flight: the most messages in flight at once so far (never above ``concurrency``).
        buffered: fetched records waiting for room in the window.
        max_buffered: the most records buffered at once (bounded by ``max_batch`` per fetch).
        pauses: times the source paused its partitions because its window was full.
        resumes: times it resumed them.
        paused: the partitions paused now, as ``consumer.paused()`` reports them.
        assignments: partition assignments received from the group coordinator.
        revocations: non-empty revocations received (a rebalance took partitions away).
    """

    group_id: str
    concurrency: int = 1
    in_flight: int = 0
    max_in_flight: int = 0
    buffered: int = 0
    max_buffered: int = 0
    pauses: int = 0
    resumes: int = 0
    paused: frozenset[TopicPartition] = frozenset()
    assignments: int = 0
    revocations: int = 0


@dataclass(eq=False)
class _SourceRun:
    """The state of one subscription to a Kafka source."""

    topics: list[str]
    group_id: str
    observer: ObserverBase[Message]
    stop: asyncio.Event | None
    on_assigned: Callable[[], None] | None = None
    task: asyncio.Task[None] | None = None
    halt: bool = False  # broker.stop(): end like the stop event (commit, complete)
    detached: bool = False  # disposed while on_next was running: end without a terminal call
    in_on_next: bool = False
    terminating: bool = False  # the task is closing itself: dispose must not cancel it
    consumer: AIOKafkaConsumer | None = None
    window: InFlight | None = None  # the messages in flight and their offsets
    backlog: deque[Any] = field(default_factory=deque)  # fetched, not yet delivered
    revoking: set[TopicPartition] = field(default_factory=set)  # being revoked: deliver no more of them
    stats: SourceStats | None = None

    def stopping(self) -> bool:
        return self.halt or self.detached or (self.stop is not None and self.stop.is_set())

    def dispose(self) -> None:
        if self.terminating or self.task is None or self.task.done():
            return
        if self.in_on_next:
            # Called from inside on_next (e.g. take(n) or an operator's on_error upstream of
            # us): finish this call, do not count the message as handled, then close.
            self.detached = True
        else:
            self.task.cancel()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits the handled offsets of partitions taken away by a rebalance."""

    def __init__(self, broker: KafkaBroker, run: _SourceRun) -> None:
        self._broker = broker
        self._run = run

    async def on_partitions_revoked(self, revoked: Any) -> None:
        run = self._run
        if revoked and run.stats is not None:
            run.stats.revocations += 1
        await self._revoke_window(set(revoked))

    async def _revoke_window(self, revoked: set[TopicPartition]) -> None:
        """Wait (at most ``revoke_timeout_s``) for the messages in
        flight of ``revoked``, commit what is contiguous-complete, abandon the rest."""
        run, window = self._run, self._run.window
        assert window is not None
        if not revoked:
            return
        run.revoking |= revoked
        try:
            run.backlog = deque(r for r in run.backlog if TopicPartition(r.topic, r.partition) not in revoked)
            if not await window.drain(revoked, timeout=self._broker.revoke_timeout_s):
                log.warning(
                    "group %s: messages of %s still in flight after %g s at revocation; "
                    "they are not committed and will be redelivered to the new owner",
                    run.group_id,
                    sorted(revoked),
                    self._broker.revoke_timeout_s,
                )
            if run.consumer is not None:
                await self._broker._commit(run, only=revoked)
        finally:
            for tp in revoked:
                window.forget(tp)
            run.revoking -= revoked

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self._run.stats is not None:
            self._run.stats.assignments += 1
        log.debug("group %s: assigned %s", self._run.group_id, sorted(assigned))


class KafkaBroker:
    """The :class:`reactive_services.adapters.Broker` Protocol on Apache Kafka, through aiokafka.

    One idempotent producer (``acks="all"``) is shared by ``emit``, ``emit_batch``,
    sinks and dead-lettering; each subscription to :meth:`source` runs its own consumer
    in the consumer group it names.

    Args:
        bootstrap_servers: ``"host:port[,host:port]"``.
        client_id: the Kafka client id of the producer and consumers.
        connect_timeout_s: seconds to wait for the cluster when connecting (``start``,
            a source's first connection).
        request_timeout_s: seconds to wait for an acknowledgement or a metadata answer.
        max_batch: at most this many records per ``getmany()`` fetch of a source.
        commit_interval_s: a source commits handled offsets after a fetched batch once
            this many seconds have passed since its last commit (0 = after every batch),
            and always when it stops, is disposed or fails.
        poll_timeout_s: how long one fetch waits for records; bounds how fast a source
            notices its ``stop`` event, in seconds.
        revoke_timeout_s: how long a source whose partitions a
            rebalance takes away waits for their messages in flight before it commits what
            is contiguous-complete and abandons the rest, in seconds. Keep it well below
            ``max_poll_interval_ms`` (the rebalance timeout).
        consumer_options: extra keyword arguments for each source's ``AIOKafkaConsumer``
            (e.g. ``{"max_poll_interval_ms": 60_000, "session_timeout_ms": 10_000}``); they
            override ``client_id`` and ``request_timeout_ms``.

    Raises:
        ConfigError: a malformed ``bootstrap_servers``, a non-positive timeout/size, or a
            ``consumer_options`` key the source sets itself (``group_id``,
            ``enable_auto_commit``, ``auto_offset_reset``, ``bootstrap_servers``, ...).
    """

    kind: str = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "reactive-services",
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 10.0,
        max_batch: int = 500,
        commit_interval_s: float = 1.0,
        poll_timeout_s: float = 0.2,
        revoke_timeout_s: float = 5.0,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        parse_bootstrap(bootstrap_servers)
        for name, val in (
            ("connect_timeout_s", connect_timeout_s),
            ("request_timeout_s", request_timeout_s),
            ("poll_timeout_s", poll_timeout_s),
            ("revoke_timeout_s", revoke_timeout_s),
        ):
            if not val > 0:
                raise ConfigError(name, f"must be > 0 seconds, got {val!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError("max_batch", f"must be a positive int, got {max_batch!r}")
        if not commit_interval_s >= 0:
            raise ConfigError("commit_interval_s", f"must be >= 0 seconds, got {commit_interval_s!r}")
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.connect_timeout_s = float(connect_timeout_s)
        self.request_timeout_s = float(request_timeout_s)
        self.max_batch = max_batch
        self.commit_interval_s = float(commit_interval_s)
        self.poll_timeout_s = float(poll_timeout_s)
        self.revoke_timeout_s = float(revoke_timeout_s)
        reserved = sorted(_RESERVED_CONSUMER_OPTIONS.intersection(consumer_options or {}))
        if reserved:
            raise ConfigError("consumer_options", f"{', '.join(reserved)} cannot be overridden")
        self.consumer_options: dict[str, Any] = dict(consumer_options or {})
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets_consumer: AIOKafkaConsumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._helpers_lock: asyncio.Lock | None = None  # creates the admin client and the offsets consumer once
        self._runs: set[_SourceRun] = set()
        self._sinks: list[BrokerSink] = []

    def __repr__(self) -> str:
        state = "started" if self._producer is not None else "stopped"
        return f"<KafkaBroker {self.bootstrap_servers} {state}, {len(self._runs)} source(s)>"

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._producer is not None

    @property
    def running_sources(self) -> int:
        """How many source subscriptions still have a consumer task."""
        return len(self._runs)

    def _unavailable(self, exc: BaseException, timeout_s: float) -> BrokerUnavailableError:
        return BrokerUnavailableError(f"cannot reach Kafka at {self.bootstrap_servers}: {_reason(exc, timeout_s)}")

    async def start(self) -> None:
        """Start the producer and check that the cluster answers (idempotent).

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
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self.client_id,
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=int(self.request_timeout_s * 1000),
                linger_ms=0,
            )
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await producer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                await _close_quietly(producer.stop())
                raise self._unavailable(exc, self.connect_timeout_s) from exc
            except BaseException:
                await _close_quietly(producer.stop())
                raise
            self._loop = asyncio.get_running_loop()
            self._producer = producer

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        return self._producer

    async def stop(self) -> None:
        """Stop every running source (commit, close, ``on_completed``), flush the sinks,
        then stop the producer and the admin client.

        A source still busy after ``request_timeout_s`` seconds is cancelled (its handled
        offsets are committed, its consumer closed).

        Raises:
            PublishError: a sink's publish failed (after everything was closed).
        """
        runs = list(self._runs)
        for run in runs:
            run.halt = True
        tasks = [r.task for r in runs if r.task is not None and not r.task.done()]
        if tasks:
            _done, late = await asyncio.wait(tasks, timeout=self.request_timeout_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=self.request_timeout_s)
        sink_error: BaseException | None = None
        for sink in self._sinks:
            try:
                await sink.flush()
            except Exception as exc:  # noqa: BLE001 - re-raised below once all is closed
                sink_error = sink_error or exc
        self._sinks.clear()
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        offsets, self._offsets_consumer = self._offsets_consumer, None
        if producer is not None:
            # flushing waits for the broker; a record it can no longer take (broker down) has
            # already failed its emit, so give up after request_timeout_s instead of hanging
            try:
                async with asyncio.timeout(self.request_timeout_s):
                    await _close_quietly(producer.stop())
            except TimeoutError:
                log.warning(
                    "producer did not flush within %g s (broker unreachable); closed without it", self.request_timeout_s
                )
        if admin is not None:
            await _close_quietly(admin.close())
        if offsets is not None:
            await _close_quietly(offsets.stop())
        if sink_error is not None:
            raise sink_error

    async def __aenter__(self) -> KafkaBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ admin

    def _helpers(self) -> asyncio.Lock:
        if self._helpers_lock is None:
            self._helpers_lock = asyncio.Lock()
        return self._helpers_lock

    async def _ensure_admin(self) -> AIOKafkaAdminClient:
        if self._admin is not None:
            return self._admin
        async with self._helpers():
            return await self._create_admin()

    async def _create_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self.client_id + "-admin",
                request_timeout_ms=int(self.request_timeout_s * 1000),
            )
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await admin.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                await _close_quietly(admin.close())
                raise self._unavailable(exc, self.connect_timeout_s) from exc
            self._admin = admin
        return self._admin

    async def create_topics(self, topics: Sequence[str], *, partitions: int = 3) -> None:
        """Create the topics that do not exist yet, with ``partitions`` partitions and
        replication factor 1 (existing topics are left as they are).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
            BrokerError: the cluster refused to create a topic (the reason is in the message).
        """
        names = topic_list(topics) if not isinstance(topics, str) else [topics]
        admin = await self._ensure_admin()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                resp = await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names],
                    timeout_ms=int(self.request_timeout_s * 1000),
                )
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, self.request_timeout_s) from exc
        except KafkaError as exc:
            raise BrokerError(f"creating topics {names} failed: {exc}") from exc
        for entry in resp.topic_errors:
            name, code = entry[0], entry[1]
            if code in (0, TopicAlreadyExistsError.errno):
                continue
            message = entry[2] if len(entry) > 2 else ""
            raise BrokerError(f"creating topic {name!r} failed: error {code} {message or ''}".rstrip())
        await self._wait_visible(admin, names)

    async def _wait_visible(self, admin: AIOKafkaAdminClient, names: list[str]) -> None:
        """Wait (up to request_timeout_s) until every topic's partitions all have a leader in
        the metadata: the controller answers CreateTopics before every broker's metadata cache
        knows the topic, and a describe or produce right after would see it missing."""
        deadline = asyncio.get_running_loop().time() + self.request_timeout_s
        pending = set(names)
        while pending:
            try:
                described = await admin.describe_topics(sorted(pending))
            except KafkaError:
                described = []
            for t in described:
                if (
                    t["error_code"] == 0
                    and t["partitions"]
                    and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
                ):
                    pending.discard(t["topic"])
            if not pending:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerUnavailableError(
                    f"topics {sorted(pending)} were created but had no leader after {self.request_timeout_s:g} s"
                )
            await asyncio.sleep(0.05)

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """The committed offset (the next offset the group will read) of ``group_id`` on
        ``topic``/``partition``, or None when the group has committed nothing there.

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
        """
        admin = await self._ensure_admin()
        tp = TopicPartition(topic, partition)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                offsets = await admin.list_consumer_group_offsets(group_id, partitions=[tp])
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, self.request_timeout_s) from exc
        except KafkaError as exc:
            raise BrokerError(f"reading committed offsets of {group_id!r} failed: {exc}") from exc
        meta = offsets.get(tp)
        if meta is None or meta.offset < 0:
            return None
        return int(meta.offset)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to be written}`` of ``topic`` (``{}`` for an unknown topic).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
        """
        admin = await self._ensure_admin()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                described = await admin.describe_topics([topic])
                parts = [
                    p["partition"]
                    for t in described
                    if t["topic"] == topic and t["error_code"] == 0
                    for p in t["partitions"]
                ]
                if not parts:
                    return {}
                async with self._helpers():  # two first calls at once must not both create one
                    if self._offsets_consumer is None:
                        consumer = AIOKafkaConsumer(
                            bootstrap_servers=self.bootstrap_servers,
                            client_id=self.client_id + "-offsets",
                            enable_auto_commit=False,
                            request_timeout_ms=int(self.request_timeout_s * 1000),
                        )
                        try:
                            await consumer.start()
                        except BaseException:
                            await _close_quietly(consumer.stop())
                            raise
                        self._offsets_consumer = consumer
                ends = await self._offsets_consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, self.request_timeout_s) from exc
        except KafkaError as exc:
            raise BrokerError(f"reading end offsets of {topic!r} failed: {exc}") from exc
        return {tp.partition: int(off) for tp, off in sorted(ends.items())}

    # ------------------------------------------------------------------ producing

    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish one record and wait for its acknowledgement (acks=all).

        ``value`` is JSON-encoded with orjson unless it is ``bytes`` (``None`` is a
        tombstone). The broker is started first if it was not.

        Raises:
            PublishError: refused, or not acknowledged within ``request_timeout_s`` seconds.
            BrokerUnavailableError: the broker was not started and cannot be reached.
            TypeError: ``value`` is not JSON-serialisable, or a bad key/header type.
        """
        data = encode_value(value)
        kbytes = encode_key(key)
        kheaders = headers_to_kafka(headers)
        producer = await self._ensure_producer()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                md = await producer.send_and_wait(topic, data, key=kbytes, headers=kheaders, timestamp_ms=timestamp_ms)
        except TimeoutError as exc:
            raise PublishError(
                f"no acknowledgement for a record to {topic!r} within {self.request_timeout_s:g} s"
            ) from exc
        except KafkaError as exc:
            raise PublishError(f"publishing to {topic!r} failed: {type(exc).__name__}: {exc}") from exc
        return record_metadata(md)

    async def emit_batch(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` records, in order, and wait until all are acknowledged.

        Raises:
            PublishError: any record was refused or not acknowledged within
                ``request_timeout_s`` seconds after the last one was handed to the producer.
            TypeError: a value is not JSON-serialisable (nothing of the batch is sent).
        """
        encoded = [(encode_key(k), encode_value(v)) for k, v in records]
        producer = await self._ensure_producer()
        futures: list[asyncio.Future[Any]] = []
        try:
            for kbytes, data in encoded:
                futures.append(await producer.send(topic, data, key=kbytes))
            async with asyncio.timeout(self.request_timeout_s):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError as exc:
            for fut in futures:
                fut.add_done_callback(_consume_exception)
            raise PublishError(
                f"no acknowledgement for {len(encoded)} record(s) to {topic!r} within {self.request_timeout_s:g} s"
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
        """An Observer that publishes each ``on_next`` value to ``topic`` (see :class:`reactive_services.adapters.BrokerSink`).

        Each publish is tracked on the source message being delivered, if any, so that
        message is committed only after the publish was acknowledged; failures are
        logged and raised by ``sink.flush()`` and :meth:`stop`.

        Args:
            topic: the topic to publish to.
            key: computes the record key from a value (None: no key).
        """
        sink = BrokerSink(self, topic, key=key)
        self._sinks.append(sink)
        return sink

    async def _dead_letter(self, msg: Message, error: BaseException) -> None:
        producer = await self._ensure_producer()
        target = dead_letter_topic(msg.topic)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await producer.send_and_wait(target, msg.raw, key=msg.key, headers=dead_letter_headers(msg, error))
        except TimeoutError as exc:
            raise PublishError(f"no acknowledgement for a dead letter to {target!r}") from exc
        except KafkaError as exc:
            raise PublishError(f"dead-lettering to {target!r} failed: {exc}") from exc
        log.warning(
            "%s[%d]@%d could not be decoded (%s); sent to %s", msg.topic, msg.partition, msg.offset, error, target
        )

    # ------------------------------------------------------------------ consuming

    def source(
        self,
        topics: str | Sequence[str],
        *,
        group_id: str,
        decode: Decoder = "json",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        stop: asyncio.Event | None = None,
        on_assigned: Callable[[], None] | None = None,
        concurrency: int = 1,
    ) -> Observable[Message]:
        """A cold Observable of the records of ``topics``, read in consumer group ``group_id``.

        Each subscription (made on a running event loop) starts an asyncio task with its
        own ``AIOKafkaConsumer`` (``enable_auto_commit=False``) that fetches up to
        ``max_batch`` records at a time and, for each record in order:

        1. decodes the value (``decode``: ``"json"``, ``None`` for raw bytes, or a callable);
           a record that does not decode is published raw to ``<topic>.DLT`` with
           :func:`dead_letter_headers`, counts as handled, and the stream goes on;
        2. calls ``on_next(message)`` and awaits the work the observer registered with
           ``message.track``;
        3. counts the message as handled; handled offsets (last handled + 1 per
           partition) are committed after fetched batches (see ``commit_interval_s``) and
           when the stream ends.

        Endings: ``stop`` set (or ``broker.stop()``) -> finish the current message,
        commit, close the consumer, ``on_completed``. ``on_next`` raising or tracked work
        failing -> that message is not committed, the consumer is closed, ``on_error(exc)``.
        Disposing -> the fetch or pending work is cancelled, handled offsets committed,
        the consumer closed, no terminal call (a message whose ``on_next`` disposed the
        subscription is not counted as handled). Failing to connect within
        ``connect_timeout_s`` -> ``on_error(BrokerUnavailableError)``.

        ``on_assigned``: called once, from the fetch loop, after the first fetch that
        finds partitions assigned, once ``consumer.position(tp)`` has resolved the
        position of every assigned partition (so with ``auto_offset_reset="latest"`` a
        record published after the call is never skipped).

        ``concurrency`` K > 1 (see :meth:`reactive_services.adapters.Broker.source`): up to K messages in
        flight; ``on_next`` is called one at a time, in fetched order, without awaiting the
        previous message's tracked work, except that a keyed message waits for the
        previous in-flight message of the same key and partition (the whole delivery waits
        meanwhile: head-of-line). Commits (every ``commit_interval_s`` and at the end) are
        each partition's lowest offset still in flight. While the window is full the
        source pauses its assigned partitions (``consumer.pause``) and keeps calling
        ``getmany(timeout_ms=0)`` at least every ``poll_timeout_s``, so fetching stops, the
        buffer stays at most one fetch (``max_batch`` records) and ``max_poll_interval_ms``
        is not exceeded however long a message is held; it resumes them when the buffer is
        empty. On revocation it waits up to ``revoke_timeout_s`` for the revoked
        partitions' messages in flight, commits what is contiguous-complete, and abandons
        the rest (redelivered to the new owner). ``stop`` waits for the messages in flight;
        after a failure the others get ``revoke_timeout_s`` seconds. With K = 1 the
        behaviour is the one described above (each message awaited before the next).
        Counters: :meth:`source_stats`.

        Raises:
            ConfigError: no topics, an empty ``group_id``, a bad ``decode``,
                ``auto_offset_reset`` or ``concurrency`` (raised here, not at subscription).
        """
        names = topic_list(topics)
        if not isinstance(group_id, str) or not group_id:
            raise ConfigError("group_id", "must be a non-empty string")
        if auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError("auto_offset_reset", f'must be "earliest" or "latest", not {auto_offset_reset!r}')
        decoder = resolve_decoder(decode)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError("concurrency", f"must be an int >= 1, got {concurrency!r}")

        def subscribe(observer: ObserverBase[Message], scheduler: SchedulerBase | None = None) -> DisposableBase:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                observer.on_error(RuntimeError("subscribe to a Kafka source from a running asyncio event loop"))
                return Disposable()
            run = _SourceRun(topics=names, group_id=group_id, observer=observer, stop=stop, on_assigned=on_assigned)
            run.stats = SourceStats(group_id, concurrency)
            # every source, K = 1 included, delivers through the in-flight window: the fetch
            # loop keeps polling (and so stays in the group) while a message is being handled
            run.window = InFlight(concurrency)
            run.task = loop.create_task(self._consume(run, decoder, auto_offset_reset))
            self._runs.add(run)
            run.task.add_done_callback(lambda t: self._source_done(run, t))
            return Disposable(run.dispose)

        return reactivex.create(subscribe)

    def source_stats(self, group_id: str | None = None) -> list[SourceStats]:
        """The live counters of the running source subscriptions (of ``group_id``, if given)."""
        return [r.stats for r in self._runs if r.stats is not None and group_id in (None, r.group_id)]

    def _source_done(self, run: _SourceRun, task: asyncio.Task[None]) -> None:
        self._runs.discard(run)
        if not task.cancelled() and task.exception() is not None:
            log.error("Kafka source %s crashed", run.topics, exc_info=task.exception())

    async def _commit(self, run: _SourceRun, only: set[TopicPartition] | None = None) -> None:
        """Commit the handled offsets of ``run`` not committed yet; failures are logged."""
        consumer = run.consumer
        if consumer is None:
            return
        window = run.window
        assert window is not None  # every source has one (set at subscribe)
        todo = window.tracker.to_commit()
        if only is not None:
            todo = {tp: off for tp, off in todo.items() if tp in only}
        if not todo:
            return
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await consumer.commit(todo)
        except (CommitFailedError, IllegalStateError) as exc:
            log.warning(
                "group %s: commit of %s failed after a rebalance (%s); those records will be redelivered",
                run.group_id,
                _fmt_offsets(todo),
                exc,
            )
            assigned = consumer.assignment()
            for tp in window.tracker.partitions():
                if tp not in assigned:
                    window.forget(tp)
        except (KafkaError, TimeoutError) as exc:
            log.warning("group %s: commit of %s failed: %s", run.group_id, _fmt_offsets(todo), exc)
        else:
            window.tracker.mark_committed(todo)

    async def _consume(self, run: _SourceRun, decoder: Callable[[bytes | None], Any], reset: str) -> None:
        observer = run.observer
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            group_id=run.group_id,
            enable_auto_commit=False,
            auto_offset_reset=reset,
            **{"request_timeout_ms": int(self.request_timeout_s * 1000), **self.consumer_options},
        )
        error: BaseException | None = None
        try:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await consumer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                await _close_quietly(consumer.stop())
                unavailable = self._unavailable(exc, self.connect_timeout_s)
                unavailable.__cause__ = exc
                run.terminating = True
                _signal(observer.on_error, unavailable)
                return
            run.consumer = consumer
            consumer.subscribe(topics=run.topics, listener=_Listener(self, run))
            error = await self._fetch_loop_concurrent(run, consumer, decoder)
        except asyncio.CancelledError:
            # Disposed (or broker.stop() gave up waiting): commit what was handled, close.
            run.terminating = True
            if run.window is not None:
                await _close_quietly(run.window.cancel())
            await _close_quietly(self._commit(run))
            await _close_quietly(consumer.stop())
            raise
        run.terminating = True
        await self._commit(run)
        await _close_quietly(consumer.stop())
        if run.detached:
            return
        if error is not None:
            _signal(observer.on_error, error)
        else:
            _signal(observer.on_completed)

    async def _fetch_loop_concurrent(
        self, run: _SourceRun, consumer: AIOKafkaConsumer, decoder: Callable[[bytes | None], Any]
    ) -> Exception | None:
        """Fetch and deliver through the in-flight window until stopped, then
        settle what is in flight; returns the error that ended it, if any."""
        window, stats = run.window, run.stats
        assert window is not None and stats is not None
        error = await self._deliver_concurrently(run, consumer, decoder, window, stats)
        if run.detached:
            await window.cancel()
        elif error is None:
            await window.drain()  # stop: finish what is in flight (broker.stop() bounds it)
            error = window.error
        elif not await window.drain(timeout=self.revoke_timeout_s):
            await window.cancel()
        stats.in_flight = len(window)
        return error

    async def _deliver_concurrently(
        self,
        run: _SourceRun,
        consumer: AIOKafkaConsumer,
        decoder: Callable[[bytes | None], Any],
        window: InFlight,
        stats: SourceStats,
    ) -> Exception | None:
        observer = run.observer
        poll_ms = max(1, int(self.poll_timeout_s * 1000))
        max_batch = self.max_batch
        interval = self.commit_interval_s
        last_commit = time.monotonic()
        current = current_message
        delivered = 0
        paused = False
        while not run.stopping():
            if window.error is not None:
                return window.error
            assigned = consumer.assignment()
            backlog = run.backlog
            while backlog and not run.stopping():
                record = backlog[0]
                tp = TopicPartition(record.topic, record.partition)
                if tp not in assigned or tp in run.revoking:  # revoked meanwhile
                    backlog.popleft()
                    continue
                if window.full() or window.key_busy(tp, record.key):
                    break  # blocked: wait for a message to settle (below)
                backlog.popleft()
                try:
                    value = decoder(record.value)
                except Exception as exc:  # noqa: BLE001 - any decoder failure dead-letters
                    try:
                        await self._dead_letter(message_from_record(record, None), exc)
                    except Exception as dlt_exc:  # noqa: BLE001 - ends the stream
                        return dlt_exc
                    window.skip(tp, record.offset)
                    continue
                msg = message_from_record(record, value)
                epoch = window.begin(tp, record.offset)
                token = current.set(msg)
                run.in_on_next = True
                try:
                    observer.on_next(msg)
                except Exception as exc:  # noqa: BLE001 - the observer's failure ends the stream
                    return exc
                finally:
                    run.in_on_next = False
                    current.reset(token)
                if run.detached:
                    window.abandon(tp, record.offset)
                    return None
                window.settle(msg, tp, epoch)
                stats.max_in_flight = max(stats.max_in_flight, len(window))
                delivered += 1
                if delivered % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the loop's other tasks run
                    assigned = consumer.assignment()
            if run.stopping():
                break
            if window.error is not None:
                return window.error
            stats.in_flight = len(window)
            stats.buffered = len(backlog)
            if backlog:
                # Blocked on a full window (or a busy key): stop fetching, but keep calling
                # getmany so that aiokafka does not count us idle (max_poll_interval_ms).
                consumer.pause(*consumer.assignment())
                if not paused:
                    paused = True
                    stats.pauses += 1
                stats.paused = frozenset(consumer.paused())
                await window.wait_changed(timeout=self.poll_timeout_s)
                batches = await consumer.getmany(timeout_ms=0, max_records=max_batch)
            else:
                if paused:
                    consumer.resume(*consumer.paused())
                    paused = False
                    stats.resumes += 1
                    stats.paused = frozenset(consumer.paused())
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=max_batch)
                failure = await self._signal_assigned(run, consumer)
                if failure is not None:
                    return failure
            for records in batches.values():
                backlog.extend(records)
            stats.buffered = len(backlog)
            stats.max_buffered = max(stats.max_buffered, stats.buffered)
            if time.monotonic() - last_commit >= interval:
                await self._commit(run)
                last_commit = time.monotonic()
        return None

    async def _signal_assigned(self, run: _SourceRun, consumer: AIOKafkaConsumer) -> Exception | None:
        """Call ``run.on_assigned`` once partitions are assigned and positioned."""
        if run.on_assigned is None or not consumer.assignment():
            return None
        try:
            for tp in consumer.assignment():  # resolve "latest"/committed positions first
                await consumer.position(tp)
        except IllegalStateError:
            return None  # revoked meanwhile: try again after the next fetch
        signal, run.on_assigned = run.on_assigned, None
        try:
            signal()
        except Exception as exc:  # noqa: BLE001 - the callback's failure ends the stream
            return exc
        return None


def _signal(fn: Callable[..., None], *args: Any) -> None:
    """Call an observer's terminal method; an exception from it is logged, not raised."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - e.g. reactivex's default on_error re-raises
        log.exception("observer of a Kafka source raised from %s", getattr(fn, "__name__", fn))


async def _close_quietly(aw: Any) -> None:
    try:
        await aw
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - closing must not mask the original error
        log.debug("ignored while closing: %r", exc)


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _fmt_offsets(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={off}" for tp, off in sorted(offsets.items()))
