"""Request-reply over gRPC against a real grpcio server and client on loopback: unary calls,
errors as statuses, deadlines, unknown methods, bad input, cancellation, a graceful stop and
the standard health service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pydantic
import pytest
import reactivex
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reactivex import Observable

from reactive_services import Controller, InMemoryBroker, Message, Microservice, message_pattern
from reactive_services.errors import BrokerUnavailableError, ConfigError, RemoteError, RequestTimeoutError
from reactive_services.grpc import SERVICE, GrpcClient, GrpcServer

pytestmark = pytest.mark.timeout(30)


class Query(pydantic.BaseModel):
    product_ids: list[str] = pydantic.Field(min_length=1)


class Stock(pydantic.BaseModel):
    units: dict[str, int]


class Inventory(Controller):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.finished: list[str] = []
        self.metadata: list[Any] = []

    @message_pattern("stock.get")
    async def stock(self, query: Query) -> Stock:
        return Stock(units={p: len(p) for p in query.product_ids})

    @message_pattern("stock.fail")
    def fail(self, payload: Any) -> None:
        raise LookupError(f"no product {payload['product_id']!r}")

    @message_pattern("stock.slow")
    async def slow(self, payload: dict[str, Any]) -> str:
        self.started.append(payload["id"])
        try:
            await asyncio.sleep(payload["seconds"])
        except asyncio.CancelledError:
            self.cancelled.append(payload["id"])
            raise
        self.finished.append(payload["id"])
        return payload["id"]

    @message_pattern("stock.stream_last")
    def last(self, payload: Any) -> Observable[int]:
        return reactivex.of(1, 2, 3)

    @message_pattern("stock.who")
    def who(self, payload: Any, message: Message) -> str:
        return (message.header("x-caller") or b"").decode()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Inventory, GrpcServer, GrpcClient]]:
    inventory = Inventory()
    service = Microservice(InMemoryBroker(), [inventory], name="inventory", namespace="ns.")
    server = GrpcServer([service])
    await server.start()
    client = GrpcClient(server.address, namespace="ns.")
    try:
        yield inventory, server, client
    finally:
        await client.close()
        await server.stop(0)


async def test_a_unary_call_gets_the_handlers_reply(served: tuple[Inventory, GrpcServer, GrpcClient]) -> None:
    _, server, client = served
    assert await client.send("stock.get", {"product_ids": ["ab", "abc"]}) == {"units": {"ab": 2, "abc": 3}}
    typed = await client.send("stock.get", Query(product_ids=["x"]), reply_model=Stock)
    assert typed == Stock(units={"x": 1})
    assert await client.send("stock.stream_last", None) == 3  # an Observable's last value
    assert server.calls == {"ns.stock.get": 2, "ns.stock.stream_last": 1}


async def test_errors_come_back_as_statuses_with_their_type(served: tuple[Inventory, GrpcServer, GrpcClient]) -> None:
    _, _, client = served
    with pytest.raises(RemoteError) as raised:
        await client.send("stock.fail", {"product_id": "p-1"})
    assert (raised.value.remote_type, raised.value.remote_message) == ("LookupError", "no product 'p-1'")
    with pytest.raises(RemoteError) as invalid:
        await client.send("stock.get", {"product_ids": []})
    assert invalid.value.remote_type == "ValidationError" and "product_ids" in invalid.value.remote_message
    with pytest.raises(RemoteError) as not_json:
        await client.send("stock.get", b"{not json")
    assert not_json.value.remote_type == "DecodeError"
    with pytest.raises(RemoteError) as unknown:
        await client.send("stock.nothing", {})
    assert unknown.value.remote_type == "UNIMPLEMENTED"


async def test_a_deadline_is_a_request_timeout(served: tuple[Inventory, GrpcServer, GrpcClient]) -> None:
    inventory, _, client = served
    with pytest.raises(RequestTimeoutError):
        await client.send("stock.slow", {"id": "late", "seconds": 5}, timeout=0.2)
    await asyncio.sleep(0.2)
    assert inventory.cancelled == ["late"]  # the server's handler was cancelled with the call


async def test_disposing_the_subscription_cancels_the_call(served: tuple[Inventory, GrpcServer, GrpcClient]) -> None:
    inventory, _, client = served
    subscription = client.send("stock.slow", {"id": "dropped", "seconds": 5}).subscribe()
    for _ in range(100):
        if inventory.started:
            break
        await asyncio.sleep(0.02)
    assert inventory.started == ["dropped"]
    subscription.dispose()
    for _ in range(100):
        if inventory.cancelled:
            break
        await asyncio.sleep(0.02)
    assert inventory.cancelled == ["dropped"] and inventory.finished == []


async def test_a_graceful_stop_lets_calls_in_flight_finish(served: tuple[Inventory, GrpcServer, GrpcClient]) -> None:
    inventory, server, client = served
    call = asyncio.ensure_future(_await(client.send("stock.slow", {"id": "in-flight", "seconds": 0.3})))
    while not inventory.started:
        await asyncio.sleep(0.01)
    await server.stop(grace_s=5.0)
    assert await call == "in-flight"
    with pytest.raises(BrokerUnavailableError):
        await client.send("stock.get", {"product_ids": ["a"]}, timeout=2.0)


async def _await(observable: Any) -> Any:
    return await observable


async def test_metadata_reaches_a_handler_that_takes_the_message(
    served: tuple[Inventory, GrpcServer, GrpcClient],
) -> None:
    _, server, _ = served
    async with grpc.aio.insecure_channel(server.address) as channel:
        method = channel.unary_unary(f"/{SERVICE}/ns.stock.who")
        assert await method(b"null", metadata=(("x-caller", "gateway"),)) == b'"gateway"'


async def test_the_health_service_says_serving(served: tuple[Inventory, GrpcServer, GrpcClient]) -> None:
    _, server, _ = served
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_bad_configuration_is_refused() -> None:
    class Events(Controller):
        @message_pattern("a")
        def a(self, payload: Any) -> None: ...

    broker = InMemoryBroker()
    with pytest.raises(ConfigError, match="two services answer 'a'"):
        GrpcServer([Microservice(broker, [Events()], name="one"), Microservice(broker, [Events()], name="two")])
    with pytest.raises(ConfigError, match="timeout"):
        GrpcClient("127.0.0.1:1").send("a", {}, timeout=0)
