"""Typed payloads: a handler's annotation (or ``model=``) is validated with pydantic before the
call; a record that does not validate is dead-lettered with the failing fields in its reason;
emit, send and replies take models."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import pydantic
import pytest
import reactivex.operators as ops
from reactivex import Observable
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from reactive_services import ClientProxy, Controller, Microservice, event_pattern, message_pattern
from reactive_services._payloads import payload_model
from reactive_services.adapters import Broker, Message, declare_group, headers_to_dict
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ConfigError, RemoteError, ValidationError
from reactive_services.testing import consume, unique_name, wait_for


class Line(pydantic.BaseModel):
    sku: str
    qty: int = pydantic.Field(ge=1)


class Order(pydantic.BaseModel):
    order_id: str
    lines: list[Line]


@dataclasses.dataclass
class Ping:
    n: int
    note: str = ""


class Stock(TypedDict):
    sku: str
    available: int


GOOD = {"order_id": "o-1", "lines": [{"sku": "a", "qty": 2}]}
BAD_QTY = {"order_id": "o-2", "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": "many"}]}
NO_ID = {"lines": []}


def reasons(broker: InMemoryBroker, topic: str) -> list[str]:
    """The reasons of ``topic``'s dead letters, in the order of the records (over its partitions)."""
    heads = [headers_to_dict(r.headers) for r in broker.records(topic + ".DLT")]
    return [h["dlt.reason"] for h in sorted(heads, key=lambda h: int(h["dlt.original.offset"]))]


@pytest.mark.parametrize("concurrency", [1, 3], ids=["source-awaits", "tasks"])
async def test_a_model_annotation_is_validated_and_bad_records_go_to_the_dead_letters_naming_the_field(
    concurrency: int,
) -> None:
    got: list[Any] = []

    class Orders(Controller):
        @event_pattern("orders")
        async def handle(self, order: Order) -> None:
            got.append(order)

    async with InMemoryBroker() as broker:
        await broker.create_topics(["orders"], partitions=1)
        service = Microservice(broker, [Orders()], name="typed", concurrency=concurrency)
        await service.start()
        for value in (GOOD, BAD_QTY, NO_ID, [1, 2], GOOD):
            await broker.emit("orders", value)
        await wait_for(lambda: len(got) == 2 and service.dead_lettered.get("orders") == 3, what="records")
        await service.stop()
        assert got == [Order.model_validate(GOOD)] * 2 and all(type(o) is Order for o in got)
        assert reasons(broker, "orders") == [
            "invalid Order: lines[1].qty: Input should be a valid integer, unable to parse string as an integer"
            " (got 'many')",
            "invalid Order: order_id: Field required (got {'lines': []})",
            "invalid Order: (root): Input should be a valid dictionary or instance of Order (got [1, 2])",
        ]
        types = {headers_to_dict(r.headers)["dlt.exception.type"] for r in broker.records("orders.DLT")}
        assert types == {"ValidationError"}
        assert service.handled == {"orders": 2}
        assert await broker.committed("typed", "orders", 0) == 5  # dead letters count as handled


async def test_dataclasses_typed_dicts_and_explicit_models_are_validated_too() -> None:
    pings: list[Any] = []
    stocks: list[Any] = []
    explicit: list[Any] = []
    untyped: list[Any] = []

    class Kinds(Controller):
        @event_pattern("pings")
        def ping(self, ping: Ping, message: Message) -> None:
            pings.append((ping, message.offset))

        @event_pattern("stock")
        def stock(self, stock: Stock) -> None:
            stocks.append(stock)

        @event_pattern("explicit", model=Line)
        def explicit(self, line) -> None:  # type: ignore[no-untyped-def]  # untyped: model= says
            explicit.append(line)

        @event_pattern("untyped", model=None)
        def untyped(self, line: Line) -> None:  # model=None: no validation despite the annotation
            untyped.append(line)

    async with InMemoryBroker() as broker:
        topics = ["pings", "stock", "explicit", "untyped"]
        await broker.create_topics(topics, partitions=1)
        service = Microservice(broker, [Kinds()], name="kinds")
        await service.start()
        await broker.emit("pings", {"n": 1})
        await broker.emit("pings", {"n": "one"})
        await broker.emit("stock", {"sku": "a", "available": 3})
        await broker.emit("stock", {"sku": "a"})
        await broker.emit("explicit", {"sku": "a", "qty": 0})
        await broker.emit("explicit", {"sku": "a", "qty": 1})
        await broker.emit("untyped", {"anything": True})
        await wait_for(lambda: sum(service.dead_lettered.values()) == 3 and len(untyped) == 1, what="records")
        await service.stop()
    assert pings == [(Ping(1), 0)]
    assert stocks == [{"sku": "a", "available": 3}]
    assert explicit == [Line(sku="a", qty=1)]
    assert untyped == [{"anything": True}]
    assert reasons(broker, "pings") == [
        "invalid Ping: n: Input should be a valid integer, unable to parse string as an integer (got 'one')"
    ]
    assert reasons(broker, "stock") == ["invalid Stock: available: Field required (got {'sku': 'a'})"]
    assert reasons(broker, "explicit") == ["invalid Line: qty: Input should be greater than or equal to 1 (got 0)"]


async def test_json_annotations_validate_nothing() -> None:
    seen: list[Any] = []

    class Loose(Controller):
        @event_pattern("loose")
        def handle(self, payload: dict[str, Any]) -> None:
            seen.append(payload)

    async with InMemoryBroker() as broker:
        await broker.create_topics(["loose"], partitions=1)
        service = Microservice(broker, [Loose()], name="loose")
        assert service._models == {"loose": None}
        await service.start()
        await broker.emit("loose", [1, 2])  # not a dict: handed over as it is, as before
        await wait_for(lambda: seen == [[1, 2]])
        await service.stop()


def test_an_annotation_that_cannot_be_resolved_or_validated_fails_when_the_service_is_made() -> None:
    class Unresolved(Controller):
        @event_pattern("t")
        def handle(self, payload: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
            pass

    with pytest.raises(ConfigError) as info:
        Microservice(InMemoryBroker(), [Unresolved()], name="bad")
    assert info.value.key == "model" and "NoSuchType" in str(info.value)

    class NotAType(Controller):
        @event_pattern("t", model=asyncio.Event())
        def handle(self, payload: Any) -> None:
            pass

    with pytest.raises(ConfigError) as info:
        Microservice(InMemoryBroker(), [NotAType()], name="bad")
    assert info.value.key == "model"


async def test_emit_send_and_replies_take_models_and_a_caller_can_ask_for_a_typed_reply(broker: Broker) -> None:
    ns = unique_name("tm") + "."

    class Inventory(Controller):
        @message_pattern("reserve")
        def reserve(self, order: Order) -> Stock | Line:
            return Line(sku=order.lines[0].sku, qty=sum(line.qty for line in order.lines))

    service = Microservice(broker, [Inventory()], name="inventory", namespace=ns)
    client = ClientProxy(broker, namespace=ns)
    reader = unique_name("ops")  # reads the dead letter (declared first: RabbitMQ keeps no log)
    await declare_group(broker, reader, [ns + "reserve.DLT"])
    await service.start()
    try:
        await client.connect()
        reply = await client.send("reserve", Order.model_validate(GOOD), reply_model=Line, timeout=30)
        assert reply == Line(sku="a", qty=2)
        raw = await client.send("reserve", Order.model_validate(GOOD), timeout=30)
        assert raw == {"sku": "a", "qty": 2}  # without reply_model: the JSON as it is
        with pytest.raises(ValidationError) as wrong:
            await client.send("reserve", GOOD, reply_model=Ping, timeout=30)
        assert wrong.value.fields == ("n",) and str(wrong.value).startswith("invalid reply of reserve: n: Field")
        with pytest.raises(RemoteError) as refused:
            await client.send("reserve", BAD_QTY, timeout=30)
        assert refused.value.remote_type == "ValidationError"
        assert "lines[1].qty" in refused.value.remote_message
        letters = await consume(broker, ns + "reserve.DLT", 1, group_id=reader)
        letter = headers_to_dict(letters.items[0].headers)
        assert letter["dlt.exception.type"] == "ValidationError" and "lines[1].qty" in letter["dlt.reason"]
        meta = await client.emit("orders.created", Order.model_validate(GOOD))
        assert meta.topic == ns + "orders.created"
    finally:
        await client.close()
        await service.stop()


def test_models_and_dataclasses_encode_as_json() -> None:
    from reactive_services.adapters import encode_value

    nested = {"order": Order.model_validate(GOOD), "ping": Ping(2)}
    assert orjson.loads(encode_value(nested) or b"") == {"order": GOOD, "ping": {"n": 2, "note": ""}}
    with pytest.raises(TypeError):
        encode_value({"event": asyncio.Event()})


async def test_a_pipeline_handler_asking_for_typed_messages_gets_validated_values() -> None:
    got: list[Any] = []

    class Pipeline(Controller):
        @event_pattern("orders", pipeline=True)
        def run(self, messages: Observable[Message[Order]]) -> Observable[Any]:
            return messages.pipe(ops.do_action(lambda m: got.append((m.offset, m.value))))

    async with InMemoryBroker() as broker:
        await broker.create_topics(["orders"], partitions=1)
        service = Microservice(broker, [Pipeline()], name="typed-pipeline")
        await service.start()
        for value in (GOOD, BAD_QTY, GOOD):
            await broker.emit("orders", value)
        await wait_for(lambda: len(got) == 2 and service.dead_lettered == {"orders": 1}, what="records")
        await wait_for(lambda: broker.committed("typed-pipeline", "orders", 0), what="a commit")
        await service.stop()
    assert got == [(0, Order.model_validate(GOOD)), (2, Order.model_validate(GOOD))]
    assert reasons(broker, "orders") == [
        "invalid Order: lines[1].qty: Input should be a valid integer, unable to parse string as an integer"
        " (got 'many')"
    ]
    assert await broker.committed("typed-pipeline", "orders", 0) == 3


PositiveInt = Annotated[int, pydantic.Field(gt=0)]


class Aliased(pydantic.BaseModel):
    order_id: str = pydantic.Field(alias="orderId")


class Other(pydantic.BaseModel):
    x: int


class CallableHandler:
    """A handler that is an object with ``__call__`` (its annotations are strings here)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, line: Line) -> None:
        self.seen.append(line)


if TYPE_CHECKING:  # only for the type checker: must not break resolving the payload's type
    from reactive_services.adapters import Message as CheckedMessage


async def test_string_annotations_resolve_with_their_constraints_and_only_the_payloads() -> None:
    """The module uses ``from __future__ import annotations``: ``Annotated`` constraints hold, and
    a name imported under ``TYPE_CHECKING`` for another parameter does not matter."""
    seen: list[Any] = []

    class Handlers(Controller):
        @event_pattern("positive")
        def positive(self, qty: PositiveInt, message: CheckedMessage) -> None:
            seen.append((qty, message.offset))

    async with InMemoryBroker() as broker:
        await broker.create_topics(["positive"], partitions=1)
        service = Microservice(broker, [Handlers()], name="strings")
        await service.start()
        for value in (-5, 7):
            await broker.emit("positive", value)
        await wait_for(lambda: seen and service.dead_lettered == {"positive": 1}, what="both records")
        await service.stop()
    assert seen == [(7, 1)]
    assert reasons(broker, "positive") == ["invalid int: (root): Input should be greater than 0 (got -5)"]
    assert payload_model(CallableHandler()) is not None  # a callable object's __call__ resolves too


async def test_an_aliased_model_sent_is_read_back_by_the_same_model(broker: Broker) -> None:
    ns = unique_name("al") + "."
    got: list[Any] = []

    class Handlers(Controller):
        @event_pattern("aliased")
        def handle(self, order: Aliased) -> None:
            got.append(order)

        @message_pattern("echo")
        def echo(self, order: Aliased) -> Aliased:
            return order

    service = Microservice(broker, [Handlers()], name="aliases", namespace=ns)
    client = ClientProxy(broker, namespace=ns)
    await service.start()
    try:
        await client.emit("aliased", Aliased(orderId="o-1"))
        await wait_for(lambda: got, what="the event")
        assert got == [Aliased(orderId="o-1")] and service.dead_lettered == {}
        reply = await client.send("echo", Aliased(orderId="o-2"), reply_model=Aliased, timeout=30)
        assert reply == Aliased(orderId="o-2")
    finally:
        await client.close()
        await service.stop()


@pytest.mark.parametrize("concurrency", [1, 3], ids=["source-awaits", "tasks"])
async def test_a_handlers_own_pydantic_error_is_not_blamed_on_the_payload(concurrency: int) -> None:
    class Strict(Controller):
        @event_pattern("orders")
        async def handle(self, order: Order) -> None:
            Other.model_validate({"x": "nope"})  # the handler's own validation fails

    async with InMemoryBroker() as broker:
        await broker.create_topics(["orders"], partitions=1)
        service = Microservice(broker, [Strict()], name="own", concurrency=concurrency)
        await service.start()
        await broker.emit("orders", GOOD)
        await wait_for(lambda: service.dead_lettered == {"orders": 1}, what="the dead letter")
        await service.stop()
    heads = headers_to_dict(broker.records("orders.DLT")[0].headers)
    assert heads["dlt.exception.type"] == "ValidationError"  # pydantic's own class, not ours
    assert not heads["dlt.reason"].startswith("invalid Order") and "Other" in heads["dlt.reason"]


async def test_a_record_with_thousands_of_bad_fields_is_still_dead_lettered_and_the_stream_goes_on(
    broker: Broker,
) -> None:
    ns = unique_name("big") + "."
    got: list[int] = []

    class Lines(Controller):
        @event_pattern("lines")
        def handle(self, lines: list[Line]) -> None:
            got.append(len(lines))

    service = Microservice(broker, [Lines()], name="big", namespace=ns, source_retries=0)
    reader = unique_name("ops")
    await declare_group(broker, reader, [ns + "lines.DLT"])
    await service.start()
    try:
        await broker.emit(ns + "lines", [{"sku": "a", "qty": "x"}] * 15_000)
        await broker.emit(ns + "lines", [{"sku": "a", "qty": 1}])
        await wait_for(lambda: got == [1], what="the good record after the bad one")
        # counted once the broker acknowledged the dead letter (its callback may come a little later)
        await wait_for(lambda: service.dead_lettered == {ns + "lines": 1}, what="the dead letter counted")
        assert service.errors == []
        letter = headers_to_dict((await consume(broker, ns + "lines.DLT", 1, group_id=reader)).items[0].headers)
        assert letter["dlt.reason"].endswith("; and 14990 more")
        assert len(letter["dlt.reason"]) < 2_000
    finally:
        await service.stop()


def test_a_handler_that_cannot_take_a_payload_fails_when_the_service_is_made() -> None:
    class NoPayload(Controller):
        @event_pattern("t")
        def handle(self) -> None:
            pass

    class NeedsMore(Controller):
        @message_pattern("r")
        def handle(self, payload: Any, message: Message, extra: int) -> None:
            pass

    class NeedsKeyword(Controller):
        @event_pattern("t")
        def handle(self, payload: Any, *, flag: bool) -> None:
            pass

    for controller, key, words in (
        (NoPayload(), "t", "must take the payload"),
        (NeedsMore(), "r", "also needs extra"),
        (NeedsKeyword(), "t", "also needs flag"),
    ):
        with pytest.raises(ConfigError) as info:
            Microservice(InMemoryBroker(), [controller], name="shapes")
        assert info.value.key == key and words in str(info.value)

    class Fine(Controller):
        @event_pattern("a")
        def one(self, payload: Any) -> None:
            pass

        @event_pattern("b")
        def two(self, payload: Any, message: Message, note: str = "") -> None:
            pass

        @event_pattern("c")
        def star(self, *args: Any) -> None:
            pass

    Microservice(InMemoryBroker(), [Fine()], name="fine")  # does not raise
