"""The AsyncAPI 3.0 document generated from Microservices and ClientProxies: what it says about
a small system (channels, operations, payload schemas from the handlers' types, replies, dead
letters, namespaces), and that the shop's document passes the AsyncAPI project's own parser."""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic
import pytest
import yaml
from asyncapi_check import assert_valid_asyncapi, asyncapi_diagnostics, errors
from reactivex import Observable
from typing_extensions import TypedDict

from reactive_services import (
    ClientProxy,
    Controller,
    InMemoryBroker,
    Message,
    Microservice,
    event_pattern,
    message_pattern,
)
from reactive_services.asyncapi import Deployment, WebSocketApi, asyncapi_document, dumps
from reactive_services.errors import ConfigError
from reactive_services.examples.shop.system import deployment


class Line(pydantic.BaseModel):
    sku: str
    qty: int = pydantic.Field(ge=1)


class Order(pydantic.BaseModel):
    order_id: str
    lines: list[Line]


@dataclasses.dataclass
class Shipped:
    order_id: str
    carrier: str


class StockQuery(TypedDict):
    skus: list[str]


class Warehouse(Controller):
    @event_pattern("orders", emits={"shipped": Shipped, "backorders": None})
    async def ship(self, order: Order) -> None:
        """Ship an order when every line is in stock."""

    @event_pattern("returns", pipeline=True)
    def returns(self, messages: Observable[Message[Shipped]]) -> Observable[Any]:
        return messages

    @message_pattern("stock.get")
    def stock(self, query: StockQuery) -> dict[str, int]:
        """Units in stock per sku."""
        return {}

    @message_pattern("ping")
    def ping(self, payload: Any) -> Observable[str]:
        raise NotImplementedError


def system(namespace: str = "") -> tuple[Microservice, ClientProxy]:
    broker = InMemoryBroker()
    service = Microservice(broker, [Warehouse()], name="warehouse", namespace=namespace)
    client = ClientProxy(
        broker, namespace=namespace, client_id="web", emits={"orders": Order}, sends=["stock.get", "elsewhere.get"]
    )
    return service, client


def channel_of(document: dict[str, Any], topic: str) -> dict[str, Any]:
    found = [c for c in document["channels"].values() if c["address"] == topic]
    assert len(found) == 1, f"{topic}: {len(found)} channels"
    return found[0]


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return resolve(document, node["$ref"]) if isinstance(node, dict) and set(node) == {"$ref"} else node


def message_of(document: dict[str, Any], topic: str) -> dict[str, Any]:
    (ref,) = channel_of(document, topic)["messages"].values()
    return resolve(document, ref["$ref"])


def operations(document: dict[str, Any], app: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(action, topic): operation}`` of one application (by its tag)."""
    out = {}
    for op in document["operations"].values():
        if op["tags"] == [{"name": app}]:
            out[(op["action"], resolve(document, op["channel"]["$ref"])["address"])] = op
    return out


def test_the_document_lists_every_topic_with_its_dead_letter_and_reply_topics() -> None:
    document = asyncapi_document(*system())
    addresses = sorted(c["address"] for c in document["channels"].values())
    assert addresses == sorted(
        [
            "orders", "orders.DLT", "returns", "returns.DLT", "shipped", "backorders",
            "stock.get", "stock.get.DLT", "stock.get.reply", "ping", "ping.DLT", "ping.reply",
            "elsewhere.get", "elsewhere.get.reply",
        ]
    )  # fmt: skip
    assert document["asyncapi"] == "3.0.0"
    assert_valid_asyncapi(document)


def test_operations_say_who_receives_sends_and_answers() -> None:
    document = asyncapi_document(*system())
    service = operations(document, "warehouse")
    assert set(service) == {
        ("receive", "orders"),
        ("receive", "returns"),
        ("send", "shipped"),
        ("send", "backorders"),
        ("send", "orders.DLT"),
        ("send", "returns.DLT"),
        ("send", "stock.get.DLT"),
        ("send", "ping.DLT"),
        ("receive", "stock.get"),
        ("receive", "ping"),
    }
    assert service[("receive", "orders")]["summary"] == "Ship an order when every line is in stock."
    assert service[("receive", "orders")]["bindings"]["kafka"]["groupId"] == {"type": "string", "enum": ["warehouse"]}
    # requests are read in a group of their own
    assert service[("receive", "stock.get")]["bindings"]["kafka"]["groupId"]["enum"] == ["warehouse.requests"]
    client = operations(document, "web")
    assert set(client) == {("send", "orders"), ("send", "stock.get"), ("send", "elsewhere.get")}


def test_payload_schemas_come_from_the_handlers_types() -> None:
    document = asyncapi_document(*system())
    schemas = document["components"]["schemas"]
    order = message_of(document, "orders")
    assert order["title"] == "Order"
    assert order["payload"] == {"$ref": "#/components/schemas/Order"}
    assert schemas["Order"]["required"] == ["order_id", "lines"]
    assert schemas["Order"]["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    assert schemas["Line"]["properties"]["qty"] == {"minimum": 1, "title": "Qty", "type": "integer"}
    assert resolve(document, message_of(document, "shipped")["payload"]["$ref"])["required"] == ["order_id", "carrier"]
    # a pipeline handler's Observable[Message[Shipped]]
    assert message_of(document, "returns")["payload"] == {"$ref": "#/components/schemas/Shipped"}
    # declared without a type: any JSON
    assert message_of(document, "backorders")["payload"] == {}


def test_a_request_has_its_reply_and_error_reply_correlated_by_header() -> None:
    document = asyncapi_document(*system())
    op = operations(document, "warehouse")[("receive", "stock.get")]
    request = resolve(document, op["messages"][0]["$ref"])
    assert resolve(document, request["payload"]["$ref"])["properties"]["skus"] == {
        "items": {"type": "string"},
        "title": "Skus",
        "type": "array",
    }
    assert request["correlationId"] == {"location": "$message.header#/correlation-id"}
    assert set(request["headers"]["required"]) == {"correlation-id", "reply-topic"}
    reply = op["reply"]
    assert reply["address"]["location"] == "$message.header#/reply-topic"
    assert resolve(document, reply["channel"]["$ref"])["address"] == "stock.get.reply"
    ok, error = (resolve(document, m["$ref"]) for m in reply["messages"])
    # the return annotation dict[str, int]
    assert ok["payload"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert ok["headers"]["properties"]["reply-status"]["const"] == "ok"
    assert error["headers"]["properties"]["reply-status"]["const"] == "error"
    assert resolve(document, error["payload"]["$ref"])["required"] == ["error"]
    # Observable[str]: the reply is the Observable's last value, a string
    ping = operations(document, "warehouse")[("receive", "ping")]
    assert resolve(document, ping["reply"]["messages"][0]["$ref"])["payload"] == {"type": "string"}
    # the client's request to the same pattern carries the service's types
    sent = operations(document, "web")[("send", "stock.get")]
    assert sent["messages"] == op["messages"]


def test_dead_letters_carry_the_reason_headers() -> None:
    document = asyncapi_document(*system())
    dead = message_of(document, "orders.DLT")
    assert {"dlt.reason", "dlt.exception.type", "dlt.original.offset"} <= set(dead["headers"]["properties"])


def test_the_namespace_is_part_of_every_address() -> None:
    document = asyncapi_document(*system("staging."))
    addresses = {c["address"] for c in document["channels"].values()}
    assert "staging.orders" in addresses and "staging.stock.get.reply" in addresses
    assert not {a for a in addresses if not a.startswith("staging.")}
    assert_valid_asyncapi(document)


def test_a_kafka_broker_is_the_server() -> None:
    from reactive_services import KafkaBroker

    service = Microservice(KafkaBroker("kafka-1:9092,kafka-2:9092"), [Warehouse()], name="warehouse")
    server = asyncapi_document(service)["servers"]["broker"]
    assert server["host"] == "kafka-1:9092" and server["protocol"] == "kafka"
    assert "kafka-2:9092" in server["description"]


def test_yaml_and_json_say_the_same() -> None:
    document = asyncapi_document(*system())
    assert yaml.safe_load(dumps(document, "yaml")) == document
    assert yaml.safe_load(dumps(document, "json")) == document
    with pytest.raises(ConfigError, match="format"):
        dumps(document, "xml")  # type: ignore[arg-type]


def test_bad_targets_and_declarations_are_refused() -> None:
    with pytest.raises(ConfigError, match="target"):
        asyncapi_document("order-service")
    with pytest.raises(ConfigError, match="target"):
        asyncapi_document()
    with pytest.raises(ConfigError, match="emits"):
        event_pattern("a", emits="b")
    with pytest.raises(ConfigError, match="sends"):
        ClientProxy(InMemoryBroker(), sends=[""])


async def test_a_client_emits_and_sends_only_what_it_declares() -> None:
    broker = InMemoryBroker()
    await broker.start()
    try:
        client = ClientProxy(broker, client_id="web", emits=["orders"], sends=["stock.get"])
        await client.emit("orders", {"order_id": "o-1"})
        with pytest.raises(ConfigError, match="'payments' is not declared .*declared: orders"):
            await client.emit("payments", {})
        with pytest.raises(ConfigError, match="emits"):
            await client.emit_batch("payments", [(None, {})])
        with pytest.raises(ConfigError, match="'stock.put' is not declared"):
            client.send("stock.put", {})
        assert client.emitted == 1
        assert [(m.topic, m.value) for m in broker.records("orders")] == [("orders", b'{"order_id":"o-1"}')]
    finally:
        await broker.stop()


def test_the_shops_document_passes_the_asyncapi_parser() -> None:
    document = asyncapi_document(deployment())
    assert_valid_asyncapi(document)
    assert_valid_asyncapi(dumps(document, "yaml").decode())
    # every shop service and client is there, and the websocket with its security schemes
    tags = {op["tags"][0]["name"] for op in document["operations"].values()}
    assert tags == {"orders", "inventory", "auth", "log-analytics", "notifications", "gateway", "log-shipper"}
    assert document["servers"]["gateway"]["protocol"] == "ws"
    assert set(document["components"]["securitySchemes"]) == {"bearer", "token_query"}
    order = message_of(document, "order.created")
    assert resolve(document, order["payload"]["$ref"])["title"] == "OrderCreated"


def test_the_parser_catches_a_broken_reference() -> None:
    """The check above can fail: the same document with one reference broken does not pass."""
    document = asyncapi_document(*system())
    name, operation = next(iter(document["operations"].items()))
    operation["channel"]["$ref"] = "#/channels/nowhere"
    found = errors(asyncapi_diagnostics(document))
    assert "invalid-ref" in [d["code"] for d in found]
    assert all(d["path"][:2] == ["operations", name] for d in found)


def test_a_deployment_describes_the_websocket_events_with_the_topics_payloads() -> None:
    service, client = system()
    ws = WebSocketApi(host="shop.example:443", protocol="wss", channels={"shipping": ["shipped"]})
    document = asyncapi_document(Deployment([service, client], title="Warehouse", version="2.1", websocket=ws))
    assert document["info"]["title"] == "Warehouse" and document["info"]["version"] == "2.1"
    event = document["components"]["messages"]["ws_event"]["payload"]
    (variant,) = event["oneOf"]
    assert variant["properties"]["channel"] == {"const": "shipping"}
    assert variant["properties"]["event"]["properties"]["data"] == {"$ref": "#/components/schemas/Shipped"}
    assert_valid_asyncapi(document)


def test_ids_that_sanitize_alike_stay_apart() -> None:
    """Topics whose ids would be the same ("a.b", "a_b"), and a topic named like the websocket's
    own channel, each keep their channel, message and operations."""

    class Alike(Controller):
        @event_pattern("orders.created", "orders_created", "websocket", "ws.event")
        def handle(self, payload: Any) -> None: ...

    service = Microservice(InMemoryBroker(), [Alike()], name="alike")
    ws = WebSocketApi(channels={"orders": ["orders.created"]})
    document = asyncapi_document(
        service,
        websocket=ws,
        servers={"a.b": {"host": "h1", "protocol": "kafka"}, "a_b": {"host": "h2", "protocol": "kafka"}},
    )
    receives = operations(document, "alike")
    assert {t for a, t in receives if a == "receive"} == {"orders.created", "orders_created", "websocket", "ws.event"}
    assert len([o for o in document["operations"].values() if o["tags"] == [{"name": "alike"}]]) == 8  # + 4 DLT sends
    assert channel_of(document, "/ws")["messages"]["ws_event"] == {"$ref": "#/components/messages/ws_event"}
    assert message_of(document, "ws.event")["name"] != "ws_event"
    assert sorted(s["host"] for s in document["servers"].values() if s["protocol"] == "kafka") == ["h1", "h2"]
    assert_valid_asyncapi(document)


def test_a_reply_type_is_read_from_the_return_annotation_alone() -> None:
    """Another parameter's annotation that does not resolve at run time (imported under
    TYPE_CHECKING) does not lose the reply type; a client's own reply type and reply topic stay."""

    class Answers(Controller):
        @message_pattern("stock.get")
        def stock(self, query: StockQuery, message: NotImportedAtRunTime) -> dict[str, int]:  # type: ignore[name-defined]  # noqa: F821
            return {}

        @message_pattern("price.get")
        def price(self, query: StockQuery):  # type: ignore[no-untyped-def]  # no return annotation
            return {}

    broker = InMemoryBroker()
    service = Microservice(broker, [Answers()], name="answers")
    client = ClientProxy(
        broker, client_id="web", sends={"price.get": Shipped}, reply_topics={"price.get": "web.replies"}
    )
    document = asyncapi_document(service, client)
    reply = operations(document, "answers")[("receive", "stock.get")]["reply"]["messages"][0]
    assert resolve(document, reply["$ref"])["payload"] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }
    sent = operations(document, "web")[("send", "price.get")]
    assert resolve(document, sent["reply"]["channel"]["$ref"])["address"] == "web.replies"
    ok = resolve(document, sent["reply"]["messages"][0]["$ref"])
    assert ok["payload"] == {"$ref": "#/components/schemas/Shipped"}
    assert_valid_asyncapi(document)
