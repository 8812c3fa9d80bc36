"""Request-reply (``@message_pattern`` + ``ClientProxy.send``) on the in-memory broker and on Kafka.

Every test taking ``broker`` runs twice: on :class:`InMemoryBroker`, then on a real Kafka broker.
Each test works in a namespace of its own, so its topics and groups are new on Kafka.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import reactivex

from reactive_services import ClientProxy, Controller, Microservice, message_pattern, testing
from reactive_services.adapters import DeadLetterSink, declare_group, headers_to_dict
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import (
    BrokerError,
    ConfigError,
    RemoteError,
    RequestTimeoutError,
)
from reactive_services.examples.shop.inventory import InventoryService, InventoryStore
from reactive_services.examples.shop.services import InventoryController
from reactive_services.testing import unique_name, wait_for


class Calculator(Controller):
    def __init__(self) -> None:
        self.calls = 0

    @message_pattern("math.add")
    def add(self, payload: dict) -> int:
        self.calls += 1
        return payload["a"] + payload["b"]

    @message_pattern("math.sum_async")
    async def sum_async(self, payload: list[int]) -> int:
        await asyncio.sleep(0)
        return sum(payload)

    @message_pattern("math.running_totals")
    def running_totals(self, payload: list[int]) -> reactivex.Observable[int]:
        return reactivex.from_iterable(payload).pipe(reactivex.operators.scan(lambda acc, x: acc + x, 0))

    @message_pattern("math.divide")
    def divide(self, payload: dict) -> float:
        if payload["by"] == 0:
            raise ZeroDivisionError(f"cannot divide {payload['x']} by zero")
        return payload["x"] / payload["by"]

    @message_pattern("math.echo")
    def echo(self, payload: Any, message) -> dict:
        return {"payload": payload, "key": message.key_str}


def namespace() -> str:
    return unique_name("rr") + "."


@pytest.fixture
async def calculator(broker):
    """A running Microservice with the Calculator, in a fresh namespace; yields (service, namespace)."""
    ns = namespace()
    service = Microservice(broker, [Calculator()], name=f"{ns}calc", namespace=ns)
    await service.start()
    yield service, ns
    await service.stop()


async def collect(observable: reactivex.Observable[Any], timeout: float = 20.0) -> tuple[list[Any], Any]:
    """Subscribe; return (values, "completed" or the error) once the subscription ended (the kit's collect)."""
    got = await testing.collect(observable, timeout=timeout)
    return got.items, "completed" if got.completed else got.error


async def test_the_reply_arrives_once_and_the_observable_completes(broker, calculator) -> None:
    service, ns = calculator
    async with ClientProxy(broker, namespace=ns) as client:
        values, end = await collect(client.send("math.add", {"a": 2, "b": 3}))
    assert values == [5]
    assert end == "completed"
    assert service.replied == {f"{ns}math.add": 1}


async def test_send_can_be_awaited_and_the_handler_may_take_the_message(broker, calculator) -> None:
    _, ns = calculator
    async with ClientProxy(broker, namespace=ns) as client:
        assert await client.send("math.add", {"a": 40, "b": 2}) == 42
        assert await client.send("math.echo", [1, "x"], key="k1") == {"payload": [1, "x"], "key": "k1"}
        assert client.replies_received == 2


async def test_a_send_observable_is_cold_each_subscription_is_one_request(broker, calculator) -> None:
    service, ns = calculator
    async with ClientProxy(broker, namespace=ns) as client:
        request = client.send("math.add", {"a": 1, "b": 1})
        assert service.replied == {}  # nothing sent before a subscription
        assert [await request, await request] == [2, 2]
    assert service.replied == {f"{ns}math.add": 2}


async def test_an_observable_returning_handler_replies_with_its_last_value(broker, calculator) -> None:
    _, ns = calculator
    async with ClientProxy(broker, namespace=ns) as client:
        values, end = await collect(client.send("math.running_totals", [1, 2, 3, 4]))
    assert (values, end) == ([10], "completed")


async def test_an_async_handler_is_awaited(broker, calculator) -> None:
    _, ns = calculator
    async with ClientProxy(broker, namespace=ns) as client:
        assert await client.send("math.sum_async", [1, 2, 3]) == 6


async def test_a_request_that_is_not_json_gets_an_error_reply_at_once_and_a_dead_letter(broker, calculator) -> None:
    service, ns = calculator
    reader = unique_name("ops")  # reads the dead letter (declared first: RabbitMQ keeps no log)
    await declare_group(broker, reader, [f"{ns}math.add.DLT"])
    async with ClientProxy(broker, namespace=ns) as client:
        with pytest.raises(RemoteError) as caught:
            await client.send("math.add", b"{not json", timeout=20)  # answered long before 20 s
    assert caught.value.remote_type == "DecodeError" and "not JSON" in caught.value.remote_message
    assert service.error_replies == {f"{ns}math.add": 1}
    dead = await testing.consume(broker, f"{ns}math.add.DLT", 1, decode=None, group_id=reader)
    assert dead.items[0].raw == b"{not json"
    assert headers_to_dict(dead.items[0].headers)["dlt.exception.type"] == "DecodeError"


async def test_no_reply_within_the_timeout_raises_request_timeout_error(broker) -> None:
    ns = namespace()  # no service answers in this namespace
    async with ClientProxy(broker, namespace=ns) as client:
        client.subscribe_to_response_of("nobody.home")
        await client.connect()
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as caught:
            await client.send("nobody.home", {}, timeout=0.5)
        elapsed = time.monotonic() - started
        values, end = await collect(client.send("nobody.home", {}, timeout=0.3))
    assert 0.5 <= elapsed < 2.0
    assert caught.value.retriable and caught.value.pattern == "nobody.home" and caught.value.timeout == 0.5
    assert values == [] and isinstance(end, RequestTimeoutError)


async def test_a_handler_exception_becomes_a_remote_error(broker, calculator) -> None:
    service, ns = calculator
    async with ClientProxy(broker, namespace=ns) as client:
        with pytest.raises(RemoteError) as caught:
            await client.send("math.divide", {"x": 7, "by": 0})
        values, end = await collect(client.send("math.divide", {"x": 7, "by": 0}))
        assert await client.send("math.divide", {"x": 7, "by": 2}) == 3.5  # the service goes on
    assert caught.value.remote_type == "ZeroDivisionError"
    assert caught.value.remote_message == "cannot divide 7 by zero"
    assert not caught.value.retriable
    assert values == [] and isinstance(end, RemoteError) and end.remote_type == "ZeroDivisionError"
    assert service.error_replies == {f"{ns}math.divide": 2}
    assert service.replied == {f"{ns}math.divide": 1}
    assert service.errors == []


async def test_two_clients_sending_concurrently_each_get_only_their_own_replies(broker, calculator) -> None:
    _, ns = calculator
    n = 15
    first = ClientProxy(broker, namespace=ns, client_id="a")
    second = ClientProxy(broker, namespace=ns, client_id="b")
    await asyncio.gather(first.connect(), second.connect())
    results = await asyncio.gather(
        *(first.send("math.add", {"a": i, "b": 1000}) for i in range(n)),
        *(second.send("math.add", {"a": i, "b": 2000}) for i in range(n)),
    )
    assert results[:n] == [i + 1000 for i in range(n)]
    assert results[n:] == [i + 2000 for i in range(n)]
    # each read every reply of the topic in a group of its own, kept its n and dropped the other's n
    topic = f"{ns}math.add.reply"
    assert first.reply_group_ids[topic] != second.reply_group_ids[topic]
    assert first.reply_group_ids[topic].startswith("a-replies-")
    assert second.reply_group_ids[topic].startswith("b-replies-")
    await wait_for(lambda: first.unexpected_replies == n and second.unexpected_replies == n)
    assert first.replies_received == n and second.replies_received == n
    await asyncio.gather(first.close(), second.close())


async def test_a_request_sent_right_after_connect_gets_its_reply(broker, calculator) -> None:
    """Bug-report case (e): the reply consumer must be positioned before the first request."""
    _, ns = calculator
    client = ClientProxy(broker, namespace=ns)
    client.subscribe_to_response_of("math.add")
    await client.connect()
    assert await client.send("math.add", {"a": 1, "b": 2}, timeout=5.0) == 3
    await client.close()
    lazy = ClientProxy(broker, namespace=ns)  # no connect(): send connects and waits itself
    assert await lazy.send("math.add", {"a": 3, "b": 4}, timeout=5.0) == 7
    assert list(lazy.reply_group_ids) == [f"{ns}math.add.reply"]
    await lazy.close()


async def test_on_assigned_fires_once_positioned_at_the_end_and_nothing_after_is_missed(broker) -> None:
    topic = unique_name("assigned")
    await broker.create_topics([topic])
    await broker.emit(topic, {"old": True})
    ready = asyncio.Event()
    calls: list[int] = []
    got: list[Any] = []
    stop = asyncio.Event()
    source = broker.source(
        topic,
        group_id=unique_name("g"),
        auto_offset_reset="latest",
        stop=stop,
        on_assigned=lambda: (calls.append(1), ready.set()),
    )
    sub = source.subscribe(lambda m: got.append(m.value))
    await asyncio.wait_for(ready.wait(), 20)
    await broker.emit(topic, {"new": 1})  # immediately after the signal
    await wait_for(lambda: got == [{"new": 1}])
    stop.set()
    await asyncio.sleep(0.3)
    sub.dispose()
    assert calls == [1]


async def test_an_on_assigned_callback_that_raises_ends_the_source_with_on_error(broker) -> None:
    topic = unique_name("assigned")
    await broker.create_topics([topic])

    def boom() -> None:
        raise RuntimeError("callback failed")

    source = broker.source(topic, group_id=unique_name("g"), on_assigned=boom)
    values, end = await collect(source)
    assert values == [] and isinstance(end, RuntimeError) and str(end) == "callback failed"


async def test_a_request_without_correlation_id_is_counted_not_answered() -> None:
    async with InMemoryBroker() as broker:
        service = Microservice(broker, [Calculator()], name="calc")
        await service.start()
        await broker.emit("math.add", {"a": 1, "b": 1})
        await wait_for(lambda: service._responder.stats["unanswerable"] == 1)
        await service.stop()
        assert broker.records("math.add.reply") == []
        assert (
            sum([await broker.committed("calc.requests", "math.add", p) or 0 for p in range(3)]) == 1
        )  # not redelivered


async def test_a_reply_for_a_request_nobody_waits_for_is_dropped_and_counted() -> None:
    async with InMemoryBroker() as broker:
        async with ClientProxy(broker) as client:
            client.subscribe_to_response_of("math.add")
            await client.connect()
            await broker.emit("math.add.reply", 5, headers=[("correlation-id", b"f" * 32), ("reply-status", b"ok")])
            await wait_for(lambda: client.unexpected_replies == 1)
            assert client.replies_received == 0


async def test_closing_the_client_fails_a_waiting_request() -> None:
    async with InMemoryBroker() as broker:
        client = ClientProxy(broker)
        client.subscribe_to_response_of("slow")
        await client.connect()
        waiting = asyncio.ensure_future(client.send("slow", {}, timeout=30))
        await wait_for(lambda: len(broker.records("slow")) == 1)
        await client.close()
        with pytest.raises(BrokerError, match="closed"):
            await waiting


def test_message_pattern_and_client_settings_are_validated() -> None:
    with pytest.raises(ConfigError):
        message_pattern()
    with pytest.raises(ConfigError):
        message_pattern("")
    with pytest.raises(ConfigError, match="ready_timeout"):
        ClientProxy(InMemoryBroker(), ready_timeout=0)

    class Twice(Controller):
        @message_pattern("x")
        def a(self, payload: Any) -> None: ...

        @message_pattern("x")
        def b(self, payload: Any) -> None: ...

    with pytest.raises(ConfigError, match="two handlers"):
        Microservice(InMemoryBroker(), [Twice()], name="svc")


async def test_custom_reply_topic_per_client() -> None:
    async with InMemoryBroker() as broker:
        service = Microservice(broker, [Calculator()], name="calc")
        await service.start()
        async with ClientProxy(broker, reply_topics={"math.add": "my-replies"}) as client:
            assert await client.send("math.add", {"a": 1, "b": 1}) == 2
        await service.stop()
        [reply] = broker.records("my-replies")
        assert dict(reply.headers)["reply-status"] == b"ok"
        assert broker.records("math.add.reply") == []


async def test_inventory_answers_get_stock_through_a_microservice(broker, tmp_path) -> None:
    ns = namespace()
    async with InventoryStore(tmp_path / "inventory.db", seed={"p1": 5, "p2": 0}) as store:
        inventory = InventoryService(store, broker.emit)
        controller = InventoryController(inventory, DeadLetterSink(broker))
        service = Microservice(broker, [controller], name=f"{ns}inventory", namespace=ns)
        await service.start()
        async with ClientProxy(broker, namespace=ns, client_id="shop") as client:
            stock = await client.send("inventory.get_stock", {"product_ids": ["p1", "p2", "unknown"]})
            assert stock == {"p1": 5, "p2": 0, "unknown": None}
            assert await client.send("inventory.get_stock", {"product_ids": []}) == {}
            with pytest.raises(RemoteError) as caught:
                await client.send("inventory.get_stock", {"products": ["p1"]})
        await service.stop()
    assert caught.value.remote_type == "ValidationError"
    assert caught.value.remote_message.startswith("invalid StockQuery: product_ids: Field required")
    assert service.replied == {f"{ns}inventory.get_stock": 2}
    assert service.error_replies == {f"{ns}inventory.get_stock": 1}
