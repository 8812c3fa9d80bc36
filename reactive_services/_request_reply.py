"""Request-reply over the broker: ``@message_pattern`` handlers and the client side of ``send``.

The wire format (NestJS ``@MessagePattern`` + ``ClientKafka.send``, over any
:class:`reactive_services.adapters.Broker`)::

    request   topic  <namespace><pattern>
              value  the payload (JSON)
              headers  correlation-id: <32 hex digits, uuid4>   reply-topic: <topic to answer on>
    reply     topic  the request's reply-topic (default <namespace><pattern>.reply)
              value  ok: the handler's result (JSON)
                     error: {"error": {"type": "<exception class name>", "message": "<str(exc)>"}}
              headers  correlation-id: copied from the request   reply-status: ok | error

:class:`Responder` is the service side (used by :class:`reactive_services.Microservice`);
:class:`Requester` the client side (used by :class:`reactive_services.ClientProxy`); the
mechanism that keeps each client's replies its own is described in ``_runtime``'s docstring.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.disposable import Disposable

from reactive_services.adapters import (
    Broker,
    DeadLetter,
    Message,
    decode_json,
    encode_value,
    publish_dead_letter,
    track,
    wait_visible,
)
from reactive_services.adapters.tracing import record_failure, start_process_span, tracer, tracing_enabled

from ._payloads import FROM_ANNOTATION, PayloadModel, takes_message
from .errors import (
    BrokerError,
    BrokerUnavailableError,
    ConfigError,
    DecodeError,
    RemoteError,
    RequestTimeoutError,
    ValidationError,
)

__all__ = [
    "CORRELATION_ID",
    "REPLY_STATUS",
    "REPLY_TOPIC",
    "MessagePatternSpec",
    "ReplyObservable",
    "Requester",
    "Responder",
    "message_handlers_of",
    "message_pattern",
    "wait_visible",
]

log = logging.getLogger("reactive_services.request_reply")

#: Header names of the wire format (values are ASCII bytes).
CORRELATION_ID = "correlation-id"
REPLY_TOPIC = "reply-topic"
REPLY_STATUS = "reply-status"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


# --------------------------------------------------------------------------- the decorator


@dataclass(frozen=True, slots=True)
class MessagePatternSpec:
    """What ``@message_pattern`` records on a handler.

    Attributes:
        patterns: the request topic names (without the service's namespace).
        model: the request payload type to validate with, None for none, or ``FROM_ANNOTATION``.
    """

    patterns: tuple[str, ...]
    model: Any = FROM_ANNOTATION


def message_pattern(*patterns: str, model: Any = FROM_ANNOTATION) -> Callable[[F], F]:
    """Mark a method as the handler of the requests sent on ``patterns`` (NestJS ``@MessagePattern``).

    The handler is ``(self, payload)`` or ``(self, payload, message)``, plain or ``async def``.
    Its return value is the reply (a pydantic model or a dataclass is sent as JSON); when it
    returns an ``Observable``, the reply is that Observable's **last** value (``None`` if it
    completes empty). If it raises (or the Observable errors), the client gets an error reply
    and raises :class:`RemoteError`. The payload is validated as the first parameter's
    annotation, as for :func:`~reactive_services.event_pattern`: a request that does not
    validate is dead-lettered and answered at once with an error reply (``RemoteError`` of type
    ``ValidationError``, its message naming the fields).

    Args:
        patterns: one or more request topic names, e.g. ``"inventory.get_stock"``. A service's
            ``namespace`` is prepended to each when it subscribes.
        model: the payload type, instead of the annotation's; None: no validation.

    Raises:
        ConfigError: no pattern, or an empty one.
    """
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError("pattern", "a message pattern must be a non-empty topic name")

    def decorate(fn: F) -> F:
        spec = MessagePatternSpec(tuple(patterns), model)
        fn.__message_pattern__ = spec  # type: ignore[attr-defined]
        if isinstance(fn, staticmethod | classmethod):  # above @staticmethod: the function is what the class gives
            fn.__func__.__message_pattern__ = spec  # type: ignore[attr-defined]
        return fn

    return decorate


def message_handlers_of(obj: Any) -> list[tuple[MessagePatternSpec, Callable[..., Any]]]:
    """The ``@message_pattern`` methods of ``obj``, bound, as ``(spec, method)`` pairs."""
    found = []
    for name in dir(type(obj)):
        attr = getattr(type(obj), name, None)
        spec = getattr(attr, "__message_pattern__", None)
        if isinstance(spec, MessagePatternSpec):
            found.append((spec, getattr(obj, name)))
    return found


async def _last_value(source: Observable[Any]) -> Any:
    """The last value of ``source`` (None if it completes empty); its error is raised."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    last: list[Any] = [None]

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(last[0])
        else:
            done.set_exception(error)

    def on_next(value: Any) -> None:
        last[0] = value

    # call_soon_threadsafe: the Observable may emit from another scheduler's thread.
    def on_error(error: Exception) -> None:
        loop.call_soon_threadsafe(settle, error)

    def on_completed() -> None:
        loop.call_soon_threadsafe(settle, None)

    subscription = source.subscribe(on_next, on_error, on_completed)
    try:
        return await done
    finally:
        subscription.dispose()


# --------------------------------------------------------------------------- the service side


class Responder(ObserverBase[Message]):
    """Observer of a service's request source: runs the handler, publishes the reply.

    For each request it tracks (:func:`reactive_services.adapters.track`) the work "run the handler, publish
    the reply", so the request's offset is committed only once the reply was acknowledged.
    A request without a ``correlation-id`` header cannot be answered: it is logged and
    counted in ``stats["unanswerable"]``. A request whose value is not JSON, or does not
    validate as its handler's payload type (``models``), goes to the dead-letter topic
    (``<topic>.DLT``, with the reason) and is answered at once with an error reply
    (``RemoteError`` of type ``DecodeError`` or ``ValidationError`` for the caller). A reply
    that cannot be published ends the source with ``on_error`` (the request is then
    redelivered: at-least-once).

    Args:
        broker: the broker replies are published to.
        handlers: ``{request topic (namespace included): handler}``.
        models: ``{request topic: payload validator}`` (none: the decoded value as it is).
        on_failed: called with the error that ended the source.

    Attributes:
        stats: ``{"ok": replies, "error": error replies, "unanswerable": requests}``.
        replied: ok replies per request topic.
        error_replies: error replies per request topic.
    """

    def __init__(
        self,
        broker: Broker,
        handlers: Mapping[str, Callable[..., Any]],
        on_failed: Callable[[BaseException], None],
        *,
        name: str = "",
        models: Mapping[str, PayloadModel | None] | None = None,
    ) -> None:
        self._broker = broker
        self._handlers = dict(handlers)
        self._models = dict(models or {})
        self._wants_message = {t: takes_message(h) for t, h in self._handlers.items()}
        self._on_failed = on_failed
        self._name = name
        self.stats = {"ok": 0, "error": 0, "unanswerable": 0}
        self.replied: dict[str, int] = {}
        self.error_replies: dict[str, int] = {}
        #: ``(messaging system, consumer group)`` when each request is traced, else None
        self.traced: tuple[str, str] | None = None

    def on_next(self, message: Message) -> None:
        track(self._answer(message) if self.traced is None else self._traced_answer(message, *self.traced))

    async def _traced_answer(self, message: Message, system: str, group_id: str) -> None:
        """:meth:`_answer` inside a ``process <topic>`` span, from the request's arrival until its
        reply was published; a handler that raised, or a request that does not decode or
        validate, marks it failed."""
        span, context = start_process_span(system, message, group_id)
        token = otel_context.attach(context)
        try:
            await self._answer(message)
        except BaseException as exc:
            record_failure(exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    async def _answer(self, message: Message) -> None:
        correlation = message.header(CORRELATION_ID)
        if not correlation:
            log.warning(
                "%s: request %s[%d]@%d has no %s header; not answered",
                self._name,
                message.topic,
                message.partition,
                message.offset,
                CORRELATION_ID,
            )
            self.stats["unanswerable"] += 1
            return
        reply_topic = (message.header(REPLY_TOPIC) or b"").decode("utf-8", "replace") or message.topic + ".reply"
        handler = self._handlers[message.topic]
        validate = self._models.get(message.topic)
        try:
            message.value = decode_json(message.raw)
            payload = message.value if validate is None else validate(message.value)
        except (DecodeError, ValidationError) as exc:  # dead-lettered like any bad record, and answered at once
            record_failure(exc)
            await publish_dead_letter(self._broker, DeadLetter(message, exc), on=message)
            await self._reply(message, reply_topic, correlation, _error_body(exc), b"error")
            return
        try:
            args = (payload, message) if self._wants_message[message.topic] else (payload,)
            result = handler(*args)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, Observable):
                result = await _last_value(result)
            # None is JSON null on the wire, not a tombstone (which the reply consumer cannot decode)
            data = b"null" if result is None else encode_value(result)
            status = b"ok"
        except Exception as exc:  # noqa: BLE001 - any handler failure becomes an error reply
            log.info("%s: handler of %s raised %r; replying with an error", self._name, message.topic, exc)
            record_failure(exc)
            data = _error_body(exc)
            status = b"error"
        await self._reply(message, reply_topic, correlation, data, status)

    async def _reply(self, message: Message, reply_topic: str, correlation: bytes, data: Any, status: bytes) -> None:
        await self._broker.emit(
            reply_topic, data, key=message.key, headers=[(CORRELATION_ID, correlation), (REPLY_STATUS, status)]
        )
        counts = self.replied if status == b"ok" else self.error_replies
        counts[message.topic] = counts.get(message.topic, 0) + 1
        self.stats["ok" if status == b"ok" else "error"] += 1

    def on_error(self, error: Exception) -> None:
        self._on_failed(error)

    def on_completed(self) -> None:
        pass


def _error_body(exc: BaseException) -> bytes | None:
    """The JSON of an error reply: ``{"error": {"type": ..., "message": ...}}``."""
    return encode_value({"error": {"type": type(exc).__name__, "message": str(exc)}})


# --------------------------------------------------------------------------- the client side


class ReplyObservable(Observable[T]):
    """The cold Observable :meth:`ClientProxy.send` returns; it can also be awaited.

    Each subscription sends one request (a fresh correlation id) and emits the reply value
    once, then completes; or errors with :class:`RequestTimeoutError`, :class:`RemoteError`,
    :class:`PublishError` or :class:`BrokerUnavailableError`. Disposing it before the reply
    abandons the request (a late reply is dropped and counted). ``await`` it to send one
    request and get the reply value (the same errors are raised). Subscribe from a running
    asyncio event loop.
    """

    def __init__(self, run: Callable[[], Awaitable[T]]) -> None:
        super().__init__()
        self._run = run

    def _subscribe_core(self, observer: ObserverBase[T], scheduler: SchedulerBase | None = None) -> DisposableBase:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            observer.on_error(RuntimeError("subscribe to a request from a running asyncio event loop"))
            return Disposable()
        task = loop.create_task(self._emit_to(observer))

        def cancel() -> None:
            task.cancel()

        return Disposable(cancel)

    async def _emit_to(self, observer: ObserverBase[T]) -> None:
        try:
            value = await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - delivered to the observer
            _call(observer.on_error, exc)
            return
        if _call(observer.on_next, value):
            _call(observer.on_completed)

    def __await__(self) -> Generator[Any, None, T]:
        return self._run().__await__()


def _call(fn: Callable[..., None], *args: Any) -> bool:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - an observer's own failure cannot go anywhere else
        log.exception("an observer of a request raised from %s", getattr(fn, "__name__", fn))
        return False
    return True


@dataclass(eq=False)
class _Channel:
    """The reply consumer of one reply topic, in a consumer group of its own."""

    topic: str
    group_id: str
    ready: asyncio.Future[None]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    subscription: DisposableBase | None = None


class Requester:
    """The client side of request-reply (held by :class:`ClientProxy`).

    Args:
        broker: any :class:`reactive_services.adapters.Broker`.
        client_id: prefix of the reply consumer groups ``<client_id>-replies-<32 hex>``.
        namespace: prepended to request and reply topics.
        reply_topics: ``{pattern: reply topic}`` (without namespace) overriding the default
            ``<pattern>.reply``.
        ready_timeout: seconds to wait for a reply consumer to be assigned and positioned.

    Attributes:
        received: replies matched to a request of this client.
        unexpected_replies: replies dropped because this client did not send (or no longer
            waits for: timed out, disposed) their correlation id.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        client_id: str,
        namespace: str,
        reply_topics: Mapping[str, str] | None,
        ready_timeout: float,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.namespace = namespace
        self.reply_topics = dict(reply_topics or {})
        self.ready_timeout = ready_timeout
        self.received = 0
        self.unexpected_replies = 0
        self._channels: dict[str, _Channel] = {}
        self._pending: dict[bytes, tuple[asyncio.Future[Any], str]] = {}
        self._created: set[str] = set()
        self._closing = False

    def reply_topic(self, pattern: str) -> str:
        """The reply topic of ``pattern``, namespace included."""
        return self.namespace + self.reply_topics.get(pattern, pattern + ".reply")

    @property
    def group_ids(self) -> dict[str, str]:
        """``{reply topic: consumer group}`` of the running reply consumers."""
        return {topic: ch.group_id for topic, ch in self._channels.items()}

    async def ready(self, pattern: str) -> None:
        """Start the reply consumer of ``pattern``'s reply topic if needed; wait until it is ready.

        Raises:
            BrokerUnavailableError: not assigned and positioned within ``ready_timeout`` seconds.
            BrokerError: the reply consumer failed before it was ready.
        """
        request_topic = self.namespace + pattern
        topic = self.reply_topic(pattern)
        if request_topic not in self._created or topic not in self._created:
            await self.broker.create_topics([request_topic, topic])
            await self._visible(topic)
            self._created.update((request_topic, topic))
        channel = self._channels.get(topic)
        if channel is None:
            channel = self._open(topic)
        try:
            await asyncio.wait_for(asyncio.shield(channel.ready), self.ready_timeout)
        except TimeoutError as exc:
            raise BrokerUnavailableError(
                f"the reply consumer of {topic!r} was not assigned within {self.ready_timeout:g} s"
            ) from exc

    async def _visible(self, topic: str) -> None:
        await wait_visible(self.broker, [topic], self.ready_timeout)

    def _open(self, topic: str) -> _Channel:
        loop = asyncio.get_running_loop()
        channel = _Channel(topic, f"{self.client_id}-replies-{uuid.uuid4().hex}", loop.create_future())
        self._channels[topic] = channel

        def assigned() -> None:
            if not channel.ready.done():
                channel.ready.set_result(None)

        source = self.broker.source(
            topic,
            group_id=channel.group_id,
            auto_offset_reset="latest",
            stop=channel.stop,
            on_assigned=assigned,
        )
        channel.subscription = source.subscribe(
            self._on_reply,
            lambda e: self._ended(channel, e),
            lambda: self._ended(channel, None),
        )
        return channel

    def _on_reply(self, message: Message) -> None:
        correlation = message.header(CORRELATION_ID)
        entry = self._pending.pop(correlation, None) if correlation else None
        if entry is None:
            self.unexpected_replies += 1
            return
        future, _ = entry
        if future.done():
            return
        self.received += 1
        if message.header(REPLY_STATUS) == b"error":
            error = message.value.get("error") if isinstance(message.value, dict) else None
            if not isinstance(error, dict):
                error = {"type": "UnknownError", "message": repr(message.value)}
            future.set_exception(RemoteError(str(error.get("type")), str(error.get("message"))))
        else:
            future.set_result(message.value)

    def _ended(self, channel: _Channel, error: BaseException | None) -> None:
        """A reply consumer ended: fail its waiting requests; the next request opens a new one."""
        channel.ended.set()
        if self._channels.get(channel.topic) is channel:
            del self._channels[channel.topic]
        if self._closing:
            failure = BrokerError("the client was closed before the reply arrived")
        else:
            failure = BrokerError(
                f"the reply consumer of {channel.topic!r} ended" + (f": {error}" if error is not None else "")
            )
        if error is not None:
            failure.__cause__ = error
        if not channel.ready.done():
            channel.ready.set_exception(failure)
            channel.ready.exception()  # retrieved: no "never retrieved" warning if nobody waits
        for correlation, (future, topic) in list(self._pending.items()):
            if topic == channel.topic and not future.done():
                del self._pending[correlation]
                future.set_exception(failure)

    async def request(self, pattern: str, payload: Any, *, timeout: float, key: str | bytes | None) -> Any:
        """Publish one request and wait for its reply; see :meth:`ClientProxy.send`. With an
        OpenTelemetry SDK set up, inside a ``request <topic>`` CLIENT span (the request's own
        ``send`` span and the handler's ``process`` span are in its trace)."""
        if not timeout > 0:
            raise ConfigError("timeout", f"must be > 0 seconds, got {timeout!r}")
        if tracing_enabled():
            topic = self.namespace + pattern
            attributes = {
                "messaging.destination.name": topic,
                "messaging.operation.type": "send",
                "rpc.method": pattern,
            }
            with tracer().start_as_current_span(f"request {topic}", kind=SpanKind.CLIENT, attributes=attributes):
                return await self._request(pattern, payload, timeout=timeout, key=key)
        return await self._request(pattern, payload, timeout=timeout, key=key)

    async def _request(self, pattern: str, payload: Any, *, timeout: float, key: str | bytes | None) -> Any:
        await self.ready(pattern)
        topic = self.reply_topic(pattern)
        correlation = uuid.uuid4().hex.encode("ascii")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = (future, topic)
        try:
            async with asyncio.timeout(timeout):
                await self.broker.emit(
                    self.namespace + pattern,
                    payload,
                    key=key,
                    headers=[(CORRELATION_ID, correlation), (REPLY_TOPIC, topic.encode("utf-8"))],
                )
                return await future
        except TimeoutError as exc:
            raise RequestTimeoutError(pattern, timeout) from exc
        finally:
            self._pending.pop(correlation, None)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop every reply consumer (waits at most ``timeout`` seconds) and fail waiting requests."""
        self._closing = True
        channels = list(self._channels.values())
        for channel in channels:
            channel.stop.set()
        if channels:
            waits = [asyncio.ensure_future(c.ended.wait()) for c in channels]
            _, late = await asyncio.wait(waits, timeout=timeout)
            for w in late:
                w.cancel()
        for channel in channels:
            if channel.subscription is not None:
                channel.subscription.dispose()
            if not channel.ended.is_set():
                self._ended(channel, None)
        for future, _ in list(self._pending.values()):
            if not future.done():
                future.set_exception(BrokerError("the client was closed before the reply arrived"))
        self._pending.clear()
        self._closing = False  # a closed client may connect again
