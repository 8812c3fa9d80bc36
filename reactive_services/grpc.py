"""Request-reply and server streams over gRPC (grpcio's asyncio API): a service's
``@message_pattern`` handlers served as RPCs, and a client with :meth:`ClientProxy.send`'s shape.

Use it where a caller wants a fast, direct answer (no broker hop, HTTP/2, deadlines); keep the
broker for events and for requests that must survive a restart of the answering service.

Wire format: one generic gRPC service, :data:`SERVICE` (``reactive_services.v1.Requests``),
whose method names are the request topics (namespace included), e.g.
``/reactive_services.v1.Requests/inventory.get_stock``. Request and reply messages are JSON
bytes, as on the broker: the request is the payload, the reply the handler's return value
(``null`` for None; a pydantic model or dataclass as JSON). Typed services (Protocol Buffers,
generated code) are served beside it: ``servicers=`` (see :class:`Servicer`).

Unary or server-streaming, decided once per handler when the server starts: a handler whose
return annotation is an ``Observable[...]`` or an async iterable (``AsyncIterator[...]``,
``AsyncGenerator[...]``; an ``async def`` with ``yield`` too) is a **server-streaming** method:
every value is one message of the stream, completion ends the call with ``OK``, an error ends it
with ``UNKNOWN``. Any other handler is unary (one returning an Observable anyway answers with its
last value, as over the broker).

Flow control, end to end. HTTP/2 flow control bounds the bytes in flight between the two
processes: a client that stops reading stops getting DATA frames, and the server's
``write`` stops returning. What the handler produces is then held back:

- an **async iterable** (an ``async def`` generator) is pulled one value per written message:
  the producer waits, nothing piles up on either side (the exact bound: the HTTP/2 windows,
  see below, plus one message);
- an **Observable** cannot be paused (Rx pushes). Its values wait in a buffer of at most
  ``stream_buffer`` messages per call; when it is full the ``overflow`` policy decides (the
  websocket hub's names): ``"close"`` (the default) ends the call with ``RESOURCE_EXHAUSTED``,
  error type ``SlowConsumer``, and disposes the Observable; ``"drop_oldest"`` / ``"keep_latest"``
  discard buffered values and count them in :attr:`GrpcServer.dropped`. Never more.

The client (:meth:`GrpcClient.stream`) reads the next message only once its Observer's
``on_next`` returned and the work it ``track()``-ed for the value settled, so a slow Observer is
a slow reader. The bytes in flight per stream are bounded by the HTTP/2 windows: 64 KiB at first,
grown by grpc's BDP probing up to a few MiB on a fast link (measured: about 5 MB of 1 KiB
messages ahead of a stalled reader on loopback, ~100 KB with ``("grpc.http2.bdp_probe", 0)`` in
``options`` on both sides; ``tests/runtime/test_grpc_streams.py`` holds a stalled reader to it).

Errors (the status, its details, and trailing metadata ``rs-error-type`` with the exception's
class name):

====================================  ======================  ===================================
server side                           status                  client side raises
====================================  ======================  ===================================
request not JSON / does not validate  ``INVALID_ARGUMENT``    :class:`RemoteError` (``DecodeError``
                                                              / ``ValidationError``, the fields)
the handler raised (a stream: its     ``UNKNOWN``             :class:`RemoteError` (its type and
source errored)                                               message)
a stream's buffer overflowed          ``RESOURCE_EXHAUSTED``  :class:`RemoteError` (``SlowConsumer``)
(``overflow="close"``)
no handler for the method             ``UNIMPLEMENTED``       :class:`RemoteError` (``UNIMPLEMENTED``)
the deadline (``timeout``) passed     ``DEADLINE_EXCEEDED``   :class:`RequestTimeoutError`
server unreachable, or stopped        ``UNAVAILABLE``         :class:`BrokerUnavailableError`
====================================  ======================  ===================================

A client that cancels (disposes its subscription) or whose deadline passes cancels the handler:
an ``async def`` handler gets ``CancelledError``, a stream's Observable is disposed and its async
iterator closed (``aclose``). The server counts them in :attr:`GrpcServer.cancelled`.

The standard gRPC health service (``grpc.health.v1.Health``) reports ``SERVING`` for the server,
:data:`SERVICE` and each servicer while it runs (``NOT_SERVING`` once stopping). Server
reflection (``grpc.reflection.v1alpha.ServerReflection``) lists the servicers, health and
itself; the generic service is not in it (its methods are topic names, not Protocol Buffers
identifiers, and its messages JSON, which reflection cannot describe).
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.disposable import Disposable

from reactive_services.adapters import Message, decode_json, encode_value
from reactive_services.adapters.websocket import OverflowPolicy

from ._grpc_stream import SLOW_CONSUMER, SlowConsumer, StreamBuffer, read_stream
from ._payloads import PayloadModel, takes_message
from ._request_reply import ReplyObservable, _last_value
from ._runtime import Microservice
from .errors import (
    BrokerUnavailableError,
    ConfigError,
    DecodeError,
    RemoteError,
    RequestTimeoutError,
    ValidationError,
)

__all__ = [
    "ERROR_TYPE",
    "SERVICE",
    "SLOW_CONSUMER",
    "GrpcClient",
    "GrpcServer",
    "Servicer",
    "StreamStats",
    "abort_with",
    "write_stream",
]

#: The generic service whose methods are the request topics.
SERVICE = "reactive_services.v1.Requests"

#: Trailing metadata key of an error status: the class name of the exception behind it.
ERROR_TYPE = "rs-error-type"

#: Request metadata :meth:`GrpcClient.send` sets: ``rs-reply: last`` asks a stream method for its
#: last value as the only message (what the same handler answers over the broker).
REPLY_MODE, LAST_VALUE = "rs-reply", "last"

_OVERFLOW = ("close", "drop_oldest", "keep_latest")

#: ``[(name, value)]`` channel or server arguments of grpc (``grpc.http2.bdp_probe``, ...).
Options = Sequence[tuple[str, Any]]


_ASK_LAST = ((REPLY_MODE, LAST_VALUE),)


def _identity(data: bytes) -> bytes:
    return data


class Servicer(Protocol):
    """A typed gRPC service to serve beside the generic one (``GrpcServer(servicers=[...])``),
    e.g. one implementing a generated ``*Servicer`` base class.

    Attributes:
        service_name: its full name (``package.Service``), reported by the health service and
            listed by reflection (its descriptor must be in the default descriptor pool: importing
            the generated ``*_pb2`` module puts it there).
    """

    service_name: str

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register its methods on ``server`` (e.g. with the generated ``add_*Servicer_to_server``)."""


def streams(handler: Callable[..., Any]) -> bool:
    """True when ``handler`` is served as a server-streaming method: an async generator function,
    or a return annotation that is an ``Observable`` or an async iterable (string annotations are
    resolved in the handler's module; one that does not resolve counts as unary)."""
    fn = getattr(handler, "__func__", handler)
    if inspect.isasyncgenfunction(fn):
        return True
    try:
        annotation = inspect.signature(handler).return_annotation
    except (TypeError, ValueError):
        return False
    if isinstance(annotation, str):
        holder = types.SimpleNamespace(__annotations__={"r": annotation}, __globals__=getattr(fn, "__globals__", {}))
        try:
            annotation = typing.get_type_hints(holder)["r"]
        except Exception:  # noqa: BLE001 - unresolvable: not declared a stream
            return False
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, (Observable, collections.abc.AsyncIterable))


class GrpcServer:
    """Serves the ``@message_pattern`` handlers of Microservices over gRPC, unary or
    server-streaming (see the module docstring), and typed ``servicers`` beside them.

    The services need not be started (their handlers are called directly; nothing is consumed
    from the broker for the gRPC calls), and may also answer over the broker at the same time.

    Args:
        services: the Microservices whose request handlers to serve (their namespace applies:
            the method name is the request topic).
        servicers: typed services to serve too (:class:`Servicer`).
        host: the address to listen on.
        port: the port (0: any free port; :attr:`port` says which once started).
        max_message_bytes: the largest request or reply message, in bytes.
        stream_buffer: messages an Observable-fed stream may buffer ahead of its writer (>= 1).
        overflow: what a full stream buffer does: ``"close"`` (``RESOURCE_EXHAUSTED``),
            ``"drop_oldest"`` or ``"keep_latest"`` (see the module docstring).
        options: more grpc server arguments, e.g. ``[("grpc.http2.bdp_probe", 0)]``.

    Attributes:
        port: the port listened on (after :meth:`start`).
        calls: calls received, per method of the generic service (ok or error).
        streamed: stream messages written, per method.
        cancelled: calls cancelled while their handler ran (by the client, its deadline, or a
            stop past its grace period), per method.
        overflowed: streams ended by the ``"close"`` policy, per method.

    Raises:
        ConfigError: two services answer the same request topic; nothing to serve; a bad
            ``stream_buffer`` or ``overflow``.
    """

    def __init__(
        self,
        services: Iterable[Microservice] = (),
        *,
        servicers: Iterable[Servicer] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = 4 * 1024 * 1024,
        stream_buffer: int = 256,
        overflow: OverflowPolicy = "close",
        options: Options = (),
    ) -> None:
        self._handlers: dict[str, tuple[Callable[..., Any], PayloadModel | None]] = {}
        for service in services:
            for topic, handler in service._requests.items():
                if topic in self._handlers:
                    raise ConfigError("services", f"two services answer {topic!r}")
                self._handlers[topic] = (handler, service._models.get(topic))
        self.servicers = list(servicers)
        if not self._handlers and not self.servicers:
            raise ConfigError("services", "no @message_pattern handler and no servicer to serve")
        if isinstance(stream_buffer, bool) or not isinstance(stream_buffer, int) or stream_buffer < 1:
            raise ConfigError("stream_buffer", f"must be an integer >= 1 (messages), got {stream_buffer!r}")
        if overflow not in _OVERFLOW:
            raise ConfigError("overflow", f"must be one of {', '.join(map(repr, _OVERFLOW))}, not {overflow!r}")
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.stream_buffer = stream_buffer
        self.overflow: OverflowPolicy = overflow
        self.options = list(options)
        self.calls: dict[str, int] = {}
        self.streamed: dict[str, int] = {}
        self.cancelled: dict[str, int] = {}
        self.overflowed: dict[str, int] = {}
        self._dropped: dict[str, int] = {}
        self._max_buffered = 0
        self._streams: dict[int, tuple[str, StreamStats]] = {}  # the streams in flight
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    @property
    def address(self) -> str:
        """``HOST:PORT`` for :class:`GrpcClient`."""
        return f"{self.host}:{self.port}"

    @property
    def stream_methods(self) -> list[str]:
        """The methods of the generic service served as server streams."""
        return sorted(topic for topic, (handler, _) in self._handlers.items() if streams(handler))

    def _names(self) -> list[str]:
        return ["", *([SERVICE] if self._handlers else []), *(s.service_name for s in self.servicers)]

    async def start(self) -> None:
        """Bind and start serving.

        Raises:
            ConfigError: the address cannot be bound (key ``"port"``).
        """
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            *self.options,
        ]
        server = grpc.aio.server(options=options)
        if self._handlers:
            methods = {topic: self._method(topic, handler, model) for topic, (handler, model) in self._handlers.items()}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        for servicer in self.servicers:
            servicer.add_to_server(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                *(s.service_name for s in self.servicers),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        try:
            self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:
            raise ConfigError("port", f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        await server.start()
        self._server = server
        for name in self._names():
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls (the health service says ``NOT_SERVING`` first); calls in flight
        (streams included) get ``grace_s`` seconds to finish, then are cancelled."""
        if self._server is None:
            return
        for name in self._names():
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        server, self._server = self._server, None
        await server.stop(grace_s)

    async def __aenter__(self) -> GrpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _method(
        self, topic: str, handler: Callable[..., Any], model: PayloadModel | None
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        wants_message = takes_message(handler)

        async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> Any:
            """Decode, validate, run the handler; its result (awaited)."""
            self.calls[topic] = self.calls.get(topic, 0) + 1
            try:
                value = decode_json(request)
                payload = value if model is None else model(value)
            except (DecodeError, ValidationError) as exc:
                await abort_with(context, grpc.StatusCode.INVALID_ARGUMENT, exc)
            try:
                if wants_message:
                    metadata = context.invocation_metadata() or ()
                    headers = tuple((k, v.encode() if isinstance(v, str) else v) for k, v in metadata)
                    result = handler(payload, Message(topic, -1, -1, None, value, headers, raw=request))
                else:
                    result = handler(payload)
                if inspect.isawaitable(result) and not isinstance(result, Observable):  # an Observable is awaitable
                    result = await result
                return result
            except asyncio.CancelledError:
                self.cancelled[topic] = self.cancelled.get(topic, 0) + 1
                raise
            except Exception as exc:  # noqa: BLE001 - any handler failure becomes an error status
                await abort_with(context, grpc.StatusCode.UNKNOWN, exc)

        async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            result = await call(request, context)
            if isinstance(result, Observable):
                try:
                    result = await _last_value(result)
                except asyncio.CancelledError:
                    self.cancelled[topic] = self.cancelled.get(topic, 0) + 1
                    raise
                except Exception as exc:  # noqa: BLE001 - the Observable's error becomes an error status
                    await abort_with(context, grpc.StatusCode.UNKNOWN, exc)
            return _encode(result)

        async def stream(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
            if (REPLY_MODE, LAST_VALUE) in (context.invocation_metadata() or ()):  # GrpcClient.send
                await context.write(await unary(request, context))
                return
            result = await call(request, context)
            await self._write_stream(topic, result, context)

        if streams(handler):
            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=_identity, response_serializer=_identity
            )
        return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=_identity, response_serializer=_identity)

    async def _write_stream(self, topic: str, result: Any, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        stats = StreamStats()
        self._streams[id(stats)] = (topic, stats)
        try:
            await write_stream(context, result, stream_buffer=self.stream_buffer, overflow=self.overflow, stats=stats)
        finally:
            del self._streams[id(stats)]
            self._max_buffered = max(self._max_buffered, stats.max_buffered)
            for counts, n in (
                (self.streamed, stats.written),
                (self._dropped, stats.dropped),
                (self.cancelled, int(stats.cancelled)),
                (self.overflowed, int(stats.overflowed)),
            ):
                if n:
                    counts[topic] = counts.get(topic, 0) + n

    @property
    def max_buffered(self) -> int:
        """The most messages one stream buffered at once (an Observable source), in any call so far."""
        return max([self._max_buffered, *(stats.max_buffered for _, stats in self._streams.values())])

    @property
    def dropped(self) -> dict[str, int]:
        """Stream messages discarded by the drop policies, per method (calls in flight included)."""
        out = dict(self._dropped)
        for topic, stats in self._streams.values():
            if stats.dropped:
                out[topic] = out.get(topic, 0) + stats.dropped
        return out


@dataclass
class StreamStats:
    """What :func:`write_stream` did (updated while it runs).

    Attributes:
        written: messages written.
        dropped: values discarded by the drop policies.
        max_buffered: the most values buffered at once (an Observable source).
        overflowed: the ``"close"`` policy ended the call (``RESOURCE_EXHAUSTED``).
        cancelled: the call was cancelled (the client, its deadline, the server's stop).
    """

    written: int = 0
    dropped: int = 0
    max_buffered: int = 0
    overflowed: bool = False
    cancelled: bool = False


async def write_stream(
    context: grpc.aio.ServicerContext[Any, Any],
    source: Any,
    *,
    serialize: Callable[[Any], Any] | None = None,
    stream_buffer: int = 256,
    overflow: OverflowPolicy = "close",
    stats: StreamStats | None = None,
) -> StreamStats:
    """Write ``source`` as the messages of a server-streaming call, with the flow control and the
    overflow policy of the module docstring (for a typed servicer's streaming method; the generic
    service's streams go through it too).

    Args:
        context: the call's servicer context.
        source: an ``Observable`` (through a buffer of ``stream_buffer`` values, then
            ``overflow``), an async iterable (pulled one value per message written; closed with
            ``aclose`` at the end when it is an async generator) or one value (None: no message).
        serialize: value -> the message to write, or a list of messages to write one after the
            other (default: JSON bytes of the value; for a typed method e.g. the generated
            message's bytes). The buffer counts values, not messages.
        stream_buffer: values an Observable may buffer ahead of the writer (>= 1).
        overflow: ``"close"``, ``"drop_oldest"`` or ``"keep_latest"``.
        stats: updated while writing (default: a new one), and returned.

    The call ends ``OK`` when the source ends; with ``UNKNOWN`` (:data:`ERROR_TYPE` the
    exception's class) when it raises or errors; with ``RESOURCE_EXHAUSTED`` (``SlowConsumer``)
    when ``"close"`` ended it. A cancelled call disposes the Observable / closes the iterator and
    raises ``CancelledError``.
    """
    stats = stats if stats is not None else StreamStats()
    write = serialize or _encode
    buffer: StreamBuffer | None = None
    values: AsyncIterator[Any]
    if isinstance(source, Observable):
        buffer = StreamBuffer(source, stream_buffer, overflow, stats=stats)
        values = buffer
    elif isinstance(source, collections.abc.AsyncIterable):
        values = aiter(source)
    else:
        values = _once(source)
    try:
        if buffer is not None:
            buffer.start()
        async for value in values:
            message = write(value)
            if isinstance(message, list):  # one value, several messages
                for each in message:
                    await context.write(each)
                stats.written += len(message)
            else:
                await context.write(message)
                stats.written += 1
    except asyncio.CancelledError:
        stats.cancelled = True
        raise
    except SlowConsumer as exc:
        stats.overflowed = True
        await abort_with(context, grpc.StatusCode.RESOURCE_EXHAUSTED, exc)
    except Exception as exc:  # noqa: BLE001 - the source's error becomes an error status
        await abort_with(context, grpc.StatusCode.UNKNOWN, exc)
    finally:
        if buffer is not None:
            buffer.close()
        elif isinstance(values, collections.abc.AsyncGenerator):
            await values.aclose()
    return stats


async def _once(value: Any) -> AsyncIterator[Any]:
    if value is not None:
        yield value


def _encode(value: Any) -> bytes:
    data = encode_value(value)
    return b"null" if data is None else data


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, exc: BaseException) -> None:
    """End the call with ``code``, ``str(exc)`` as its details and the exception's class name as
    trailing metadata :data:`ERROR_TYPE` (what :class:`GrpcClient` raises as
    :class:`RemoteError`). Always raises (grpc's abort)."""
    context.set_trailing_metadata(((ERROR_TYPE, type(exc).__name__),))
    await context.abort(code, str(exc))


class GrpcClient:
    """Calls the handlers a :class:`GrpcServer` serves.

    Args:
        target: ``HOST:PORT`` of the server.
        namespace: prepended to every pattern (as in :class:`~reactive_services.ClientProxy`).
        max_message_bytes: the largest request or reply message, in bytes.
        options: more grpc channel arguments, e.g. ``[("grpc.http2.bdp_probe", 0)]``.

    Attributes:
        channel: the ``grpc.aio.Channel`` (for a generated stub of a typed service).
    """

    def __init__(
        self, target: str, *, namespace: str = "", max_message_bytes: int = 4 * 1024 * 1024, options: Options = ()
    ) -> None:
        self.target = target
        self.namespace = namespace
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                *options,
            ],
        )

    def send(
        self,
        pattern: str,
        payload: Any,
        *,
        timeout: float = 10.0,
        reply_model: Any = None,
        key: str | bytes | None = None,
    ) -> ReplyObservable[Any]:
        """Call the unary method of ``pattern``: a cold Observable (one call per subscription; it
        can be awaited) emitting the reply value once, then completing. Disposing the
        subscription cancels the call.

        Args:
            pattern: the request pattern (topic without namespace).
            payload: the request value (JSON-serialisable; a pydantic model or dataclass too).
            timeout: the call's deadline, seconds.
            reply_model: validate the reply as this type (as :meth:`ClientProxy.send`).
            key: accepted for :meth:`ClientProxy.send`'s shape and ignored (a direct call has no
                partitions to choose).

        Errors (``on_error``, or raised by ``await``): see the module docstring's table;
        ``ValidationError`` when the reply does not validate as ``reply_model``. A stream
        method answers ``send`` with its last value (request metadata ``rs-reply: last``), as the
        same handler answers over the broker; :meth:`stream` gets every value.

        Raises:
            ConfigError: ``timeout`` is not > 0 (raised by this call).
        """
        if not timeout > 0:
            raise ConfigError("timeout", f"must be > 0 seconds, got {timeout!r}")
        validate = None if reply_model is None else PayloadModel(reply_model, f"reply of {pattern}")
        method = self.channel.unary_unary(
            f"/{SERVICE}/{self.namespace}{pattern}", request_serializer=_identity, response_deserializer=_identity
        )

        async def run() -> Any:
            try:
                data = await method(_encode(payload), timeout=timeout, metadata=_ASK_LAST)
            except grpc.aio.AioRpcError as exc:
                raise _error(exc, pattern, timeout) from exc
            reply = decode_json(data)
            return reply if validate is None else validate(reply)

        return ReplyObservable(run)

    def stream(
        self, pattern: str, payload: Any, *, timeout: float | None = None, reply_model: Any = None
    ) -> Observable[Any]:
        """Call the server-streaming method of ``pattern``: a cold Observable (one call per
        subscription) emitting each message's value, then completing when the server ends the
        stream. Subscribe from a running asyncio event loop.

        Reading is paced by the Observer: the next message is read once ``on_next`` returned
        and the work it tracked (:func:`reactive_services.track`) for the value settled, so a
        slow Observer makes a slow reader and HTTP/2 flow control holds the server back.
        Disposing the subscription cancels the call (the server's handler is cancelled).

        Args:
            pattern: the request pattern (topic without namespace).
            payload: the request value.
            timeout: the deadline of the whole stream, seconds; None: none (until the server
                ends it or the subscription is disposed).
            reply_model: validate each value as this type.

        Errors (``on_error``): the module docstring's table (``RemoteError`` of type
        ``SlowConsumer`` when the server's ``overflow="close"`` ended it); ``ValidationError``
        when a value does not validate; what the Observer's ``on_next`` or its tracked work
        raised (the call is cancelled then).

        Raises:
            ConfigError: ``timeout`` is given and not > 0 (raised by this call).
        """
        if timeout is not None and not timeout > 0:
            raise ConfigError("timeout", f"must be > 0 seconds or None, got {timeout!r}")
        validate = None if reply_model is None else PayloadModel(reply_model, f"stream of {pattern}")
        topic = self.namespace + pattern
        method = self.channel.unary_stream(
            f"/{SERVICE}/{topic}", request_serializer=_identity, response_deserializer=_identity
        )

        def decode(data: bytes) -> Any:
            value = decode_json(data)
            return value if validate is None else validate(value)

        async def run(observer: ObserverBase[Any]) -> None:
            call = method(_encode(payload), timeout=timeout)
            try:
                await read_stream(call.read, grpc.aio.EOF, decode, observer, topic)
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as exc:
                observer.on_error(_error(exc, pattern, timeout or 0.0))
                return
            except Exception as exc:  # noqa: BLE001 - a bad value or the Observer's failure
                call.cancel()
                observer.on_error(exc)
                return
            observer.on_completed()

        return _TaskObservable(run)

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        await self.channel.close()

    async def __aenter__(self) -> GrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _TaskObservable(Observable[Any]):
    """A cold Observable running ``await run(observer)`` in a task per subscription; disposing
    cancels the task."""

    def __init__(self, run: Callable[[ObserverBase[Any]], Any]) -> None:
        super().__init__()
        self._run = run

    def _subscribe_core(self, observer: ObserverBase[Any], scheduler: SchedulerBase | None = None) -> DisposableBase:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            observer.on_error(RuntimeError("subscribe to a gRPC stream from a running asyncio event loop"))
            return Disposable()
        task = loop.create_task(self._run(observer))

        def cancel() -> None:
            task.cancel()

        return Disposable(cancel)


def _error(exc: grpc.aio.AioRpcError, pattern: str, timeout: float) -> Exception:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimeoutError(pattern, timeout)
    if code == grpc.StatusCode.UNAVAILABLE:
        return BrokerUnavailableError(f"gRPC server unavailable for {pattern!r}: {exc.details()}")
    remote_type = _metadata(exc.trailing_metadata()).get(ERROR_TYPE) or code.name
    return RemoteError(remote_type, exc.details() or code.name)


def _metadata(pairs: Any) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs or ():
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out
