"""The shop's inventory over gRPC with Protocol Buffers: ``shop.inventory.v1.Inventory``
(``examples/shop/proto/inventory.proto``), served from the inventory's own database.

:class:`InventoryServicer` implements the three methods over an :class:`InventoryStore`:

=================  ============================================  =====================================
method             answers                                       errors
=================  ============================================  =====================================
``GetStock``       each product's units (unset: unknown), as     ``INVALID_ARGUMENT``: a blank id or
                   ``inventory.get_stock``                        one over 256 characters
``GetOrderOutcome``  the stored outcome, as ``inventory.get_order``  ``NOT_FOUND``: not processed;
                                                                 ``INVALID_ARGUMENT``: a bad id
``WatchStock``     (stream) each product's level when the call   ``RESOURCE_EXHAUSTED``
                   starts, then each new level in commit order   (``SlowConsumer``): the client read
                                                                 too slowly
=================  ============================================  =====================================

A request that is not a valid message of its type (truncated, invalid UTF-8 in a string) is
answered with ``INVALID_ARGUMENT`` (error type ``DecodeError``), not grpc's ``INTERNAL``: the
methods are registered with the bytes as they came and parse them themselves.

``WatchStock`` subscribes to :attr:`InventoryStore.changes` before it reads the levels, and skips
the changes whose version the levels already include (:meth:`InventoryStore.stock_levels`), so a
watcher sees every change exactly once after its first levels, none twice, none out of order. The
changes are a hot Observable, one value per transaction (its changes of the products watched): they
reach the call through :func:`reactive_services.grpc.write_stream`'s bounded buffer
(``stream_buffer`` transactions, then ``overflow``; default ``"close"``: a watcher that stops
reading loses its call, never the inventory's memory, and can call again: its first messages are
the current levels). A transaction of many orders is one buffered value, however many messages.

:class:`InventoryGrpcClient` is the gateway's side: the typed stub behind
:meth:`ClientProxy.send`'s shape, answering ``inventory.get_stock`` / ``inventory.get_order`` with
the same JSON values as the broker's request-reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import pydantic
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message as ProtobufMessage
from reactivex import Observable
from reactivex import operators as ops
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase

from reactive_services import PayloadModel
from reactive_services.adapters.websocket import OverflowPolicy
from reactive_services.errors import (
    BrokerUnavailableError,
    ConfigError,
    DecodeError,
    RemoteError,
    RequestTimeoutError,
    ValidationError,
)
from reactive_services.grpc import ERROR_TYPE, StreamStats, abort_with, write_stream

from .inventory import InventoryStore, StockChange
from .messages import ORDER_QUERY, StockQuery
from .proto import inventory_pb2 as pb
from .proto import inventory_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "InventoryGrpcClient", "InventoryServicer"]

#: The full name of the service (health, reflection).
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Inventory"].full_name

_STOCK_QUERY = PayloadModel(StockQuery, "GetStockRequest")
_STATUS = {"applied": pb.OrderOutcome.APPLIED, "rejected": pb.OrderOutcome.REJECTED}
_STATUS_NAME = {v: k for k, v in _STATUS.items()}

Context = grpc.aio.ServicerContext[Any, Any]


def _identity(data: bytes) -> bytes:
    return data


class InventoryServicer:
    """``shop.inventory.v1.Inventory`` over an open :class:`InventoryStore` (a
    :class:`reactive_services.grpc.Servicer`: ``GrpcServer(servicers=[InventoryServicer(store)])``).

    Args:
        store: the inventory's database (opened before the first call).
        stream_buffer: ``WatchStock`` transactions buffered per call ahead of a slow client (>= 1).
        overflow: what a full buffer does (:func:`reactive_services.grpc.write_stream`).

    Attributes:
        watching: ``WatchStock`` calls in progress.
        overflowed: ``WatchStock`` calls ended because the client read too slowly.
    """

    service_name = SERVICE_NAME

    def __init__(self, store: InventoryStore, *, stream_buffer: int = 256, overflow: OverflowPolicy = "close") -> None:
        if isinstance(stream_buffer, bool) or not isinstance(stream_buffer, int) or stream_buffer < 1:
            raise ConfigError("stream_buffer", f"must be an integer >= 1 (messages), got {stream_buffer!r}")
        self.store = store
        self.stream_buffer = stream_buffer
        self.overflow: OverflowPolicy = overflow
        self.watching = 0
        self.overflowed = 0

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Register the three methods (requests parsed here: a malformed one is ``INVALID_ARGUMENT``)."""
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "GetStock": grpc.unary_unary_rpc_method_handler(
                self._parsed(pb.GetStockRequest, self.get_stock),
                request_deserializer=_identity,
                response_serializer=pb.GetStockResponse.SerializeToString,
            ),
            "GetOrderOutcome": grpc.unary_unary_rpc_method_handler(
                self._parsed(pb.GetOrderOutcomeRequest, self.get_order_outcome),
                request_deserializer=_identity,
                response_serializer=pb.OrderOutcome.SerializeToString,
            ),
            "WatchStock": grpc.unary_stream_rpc_method_handler(
                self._parsed(pb.WatchStockRequest, self.watch_stock),
                request_deserializer=_identity,
                response_serializer=_identity,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, methods),))

    @staticmethod
    def _parsed(
        message_type: type[ProtobufMessage], method: Callable[[Any, Context], Awaitable[Any]]
    ) -> Callable[[bytes, Context], Awaitable[Any]]:
        async def call(data: bytes, context: Context) -> Any:
            request = message_type()
            try:
                request.ParseFromString(data)
            except ProtobufDecodeError as exc:
                error = DecodeError(f"not a {message_type.DESCRIPTOR.full_name}: {exc}")
                await abort_with(context, grpc.StatusCode.INVALID_ARGUMENT, error)
            return await method(request, context)

        return call

    async def get_stock(self, request: pb.GetStockRequest, context: Context) -> pb.GetStockResponse:
        """``GetStock``: the units of each distinct product asked, in the order asked."""
        ids = await _valid(context, lambda: _STOCK_QUERY({"product_ids": list(request.product_ids)}).product_ids)
        units = await self.store.stock_of(ids)
        return pb.GetStockResponse(levels=[pb.StockLevel(product_id=p, units=u) for p, u in units.items()])

    async def get_order_outcome(self, request: pb.GetOrderOutcomeRequest, context: Context) -> pb.OrderOutcome:
        """``GetOrderOutcome``: the stored outcome of one order; ``NOT_FOUND`` when none."""
        order_id = await _valid(context, lambda: ORDER_QUERY({"order_id": request.order_id}).order_id)
        outcome = await self.store.outcome(order_id)
        if outcome is None:
            context.set_trailing_metadata(((ERROR_TYPE, "NotFound"),))
            await context.abort(grpc.StatusCode.NOT_FOUND, f"order {order_id!r} has not been processed")
            raise AssertionError("unreachable")  # abort raises
        return pb.OrderOutcome(
            order_id=order_id,
            status=_STATUS[outcome.status],
            items=[
                pb.OrderOutcome.Item(product_id=i["product_id"], quantity=i["quantity"], remaining=i.get("remaining"))
                for i in outcome.items
            ],
            reason=outcome.reason or "",
        )

    async def watch_stock(self, request: pb.WatchStockRequest, context: Context) -> None:
        """``WatchStock``: the levels when the call starts, then every change, until cancelled."""
        ids = await _valid(context, lambda: _STOCK_QUERY({"product_ids": list(request.product_ids)}).product_ids)
        wanted = set(ids) if ids else None
        early: list[tuple[StockChange, ...]] = []
        # subscribed before the levels are read: nothing committed meanwhile is missed
        catching = self.store.changes.subscribe(early.append)
        try:
            levels, version = await self.store.stock_levels(ids or None)
        except BaseException:
            catching.dispose()
            raise

        def relevant(changes: tuple[StockChange, ...]) -> list[StockChange]:
            return [c for c in changes if c.version > version and (wanted is None or c.product_id in wanted)]

        def subscribe(
            observer: ObserverBase[list[StockChange]], scheduler: SchedulerBase | None = None
        ) -> DisposableBase:
            # synchronously, no change can come in between: the first levels, what was caught
            # while they were read, then the live changes (one value per transaction)
            observer.on_next([StockChange(product_id, units, "", version) for product_id, units in levels.items()])
            for changes in early:
                observer.on_next(relevant(changes))
            watched: Observable[list[StockChange]] = self.store.changes.pipe(ops.map(relevant), ops.filter(bool))
            live = watched.subscribe(observer)
            catching.dispose()
            return live

        self.watching += 1
        stats = StreamStats()
        try:
            await write_stream(
                context,
                Observable(subscribe),
                serialize=_changes,
                stream_buffer=self.stream_buffer,
                overflow=self.overflow,
                stats=stats,
            )
        finally:
            catching.dispose()
            self.watching -= 1
            self.overflowed += int(stats.overflowed)


def _changes(changes: list[StockChange]) -> list[bytes]:
    """One transaction's changes: one ``StockChange`` message each."""
    return [
        pb.StockChange(
            product_id=c.product_id, units=c.units, order_id=c.order_id, version=c.version
        ).SerializeToString()
        for c in changes
    ]


async def _valid(context: Context, read: Callable[[], Any]) -> Any:
    """``read()``; a validation error (naming the fields) ends the call with ``INVALID_ARGUMENT``."""
    try:
        return read()
    except ValidationError as exc:
        await abort_with(context, grpc.StatusCode.INVALID_ARGUMENT, exc)


class InventoryGrpcClient:
    """The inventory's gRPC API with :meth:`ClientProxy.send`'s shape, for the gateway.

    ``send("inventory.get_stock", {"product_ids": [...]})`` calls ``GetStock`` and returns
    ``{product_id: units or None}``; ``send("inventory.get_order", {"order_id": ...})`` calls
    ``GetOrderOutcome`` and returns ``{"status", "items", "reason"}`` or None (``NOT_FOUND``):
    the values the broker's request-reply answers. :meth:`watch_stock` iterates ``WatchStock``.

    Args:
        target: ``HOST:PORT`` of the inventory's gRPC server.
        options: more grpc channel arguments.

    Errors (raised by ``send``): :class:`RequestTimeoutError` past ``timeout``,
    :class:`BrokerUnavailableError` when the server cannot be reached, :class:`RemoteError` for
    any other status (its error type, e.g. ``ValidationError``), :class:`ConfigError` for another
    pattern.
    """

    #: The patterns :meth:`send` answers.
    PATTERNS: tuple[str, ...] = ("inventory.get_stock", "inventory.get_order")

    def __init__(self, target: str, *, options: Sequence[tuple[str, Any]] = ()) -> None:
        self.target = target
        self.channel = grpc.aio.insecure_channel(target, options=list(options))
        self.stub: Any = pb_grpc.InventoryStub(self.channel)  # type: ignore[no-untyped-call]  # generated, untyped

    async def send(self, pattern: str, payload: Any, *, timeout: float = 10.0, key: Any = None) -> Any:
        """One request, as :meth:`ClientProxy.send` (``key`` is ignored)."""
        if isinstance(payload, pydantic.BaseModel):
            payload = payload.model_dump(mode="json")
        try:
            if pattern == "inventory.get_stock":
                stock = await self.stub.GetStock(
                    pb.GetStockRequest(product_ids=payload["product_ids"]), timeout=timeout
                )
                return {level.product_id: level.units if level.HasField("units") else None for level in stock.levels}
            if pattern == "inventory.get_order":
                try:
                    outcome = await self.stub.GetOrderOutcome(
                        pb.GetOrderOutcomeRequest(order_id=payload["order_id"]), timeout=timeout
                    )
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        return None
                    raise
                return {
                    "status": _STATUS_NAME[outcome.status],
                    "items": [_item(i) for i in outcome.items],
                    "reason": outcome.reason or None,
                }
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, pattern, timeout) from exc
        except (KeyError, TypeError) as exc:
            raise RemoteError("ValidationError", f"bad {pattern} payload: {exc!r}") from exc
        raise ConfigError("pattern", f"the inventory's gRPC API answers {', '.join(self.PATTERNS)}, not {pattern!r}")

    async def watch_stock(self, product_ids: Sequence[str] = ()) -> AsyncIterator[pb.StockChange]:
        """The ``WatchStock`` messages, as they come (the call is cancelled when the iteration stops)."""
        call = self.stub.WatchStock(pb.WatchStockRequest(product_ids=list(product_ids)))
        try:
            async for change in call:
                yield change
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, "inventory.watch_stock", 0.0) from exc
        finally:
            call.cancel()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()


def _item(item: pb.OrderOutcome.Item) -> dict[str, Any]:
    out: dict[str, Any] = {"product_id": item.product_id, "quantity": item.quantity}
    if item.HasField("remaining"):
        out["remaining"] = item.remaining
    return out


def _error(exc: grpc.aio.AioRpcError, pattern: str, timeout: float) -> Exception:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimeoutError(pattern, timeout)
    if code == grpc.StatusCode.UNAVAILABLE:
        return BrokerUnavailableError(f"the inventory's gRPC server is unavailable: {exc.details()}")
    remote_type = dict(exc.trailing_metadata() or ()).get(ERROR_TYPE) or code.name
    return RemoteError(str(remote_type), exc.details() or code.name)
