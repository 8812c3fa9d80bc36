"""Services in the NestJS manner: ``@event_pattern`` / ``@message_pattern`` handlers, a Microservice, a client.

NestJS                                        reactive-services
--------------------------------------------  ------------------------------------------------
``@EventPattern('order.created')``            ``@event_pattern("order.created")``
``@MessagePattern('inventory.get_stock')``    ``@message_pattern("inventory.get_stock")``
``ClientsModule.register`` + ``emit``         ``ClientProxy(broker)`` + ``await client.emit(...)``
``client.subscribeToResponseOf(p)``           ``client.subscribe_to_response_of(p)`` (optional)
``client.send(p, data)``                      ``client.send(p, data)`` (an Observable; or ``await`` it)
``app.connectMicroservice(...)``              ``Microservice(broker, [controller], name=...)``
``app.startAllMicroservices()``               ``await start_all_microservices(a, b, ...)``

An event pattern is a topic name. A handler is either

* a **payload handler** ``(self, payload)`` or ``(self, payload, message)``, plain or ``async def``:
  it runs once per record; an ``async`` one is awaited before the next record's handler and
  before the offset is committed (with ``concurrency=1``, by the source itself, as
  ``async for record in consumer: await handler(record)`` would). If it raises, the record goes
  to ``<topic>.DLT`` with the reason in its headers and the stream goes on. A record that is
  not JSON goes there too, before any handler.
* a **pipeline handler** (``@event_pattern("logs", pipeline=True)``) ``(self, messages)``: it gets
  the ``Observable[Message]`` of the topic and returns an Observable built with operators
  (typically ending in ``ops.do(observer)`` where the Observer does the work). The runtime
  subscribes to it; it completes when the service stops, and its errors are recorded in
  :attr:`Microservice.errors` and logged.

Delivery is at-least-once: offsets are committed after the handler (and the work it
``track``-ed) finished, so after a crash a record may be handled again; handlers must be
idempotent (the shop's inventory keys its work by order id).

Request-reply (``@message_pattern`` + ``ClientProxy.send``)
-----------------------------------------------------------
A message pattern is a request topic. A service with ``@message_pattern`` handlers consumes
its request topics (one source, group ``<group_id>.requests``); for each request it runs the handler
(``(self, payload)`` or ``(self, payload, message)``, plain or ``async def``; a returned
Observable counts by its **last** value) and publishes the reply to the topic named in the
request's ``reply-topic`` header (``<request topic>.reply`` if absent) with the headers
``correlation-id`` (copied) and ``reply-status: ok|error``. A handler that raises gives an
error reply ``{"error": {"type": <class name>, "message": <str(exc)>}}``, which the client
raises as :class:`~reactive_services.errors.RemoteError`. The request's offset is committed
after its reply was acknowledged. Wire format: :mod:`reactive_services._request_reply`.

``client.send(pattern, payload, timeout=10.0)`` returns a cold Observable: each subscription
publishes one request with a fresh correlation id (uuid4 hex) and emits the reply once, then
completes; ``await client.send(...)`` does the same and returns the reply value. No reply
within ``timeout`` seconds (publishing included): :class:`RequestTimeoutError`.

How each client instance gets only its own replies, also across rebalances: every
``ClientProxy`` instance reads each reply topic in a **consumer group of its own**,
``<client_id>-replies-<uuid4 hex>``, with ``auto_offset_reset="latest"``. Being the only
member of its group, it is assigned every partition of the reply topic, and no rebalance of
any other group (services scaling, other clients joining or leaving) can move those
partitions to another instance; it starts at the end of the topic, so it never reads older
replies. Every instance therefore sees every reply on the topic and keeps only those whose
correlation id it sent and still waits for; the others are dropped and counted in
:attr:`ClientProxy.unexpected_replies`. (The alternative, one shared group with replies
routed to a partition per instance as NestJS does, breaks when a rebalance moves that
partition; reading every reply costs each client the whole reply topic's traffic instead,
which is right for the modest request rates of request-reply.)

Readiness: a request is published only after the client's reply consumer for its reply
topic is *ready*, i.e. the broker's source called ``on_assigned`` (partitions assigned and
positions resolved to the end), so a reply can never be published before the position the
consumer will read from. ``await client.connect()`` starts and waits for the reply consumers
of the patterns named with :meth:`ClientProxy.subscribe_to_response_of`; ``send`` for any
other pattern (or before ``connect``) connects lazily: it starts that reply consumer and
waits for it (at most ``ready_timeout`` seconds) before publishing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import pydantic
import reactivex
from opentelemetry import context as otel_context
from opentelemetry import trace
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase
from reactivex.disposable import Disposable

from reactive_services.adapters import (
    DLT_SUFFIX,
    Broker,
    BrokerSource,
    DeadLetter,
    DeadLetterSink,
    Decoder,
    HeadersIn,
    Message,
    OffsetReset,
    PayloadObserver,
    PayloadRoute,
    ProcessingGuarantee,
    RecordMetadata,
    check_auto_offset_reset,
    check_processing_guarantee,
    current_message,
    declare_group,
    payload_routes,
    track,
)
from reactive_services.adapters.tracing import (
    extract_context,
    process_span,
    record_failure,
    start_process_span,
    tracing_enabled,
)
from reactive_services.operators import backoff_delay, decode_json, retry_with_backoff

from ._payloads import FROM_ANNOTATION, PayloadModel, check_handler, payload_model, pipeline_model, takes_message
from ._request_reply import (
    MessagePatternSpec,
    ReplyObservable,
    Requester,
    Responder,
    message_handlers_of,
    message_pattern,
    wait_visible,
)
from .errors import ConfigError

__all__ = [
    "ClientProxy",
    "Controller",
    "EventPatternSpec",
    "MessagePatternSpec",
    "Microservice",
    "ReplyObservable",
    "event_pattern",
    "message_pattern",
    "start_all_microservices",
]

log = logging.getLogger("reactive_services.runtime")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class EventPatternSpec:
    """What ``@event_pattern`` records on a handler.

    Attributes:
        patterns: the topic names (without the service's namespace).
        pipeline: the handler gets the whole Observable (see :func:`event_pattern`).
        model: the payload type to validate with, None for none, or ``FROM_ANNOTATION``.
        emits: ``((topic, payload type or None), ...)``: the topics the handler publishes to
            (declared for the service's description: AsyncAPI, topology), without namespace.
        batches: the pipeline handler gets ``Observable[Batch]`` (see :func:`event_pattern`).
    """

    patterns: tuple[str, ...]
    pipeline: bool = False
    model: Any = FROM_ANNOTATION
    emits: tuple[tuple[str, Any], ...] = ()
    batches: bool = False


#: What ``emits=`` accepts: topic names, or ``{topic: payload type or None}``.
Emits: TypeAlias = Mapping[str, Any] | Iterable[str]


def declared_topics(emits: Emits | None, key: str) -> tuple[tuple[str, Any], ...] | None:
    """``emits=`` as ``((topic, payload type or None), ...)`` in the order given (None: None).

    Raises:
        ConfigError: a topic that is not a non-empty string (``key`` names the argument), or
            ``emits`` given as one string (a common slip for a tuple of one).
    """
    if emits is None:
        return None
    if isinstance(emits, str | bytes):
        raise ConfigError(key, f"must be topic names or {{topic: payload type}}, not one string: ({emits!r},)?")
    pairs = list(emits.items()) if isinstance(emits, Mapping) else [(topic, None) for topic in emits]
    for topic, _ in pairs:
        if not isinstance(topic, str) or not topic:
            raise ConfigError(key, f"a topic must be a non-empty string, got {topic!r}")
    return tuple(pairs)


_NAMESPACE = re.compile(r"[A-Za-z0-9._-]*[._-]")

#: The longest topic name Kafka accepts, in characters.
MAX_TOPIC_CHARS = 249
#: The suffix of the default reply topic of a request pattern (``<pattern>.reply``).
_REPLY_SUFFIX = ".reply"


def check_namespace(namespace: Any, topics: Iterable[str] = ()) -> str:
    """``namespace`` if it is ``""`` or a topic-name prefix ending with ``.``, ``-`` or ``_``,
    short enough that every name of ``topics`` (without namespace) prefixed with it is a
    topic name Kafka accepts (at most :data:`MAX_TOPIC_CHARS` characters).

    It is prepended to topic names as is, so ``"t1"`` would turn ``orders`` into ``t1orders``.

    Args:
        namespace: the namespace to check.
        topics: the topic names it will prefix, dead-letter and reply topics included
            (:func:`service_topics`).

    Raises:
        ConfigError: key ``"namespace"``: not such a prefix, e.g. ``'t1' must end with '.',
            '-' or '_' (e.g. 't1.')``; or too long, e.g. ``240 characters ('aaaaaaaaaaaaaaaaaaaa'...):
            with it the topic 'orders.DLT' would have 250 characters, more than Kafka's 249
            (at most 239 here)``. Key ``"pattern"``: a name of ``topics`` is longer than 249
            characters by itself.
    """
    longest = max(topics, key=len, default="")
    if len(longest) > MAX_TOPIC_CHARS:
        raise ConfigError(
            "pattern", f"{longest[:40]!r}... has {len(longest)} characters, more than Kafka's {MAX_TOPIC_CHARS}"
        )
    if namespace == "":
        return ""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        fixed = namespace + "." if isinstance(namespace, str) else ""
        hint = f" (e.g. {fixed!r})" if _NAMESPACE.fullmatch(fixed) else ""  # only a hint that is valid
        raise ConfigError(
            "namespace",
            f"{namespace!r} must be letters, digits, '.', '-', '_' ending with '.', '-' or '_'{hint}: "
            "it is prepended to topic names as is",
        )
    room = MAX_TOPIC_CHARS - max(len(longest), 1)  # a topic name has a character at least
    if len(namespace) > room:
        name = f"the topic {longest!r}" if longest else "a topic name"
        raise ConfigError(
            "namespace",
            f"{len(namespace)} characters ({namespace[:20]!r}...): with it {name} would have "
            f"{len(namespace) + max(len(longest), 1)} characters, more than Kafka's {MAX_TOPIC_CHARS} "
            f"(at most {room} here)",
        )
    return namespace


def service_topics(patterns: Iterable[str], requests: Iterable[str] = ()) -> list[str]:
    """The topic names (without namespace) of event ``patterns`` and request patterns
    ``requests``: each pattern, its dead-letter topic and, for a request, its default reply topic."""
    names: list[str] = []
    for pattern in patterns:
        names += [pattern, pattern + DLT_SUFFIX]
    for pattern in requests:
        names += [pattern, pattern + DLT_SUFFIX, pattern + _REPLY_SUFFIX]
    return names


def event_pattern(
    *patterns: str, pipeline: bool = False, model: Any = FROM_ANNOTATION, emits: Emits = (), batches: bool = False
) -> Callable[[F], F]:
    """Mark a method as the handler of the events published on ``patterns`` (topic names).

    A payload handler's payload is validated before each call, as the type its first
    parameter is annotated with (a pydantic model, a dataclass, a ``TypedDict``, or any type
    ``pydantic.TypeAdapter`` accepts; see :mod:`reactive_services._payloads`), and the handler
    gets the validated value (``def handle(self, order: Order)`` gets an ``Order``). A record
    that does not validate is dead-lettered, the reason naming each failing field
    (``invalid Order: qty: Input should be a valid integer (got 'x')``), and the stream goes on.
    An annotation of ``Any``, ``dict``, ``dict[str, Any]`` (or none) validates nothing.

    Args:
        patterns: one or more topic names, e.g. ``"order.created"``. A service's
            ``namespace`` is prepended to each when it subscribes.
        pipeline: False: the handler gets each payload; True: it gets the whole
            ``Observable[Message]`` of all its patterns once and returns the Observable to run.
        model: the payload type, instead of the annotation's; None: no validation.
        emits: the topics the handler publishes to, without namespace: names
            (``("inventory.updated", "order.rejected")``) or ``{topic: payload type}``. A
            declaration for the service's description (:mod:`reactive_services.asyncapi`,
            :mod:`reactive_services.topology`); publishing is not checked against it. The
            dead-letter topics of ``patterns`` need not be listed.
        batches: with ``pipeline=True``: the handler gets ``Observable[Batch]`` instead, from
            :meth:`Broker.source_batches <reactive_services.adapters.Broker.source_batches>`:
            one :class:`~reactive_services.adapters.Batch` per partition and fetch (the decoded
            values in ``batch.values``, offsets in ``batch.offsets``, a :class:`Message` made
            only when asked for), each committed as one unit once the work it started settled
            and the holds taken on it were released. For pipelines that work per fetch (the
            log analytics); the runtime validates nothing (``model`` must not be given) and
            makes no per-record span.

    Raises:
        ConfigError: no pattern, or an empty one; an ``emits`` topic that is not a non-empty
            string; ``batches`` without ``pipeline``, or with ``model``.
    """
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError("pattern", "an event pattern must be a non-empty topic name")
    if batches and not pipeline:
        raise ConfigError("batches", "batches=True needs pipeline=True (the handler gets Observable[Batch])")
    if batches and model is not FROM_ANNOTATION:
        raise ConfigError("model", "a batches=True handler gets Batch values as decoded; validate batch.values itself")
    produced = declared_topics(emits, "emits") or ()

    def decorate(fn: F) -> F:
        spec = EventPatternSpec(tuple(patterns), pipeline, model, produced, batches)
        fn.__event_pattern__ = spec  # type: ignore[attr-defined]
        if isinstance(fn, staticmethod | classmethod):  # above @staticmethod: the function is what the class gives
            fn.__func__.__event_pattern__ = spec  # type: ignore[attr-defined]
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
    """A client (NestJS ``ClientsModule.register`` + ``ClientKafka.emit`` / ``ClientKafka.send``).

    Args:
        broker: any :class:`reactive_services.adapters.Broker`.
        own_broker: start the broker on :meth:`connect` and stop it on :meth:`close`.
        namespace: prepended to every pattern and reply topic (e.g. ``"staging."``), as in
            :class:`Microservice`.
        client_id: prefix of this client's reply consumer groups
            (``<client_id>-replies-<uuid4 hex>``, one per reply topic and instance).
        reply_topics: ``{pattern: reply topic}`` (without namespace) for :meth:`send`;
            a pattern not listed is answered on ``<pattern>.reply``.
        ready_timeout: seconds to wait for a reply consumer to be assigned and positioned.
        emits: the patterns this client publishes events to: names, or ``{pattern: payload
            type}`` (None: undeclared, any pattern). Declared, :meth:`emit` and
            :meth:`emit_batch` refuse any other pattern (``ConfigError``), so the description
            of the system (:mod:`reactive_services.asyncapi`, :mod:`reactive_services.topology`)
            stays true.
        sends: the request patterns :meth:`send` may use: names, or ``{pattern: reply type}``
            (None: undeclared, any pattern); declared, :meth:`send` refuses others. The request
            and reply payloads are described by the service that answers.

    Attributes:
        emitted: events published by :meth:`emit` / :meth:`emit_batch`.
        emits, sends: the declarations, ``((pattern, type or None), ...)``, or None.

    Raises:
        ConfigError: ``ready_timeout`` is not > 0, ``client_id`` is empty, a pattern in
            ``emits`` / ``sends`` is not a non-empty string, or ``namespace`` does not end with
            ``.``, ``-`` or ``_``, or is so long that with a declared topic (or its reply topic)
            the name would exceed Kafka's 249 characters (:func:`check_namespace`).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        own_broker: bool = False,
        namespace: str = "",
        client_id: str = "client",
        reply_topics: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
        emits: Emits | None = None,
        sends: Emits | None = None,
    ) -> None:
        if not ready_timeout > 0:
            raise ConfigError("ready_timeout", f"must be > 0 seconds, got {ready_timeout!r}")
        if not client_id:
            raise ConfigError("client_id", "must be a non-empty string")
        self.broker = broker
        self.namespace = check_namespace(namespace)
        self.client_id = client_id
        self.emits = declared_topics(emits, "emits")
        self.sends = declared_topics(sends, "sends")
        replies = dict(reply_topics or {})
        sent = [topic for topic, _ in self.sends or ()]
        check_namespace(
            namespace,
            [topic for topic, _ in self.emits or ()]
            + sent
            + [replies.get(topic, topic + _REPLY_SUFFIX) for topic in sent]
            + list(replies.values()),
        )
        self._may_emit = None if self.emits is None else frozenset(topic for topic, _ in self.emits)
        self._may_send = None if self.sends is None else frozenset(topic for topic, _ in self.sends)
        self._own = own_broker
        self.emitted = 0
        self._connected = False
        self._response_of: list[str] = []
        self._requester = Requester(
            broker, client_id=client_id, namespace=namespace, reply_topics=reply_topics, ready_timeout=ready_timeout
        )

    def subscribe_to_response_of(self, pattern: str) -> None:
        """Have :meth:`connect` start (and wait for) the reply consumer of ``pattern``
        (NestJS ``subscribeToResponseOf``). Optional: :meth:`send` starts it lazily otherwise.
        """
        if pattern not in self._response_of:
            self._response_of.append(pattern)

    @property
    def reply_group_ids(self) -> dict[str, str]:
        """``{reply topic: consumer group}`` of this client's running reply consumers."""
        return self._requester.group_ids

    @property
    def unexpected_replies(self) -> int:
        """Replies read and dropped: their correlation id is not one this client waits for
        (another instance's request, or one of ours that timed out or was disposed)."""
        return self._requester.unexpected_replies

    @property
    def replies_received(self) -> int:
        """Replies matched to a request of this client."""
        return self._requester.received

    async def connect(self) -> None:
        """Start the broker if this client owns it, then the reply consumers of the patterns
        given to :meth:`subscribe_to_response_of`, and wait until they are ready.

        Raises:
            BrokerUnavailableError: the broker cannot be reached, or a reply consumer was not
                ready within ``ready_timeout`` seconds.
        """
        if self._own and not self._connected:
            await self.broker.start()
        self._connected = True
        for pattern in self._response_of:
            await self._requester.ready(pattern)

    async def close(self) -> None:
        """Stop the reply consumers (requests still waiting fail with ``BrokerError``), then
        the broker if this client owns it."""
        try:
            await self._requester.close()
        finally:
            self._connected = False
            if self._own:
                await self.broker.stop()

    async def __aenter__(self) -> ClientProxy:
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
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish an event and wait for the broker's acknowledgement.

        Raises:
            PublishError: the broker refused it or did not answer in time.
            ConfigError: ``emits`` was declared and does not list ``pattern``.
        """
        if self._may_emit is not None:
            self._check_declared(pattern, self._may_emit, "emits")
        meta: RecordMetadata = await self.broker.emit(
            self.namespace + pattern, data, key=key, headers=headers, timestamp_ms=timestamp_ms
        )
        self.emitted += 1
        return meta

    async def emit_batch(self, pattern: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` events; waits until all are acknowledged.

        Raises:
            PublishError: the broker refused one or did not answer in time.
            ConfigError: ``emits`` was declared and does not list ``pattern``.
        """
        if self._may_emit is not None:
            self._check_declared(pattern, self._may_emit, "emits")
        metas: list[RecordMetadata] = await self.broker.emit_batch(self.namespace + pattern, records)
        self.emitted += len(metas)
        return metas

    def send(
        self,
        pattern: str,
        payload: Any,
        *,
        timeout: float = 10.0,
        key: str | bytes | None = None,
        reply_model: Any = None,
    ) -> ReplyObservable[Any]:
        """Send a request to the ``@message_pattern(pattern)`` handler and get its reply.

        Returns a cold Observable: each subscription publishes one request to
        ``<namespace><pattern>`` (headers ``correlation-id``: a fresh uuid4 hex,
        ``reply-topic``) and emits the reply value once, then completes. It can be awaited:
        ``stock = await client.send("inventory.get_stock", {...})``. Before publishing it
        waits until this client's reply consumer for the pattern is ready (connecting
        lazily if :meth:`connect` was not called or did not name the pattern).

        Args:
            pattern: the request pattern (topic without namespace).
            payload: the request value (JSON-serialisable, or bytes sent as they are).
            timeout: seconds from the start of publishing until the reply must have arrived.
            key: the request's record key (None: no key).
            reply_model: validate the reply as this type (a pydantic model, a dataclass, a
                ``TypedDict``, any type ``pydantic.TypeAdapter`` accepts) and emit the
                validated value; None: the decoded JSON as it is.

        Errors (``on_error``, or raised by ``await``):
            RequestTimeoutError: no reply within ``timeout`` seconds.
            RemoteError: the handler raised; ``remote_type`` / ``remote_message`` say what.
            PublishError: the request was not acknowledged by the broker.
            BrokerUnavailableError: the reply consumer was not ready within ``ready_timeout``.
            BrokerError: the reply consumer ended (broker stopped, client closed) meanwhile.
            ValidationError: the reply does not validate as ``reply_model`` (the message names
                the fields).
            ConfigError: ``timeout`` is not > 0; ``reply_model`` is not a type pydantic can
                validate; ``sends`` was declared and does not list ``pattern`` (raised by this
                call).
        """
        if self._may_send is not None:
            self._check_declared(pattern, self._may_send, "sends")
        validate = None if reply_model is None else PayloadModel(reply_model, f"reply of {pattern}")

        async def run() -> Any:
            if not self._connected:
                await self.connect()
            reply = await self._requester.request(pattern, payload, timeout=timeout, key=key)
            return reply if validate is None else validate(reply)

        return ReplyObservable(run)

    def _check_declared(self, pattern: str, declared: frozenset[str], key: str) -> None:
        if pattern not in declared:
            raise ConfigError(
                key, f"{pattern!r} is not declared by this ClientProxy (declared: {', '.join(sorted(declared))})"
            )


async def _awaited_in(work: Awaitable[Any], context: otel_context.Context, span: trace.Span) -> Any:
    """Await ``work`` with ``context`` current (the coroutine's body runs now, in the awaiting
    task), then end ``span``, recording a failure."""
    token = otel_context.attach(context)
    try:
        return await work
    except BaseException as exc:
        record_failure(exc, span)
        raise
    finally:
        otel_context.detach(token)
        span.end()


class _TracedObserver(ObserverBase[Message]):
    """``observer`` with each ``on_next`` inside a ``process <topic>`` span (its parent the trace
    context of the record's headers; see :mod:`reactive_services.adapters.tracing`)."""

    def __init__(self, observer: ObserverBase[Message], system: str, group_id: str) -> None:
        self._observer = observer
        self._system = system
        self._group_id = group_id

    def on_next(self, message: Message) -> None:
        with process_span(self._system, message, self._group_id):
            self._observer.on_next(message)

    def on_error(self, error: Exception) -> None:
        self._observer.on_error(error)

    def on_completed(self) -> None:
        self._observer.on_completed()


def _traced(messages: Observable[Message], system: str, group_id: str) -> Observable[Message]:
    """``messages`` with the downstream ``on_next`` of each inside a ``process <topic>`` span: the
    synchronous part of a pipeline runs in the record's trace, and tasks it starts inherit it."""

    def subscribe(observer: ObserverBase[Message], scheduler: Any = None) -> DisposableBase:
        return messages.subscribe(_TracedObserver(observer, system, group_id), scheduler=scheduler)

    return Observable(subscribe)


class _Dispatch(PayloadObserver):
    """Runs payload handlers for each message; failures are dead-lettered.

    Subscribed straight to the broker source (no operator in between). With ``concurrency=1``
    and at-least-once, it gives our brokers' sources a
    :class:`~reactive_services.adapters._source.PayloadRoute` per topic: the handler is called
    with the decoded value, and no :class:`Message` is made for a record unless something asks
    for it (a handler that takes the message, ``track``, ``emit``, a dead letter); an ``async
    def`` handler is awaited by the source itself before it delivers the next record, as
    ``async for record in consumer: await handler(record)`` would; the record's offset is
    committed after the handler and the work it tracked finished. Otherwise (a higher
    ``concurrency``, exactly-once, whose commit point must see the work finished, or another
    broker's source) it is an Observer with one ``on_next`` made per topic for its handler (the
    only one when the service has one payload topic): each ``async def`` call runs as a task of
    its own, tracked on its message.
    """

    def __init__(self, service: Microservice, handlers: dict[str, Callable[..., Any]]) -> None:
        self._service = service
        self._handled = service.handled
        self._handlers = handlers
        self._direct = service.concurrency == 1 and service.processing_guarantee == "at_least_once"
        self._routes = {topic: self._route(topic, handler) for topic, handler in handlers.items()}
        if len(self._routes) == 1:
            self.on_next = next(iter(self._routes.values()))  # type: ignore[method-assign,assignment]

    def payload_route(self, topic: str) -> PayloadRoute | None:
        """The handler of ``topic`` as a payload route (``concurrency=1``, at-least-once), or None."""
        handler = self._handlers.get(topic)
        if handler is None or not self._direct:
            return None
        handled, dead_letter = self._handled, self._service._dead_letter
        current = current_message.get
        model = self._service._models.get(topic)
        call: Callable[[Any], Any] = handler
        if model is not None:
            validate, invalid, as_ours = model.validate, pydantic.ValidationError, model.error
            wants_message = takes_message(handler)

            def call(value: Any) -> Any:
                try:  # pydantic's validator itself (no wrapper call); only its error is the payload's
                    payload = validate(value)
                except invalid as exc:
                    raise as_ours(exc) from None
                return handler(payload, current()) if wants_message else handler(payload)

        elif takes_message(handler):

            def call(value: Any) -> Any:
                return handler(value, current())

        def failed(error: Exception) -> None:
            dead_letter(current(), error)  # type: ignore[arg-type]  # set by the source meanwhile

        def count(n: int) -> None:
            handled[topic] = handled.get(topic, 0) + n

        if self._service._traced:
            call = self._traced_call(call)
        return PayloadRoute(call, failed, count)

    def _traced_call(self, call: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``call`` inside a ``process <topic>`` span (its parent the context in the record's
        headers) that lasts until the handler finished, ``async def`` included, and records its
        failure (see :mod:`reactive_services.adapters.tracing`)."""
        service, current = self._service, current_message.get

        def traced(value: Any) -> Any:
            span, context = start_process_span(service._system, current(), service.group_id)  # type: ignore[arg-type]
            token = otel_context.attach(context)
            try:
                result = call(value)
            except BaseException as exc:
                record_failure(exc, span)
                span.end()
                raise
            finally:
                otel_context.detach(token)
            if result is not None and inspect.isawaitable(result):
                return _awaited_in(result, context, span)
            span.end()
            return result

        return traced

    def _route(self, topic: str, handler: Callable[..., Any]) -> Callable[[Message], None]:
        """The ``on_next`` of the messages of ``topic``."""
        if self._service._traced:
            return self._traced_route(topic, handler)
        wants_message = takes_message(handler)
        handled, dead_letter, guard = self._handled, self._service._dead_letter, self._guard
        validate = self._service._models.get(topic)

        def on_next(message: Message) -> None:
            try:
                value = message.value if validate is None else validate(message.value)
                result = handler(value, message) if wants_message else handler(value)
                if result is not None and inspect.isawaitable(result):
                    # a task of its own (its own current_task and context: asyncio.timeout, TaskGroup
                    # and context variables in the handler behave as in any task), tracked
                    track(guard(result, message, topic))
                    return
            except Exception as exc:
                dead_letter(message, exc)
                return
            handled[topic] = handled.get(topic, 0) + 1

        return on_next

    def _traced_route(self, topic: str, handler: Callable[..., Any]) -> Callable[[Message], None]:
        """:meth:`_route` with each record in a ``process <topic>`` span (its parent the context
        in the record's headers) that lasts until the handler finished, ``async def`` included,
        and records its failure."""
        wants_message = takes_message(handler)
        service = self._service
        validate = service._models.get(topic)

        def on_next(message: Message) -> None:
            span, context = start_process_span(service._system, message, service.group_id)
            token = otel_context.attach(context)
            try:
                value = message.value if validate is None else validate(message.value)
                result = handler(value, message) if wants_message else handler(value)
                if result is not None and inspect.isawaitable(result):
                    track(self._traced_guard(result, message, topic, span))
                    return
            except Exception as exc:
                service._dead_letter(message, exc)
                span.end()
                return
            finally:
                otel_context.detach(token)
            self._handled[topic] = self._handled.get(topic, 0) + 1
            span.end()

        return on_next

    async def _traced_guard(self, work: Awaitable[Any], message: Message, topic: str, span: trace.Span) -> None:
        try:
            await self._guard(work, message, topic)
        finally:
            span.end()

    def on_next(self, message: Message) -> None:
        self._routes[message.topic](message)

    async def _guard(self, work: Awaitable[Any], message: Message, topic: str) -> None:
        try:
            await work
        except Exception as exc:
            self._service._dead_letter(message, exc)
        else:
            self._handled[topic] = self._handled.get(topic, 0) + 1

    def on_error(self, error: Exception) -> None:
        self._service._failed(error)

    def on_completed(self) -> None:
        pass


class _Direct(PayloadObserver):
    """An Observer made of three callables, which the source calls straight (``on_next`` is the
    handler's own bound method, set on the instance), and the payload routes of ``routes``."""

    def __init__(
        self,
        on_next: Callable[[Message], None],
        on_error: Callable[[Exception], None],
        on_completed: Callable[[], None],
        routes: Callable[[str], PayloadRoute | None] | None = None,
    ) -> None:
        self.on_next = on_next  # type: ignore[method-assign,assignment]
        self.on_error = on_error  # type: ignore[method-assign,assignment]
        self.on_completed = on_completed  # type: ignore[method-assign]
        self._routes = routes

    def payload_route(self, topic: str) -> PayloadRoute | None:
        return self._routes(topic) if self._routes is not None else None

    def on_next(self, value: Message) -> None:  # replaced per instance
        raise NotImplementedError

    def on_error(self, error: Exception) -> None:  # replaced per instance
        raise NotImplementedError

    def on_completed(self) -> None:  # replaced per instance
        raise NotImplementedError


class _Done(ObserverBase[Any]):
    def __init__(self, service: Microservice, done: asyncio.Event) -> None:
        self._service = service
        self._done = done

    def on_next(self, value: Any) -> None:
        pass

    def on_error(self, error: Exception) -> None:
        self._service._failed(error)
        self._done.set()

    def on_completed(self) -> None:
        self._done.set()


class _DeadLetters(ObserverBase[DeadLetter]):
    """Dead-letters each value through its service (published, tracked, counted)."""

    def __init__(self, service: Microservice) -> None:
        self._service = service

    def on_next(self, value: DeadLetter) -> None:
        self._service._dead_letter(value.message, value.error)

    def on_error(self, error: Exception) -> None:
        pass

    def on_completed(self) -> None:
        pass


class Microservice:
    """A consuming microservice: its controllers' handlers subscribed to their topics.

    All payload handlers of a service share one source (one consumer of group
    ``group_id`` over all their topics, records handled one at a time); each pipeline
    handler gets a source of its own in the same group. All ``@message_pattern`` handlers
    share one source in group ``<group_id>.requests`` (:attr:`request_group_id`), a group
    apart so that it never rebalances the event consumers; requests are answered one at a
    time (see the module docstring).

    Args:
        broker: any :class:`reactive_services.adapters.Broker` (started by the caller, or by :meth:`start`
            when ``own_broker`` is true).
        controllers: objects with ``@event_pattern`` and/or ``@message_pattern`` methods.
        name: the service name (logs, metrics).
        group_id: the consumer group (default: ``namespace + name``).
        source_retries: how many times in a row a source that failed with a retriable
            error (``exc.retriable``) is resubscribed, with backoff (0: never).
        concurrency: records of one source handled at once (K >= 1): a handler's async work
            for up to K records runs concurrently, records with the same key one after
            another; each partition commits its lowest offset still in flight.
        own_broker: start / stop the broker with the service.
        namespace: prepended to every pattern to form the topic name (``"run-7."`` +
            ``"order.created"``), so that several systems can share one broker.
        processing_guarantee: ``"at_least_once"`` (default) or ``"exactly_once"``: the event
            sources (payload and pipeline handlers) read with ``read_committed`` and commit
            their offsets in one Kafka transaction with every record the handlers publish
            meanwhile (``emit``, ``emit_batch``, sinks, dead letters); a failed or fenced
            transaction is aborted and the records since the last commit are read again, so
            each input's outputs become visible exactly once. Request handlers stay
            at-least-once. See the guarantees page of the docs for what it covers and costs.
        auto_offset_reset: where the event sources of a group with no committed offset start:
            ``"earliest"`` (default: every record of the topics) or ``"latest"`` (only records
            published from now on: e.g. a notification hub whose clients want live events).
            The request source always starts at the earliest.

    Attributes:
        handled: records handled without error, per topic.
        dead_lettered: dead letters the broker acknowledged, per original topic.
        request_group_id: the consumer group of the request source (``<group_id>.requests``).
        replied: ok replies sent, per request topic.
        error_replies: error replies sent (the handler raised), per request topic.
        errors: errors that ended a source or pipeline.

    Raises:
        ConfigError: no handler found, two handlers for one pattern, or a ``namespace`` that does
            not end with ``.``, ``-`` or ``_``, or so long that with a pattern (its dead-letter
            or reply topic included) the topic name would exceed Kafka's 249 characters
            (:func:`check_namespace`).
    """

    def __init__(
        self,
        broker: Broker,
        controllers: Iterable[Any],
        *,
        name: str,
        group_id: str | None = None,
        own_broker: bool = False,
        namespace: str = "",
        source_retries: int = 5,
        concurrency: int = 1,
        auto_offset_reset: str = "earliest",
        processing_guarantee: str = "at_least_once",
    ) -> None:
        if source_retries < 0:
            raise ConfigError("source_retries", f"must be >= 0, got {source_retries}")
        self.auto_offset_reset = check_auto_offset_reset(auto_offset_reset)
        self.processing_guarantee = check_processing_guarantee(processing_guarantee)
        self.broker = broker
        self.namespace = check_namespace(namespace)
        self.name = name
        self.group_id = group_id or namespace + name
        self.source_retries = source_retries
        self.concurrency = concurrency
        #: times a source was resubscribed after a retriable error
        self.restarts = 0
        #: The group requests are read in: a group apart, so that the request consumer joining
        #: or leaving never rebalances (and redelivers to) the event consumers of ``group_id``.
        self.request_group_id = self.group_id + ".requests"
        self._own = own_broker
        self._payload: dict[str, Callable[..., Any]] = {}
        #: (topics, handler, validator, batches)
        self._pipelines: list[tuple[list[str], Callable[..., Any], PayloadModel | None, bool]] = []
        self._requests: dict[str, Callable[..., Any]] = {}
        #: the payload validator of each payload and request topic (None: the decoded value as it is)
        self._models: dict[str, PayloadModel | None] = {}
        seen: set[str] = set()
        controllers = list(controllers)
        #: the handlers as declared, for the service's description (:mod:`reactive_services._contract`)
        self._declared: list[tuple[EventPatternSpec | MessagePatternSpec, Callable[..., Any]]] = []
        for controller in controllers:
            for mspec, fn in message_handlers_of(controller):
                self._declared.append((mspec, fn))
                for pattern in mspec.patterns:
                    topic = namespace + pattern
                    if topic in seen:
                        raise ConfigError("pattern", f"two handlers for {pattern!r} in service {name!r}")
                    seen.add(topic)
                    check_handler(fn, pattern)
                    self._requests[topic] = fn
                    self._models[topic] = payload_model(fn, mspec.model)
        for controller in controllers:
            for spec, fn in _handlers_of(controller):
                self._declared.append((spec, fn))
                topics = [namespace + p for p in spec.patterns]
                for topic, pattern in zip(topics, spec.patterns, strict=True):
                    if topic in seen:
                        raise ConfigError("pattern", f"two handlers for {pattern!r} in service {name!r}")
                    seen.add(topic)
                    if not spec.pipeline:
                        check_handler(fn, pattern)
                        self._payload[topic] = fn
                        self._models[topic] = payload_model(fn, spec.model)
                if spec.pipeline:
                    model = None if spec.batches else pipeline_model(fn, spec.model)
                    self._pipelines.append((topics, fn, model, spec.batches))
        if not self._payload and not self._pipelines and not self._requests:
            raise ConfigError(
                "controllers", f"service {name!r} has no @event_pattern handler and no @message_pattern handler"
            )
        check_namespace(
            namespace,
            service_topics(
                (p for spec, _ in self._declared if isinstance(spec, EventPatternSpec) for p in spec.patterns),
                (p for spec, _ in self._declared if isinstance(spec, MessagePatternSpec) for p in spec.patterns),
            ),
        )
        self.handled: dict[str, int] = {}
        self.dead_lettered: dict[str, int] = {}
        self.errors: list[BaseException] = []
        self._stop = asyncio.Event()
        self._done: list[asyncio.Event] = []
        self._subscriptions: list[DisposableBase] = []
        self._open_sources = 0  # broker subscriptions not closed yet (their on_closed not called)
        self._sources_closed = asyncio.Event()
        self._dlt = DeadLetterSink(broker)
        self._responder = Responder(
            broker, self._requests, self._failed, name=name, models={t: self._models[t] for t in self._requests}
        )
        self.replied = self._responder.replied
        self.error_replies = self._responder.error_replies
        self.started = False
        self._traced = False
        self._system: str = getattr(broker, "kind", "kafka")

    @property
    def patterns(self) -> list[str]:
        """Every topic this service consumes (namespace included)."""
        return sorted([*self._payload, *self._requests, *(t for topics, *_ in self._pipelines for t in topics)])

    @property
    def sources(self) -> list[tuple[str, tuple[str, ...]]]:
        """``[(consumer group, topics), ...]``: one entry per broker source :meth:`start`
        subscribes (payload handlers, request handlers, each pipeline handler), namespace
        included. Read-only; for readiness checks and consumer-lag metrics."""
        found: list[tuple[str, tuple[str, ...]]] = []
        if self._payload:
            found.append((self.group_id, tuple(self._payload)))
        if self._requests:
            found.append((self.request_group_id, tuple(self._requests)))
        found.extend((self.group_id, tuple(topics)) for topics, *_ in self._pipelines)
        return found

    async def start(self) -> None:
        """Create the topics if needed and subscribe every handler.

        Raises:
            BrokerUnavailableError: the broker cannot be reached.
            RuntimeError: the service is started already (stop it first).
        """
        if self.started:
            raise RuntimeError(f"Microservice {self.name!r} is started already; stop() it before starting it again")
        if self._own:
            await self.broker.start()
        await self.broker.create_topics(self.patterns)
        # a broker without a log (RabbitMQ) keeps for a group only what arrives after its queues
        # exist: declared now, what is published once start() returned reaches the service
        if self._payload:
            await declare_group(self.broker, self.group_id, list(self._payload))
        if self._requests:
            await declare_group(self.broker, self.request_group_id, list(self._requests))
        for topics, *_ in self._pipelines:
            await declare_group(self.broker, self.group_id, topics)
        self._stop = asyncio.Event()
        #: an OpenTelemetry SDK is set up: a ``process <topic>`` span per record handled
        self._traced = tracing_enabled()
        self._responder.traced = (self._system, self.request_group_id) if self._traced else None
        if self._payload:
            dispatch = _Dispatch(self, self._payload)
            self._supervise(
                list(self._payload),
                self.group_id,
                dispatch,
                self.auto_offset_reset,
                processing_guarantee=self.processing_guarantee,
            )
        if self._requests:
            await wait_visible(self.broker, list(self._requests), timeout=30.0)
            # raw bytes: the responder decodes, so that a request it cannot decode gets an error
            # reply at once (besides its dead letter) instead of leaving its caller to time out
            self._supervise(list(self._requests), self.request_group_id, self._responder, decode=None)
        for topics, fn, model, batches in self._pipelines:
            done = asyncio.Event()
            messages = self._source(topics, self.group_id, self.auto_offset_reset, batches=batches)
            if self._traced and not batches:
                messages = _traced(messages, self._system, self.group_id)
            if model is not None:  # Observable[Message[T]]: validated, the bad records dead-lettered
                messages = messages.pipe(decode_json(_DeadLetters(self), parse=model))
            result = fn(messages)
            if not isinstance(result, Observable):
                raise ConfigError(topics[0], f"pipeline handler {fn.__qualname__} must return an Observable")
            self._subscriptions.append(result.subscribe(_Done(self, done)))
            self._done.append(done)
        self.started = True

    def _supervise(
        self,
        topics: list[str],
        group_id: str,
        observer: ObserverBase[Message],
        auto_offset_reset: OffsetReset = "earliest",
        decode: Decoder = "json",
        processing_guarantee: ProcessingGuarantee = "at_least_once",
    ) -> None:
        """Subscribe ``observer`` straight to the broker source of ``topics`` (no operator in
        between: a payload or request handler pays nothing per record for what it does not use),
        resubscribed after a retriable error as :meth:`_source` does (up to ``source_retries``
        times in a row, the count reset once a subscription has its partitions assigned; waits
        from :func:`~reactive_services.operators.backoff_delay`, 0.5 s to 10 s). :meth:`stop`
        waits for the stream to end."""
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        current: list[DisposableBase] = []
        failures = 0
        if self._traced and not isinstance(observer, _Dispatch | Responder):  # a span per record (those make their own)
            observer = _TracedObserver(observer, self._system, group_id)

        def assigned() -> None:
            nonlocal failures
            failures = 0

        def on_error(error: Exception) -> None:
            nonlocal failures
            failures += 1
            retriable = bool(getattr(error, "retriable", False))
            if self._stop.is_set() or not retriable or failures > self.source_retries:
                observer.on_error(error)
                done.set()
                return
            delay_s = backoff_delay(failures, initial_delay_s=0.5, max_delay_s=10.0)
            self.restarts += 1
            log.warning(
                "%s: source %s failed (%s); resubscribing in %.1f s", self.name, ",".join(topics), error, delay_s
            )
            current[:] = [Disposable(loop.call_later(delay_s, subscribe).cancel)]

        def subscribe() -> None:
            if self._stop.is_set():
                done.set()
                return
            source = self._open_source(
                topics, group_id, auto_offset_reset, decode, processing_guarantee, on_assigned=assigned
            )
            if isinstance(source, BrokerSource):  # no wrapper: one call less per record
                direct = _Direct(observer.on_next, on_error, done.set, payload_routes(observer))
                current[:] = [source.subscribe_observer(direct)]
            else:
                current[:] = [source.subscribe(observer.on_next, on_error, done.set)]

        def dispose() -> None:
            for disposable in current:
                disposable.dispose()

        subscribe()
        self._subscriptions.append(Disposable(dispose))
        self._done.append(done)

    def _open_source(
        self,
        topics: list[str],
        group_id: str,
        auto_offset_reset: OffsetReset,
        decode: Decoder,
        processing_guarantee: ProcessingGuarantee,
        on_assigned: Callable[[], None] | None = None,
        batches: bool = False,
    ) -> Observable[Any]:
        """One broker source of this service (counted open until its ``on_closed``: :meth:`stop`
        waits for it): ``Observable[Message]``, or ``Observable[Batch]`` with ``batches``."""
        self._open_sources += 1
        self._sources_closed.clear()
        return (self.broker.source_batches if batches else self.broker.source)(
            topics,
            group_id=group_id,
            stop=self._stop,
            concurrency=self.concurrency,
            auto_offset_reset=auto_offset_reset,
            decode=decode,
            on_assigned=on_assigned,
            on_closed=self._source_closed,
            processing_guarantee=processing_guarantee,
        )

    def _source(
        self,
        topics: list[str],
        group_id: str,
        auto_offset_reset: OffsetReset = "earliest",
        decode: Decoder = "json",
        batches: bool = False,
    ) -> Observable[Any]:
        """The broker source (of :class:`Batch` es with ``batches``), resubscribed after a
        retriable error (a lost connection, an unacknowledged publish of tracked work): up to
        ``source_retries`` times in a row, with exponential backoff from 0.5 s to 10 s.
        Resubscribing resumes from the committed offsets, so the record that failed is
        delivered again (at-least-once)."""

        def subscribed(_scheduler: Any) -> Observable[Any]:
            return self._open_source(
                topics, group_id, auto_offset_reset, decode, self.processing_guarantee, batches=batches
            )

        source: Observable[Any] = reactivex.defer(subscribed)
        if not self.source_retries:
            return source

        def restarted(attempt: int, exc: BaseException, delay_s: float) -> None:
            self.restarts += 1
            log.warning("%s: source %s failed (%s); resubscribing in %.1f s", self.name, ",".join(topics), exc, delay_s)

        return source.pipe(
            retry_with_backoff(
                max_attempts=self.source_retries + 1, initial_delay_s=0.5, max_delay_s=10.0, on_retry=restarted
            )
        )

    def _source_closed(self) -> None:
        self._open_sources -= 1
        if self._open_sources <= 0:
            self._sources_closed.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop fetching, let every pipeline finish and complete, then flush dead letters.

        Waits at most ``timeout`` seconds in all for the sources to complete and then to close
        (their last commit, made once the operators released what they held, e.g. the insert
        of a final batch); what is still running then is disposed (its current record is not
        committed: an ``async def`` handler that has not returned is cancelled), and then waited
        for, ``timeout`` seconds at most again, while it commits what was handled and closes.

        Raises:
            PublishError: a dead letter could not be published.
        """
        self._stop.set()
        deadline = asyncio.get_running_loop().time() + timeout
        if self._done:
            waits = [asyncio.ensure_future(d.wait()) for d in self._done]
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for w in pending:
                w.cancel()
            if pending:
                log.warning("%s: %d source(s) did not complete within %.1f s", self.name, len(pending), timeout)
        if self._open_sources > 0:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            try:
                await asyncio.wait_for(self._sources_closed.wait(), left)
            except TimeoutError:
                log.warning("%s: %d source(s) not closed within %.1f s", self.name, self._open_sources, timeout)
        for sub in self._subscriptions:
            sub.dispose()
        self._subscriptions.clear()
        if self._open_sources > 0:  # disposed while busy (a handler that did not return): they still
            # commit what was handled and leave their group; wait for that, as long again at most
            try:
                await asyncio.wait_for(self._sources_closed.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "%s: %d disposed source(s) not closed within %.1f s", self.name, self._open_sources, timeout
                )
        self._done.clear()
        self.started = False
        try:
            await self._dlt.flush()
        finally:
            if self._own:
                await self.broker.stop()

    def _dead_letter(self, message: Message, error: BaseException) -> None:
        # logged (with the record's place and the reason) by the one dead-letter path; counted
        # once the broker acknowledged it (a failed publish ends the stream instead)
        topic = message.topic
        token = None
        if self._traced:
            record_failure(error)
            if not trace.get_current_span().is_recording():  # its process span has ended: join the record's trace
                token = otel_context.attach(extract_context(message.headers))

        def count(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                self.dead_lettered[topic] = self.dead_lettered.get(topic, 0) + 1

        try:
            self._dlt.publish(DeadLetter(message, error)).add_done_callback(count)
        finally:
            if token is not None:
                otel_context.detach(token)

    def _failed(self, error: BaseException) -> None:
        log.error("%s: stream failed: %s", self.name, error)
        self.errors.append(error)


async def start_all_microservices(*services: Microservice) -> None:
    """Start the services in order (NestJS ``app.startAllMicroservices()``)."""
    for service in services:
        await service.start()
