"""Services in the NestJS manner: ``@event_pattern`` handlers, a consuming Microservice, a producer-only client.

NestJS                                    reactive-services
----------------------------------------  ------------------------------------------------
``@EventPattern('order.created')``        ``@event_pattern("order.created")``
``ClientsModule.register`` + ``emit``     ``ClientProxy(broker)`` + ``await client.emit(...)``
``app.connectMicroservice(...)``          ``Microservice(broker, [controller], name=...)``
``app.startAllMicroservices()``           ``await start_all_microservices(a, b, ...)``

An event pattern is a topic name. A handler is either

* a **payload handler** ``(self, payload)`` or ``(self, payload, message)``, plain or ``async def``:
  it runs once per record; an ``async`` one is awaited before the next record and before the
  offset is committed. If it raises, the record goes to ``<topic>.DLT`` with the reason in its
  headers and the stream goes on. A record that is not JSON goes there too, before any handler.
* a **pipeline handler** (``@event_pattern("logs", pipeline=True)``) ``(self, messages)``: it gets
  the ``Observable[Message]`` of the topic and returns an Observable built with operators
  (typically ending in ``ops.do(observer)`` where the Observer does the work). The runtime
  subscribes to it; it completes when the service stops, and its errors are recorded in
  :attr:`Microservice.errors` and logged.

Delivery is at-least-once: offsets are committed after the handler (and the work it
``track``-ed) finished, so after a crash a record may be handled again; handlers must be
idempotent (the shop's inventory keys its work by order id).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase

from adapters._message import Headers, Message, RecordMetadata, track
from adapters._sink import DeadLetterSink
from operators._decode_json import DeadLetter

from .errors import ConfigError

__all__ = [
    "ClientProxy",
    "Controller",
    "EventPatternSpec",
    "Microservice",
    "event_pattern",
    "start_all_microservices",
]

log = logging.getLogger("reactive_services.runtime")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class EventPatternSpec:
    """What ``@event_pattern`` records on a handler."""

    patterns: tuple[str, ...]
    pipeline: bool = False


def event_pattern(*patterns: str, pipeline: bool = False) -> Callable[[F], F]:
    """Mark a method as the handler of the events published on ``patterns`` (topic names).

    Args:
        patterns: one or more topic names, e.g. ``"order.created"``. A service's
            ``namespace`` is prepended to each when it subscribes.
        pipeline: False: the handler gets each payload; True: it gets the whole
            ``Observable[Message]`` of all its patterns once and returns the Observable to run.

    Raises:
        ConfigError: no pattern, or an empty one.
    """
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError("pattern", "an event pattern must be a non-empty topic name")

    def decorate(fn: F) -> F:
        fn.__event_pattern__ = EventPatternSpec(tuple(patterns), pipeline)  # type: ignore[attr-defined]
        return fn

    return decorate


class Controller:
    """Optional base class of objects holding ``@event_pattern`` handlers.

    Any object works as a controller; this base adds :meth:`handlers`.
    """

    def handlers(self) -> list[tuple[EventPatternSpec, Callable[..., Any]]]:
        return _handlers_of(self)


def _handlers_of(obj: Any) -> list[tuple[EventPatternSpec, Callable[..., Any]]]:
    found = []
    for name in dir(type(obj)):
        attr = getattr(type(obj), name, None)
        spec = getattr(attr, "__event_pattern__", None)
        if isinstance(spec, EventPatternSpec):
            found.append((spec, getattr(obj, name)))
    return found


class ClientProxy:
    """A producer-only client (NestJS ``ClientsModule.register`` + ``ClientKafka.emit``).

    Args:
        broker: any :class:`adapters.Broker`.
        own_broker: start the broker on :meth:`connect` and stop it on :meth:`close`.
        namespace: prepended to every pattern (e.g. ``"staging."``), as in :class:`Microservice`.
    """

    def __init__(self, broker: Any, *, own_broker: bool = False, namespace: str = "") -> None:
        self.broker = broker
        self.namespace = namespace
        self._own = own_broker
        self.emitted = 0

    async def connect(self) -> None:
        """Start the broker if this client owns it.

        Raises:
            BrokerUnavailableError: the broker cannot be reached.
        """
        if self._own:
            await self.broker.start()

    async def close(self) -> None:
        if self._own:
            await self.broker.stop()

    async def __aenter__(self) -> "ClientProxy":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def emit(
        self,
        pattern: str,
        data: Any,
        *,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish an event and wait for the broker's acknowledgement.

        Raises:
            PublishError: the broker refused it or did not answer in time.
        """
        meta: RecordMetadata = await self.broker.emit(
            self.namespace + pattern, data, key=key, headers=headers, timestamp_ms=timestamp_ms
        )
        self.emitted += 1
        return meta

    async def emit_batch(self, pattern: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` events; waits until all are acknowledged."""
        metas: list[RecordMetadata] = await self.broker.emit_batch(self.namespace + pattern, records)
        self.emitted += len(metas)
        return metas


class _Dispatch(ObserverBase[Message]):
    """Runs payload handlers for each message; failures are dead-lettered."""

    def __init__(self, service: "Microservice", handlers: dict[str, Callable[..., Any]]) -> None:
        self._service = service
        self._handlers = handlers
        self._wants_message = {t: _arity(h) >= 2 for t, h in handlers.items()}

    def on_next(self, message: Message) -> None:
        handler = self._handlers[message.topic]
        try:
            args = (message.value, message) if self._wants_message[message.topic] else (message.value,)
            result = handler(*args)
        except Exception as exc:
            self._service._dead_letter(message, exc)
            return
        self._service.handled[message.topic] = self._service.handled.get(message.topic, 0) + 1
        if inspect.isawaitable(result):
            track(self._guard(result, message))

    async def _guard(self, work: Awaitable[Any], message: Message) -> None:
        try:
            await work
        except Exception as exc:
            self._service.handled[message.topic] -= 1
            self._service._dead_letter(message, exc)

    def on_error(self, error: Exception) -> None:
        self._service._failed(error)

    def on_completed(self) -> None:
        pass


class _Done(ObserverBase[Any]):
    def __init__(self, service: "Microservice", done: asyncio.Event) -> None:
        self._service = service
        self._done = done

    def on_next(self, value: Any) -> None:
        pass

    def on_error(self, error: Exception) -> None:
        self._service._failed(error)
        self._done.set()

    def on_completed(self) -> None:
        self._done.set()


def _arity(fn: Callable[..., Any]) -> int:
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class Microservice:
    """A consuming microservice: its controllers' handlers subscribed to their topics.

    All payload handlers of a service share one source (one consumer of group
    ``group_id`` over all their topics, records handled one at a time); each pipeline
    handler gets a source of its own in the same group.

    Args:
        broker: any :class:`adapters.Broker` (started by the caller, or by :meth:`start`
            when ``own_broker`` is true).
        controllers: objects with ``@event_pattern`` methods.
        name: the service name (logs, metrics).
        group_id: the consumer group (default: ``name``).
        own_broker: start / stop the broker with the service.
        namespace: prepended to every pattern to form the topic name (``"run-7."`` +
            ``"order.created"``), so that several systems can share one broker.

    Attributes:
        handled: records handled without error, per topic.
        dead_lettered: records sent to a dead-letter topic, per original topic.
        errors: errors that ended a source or pipeline.

    Raises:
        ConfigError: no handler found, or two handlers for one pattern.
    """

    def __init__(
        self,
        broker: Any,
        controllers: Iterable[Any],
        *,
        name: str,
        group_id: str | None = None,
        own_broker: bool = False,
        namespace: str = "",
    ) -> None:
        self.broker = broker
        self.namespace = namespace
        self.name = name
        self.group_id = group_id or name
        self._own = own_broker
        self._payload: dict[str, Callable[..., Any]] = {}
        self._pipelines: list[tuple[list[str], Callable[..., Any]]] = []
        seen: set[str] = set()
        for controller in controllers:
            for spec, fn in _handlers_of(controller):
                topics = [namespace + p for p in spec.patterns]
                for topic, pattern in zip(topics, spec.patterns):
                    if topic in seen:
                        raise ConfigError("pattern", f"two handlers for {pattern!r} in service {name!r}")
                    seen.add(topic)
                    if not spec.pipeline:
                        self._payload[topic] = fn
                if spec.pipeline:
                    self._pipelines.append((topics, fn))
        if not self._payload and not self._pipelines:
            raise ConfigError("controllers", f"service {name!r} has no @event_pattern handler")
        self.handled: dict[str, int] = {}
        self.dead_lettered: dict[str, int] = {}
        self.errors: list[BaseException] = []
        self._stop = asyncio.Event()
        self._done: list[asyncio.Event] = []
        self._subscriptions: list[DisposableBase] = []
        self._dlt = DeadLetterSink(broker)
        self.started = False

    @property
    def patterns(self) -> list[str]:
        """Every topic this service consumes (namespace included)."""
        return sorted([*self._payload, *(t for topics, _ in self._pipelines for t in topics)])

    async def start(self) -> None:
        """Create the topics if needed and subscribe every handler.

        Raises:
            BrokerUnavailableError: the broker cannot be reached.
        """
        if self._own:
            await self.broker.start()
        await self.broker.create_topics(self.patterns)
        self._stop = asyncio.Event()
        if self._payload:
            done = asyncio.Event()
            source = self.broker.source(list(self._payload), group_id=self.group_id, stop=self._stop)
            dispatch = _Dispatch(self, self._payload)
            self._subscriptions.append(
                source.subscribe(
                    dispatch.on_next,
                    lambda e: (dispatch.on_error(e), done.set()),  # type: ignore[func-returns-value]
                    done.set,
                )
            )
            self._done.append(done)
        for topics, fn in self._pipelines:
            done = asyncio.Event()
            source = self.broker.source(topics, group_id=self.group_id, stop=self._stop)
            result = fn(source)
            if not isinstance(result, Observable):
                raise ConfigError(topics[0], f"pipeline handler {fn.__qualname__} must return an Observable")
            self._subscriptions.append(result.subscribe(_Done(self, done)))
            self._done.append(done)
        self.started = True

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop fetching, let every pipeline finish and complete, then flush dead letters.

        Waits at most ``timeout`` seconds for the sources to complete; what is still
        running then is disposed (its current record is not committed).

        Raises:
            PublishError: a dead letter could not be published.
        """
        self._stop.set()
        if self._done:
            waits = [asyncio.ensure_future(d.wait()) for d in self._done]
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for w in pending:
                w.cancel()
            if pending:
                log.warning("%s: %d source(s) did not complete within %.1f s", self.name, len(pending), timeout)
        for sub in self._subscriptions:
            sub.dispose()
        self._subscriptions.clear()
        self._done.clear()
        self.started = False
        try:
            await self._dlt.flush()
        finally:
            if self._own:
                await self.broker.stop()

    def _dead_letter(self, message: Message, error: BaseException) -> None:
        log.warning("%s: record %s[%d]@%d dead-lettered: %s", self.name, message.topic,
                    message.partition, message.offset, error)
        self.dead_lettered[message.topic] = self.dead_lettered.get(message.topic, 0) + 1
        self._dlt.on_next(DeadLetter(message, error))

    def _failed(self, error: BaseException) -> None:
        log.error("%s: stream failed: %s", self.name, error)
        self.errors.append(error)


async def start_all_microservices(*services: Microservice) -> None:
    """Start the services in order (NestJS ``app.startAllMicroservices()``)."""
    for service in services:
        await service.start()
