"""Request-reply over gRPC (grpcio's asyncio API): a service's ``@message_pattern`` handlers
served as unary RPCs, and a client with :meth:`ClientProxy.send`'s shape.

Use it where a caller wants a fast, direct answer (no broker hop, HTTP/2, deadlines); keep the
broker for events and for requests that must survive a restart of the answering service.

Wire format (first step, before the shop's ``.proto``): one generic gRPC service,
:data:`SERVICE` (``reactive_services.v1.Requests``), whose method names are the request topics
(namespace included), e.g. ``/reactive_services.v1.Requests/inventory.get_stock``. Request and
reply messages are JSON bytes, as on the broker: the request is the payload, the reply the
handler's return value (``null`` for None; a pydantic model or dataclass as JSON).

Errors (the status, its details, and trailing metadata ``rs-error-type`` with the exception's
class name):

====================================  ======================  ===================================
server side                           status                  client side raises
====================================  ======================  ===================================
request not JSON / does not validate  ``INVALID_ARGUMENT``    :class:`RemoteError` (``DecodeError``
                                                              / ``ValidationError``, the fields)
the handler raised                    ``UNKNOWN``             :class:`RemoteError` (its type and
                                                              message)
no handler for the method             ``UNIMPLEMENTED``       :class:`RemoteError` (``UNIMPLEMENTED``)
the deadline (``timeout``) passed     ``DEADLINE_EXCEEDED``   :class:`RequestTimeoutError`
server unreachable                    ``UNAVAILABLE``         :class:`BrokerUnavailableError`
====================================  ======================  ===================================

The standard gRPC health service (``grpc.health.v1.Health``) reports ``SERVING`` for the
server and for :data:`SERVICE` while it runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from reactivex import Observable

from reactive_services.adapters import Message, decode_json, encode_value

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

__all__ = ["ERROR_TYPE", "SERVICE", "GrpcClient", "GrpcServer"]

#: The generic service whose methods are the request topics.
SERVICE = "reactive_services.v1.Requests"

#: Trailing metadata key of an error status: the class name of the exception behind it.
ERROR_TYPE = "rs-error-type"


def _identity(data: bytes) -> bytes:
    return data


class GrpcServer:
    """Serves the ``@message_pattern`` handlers of Microservices over gRPC (unary RPCs).

    The services need not be started (their handlers are called directly; nothing is consumed
    from the broker for the gRPC calls), and may also answer over the broker at the same time.

    Args:
        services: the Microservices whose request handlers to serve (their namespace applies:
            the method name is the request topic).
        host: the address to listen on.
        port: the port (0: any free port; :attr:`port` says which once started).
        max_message_bytes: the largest request or reply, in bytes.

    Attributes:
        port: the port listened on (after :meth:`start`).
        calls: calls answered, per method (ok or error).

    Raises:
        ConfigError: two services answer the same request topic, or no request handler at all.
    """

    def __init__(
        self,
        services: Iterable[Microservice],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._handlers: dict[str, tuple[Callable[..., Any], PayloadModel | None]] = {}
        for service in services:
            for topic, handler in service._requests.items():
                if topic in self._handlers:
                    raise ConfigError("services", f"two services answer {topic!r}")
                self._handlers[topic] = (handler, service._models.get(topic))
        if not self._handlers:
            raise ConfigError("services", "no @message_pattern handler to serve")
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.calls: dict[str, int] = {}
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    @property
    def address(self) -> str:
        """``HOST:PORT`` for :class:`GrpcClient`."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving.

        Raises:
            ConfigError: the address cannot be bound (key ``"port"``).
        """
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]
        server = grpc.aio.server(options=options)
        methods = {
            topic: grpc.unary_unary_rpc_method_handler(
                self._method(topic, handler, model), request_deserializer=_identity, response_serializer=_identity
            )
            for topic, (handler, model) in self._handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:
            raise ConfigError("port", f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        await server.start()
        self._server = server
        for name in ("", SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls; calls in flight get ``grace_s`` seconds to finish, then are
        cancelled."""
        if self._server is None:
            return
        for name in ("", SERVICE):
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
    ) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Any]:
        wants_message = takes_message(handler)

        async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            self.calls[topic] = self.calls.get(topic, 0) + 1
            try:
                value = decode_json(request)
                payload = value if model is None else model(value)
            except (DecodeError, ValidationError) as exc:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc)
            try:
                if wants_message:
                    metadata = context.invocation_metadata() or ()
                    headers = tuple((k, v.encode() if isinstance(v, str) else v) for k, v in metadata)
                    message = Message(topic, -1, -1, None, value, headers, raw=request)
                    result = handler(payload, message)
                else:
                    result = handler(payload)
                if inspect.isawaitable(result):
                    result = await result
                if isinstance(result, Observable):
                    result = await _last_value(result)
                data = encode_value(result)
                return b"null" if data is None else data
            except Exception as exc:  # noqa: BLE001 - any handler failure becomes an error status
                await _abort(context, grpc.StatusCode.UNKNOWN, exc)
            raise AssertionError("unreachable")  # abort raises

        return unary


async def _abort(context: grpc.aio.ServicerContext[bytes, bytes], code: grpc.StatusCode, exc: BaseException) -> None:
    context.set_trailing_metadata(((ERROR_TYPE, type(exc).__name__),))
    await context.abort(code, str(exc))


class GrpcClient:
    """Calls the request handlers a :class:`GrpcServer` serves.

    Args:
        target: ``HOST:PORT`` of the server.
        namespace: prepended to every pattern (as in :class:`~reactive_services.ClientProxy`).
        max_message_bytes: the largest request or reply, in bytes.
    """

    def __init__(self, target: str, *, namespace: str = "", max_message_bytes: int = 4 * 1024 * 1024) -> None:
        self.target = target
        self.namespace = namespace
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )

    def send(
        self, pattern: str, payload: Any, *, timeout: float = 10.0, reply_model: Any = None
    ) -> ReplyObservable[Any]:
        """Call the handler of ``pattern``: a cold Observable (one call per subscription; it can
        be awaited) emitting the reply value once, then completing. Disposing the subscription
        cancels the call.

        Args:
            pattern: the request pattern (topic without namespace).
            payload: the request value (JSON-serialisable; a pydantic model or dataclass too).
            timeout: the call's deadline, seconds.
            reply_model: validate the reply as this type (as :meth:`ClientProxy.send`).

        Errors (``on_error``, or raised by ``await``): see the module docstring's table;
        ``ValidationError`` when the reply does not validate as ``reply_model``.

        Raises:
            ConfigError: ``timeout`` is not > 0 (raised by this call).
        """
        if not timeout > 0:
            raise ConfigError("timeout", f"must be > 0 seconds, got {timeout!r}")
        validate = None if reply_model is None else PayloadModel(reply_model, f"reply of {pattern}")
        method = self._channel.unary_unary(
            f"/{SERVICE}/{self.namespace}{pattern}", request_serializer=_identity, response_deserializer=_identity
        )

        async def run() -> Any:
            request = encode_value(payload)
            try:
                data = await method(request if request is not None else b"null", timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                raise _error(exc, pattern, timeout) from exc
            reply = decode_json(data)
            return reply if validate is None else validate(reply)

        return ReplyObservable(run)

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled)."""
        await self._channel.close()

    async def __aenter__(self) -> GrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


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
