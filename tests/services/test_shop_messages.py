"""The shop's messages, declared once in ``messages.py``: what each model accepts, what it refuses
(naming the field), and the JSON it is written as (the bytes the producers wrote as dicts)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from reactive_services import logs
from reactive_services.adapters import encode_value
from reactive_services.errors import ValidationError
from reactive_services.examples.shop import messages
from reactive_services.examples.shop.messages import (
    EVENTS,
    INVENTORY_UPDATED,
    ORDER_CREATED,
    ORDER_REJECTED,
    STOCK_LOW,
    InventoryUpdated,
    OrderCreated,
    OrderLine,
    OrderRejected,
    StockLow,
)
from reactive_services.examples.shop.system import TOPICS

#: one value of each topic, as its producer writes it (keys in the producer's order)
WRITTEN: dict[str, list[dict[str, Any]]] = {
    "order.created": [
        {  # the orders service's
            "order_id": "00010242fe8c5a6d1ba2dd792cb16214",
            "items": [{"product_id": "4244", "quantity": 1, "unit_price": 58.9, "seller_id": "4843"}],
            "total": 58.9,
            "freight": 13.29,
        },
        {  # the gateway's, without and with a customer
            "order_id": "4f0c",
            "items": [{"product_id": "p1", "quantity": 2}],
            "created_at": "2025-01-02T10:00:00.000Z",
        },
        {
            "order_id": "4f0d",
            "items": [{"product_id": "p1", "quantity": 2}],
            "created_at": "2025-01-02T10:00:00.000Z",
            "customer_id": "c-1",
        },
    ],
    "inventory.updated": [{"order_id": "o1", "items": [{"product_id": "p1", "quantity": 1, "remaining": 0}]}],
    "order.rejected": [
        {
            "order_id": "o2",
            "reason": "insufficient stock for product 'p3': requested 2, available 1",
            "items": [{"product_id": "p3", "quantity": 2}],
        }
    ],
    "stock.low": [{"product_id": "p1", "remaining": 0, "threshold": 2, "order_id": "o1"}],
}
MODELS: dict[str, type] = {
    "order.created": OrderCreated,
    "inventory.updated": InventoryUpdated,
    "order.rejected": OrderRejected,
    "stock.low": StockLow,
}


@pytest.mark.parametrize(("topic", "value"), [(t, v) for t, values in WRITTEN.items() for v in values])
def test_each_event_reads_back_and_is_written_as_the_same_bytes(topic: str, value: dict[str, Any]) -> None:
    model = EVENTS[topic](value)
    assert isinstance(model, MODELS[topic])
    assert encode_value(model) == orjson.dumps(value)  # no null field added, the keys in the same order


def test_order_created_leaves_its_none_fields_out_of_the_json_and_of_model_dump() -> None:
    order = OrderCreated(order_id="o", items=[OrderLine(product_id="p", quantity=1)])
    assert order.model_dump() == {"order_id": "o", "items": [{"product_id": "p", "quantity": 1}]}
    assert orjson.loads(order.model_dump_json()) == order.model_dump()
    assert ORDER_CREATED(order.model_dump()) == order  # and reads itself back


def test_the_event_validators_name_the_topic_and_the_field() -> None:
    cases = [
        (ORDER_CREATED, {"order_id": "o", "items": [{"product_id": "p", "quantity": 0}]}, "items[0].quantity"),
        (INVENTORY_UPDATED, {"order_id": "o", "items": [{"product_id": "p", "quantity": 1}]}, "items[0].remaining"),
        (ORDER_REJECTED, {"order_id": "o", "reason": "", "items": [{"product_id": "p", "quantity": 1}]}, "reason"),
        (STOCK_LOW, {"product_id": "p", "remaining": "0", "threshold": 2, "order_id": "o"}, "remaining"),
        (STOCK_LOW, {"product_id": "p", "remaining": 0, "threshold": 2, "order_id": "x" * 257}, "order_id"),
    ]
    for validator, value, field in cases:
        with pytest.raises(ValidationError) as caught:
            validator(value)
        assert str(caught.value).startswith(f"invalid {validator.what}: {field}: ")
        assert caught.value.fields == (field,)


def test_extra_keys_are_ignored_and_the_event_models_are_frozen() -> None:
    low = STOCK_LOW({**WRITTEN["stock.low"][0], "warehouse": "w1"})
    assert encode_value(low) == orjson.dumps(WRITTEN["stock.low"][0])
    with pytest.raises(Exception, match="frozen"):
        low.remaining = 5  # type: ignore[misc]


def test_every_shop_topic_with_a_payload_of_the_shop_is_declared_and_logs_is_the_librarys() -> None:
    assert set(EVENTS) == {"order.created", "inventory.updated", "order.rejected", "stock.low", "logs"}
    assert set(EVENTS) <= set(TOPICS)  # the log analytics' outputs are the library's
    assert EVENTS["logs"] is messages.LOG_RECORD is logs.LOG_RECORD
    assert messages.LogRecord is logs.LogRecord
    assert all(name in dir(messages) for name in messages.__all__)
