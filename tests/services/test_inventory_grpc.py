"""The shop's typed inventory service (shop.inventory.v1.Inventory) on a real grpcio server on
loopback, with the generated stub: GetStock, GetOrderOutcome, WatchStock (first levels, then
every committed change once, a slow watcher ended with RESOURCE_EXHAUSTED), bad input, an unknown
method, health, reflection, and the gateway's client answering as the broker's request-reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from reactive_services.adapters import DeadLetterSink
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import RemoteError
from reactive_services.examples.shop.inventory import InventoryService, InventoryStore, Order, OrderItem
from reactive_services.examples.shop.inventory_grpc import SERVICE_NAME, InventoryGrpcClient, InventoryServicer
from reactive_services.examples.shop.proto import inventory_pb2 as pb
from reactive_services.examples.shop.proto import inventory_pb2_grpc as pb_grpc
from reactive_services.examples.shop.services import InventoryController
from reactive_services.grpc import ERROR_TYPE, GrpcServer
from reactive_services.testing import wait_for

pytestmark = pytest.mark.timeout(60)

NO_BDP = [("grpc.http2.bdp_probe", 0)]


def order(order_id: str, *items: tuple[str, int]) -> Order:
    return Order(order_id, tuple(OrderItem(p, q) for p, q in items))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[InventoryStore]:
    seed = {"p1": 5, "p2": 1, "p3": 0, **{f"bulk-{n}": 10**6 for n in range(50)}}
    async with InventoryStore(tmp_path / "inventory.db", seed=seed) as opened:
        yield opened


@pytest.fixture
async def served(store: InventoryStore) -> AsyncIterator[tuple[InventoryServicer, GrpcServer, Any, grpc.aio.Channel]]:
    servicer = InventoryServicer(store)
    server = GrpcServer(servicers=[servicer])
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield servicer, server, pb_grpc.InventoryStub(channel), channel  # type: ignore[no-untyped-call]
    finally:
        await channel.close()
        await server.stop(0)


async def test_get_stock_and_get_order_outcome(store: InventoryStore, served: Any) -> None:
    _, _, stub, _ = served
    reply = await stub.GetStock(pb.GetStockRequest(product_ids=["p1", "nope", "p1", "p3"]))
    assert [(lv.product_id, lv.units if lv.HasField("units") else None) for lv in reply.levels] == [
        ("p1", 5),
        ("nope", None),
        ("p3", 0),
    ]
    await store.reserve(order("o-1", ("p1", 2)))
    await store.reserve(order("o-2", ("p2", 3)))
    applied = await stub.GetOrderOutcome(pb.GetOrderOutcomeRequest(order_id="o-1"))
    assert applied.status == pb.OrderOutcome.APPLIED and applied.reason == ""
    assert [(i.product_id, i.quantity, i.remaining) for i in applied.items] == [("p1", 2, 3)]
    rejected = await stub.GetOrderOutcome(pb.GetOrderOutcomeRequest(order_id="o-2"))
    assert rejected.status == pb.OrderOutcome.REJECTED and "requested 3, available 1" in rejected.reason
    assert not rejected.items[0].HasField("remaining")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetOrderOutcome(pb.GetOrderOutcomeRequest(order_id="o-404"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_input_and_an_unknown_method_get_their_statuses(served: Any) -> None:
    _, _, stub, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as blank:
        await stub.GetStock(pb.GetStockRequest(product_ids=["  "]))
    assert blank.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(blank.value.trailing_metadata())[ERROR_TYPE] == "ValidationError"
    assert "product_ids[0]" in (blank.value.details() or "")
    raw = channel.unary_unary(f"/{SERVICE_NAME}/GetStock")
    with pytest.raises(grpc.aio.AioRpcError) as truncated:
        await raw(b"\x0a\x05ab")  # field 1, 5 bytes announced, 2 sent
    assert truncated.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(truncated.value.trailing_metadata())[ERROR_TYPE] == "DecodeError"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await channel.unary_unary(f"/{SERVICE_NAME}/DeleteEverything")(b"")
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_watch_stock_sends_the_levels_then_each_change_once(store: InventoryStore, served: Any) -> None:
    servicer, _, stub, _ = served
    call = stub.WatchStock(pb.WatchStockRequest(product_ids=["p1", "p2"]))
    first = [await call.read(), await call.read()]
    assert [(c.product_id, c.units, c.order_id, c.version) for c in first] == [("p1", 5, "", 0), ("p2", 1, "", 0)]
    await store.reserve(order("o-1", ("p1", 2), ("bulk-1", 1)))  # bulk-1 is not watched
    await store.reserve(order("o-2", ("p2", 5)))  # rejected: no change
    await store.reserve(order("o-3", ("p1", 1), ("p2", 1)))
    later = [await call.read() for _ in range(3)]
    assert [(c.product_id, c.units, c.order_id, c.version) for c in later] == [
        ("p1", 3, "o-1", 1),
        ("p1", 2, "o-3", 2),
        ("p2", 0, "o-3", 2),
    ]
    assert servicer.watching == 1
    call.cancel()
    await wait_for(lambda: servicer.watching == 0)
    assert not store.changes.observers


async def test_a_watcher_that_stops_reading_is_ended_with_resource_exhausted(tmp_path: Path) -> None:
    async with InventoryStore(tmp_path / "slow.db", seed={f"p{n}": 10**6 for n in range(200)}) as store:
        servicer = InventoryServicer(store, stream_buffer=4)
        async with GrpcServer(servicers=[servicer], options=NO_BDP) as server:
            async with grpc.aio.insecure_channel(server.address, options=NO_BDP) as channel:
                call = pb_grpc.InventoryStub(channel).WatchStock(pb.WatchStockRequest())  # type: ignore[no-untyped-call]
                assert (await call.read()).version == 0  # then it reads no more
                n = 0
                while store.changes.observers and n < 10_000:  # transactions of 200 changes each
                    n += 1
                    await store.reserve_many([order(f"o-{n}-{p}", (f"p{p}", 1)) for p in range(200)])
                    await asyncio.sleep(0)
                assert not store.changes.observers  # the call let go of the changes at once
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    while await call.read() is not grpc.aio.EOF:  # what was in flight, then the status
                        pass
                assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert dict(ended.value.trailing_metadata())[ERROR_TYPE] == "SlowConsumer"
                assert servicer.overflowed == 1 and servicer.watching == 0


async def test_health_and_reflection_describe_the_service(served: Any) -> None:
    _, _, _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="shop.inventory.v1.StockChange"),
    ]
    listed, described = [r async for r in reflection.ServerReflectionInfo(iter(requests))]
    assert {s.name for s in listed.list_services_response.service} == {
        SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    files = described.file_descriptor_response.file_descriptor_proto
    assert len(files) == 1 and b"shop.inventory.v1" in files[0] and b"WatchStock" in files[0]


async def test_the_gateways_client_answers_as_the_brokers_request_reply(store: InventoryStore, served: Any) -> None:
    _, server, _, _ = served
    await store.reserve(order("o-1", ("p1", 2)))
    await store.reserve(order("o-2", ("p2", 3)))
    controller = InventoryController(InventoryService(store, _no_emit), DeadLetterSink(InMemoryBroker()))
    client = InventoryGrpcClient(server.address)
    try:
        from reactive_services.examples.shop.messages import OrderQuery, StockQuery

        stock = {"product_ids": ["p1", "p2", "nope"]}
        assert await client.send("inventory.get_stock", stock, timeout=5) == await controller.get_stock(
            StockQuery(**stock)
        )
        for order_id in ("o-1", "o-2", "o-404"):
            over_grpc = await client.send("inventory.get_order", {"order_id": order_id}, timeout=5)
            assert over_grpc == await controller.get_order(OrderQuery(order_id=order_id))
        with pytest.raises(RemoteError) as invalid:
            await client.send("inventory.get_order", {"order_id": ""}, timeout=5)
        assert invalid.value.remote_type == "ValidationError"
        levels = client.watch_stock(["p1"])
        first = await anext(levels)
        assert (first.product_id, first.units) == ("p1", 3)
        await levels.aclose()
    finally:
        await client.close()


async def _no_emit(*args: Any, **kwargs: Any) -> None:
    return None
