"""Prometheus metrics (``/metrics``) and a metering broker wrapper.

Two pieces, meant to be wired together by the process that serves HTTP (the gateway);
readiness (``/readyz``) is :mod:`reactive_services.readiness`::

    metrics = ServiceMetrics()
    broker = MeteredBroker(KafkaBroker("localhost:9092"), metrics)   # counts in / out
    services = [Microservice(broker, [Orders()], name="orders"), ...]
    metrics.watch_hub(ws_server)                                     # websocket gauges
    metrics.start_lag_refresh(broker, lambda: consumer_groups(services), interval_s=5.0)

    GET /metrics  -> metrics.render(), Content-Type: metrics.content_type

Exposed metrics (names follow the Prometheus conventions: ``_total`` for counters, base
units in the name)::

    rs_messages_in_total{topic,group}            counter  messages a source delivered to its observer
    rs_messages_out_total{topic}                 counter  records published and acknowledged
    rs_consumer_lag{group,topic,partition}       gauge    messages: end offset - committed offset
    rs_consumer_lag_refresh_errors_total         counter  failed lag refreshes (the gauge is then stale)
    rs_websocket_clients                         gauge    open websocket connections
    rs_websocket_slow_clients_closed_total       counter  clients closed because their queue overflowed
    rs_websocket_notifications_published_total   counter  notifications received by the hub(s)
    rs_websocket_notifications_delivered_total   counter  event frames written to clients
    rs_websocket_notifications_dropped_total     counter  event frames discarded by a drop policy
    rs_websocket_resumed_total                   counter  clients caught up from a cursor, then live
    rs_websocket_recoveries_failed_total         counter  recovery_failed frames (a cursor not honoured)
    rs_http_request_duration_seconds{route,method,status}  histogram  HTTP request latency

The message and websocket counters are not kept twice: :class:`MeteredBroker` keeps plain
integer tallies (a dict increment per message, no lock, no label lookup on the hot path)
and the websocket server and hub keep their own counters; custom collectors read them when
Prometheus scrapes (the pattern of prometheus_client's "custom collectors"). Only the lag
gauge and the latency histogram are prometheus_client metric objects.

Every :class:`ServiceMetrics` owns its own ``CollectorRegistry`` (not the process-global
one), so several can live in one process (tests, several gateways) without clashing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.disposable import Disposable

from reactive_services.adapters import (
    Batch,
    Broker,
    BrokerSource,
    Decoder,
    HeadersIn,
    Message,
    PayloadObserver,
    PayloadRoute,
    ProcessingGuarantee,
    RecordMetadata,
    payload_routes,
)

from .errors import ConfigError

__all__ = ["MeteredBroker", "ServiceMetrics", "SourceState"]

log = logging.getLogger("reactive_services.metrics")

#: The content type of :meth:`ServiceMetrics.render`'s output: the classic Prometheus text
#: format 0.0.4, which ``generate_latest`` writes and every Prometheus server reads.
#: (prometheus_client >= 0.22 sets ``CONTENT_TYPE_LATEST`` to ``version=1.0.0``, which only
#: its own content negotiation pairs with the same bytes; its default handler still answers
#: an ordinary scrape with 0.0.4, as we do.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency histogram buckets, in seconds (prometheus_client's defaults).
DEFAULT_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    float("inf"),
)


# --------------------------------------------------------------------------- the broker wrapper


@dataclass(eq=False)
class SourceState:
    """One live subscription to a :meth:`MeteredBroker.source` (see :attr:`MeteredBroker.sources`).

    Attributes:
        group_id: its consumer group.
        topics: the topics it reads.
        assigned: the broker called its ``on_assigned``: it has partitions assigned and
            positioned. The Broker protocol reports that once per subscription and does not
            say which partitions; a member that a rebalance leaves without partitions later
            still shows True.
    """

    group_id: str
    topics: tuple[str, ...]
    assigned: bool = False


class _Counting(PayloadObserver):
    """Counts each message, then hands the very same object on, synchronously.

    Being a plain Observer between the broker source and the subscriber (no scheduling,
    no copy), it leaves the delivery and commit semantics untouched: ``on_next`` runs in
    the source's call (so ``current_message`` / ``track`` still see the message), and an
    exception from downstream propagates back to the source as before. A subscriber that
    takes payloads (a service's payload handlers) gets them the same way, counted.
    """

    __slots__ = ("_downstream", "_counts", "_group", "_ended")

    def __init__(
        self,
        downstream: ObserverBase[Message],
        counts: defaultdict[tuple[str, str], int],
        group: str,
        ended: Callable[[], None],
    ) -> None:
        self._downstream = downstream
        self._counts = counts
        self._group = group
        self._ended = ended

    def on_next(self, message: Message | Batch) -> None:
        if isinstance(message, Batch):  # a batch source: count its records
            self._counts[(message.topic, self._group)] += len(message)
        else:
            self._counts[(message.topic, self._group)] += 1
        self._downstream.on_next(message)  # type: ignore[arg-type]  # the same shape it came in

    def payload_route(self, topic: str) -> PayloadRoute | None:
        routes = payload_routes(self._downstream)
        route = routes(topic) if routes is not None else None
        if route is None:
            return None
        counts, key, call = self._counts, (topic, self._group), route.call

        def counted(value: Any) -> Any:
            counts[key] += 1
            return call(value)

        return PayloadRoute(counted, route.failed, route.handled)

    def on_error(self, error: Exception) -> None:
        self._ended()
        self._downstream.on_error(error)

    def on_completed(self) -> None:
        self._ended()
        self._downstream.on_completed()


class MeteredBroker:
    """A :class:`reactive_services.adapters.Broker` that delegates everything to ``broker`` and counts messages.

    - **out**: records published through :meth:`emit` / :meth:`emit_batch` and acknowledged,
      per topic, plus the ``sent`` count of every sink made by :meth:`sink` (the sink itself
      is ``broker``'s, so ``broker.stop()`` still flushes it). Failed publishes are not counted.
      Records the wrapped broker publishes on its own (dead letters of undecodable records)
      are not counted either.
    - **in**: messages each :meth:`source` subscription delivered to its observer, per topic
      and consumer group (a message redelivered after a failure counts again). The Message
      objects pass through untouched and synchronously; offsets are committed exactly when
      they would be without the wrapper.
    - **assignment**: which subscriptions are live and had partitions assigned
      (``on_assigned``), for :func:`reactive_services.readiness.readiness`.

    Any other attribute (``records``, ``assignment``, ``source_stats``...) is read from ``broker``.

    Args:
        broker: the broker to wrap (started by the caller, or by :meth:`start`).
        metrics: the :class:`ServiceMetrics` whose ``rs_messages_in_total`` /
            ``rs_messages_out_total`` report this wrapper's counts (None: count only).
    """

    def __init__(self, broker: Broker, metrics: ServiceMetrics | None = None) -> None:
        self.broker = broker
        self._in: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._out: defaultdict[str, int] = defaultdict(int)
        self._sinks: list[tuple[str, ObserverBase[Any]]] = []
        self._sources: list[SourceState] = []
        if metrics is not None:
            metrics.watch_broker(self)

    def __repr__(self) -> str:
        return f"<MeteredBroker {self.broker!r}>"

    def __getattr__(self, name: str) -> Any:
        # only called for names not found on the wrapper: the wrapped broker's extras
        if name == "broker":  # not set yet (during __init__ / unpickling)
            raise AttributeError(name)
        return getattr(self.broker, name)

    @property
    def kind(self) -> str:
        """The wrapped broker's kind (``"memory"`` or ``"kafka"``)."""
        return self.broker.kind

    @property
    def started(self) -> bool:
        """Whether the wrapped broker is started (its own flag)."""
        return self.broker.started

    # -- counts ----------------------------------------------------------------------------
    @property
    def messages_in(self) -> dict[tuple[str, str], int]:
        """``{(topic, group): messages delivered}`` so far (a snapshot)."""
        return dict(self._in)

    @property
    def messages_out(self) -> dict[str, int]:
        """``{topic: records acknowledged}`` so far, sinks included (a snapshot)."""
        out = dict(self._out)
        for topic, sink in list(self._sinks):
            sent = int(getattr(sink, "sent", 0))
            if sent:
                out[topic] = out.get(topic, 0) + sent
        return out

    @property
    def sources(self) -> list[SourceState]:
        """The live source subscriptions, oldest first (a new list; the states are live)."""
        return list(self._sources)

    def assigned(self, group_id: str, topics: str | Iterable[str] | None = None) -> bool:
        """Whether a live subscription of ``group_id`` (reading exactly ``topics``, when
        given) has had partitions assigned."""
        want = None if topics is None else frozenset((topics,) if isinstance(topics, str) else topics)
        return any(
            s.assigned and s.group_id == group_id and (want is None or frozenset(s.topics) == want)
            for s in self._sources
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the wrapped broker."""
        await self.broker.start()

    async def stop(self) -> None:
        """Stop the wrapped broker (its sources complete, its sinks flush)."""
        await self.broker.stop()

    async def __aenter__(self) -> MeteredBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- delegated as they are -------------------------------------------------------------
    async def create_topics(
        self, topics: Sequence[str], *, partitions: int = 3, config: Mapping[str, str] | None = None
    ) -> None:
        await self.broker.create_topics(topics, partitions=partitions, config=config)

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        return await self.broker.committed(group_id, topic, partition)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return await self.broker.end_offsets(topic)

    # -- producing (counted) ---------------------------------------------------------------
    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """``broker.emit``; counts the record once acknowledged."""
        meta = await self.broker.emit(topic, value, key=key, headers=headers, timestamp_ms=timestamp_ms)
        self._out[topic] += 1
        return meta

    async def emit_batch(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """``broker.emit_batch``; counts the records once all are acknowledged."""
        metas = await self.broker.emit_batch(topic, records)
        self._out[topic] += len(metas)
        return metas

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> ObserverBase[Any]:
        """``broker.sink``; its acknowledged records (``sink.sent``) count as out."""
        sink = self.broker.sink(topic, key=key)
        self._sinks.append((topic, sink))
        return sink

    # -- consuming (counted) ---------------------------------------------------------------
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
        on_closed: Callable[[], None] | None = None,
        processing_guarantee: ProcessingGuarantee = "at_least_once",
    ) -> Observable[Message]:
        """``broker.source`` with each delivered message counted; see :meth:`reactive_services.adapters.Broker.source`.

        Each subscription subscribes to a source of its own from ``broker`` (the wrapper
        needs to know *which* subscription ``on_assigned`` is about), with an
        ``on_assigned`` that records the assignment and then calls yours.

        Raises:
            ConfigError: as ``broker.source`` (raised here, at the call).
        """
        return self._metered(
            self.broker.source,
            topics,
            group_id,
            on_assigned,
            decode=decode,
            auto_offset_reset=auto_offset_reset,
            stop=stop,
            concurrency=concurrency,
            on_closed=on_closed,
            processing_guarantee=processing_guarantee,
        )

    def source_batches(
        self,
        topics: str | Sequence[str],
        *,
        group_id: str,
        decode: Decoder = "json",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        stop: asyncio.Event | None = None,
        on_assigned: Callable[[], None] | None = None,
        concurrency: int = 1,
        on_closed: Callable[[], None] | None = None,
        processing_guarantee: ProcessingGuarantee = "at_least_once",
    ) -> Observable[Batch]:
        """``broker.source_batches`` with each record of each batch counted, as :meth:`source`.

        Raises:
            ConfigError: as ``broker.source_batches`` (raised here, at the call).
        """
        return self._metered(
            self.broker.source_batches,
            topics,
            group_id,
            on_assigned,
            decode=decode,
            auto_offset_reset=auto_offset_reset,
            stop=stop,
            concurrency=concurrency,
            on_closed=on_closed,
            processing_guarantee=processing_guarantee,
        )

    def _metered(
        self,
        open_source: Callable[..., Observable[Any]],
        topics: str | Sequence[str],
        group_id: str,
        on_assigned: Callable[[], None] | None,
        **options: Any,
    ) -> Observable[Any]:
        """``open_source(topics, group_id=..., on_assigned=..., **options)`` (the wrapped broker's
        ``source`` or ``source_batches``), counted, one wrapped source per subscription."""
        names = (topics,) if isinstance(topics, str) else tuple(topics)

        def make(assigned: Callable[[], None] | None) -> Observable[Any]:
            return open_source(topics, group_id=group_id, on_assigned=assigned, **options)

        make(on_assigned)  # validate now, as the wrapped broker does

        def subscribe(observer: ObserverBase[Any], scheduler: SchedulerBase | None = None) -> DisposableBase:
            state = SourceState(group_id, names)

            def assigned() -> None:
                state.assigned = True
                if on_assigned is not None:
                    on_assigned()

            def ended() -> None:
                try:
                    self._sources.remove(state)
                except ValueError:
                    pass

            self._sources.append(state)
            source, counting = make(assigned), _Counting(observer, self._in, group_id, ended)
            if isinstance(source, BrokerSource):  # no auto-detaching wrapper: the source sees the payload routes
                inner = source.subscribe_observer(counting)
            else:
                inner = source.subscribe(counting, scheduler=scheduler)

            def dispose() -> None:
                ended()
                inner.dispose()

            return Disposable(dispose)

        return BrokerSource(subscribe)


# --------------------------------------------------------------------------- the metrics


class _BrokerCollector(Collector):
    """``rs_messages_in_total`` / ``rs_messages_out_total`` read from the watched brokers."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                "rs_messages_in_total",
                "Messages a broker source delivered to its observer (redeliveries count again).",
                labels=["topic", "group"],
            ),
            CounterMetricFamily(
                "rs_messages_out_total", "Records published and acknowledged by the broker.", labels=["topic"]
            ),
        )

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[CounterMetricFamily]:
        fam_in, fam_out = self._families()
        ins: dict[tuple[str, str], int] = defaultdict(int)
        outs: dict[str, int] = defaultdict(int)
        for broker in list(self._metrics._brokers):
            for key, n in broker.messages_in.items():
                ins[key] += n
            for topic, n in broker.messages_out.items():
                outs[topic] += n
        for (topic, group), n in sorted(ins.items()):
            fam_in.add_metric([topic, group], n)
        for topic, n in sorted(outs.items()):
            fam_out.add_metric([topic], n)
        yield fam_in
        yield fam_out


class _WebSocketCollector(Collector):
    """The websocket gauges and counters, read from the watched servers and hubs at scrape time."""

    _NAMES = (
        ("rs_websocket_clients", "gauge", "Open websocket connections."),
        (
            "rs_websocket_slow_clients_closed_total",
            "counter",
            "Websocket clients closed because their outgoing queue overflowed.",
        ),
        ("rs_websocket_notifications_published_total", "counter", "Notifications received by the hub(s)."),
        ("rs_websocket_notifications_delivered_total", "counter", "Event frames written to websocket clients."),
        (
            "rs_websocket_notifications_dropped_total",
            "counter",
            "Event frames discarded from client queues by a drop_oldest / keep_latest policy.",
        ),
        ("rs_websocket_resumed_total", "counter", "Websocket clients caught up from a cursor (since), then live."),
        (
            "rs_websocket_recoveries_failed_total",
            "counter",
            "recovery_failed frames: a since cursor that could not be honoured (too old, other epoch...).",
        ),
    )

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def _families(self, values: Sequence[float] | None) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for i, (name, kind, doc) in enumerate(self._NAMES):
            value = None if values is None else values[i]
            if kind == "gauge":
                yield GaugeMetricFamily(name, doc, value=value)
            else:
                yield CounterMetricFamily(name, doc, value=value)

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self._families(None)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        watched = list(self._metrics._websockets)
        if not watched:
            return
        servers = {id(s): s for s, _ in watched if s is not None}
        hubs = {id(h): h for _, h in watched if h is not None}
        clients = sum(len(s.clients) for s in servers.values())
        if servers:  # the server's count covers all its hubs (and replies)
            slow = sum(int(getattr(s, "slow_clients_closed", 0)) for s in servers.values())
        else:
            slow = sum(int(getattr(h, "slow_clients_closed", 0)) for h in hubs.values())
        published = sum(_total(getattr(h, "published", 0)) for h in hubs.values())
        delivered = sum(int(getattr(h, "delivered", 0)) for h in hubs.values())
        dropped = sum(int(getattr(h, "dropped", 0)) for h in hubs.values())
        logs = [log for h in hubs.values() if (log := getattr(h, "log", None)) is not None]
        resumed = sum(int(getattr(log, "resumed", 0)) for log in logs)
        failed = sum(int(getattr(log, "recoveries_failed", 0)) for log in logs)
        yield from self._families((clients, slow, published, delivered, dropped, resumed, failed))


def _total(count: Any) -> int:
    """An int, or the sum of a ``{key: int}`` mapping (copied first: another thread may add keys)."""
    if isinstance(count, Mapping):
        return sum(dict(count).values())
    return int(count)


class ServiceMetrics:
    """The Prometheus metrics of one process, in a registry of their own.

    See the module docstring for the metric names and labels.

    Args:
        registry: where to register (default: a new ``CollectorRegistry``, not the global one).
        latency_buckets_s: upper bounds of the latency histogram buckets, in seconds.

    Attributes:
        registry: the ``CollectorRegistry`` holding every metric below.
        content_type: the ``Content-Type`` to send :meth:`render`'s bytes with.
        consumer_lag: the ``rs_consumer_lag`` Gauge (set by :meth:`refresh_lag`).
        request_duration: the ``rs_http_request_duration_seconds`` Histogram.
        lag_refresh_errors: the ``rs_consumer_lag_refresh_errors_total`` Counter.
    """

    content_type: str = CONTENT_TYPE

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        latency_buckets_s: Sequence[float] = DEFAULT_LATENCY_BUCKETS_S,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._brokers: list[MeteredBroker] = []
        self._websockets: list[tuple[Any, Any]] = []  # (server or None, hub or None)
        self._lag_task: asyncio.Task[None] | None = None
        self._lag_series: set[tuple[str, str, str]] = set()
        self.consumer_lag = Gauge(
            "rs_consumer_lag",
            "Messages not yet consumed: end offset - committed offset (no commit yet: from offset 0).",
            ["group", "topic", "partition"],
            registry=self.registry,
        )
        self.lag_refresh_errors = Counter(
            "rs_consumer_lag_refresh_errors_total",
            "Consumer-lag refreshes that failed (rs_consumer_lag then keeps its last values).",
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "rs_http_request_duration_seconds",
            "HTTP request latency, from the request's arrival to its response, in seconds.",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=tuple(latency_buckets_s),
        )
        self.registry.register(_BrokerCollector(self))
        self.registry.register(_WebSocketCollector(self))

    # -- sources of counts -----------------------------------------------------------------
    def watch_broker(self, broker: MeteredBroker) -> None:
        """Report ``broker``'s message counts (several brokers' counts add up)."""
        if not any(b is broker for b in self._brokers):
            self._brokers.append(broker)

    def watch_hub(self, target: Any) -> None:
        """Report the websocket metrics of a :class:`~reactive_services.adapters.websocket.WebSocketServer`
        (and its default ``hub``) or of a :class:`~reactive_services.adapters.websocket.NotificationHub`
        (and its ``server``), read at each scrape.

        Read duck-typed: a server has ``clients`` (a sized collection),
        ``slow_clients_closed`` and ``hub``; a hub has ``published`` (an int or a
        ``{channel: int}`` mapping), ``delivered``, ``dropped``, ``slow_clients_closed`` and
        ``server``. Watching several hubs of one server counts its clients once.
        """
        if hasattr(target, "published") and hasattr(target, "delivered"):
            hub, server = target, getattr(target, "server", None)
        else:
            server, hub = target, getattr(target, "hub", None)
        if not any(s is server and h is hub for s, h in self._websockets):
            self._websockets.append((server, hub))

    # -- HTTP latency ----------------------------------------------------------------------
    def observe_request(self, route: str, method: str, status: int | str, seconds: float) -> None:
        """Record one HTTP request's latency.

        Args:
            route: the route *template* (``"/orders/{order_id}"``), not the raw path: every
                distinct value is a time series.
            method: the HTTP method (upper-cased here).
            status: the response status code.
            seconds: from the request's arrival to the end of its response.
        """
        self.request_duration.labels(route=route, method=method.upper(), status=str(status)).observe(seconds)

    # -- consumer lag ----------------------------------------------------------------------
    async def refresh_lag(
        self, broker: Broker, groups_topics: Mapping[str, Iterable[str]]
    ) -> dict[tuple[str, str, int], int]:
        """Read end and committed offsets and set ``rs_consumer_lag`` for every partition.

        Lag of a partition = ``end_offsets(topic)[p] - committed(group, topic, p)``, in
        messages, at least 0; a group that has committed nothing there counts from offset
        0 (what ``auto_offset_reset="earliest"`` would read). Committed offsets trail the
        handled ones by up to the broker's commit interval (Kafka: ``commit_interval_s``).
        A broker without a log that has ``queue_depths(group, topic)`` (RabbitMQ) gives the
        messages waiting in the group's queue of each partition instead (those delivered and not
        acknowledged yet not counted). Series of these groups' partitions that no longer exist
        are removed.

        Args:
            broker: where to read offsets (any :class:`reactive_services.adapters.Broker`).
            groups_topics: ``{consumer group: topics}``, e.g.
                :func:`reactive_services.readiness.consumer_groups`.

        Returns:
            ``{(group, topic, partition): lag}``.

        Raises:
            BrokerError: the broker did not answer (the gauge keeps its previous values).
        """
        wanted = {group: list(dict.fromkeys(topics)) for group, topics in groups_topics.items()}
        depths = getattr(broker, "queue_depths", None)
        if depths is not None:  # a queue broker: what waits in each partition's queue
            pairs = [(g, t) for g, ts in wanted.items() for t in ts]
            found = await asyncio.gather(*(depths(g, t) for g, t in pairs))
            lag = {
                (g, t, p): n for (g, t), by_partition in zip(pairs, found, strict=True) for p, n in by_partition.items()
            }
        else:
            lag = await self._offset_lag(broker, wanted)
        # no await from here on: a scrape never sees half an update
        fresh = {(g, t, str(p)) for g, t, p in lag}
        for series in [s for s in self._lag_series if s[0] in wanted and s not in fresh]:
            self.consumer_lag.remove(*series)
            self._lag_series.discard(series)
        for (g, t, p), n in lag.items():
            self.consumer_lag.labels(group=g, topic=t, partition=str(p)).set(n)
        self._lag_series |= fresh
        return lag

    @staticmethod
    async def _offset_lag(broker: Broker, wanted: dict[str, list[str]]) -> dict[tuple[str, str, int], int]:
        """End minus committed offsets of every partition of ``wanted``'s topics (see :meth:`refresh_lag`)."""
        topics = sorted({t for ts in wanted.values() for t in ts})
        ends = dict(zip(topics, await asyncio.gather(*(broker.end_offsets(t) for t in topics)), strict=True))
        keys = [(g, t, p, end) for g, ts in wanted.items() for t in ts for p, end in sorted(ends[t].items())]
        limit = asyncio.Semaphore(8)  # at most 8 offset requests at once

        async def committed(group: str, topic: str, partition: int) -> int | None:
            async with limit:
                return await broker.committed(group, topic, partition)

        offsets = await asyncio.gather(*(committed(g, t, p) for g, t, p, _ in keys))
        return {(g, t, p): max(0, end - (c or 0)) for (g, t, p, end), c in zip(keys, offsets, strict=True)}

    async def run_lag_refresh(
        self,
        broker: Broker,
        groups_topics: Mapping[str, Iterable[str]] | Callable[[], Mapping[str, Iterable[str]]],
        *,
        interval_s: float = 5.0,
    ) -> None:
        """Call :meth:`refresh_lag` every ``interval_s`` seconds until cancelled (for a task group).

        ``groups_topics`` may be a callable, called before each refresh (so services
        started later are included). A failed refresh is logged and counted in
        ``rs_consumer_lag_refresh_errors_total``; the loop goes on.

        Raises:
            ConfigError: ``interval_s`` is not > 0.
        """
        if not interval_s > 0:
            raise ConfigError("interval_s", f"must be > 0 seconds, got {interval_s!r}")
        while True:
            try:
                groups = groups_topics() if callable(groups_topics) else groups_topics
                await self.refresh_lag(broker, groups)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged and counted; the next refresh may work
                self.lag_refresh_errors.inc()
                log.warning("consumer lag refresh failed: %s", exc)
            await asyncio.sleep(interval_s)

    def start_lag_refresh(
        self,
        broker: Broker,
        groups_topics: Mapping[str, Iterable[str]] | Callable[[], Mapping[str, Iterable[str]]],
        *,
        interval_s: float = 5.0,
    ) -> asyncio.Task[None]:
        """Run :meth:`run_lag_refresh` in a background task until :meth:`stop`.

        Returns:
            the task (it only ends by :meth:`stop`; failures inside are logged and counted).

        Raises:
            ConfigError: ``interval_s`` is not > 0.
            RuntimeError: a refresh task is already running, or no event loop is running.
        """
        if not interval_s > 0:
            raise ConfigError("interval_s", f"must be > 0 seconds, got {interval_s!r}")
        if self._lag_task is not None and not self._lag_task.done():
            raise RuntimeError("a lag refresh task is already running; stop() it first")
        task = asyncio.get_running_loop().create_task(
            self.run_lag_refresh(broker, groups_topics, interval_s=interval_s), name="rs-consumer-lag-refresh"
        )
        task.add_done_callback(_log_unexpected_end)
        self._lag_task = task
        return task

    async def stop(self) -> None:
        """Cancel the lag refresh task, if any, and wait for it to end."""
        task, self._lag_task = self._lag_task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():  # we were cancelled ourselves
                raise

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> bytes:
        """Every metric in the Prometheus text format (send with :attr:`content_type`)."""
        return generate_latest(self.registry)


def _log_unexpected_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("consumer lag refresh task ended", exc_info=task.exception())


#: Names this module had before readiness moved to a module of its own.
_MOVED = {name: "reactive_services.readiness" for name in ("consumer_groups", "readiness", "ready")}


def __getattr__(name: str) -> Any:
    """Name the new home of a moved name instead of a bare "cannot import name".

    Raises:
        ImportError: ``name`` moved (the message says where).
        AttributeError: no such name.
    """
    if name in _MOVED:
        raise ImportError(f"{name} moved: import it from {_MOVED[name]} (see docs/upgrading.md)", name=name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
