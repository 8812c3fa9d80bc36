"""Inventory service: idempotent all-or-none reservations in its own SQLite DB, then events."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from reactivex import operators as ops

from reactive_services.adapters import encode_value
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ConfigError, PublishError, ValidationError
from reactive_services.examples.shop.inventory import (
    InventoryService,
    InventoryStore,
    Order,
    OrderItem,
    initial_stock,
    parse_order,
)
from reactive_services.examples.shop.messages import InventoryUpdated, OrderRejected, StockLow
from reactive_services.examples.shop.orders import OrderService

DATA = Path(__file__).parents[2] / "examples" / "shop" / "data" / "olist"
SEED = {"p1": 5, "p2": 1, "p3": 0}


def order(order_id: str, *items: tuple[str, int]) -> Order:
    return Order(order_id, tuple(OrderItem(p, q) for p, q in items))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[InventoryStore]:
    async with InventoryStore(tmp_path / "inventory.db", seed=SEED) as opened:
        yield opened


class Emitted:
    """The injected ``emit``: records ``(topic, value, key)`` with the value as it goes on the
    wire (encoded as the brokers encode it, decoded again); can be made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.models: list[Any] = []  # the values as they were given
        self.fail_with: Exception | None = None

    async def __call__(self, topic: str, value: Any, *, key: Any = None) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.models.append(value)
        self.calls.append((topic, orjson.loads(encode_value(value) or b"null"), key))

    def topic(self, name: str) -> list[Any]:
        return [value for topic, value, _ in self.calls if topic == name]


# ------------------------------------------------------------------------------ the store


async def test_applied_order_decrements_every_item(store: InventoryStore) -> None:
    outcome = await store.reserve(order("o1", ("p1", 2), ("p2", 1)))
    assert outcome.status == "applied" and not outcome.duplicate and outcome.reason is None
    assert list(outcome.items) == [
        {"product_id": "p1", "quantity": 2, "remaining": 3},
        {"product_id": "p2", "quantity": 1, "remaining": 0},
    ]
    assert await store.stock() == {"p1": 3, "p2": 0, "p3": 0}


async def test_same_order_twice_is_applied_once(store: InventoryStore) -> None:
    first = await store.reserve(order("o1", ("p1", 2)))
    second = await store.reserve(order("o1", ("p1", 2)))
    assert second.duplicate and not first.duplicate
    assert (second.status, second.items) == (first.status, first.items)
    assert (await store.stock())["p1"] == 3


async def test_one_item_short_changes_nothing(store: InventoryStore) -> None:
    outcome = await store.reserve(order("o1", ("p1", 2), ("p2", 2)))
    assert outcome.status == "rejected"
    assert outcome.reason == "insufficient stock for product 'p2': requested 2, available 1"
    assert list(outcome.items) == [{"product_id": "p1", "quantity": 2}, {"product_id": "p2", "quantity": 2}]
    assert await store.stock() == SEED


async def test_unknown_product_is_rejected(store: InventoryStore) -> None:
    outcome = await store.reserve(order("o1", ("p1", 1), ("nope", 1)))
    assert outcome.status == "rejected"
    assert outcome.reason is not None and "unknown product 'nope'" in outcome.reason
    assert await store.stock() == SEED


async def test_rejection_is_stored_so_a_redelivery_gets_the_same_answer(store: InventoryStore) -> None:
    first = await store.reserve(order("o1", ("p2", 3)))
    again = await store.reserve(order("o1", ("p2", 3)))
    assert again.duplicate and again.status == first.status == "rejected" and again.reason == first.reason


async def test_stock_never_goes_negative(store: InventoryStore, tmp_path: Path) -> None:
    outcomes = [await store.reserve(order(f"o{i}", ("p1", 2))) for i in range(5)]
    assert [o.status for o in outcomes] == ["applied", "applied", "rejected", "rejected", "rejected"]
    assert min((await store.stock()).values()) >= 0
    # the CHECK constraint guards the table itself, not just reserve()
    with sqlite3.connect(tmp_path / "inventory.db") as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE stock SET quantity = quantity - 100 WHERE product_id = 'p1'")


async def test_reopening_keeps_stock_and_processed_orders(tmp_path: Path) -> None:
    path = tmp_path / "inventory.db"
    async with InventoryStore(path, seed=SEED) as first:
        await first.reserve(order("o1", ("p1", 4)))
    async with InventoryStore(path, seed={"p1": 100, "other": 7}) as second:  # not re-seeded
        assert await second.stock() == {"p1": 1, "p2": 1, "p3": 0}
        assert (await second.reserve(order("o1", ("p1", 4)))).duplicate
        stored = await second.outcome("o1")
        assert stored is not None and stored.applied and not stored.duplicate
        assert await second.outcome("never") is None


def test_negative_seed_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        InventoryStore(tmp_path / "x.db", seed={"p": -1})
    assert info.value.key == "seed"


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        await InventoryStore(tmp_path / "x.db").reserve(order("o", ("p", 1)))


# ------------------------------------------------------------------------------ parse_order


def test_parse_order_accepts_an_order_created_value_and_merges_products() -> None:
    value = {
        "order_id": "o1",
        "items": [
            {"product_id": "a", "quantity": 1, "unit_price": 2.5, "seller_id": "s"},
            {"product_id": "b", "quantity": 2},
            {"product_id": "a", "quantity": 3},
        ],
        "total": 12.5,
    }
    assert parse_order(value) == Order("o1", (OrderItem("a", 4), OrderItem("b", 2)))


@pytest.mark.parametrize(
    "value, field",
    [
        (["o1"], r"\(root\)"),
        (None, r"\(root\)"),
        ({"items": [{"product_id": "a", "quantity": 1}]}, "order_id"),
        ({"order_id": "", "items": [{"product_id": "a", "quantity": 1}]}, "order_id"),
        ({"order_id": 7, "items": [{"product_id": "a", "quantity": 1}]}, "order_id"),
        ({"order_id": "o1"}, "items"),
        ({"order_id": "o1", "items": []}, "items"),
        ({"order_id": "o1", "items": {"product_id": "a"}}, "items"),
        ({"order_id": "o1", "items": ["a"]}, r"items\[0\]"),
        ({"order_id": "o1", "items": [{"quantity": 1}]}, r"items\[0\]\.product_id"),
        ({"order_id": "o1", "items": [{"product_id": 3, "quantity": 1}]}, r"items\[0\]\.product_id"),
        (
            {"order_id": "o1", "items": [{"product_id": "a", "quantity": 1}, {"product_id": "b"}]},
            r"items\[1\]\.quantity",
        ),
        ({"order_id": "o1", "items": [{"product_id": "a", "quantity": 0}]}, r"items\[0\]\.quantity"),
        ({"order_id": "o1", "items": [{"product_id": "a", "quantity": 1.5}]}, r"items\[0\]\.quantity"),
        ({"order_id": "o1", "items": [{"product_id": "a", "quantity": "2"}]}, r"items\[0\]\.quantity"),
        ({"order_id": "o1", "items": [{"product_id": "a", "quantity": True}]}, r"items\[0\]\.quantity"),
    ],
)
def test_parse_order_names_the_wrong_field(value: Any, field: str) -> None:
    with pytest.raises(ValidationError, match=rf"^invalid order\.created: {field}: ") as caught:
        parse_order(value)
    assert len(caught.value.fields) == 1


# ------------------------------------------------------------------------------ initial stock


def test_initial_stock_is_deterministic_and_follows_the_rule() -> None:
    stock = initial_stock(DATA / "products.csv")
    assert stock == initial_stock(DATA / "products.csv")
    assert len(stock) == 952
    # hand-computed from products.csv lines 2, 3, 5 (photos 1, 3, 6) and 12 (empty fields)
    assert stock["96bd76ec8810374ed1b65e291975717f"] == 1
    assert stock["5f504b3a1c75b73d6151be81eb05bdc9"] == 3
    assert stock["adf591c625cb265c12bc6749d3a2f757"] == 6
    assert stock["e10758160da97891c2fdcbc35f0f031d"] == 0
    assert min(stock.values()) == 0 and max(stock.values()) == 13


def test_initial_stock_gives_zero_to_products_with_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_text(
        "product_id,product_category_name,product_photos_qty,product_weight_g\n"
        "a,x,4,100\n"
        "b,x,,100\n"  # no photos count
        "c,x,2,\n"  # no weight
        "d,x,abc,100\n"  # not a number
        "e,x,-2,100\n"  # negative
        "a,x,9,100\n"  # repeated id: the first row counts
    )
    assert initial_stock(path) == {"a": 4, "b": 0, "c": 0, "d": 0, "e": 0}


def test_initial_stock_needs_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_text("product_id,product_weight_g\na,1\n")
    with pytest.raises(ConfigError) as info:
        initial_stock(path)
    assert info.value.key == "product_photos_qty"


async def test_shipped_orders_give_the_documented_applied_and_rejected_counts(tmp_path: Path) -> None:
    published: list[tuple[str, dict[str, Any]]] = []

    async def emit_batch(topic: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        published.extend(records)

    await OrderService(emit_batch, DATA / "order_items.csv").run()
    async with InventoryStore(tmp_path / "inv.db", seed=initial_stock(DATA / "products.csv")) as store:
        outcomes = [await store.reserve(parse_order(value)) for _, value in published]
        stock = await store.stock()
    assert sum(o.applied for o in outcomes) == 908
    assert sum(not o.applied for o in outcomes) == 116
    assert min(stock.values()) >= 0
    with open(DATA / "products.csv", newline="") as file:
        assert len(stock) == sum(1 for _ in csv.DictReader(file))


async def test_shipped_orders_in_batches_give_the_same_outcomes_as_one_at_a_time(tmp_path: Path) -> None:
    published: list[tuple[str, dict[str, Any]]] = []

    async def emit_batch(topic: str, records: list[tuple[str, dict[str, Any]]]) -> None:
        published.extend(records)

    await OrderService(emit_batch, DATA / "order_items.csv").run()
    orders = [parse_order(value) for _, value in published]
    orders += orders[:50]  # a redelivery of the first 50, in the last batch
    seed = initial_stock(DATA / "products.csv")
    async with InventoryStore(tmp_path / "one.db", seed=seed) as store:
        one_by_one = [await store.reserve(o) for o in orders]
        stock_one = await store.stock()
    async with InventoryStore(tmp_path / "batches.db", seed=seed) as store:
        batched = [
            outcome for i in range(0, len(orders), 137) for outcome in await store.reserve_many(orders[i : i + 137])
        ]
        assert await store.stock() == stock_one
    assert batched == one_by_one
    assert sum(o.applied and not o.duplicate for o in batched) == 908
    assert sum(o.duplicate for o in batched) == 50


async def test_a_duplicate_within_one_batch_gets_the_first_outcome(store: InventoryStore) -> None:
    outcomes = await store.reserve_many([order("o1", ("p1", 2)), order("o2", ("p1", 9)), order("o1", ("p1", 2))])
    assert [(o.order_id, o.status, o.duplicate) for o in outcomes] == [
        ("o1", "applied", False),
        ("o2", "rejected", False),
        ("o1", "applied", True),
    ]
    assert (await store.stock())["p1"] == 3


# ------------------------------------------------------------------------------ the service


async def test_service_publishes_applied_and_rejected_outcomes(store: InventoryStore) -> None:
    emitted = Emitted()
    service = InventoryService(store, emitted, low_stock_threshold=0)
    service.on_next(order("o1", ("p1", 1)))
    service.on_next(order("o2", ("p3", 1)))
    await service.wait_idle()
    updated = {"order_id": "o1", "items": [{"product_id": "p1", "quantity": 1, "remaining": 4}]}
    rejected = {
        "order_id": "o2",
        "reason": "insufficient stock for product 'p3': requested 1, available 0",
        "items": [{"product_id": "p3", "quantity": 1}],
    }
    assert emitted.calls == [("inventory.updated", updated, "o1"), ("order.rejected", rejected, "o2")]
    # published as the shop's models, written as the same JSON bytes as the dicts were (key order too)
    assert [type(m) for m in emitted.models] == [InventoryUpdated, OrderRejected]
    assert [encode_value(m) for m in emitted.models] == [orjson.dumps(updated), orjson.dumps(rejected)]
    assert service.counters() == {
        "applied": 1,
        "rejected": 1,
        "duplicates": 0,
        "stock_low_events": 0,
        "republished": 0,
        "applied_orders": ["o1"],
    }


async def test_redelivered_order_is_counted_as_duplicate_and_republished(store: InventoryStore) -> None:
    emitted = Emitted()
    service = InventoryService(store, emitted)
    service.on_next(order("o1", ("p1", 2)))
    service.on_next(order("o1", ("p1", 2)))
    await service.wait_idle()
    assert (service.applied, service.duplicates, service.applied_orders) == (1, 1, ["o1"])
    assert (await store.stock())["p1"] == 3
    updates = emitted.topic("inventory.updated")
    assert len(updates) == 2 and updates[0] == updates[1]
    assert service.republished == 1


async def test_stock_low_when_remaining_goes_below_threshold(store: InventoryStore) -> None:
    emitted = Emitted()
    service = InventoryService(store, emitted, low_stock_threshold=2)
    service.on_next(order("o1", ("p1", 3)))  # 5 -> 2: not below 2
    await service.wait_idle()
    assert emitted.topic("stock.low") == []
    service.on_next(order("o2", ("p1", 1), ("p2", 1)))  # p1 2 -> 1, p2 1 -> 0: both below
    await service.wait_idle()
    lows = [
        {"product_id": "p1", "remaining": 1, "threshold": 2, "order_id": "o2"},
        {"product_id": "p2", "remaining": 0, "threshold": 2, "order_id": "o2"},
    ]
    assert emitted.topic("stock.low") == lows
    assert [encode_value(m) for m in emitted.models[-2:]] == [orjson.dumps(low) for low in lows]
    assert all(isinstance(m, StockLow) for m in emitted.models[-2:])
    assert [key for topic, _, key in emitted.calls if topic == "stock.low"] == ["p1", "p2"]
    assert service.stock_low_events == 2
    assert [topic for topic, _, _ in emitted.calls][-3] == "inventory.updated"  # outcome first


async def test_orders_are_reserved_one_at_a_time_in_arrival_order(store: InventoryStore) -> None:
    emitted = Emitted()
    service = InventoryService(store, emitted)
    for i in range(4):  # p2 has one unit: only the first arrival gets it
        service.on_next(order(f"o{i}", ("p2", 1)))
    await service.wait_idle()
    assert service.applied_orders == ["o0"]
    assert [value["order_id"] for topic, value, _ in emitted.calls if topic != "stock.low"] == ["o0", "o1", "o2", "o3"]
    assert service.rejected == 3


async def test_failed_publish_is_raised_and_the_redelivery_publishes(store: InventoryStore) -> None:
    emitted = Emitted()
    service = InventoryService(store, emitted)
    emitted.fail_with = PublishError("no ack")
    service.on_next(order("o1", ("p1", 1)))
    with pytest.raises(PublishError):
        await service.wait_idle()
    assert [type(e) for e in service.errors] == [PublishError]
    assert service.applied == 1 and emitted.calls == []  # committed in the DB, not announced yet
    emitted.fail_with = None
    service.on_next(order("o1", ("p1", 1)))  # the broker redelivers the uncommitted record
    await service.wait_idle()
    assert emitted.topic("inventory.updated") == [
        {"order_id": "o1", "items": [{"product_id": "p1", "quantity": 1, "remaining": 4}]}
    ]
    assert (service.applied, service.duplicates) == (1, 1)
    assert (await store.stock())["p1"] == 4


async def test_on_error_and_on_completed_are_recorded(store: InventoryStore) -> None:
    service = InventoryService(store, Emitted())
    assert not service.completed
    service.on_completed()
    assert service.completed
    failing = InventoryService(store, Emitted())
    failing.on_error(ValidationError("items: bad"))
    assert failing.completed and [str(e) for e in failing.errors] == ["items: bad"]


def test_bad_threshold_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        InventoryService(InventoryStore(tmp_path / "x.db"), Emitted(), low_stock_threshold=-1)


# ------------------------------------------------------------------------------ through a broker


async def _until(condition: Any) -> None:
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout=10)


async def test_through_the_in_memory_broker_commit_waits_for_the_work(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    items.write_text(
        "order_id,order_item_id,product_id,seller_id,shipping_limit_date,price,freight_value\n"
        "o1,1,p1,s,2017-01-01 00:00:00,1.0,0\n"
        "o2,1,p2,s,2017-01-01 00:00:00,1.0,0\n"
        "o2,2,p2,s,2017-01-01 00:00:00,1.0,0\n"
        "o3,1,p2,s,2017-01-01 00:00:00,1.0,0\n"
    )
    broker = InMemoryBroker(partitions=1)
    await broker.start()
    try:
        report = await OrderService(broker.emit_batch, items).run()
        assert report["emitted"] == 3
        # order.created was published twice (e.g. a producer retry): the duplicate must not be applied
        await broker.emit("order.created", {"order_id": "o1", "items": [{"product_id": "p1", "quantity": 1}]}, key="o1")

        gate = asyncio.Event()

        async def slow_emit(topic: str, value: Any, *, key: Any = None) -> None:
            await gate.wait()
            await broker.emit(topic, value, key=key)

        async with InventoryStore(tmp_path / "inv.db", seed={"p1": 5, "p2": 2}) as store:
            service = InventoryService(store, slow_emit)
            stop = asyncio.Event()
            source = broker.source("order.created", group_id="inventory", stop=stop)
            subscription = source.pipe(ops.map(lambda message: parse_order(message.value))).subscribe(service)

            await _until(lambda: _true_when(len(service.applied_orders) >= 1))
            # the DB transaction is done but the publish is held: the offset is not committed
            assert await broker.committed("inventory", "order.created", 0) in (None, 0)
            gate.set()
            await _until(lambda: _committed_is(broker, 4))
            stop.set()
            await _until(lambda: _true_when(service.completed))
            subscription.dispose()

            assert service.counters()["applied_orders"] == ["o1", "o2"]
            assert (service.applied, service.rejected, service.duplicates) == (2, 1, 1)
            assert await store.stock() == {"p1": 4, "p2": 0}
        assert [m.key for m in broker.records("inventory.updated")] == [b"o1", b"o2", b"o1"]
        assert [m.key for m in broker.records("order.rejected")] == [b"o3"]
        assert [m.key for m in broker.records("stock.low")] == [b"p2"]
    finally:
        await broker.stop()


async def _true_when(value: bool) -> bool:
    return value


async def _committed_is(broker: InMemoryBroker, offset: int) -> bool:
    return await broker.committed("inventory", "order.created", 0) == offset


async def test_a_reservation_whose_caller_is_cancelled_still_ends_its_transaction(store: InventoryStore) -> None:
    # a crash test disposes a subscription mid-reservation: the connection must not be left
    # inside an open transaction ("cannot start a transaction within a transaction" next time)
    for n in range(20):
        task = asyncio.ensure_future(store.reserve(order(f"c{n}", ("p1", 1))))
        for _ in range(n % 5):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    outcome = await store.reserve(order("after", ("p2", 1)))
    assert outcome.status == "applied"


async def test_orders_arriving_during_a_transaction_are_applied_together_and_the_queue_is_bounded(
    store: InventoryStore,
) -> None:
    gate = asyncio.Event()
    published: list[tuple[str, list[Any]]] = []

    async def emit_batch(topic: str, records: list[Any]) -> None:
        await gate.wait()
        published.append((topic, list(records)))

    async def emit(topic: str, value: Any, *, key: Any = None) -> None:
        await emit_batch(topic, [(key, value)])

    broker = InMemoryBroker(partitions=1)
    await broker.start()
    try:
        await broker.emit_batch(
            "order.created",
            [(f"o{i}", {"order_id": f"o{i}", "items": [{"product_id": "p1", "quantity": 1}]}) for i in range(12)],
        )
        service = InventoryService(store, emit, emit_batch=emit_batch, max_batch=4, max_queued=4)
        stop = asyncio.Event()
        done = asyncio.Event()
        broker.source("order.created", group_id="inventory", stop=stop).pipe(
            ops.map(lambda message: parse_order(message.value))
        ).subscribe(service.on_next, lambda e: done.set(), done.set)
        await _until(lambda: _true_when(service.transactions == 1))
        await asyncio.sleep(0.1)
        # the first order's transaction waits for its publish; the source waits once 4 are queued
        assert service.queued == 4
        assert await broker.committed("inventory", "order.created", 0) in (None, 0)
        gate.set()
        await _until(lambda: _committed_is(broker, 12))
        stop.set()
        await done.wait()
        await service.wait_idle()
    finally:
        await broker.stop()
    assert service.applied_orders == [f"o{i}" for i in range(5)]  # p1 has 5 units
    assert service.rejected == 7
    assert 3 <= service.transactions < 12  # o0 alone, then up to 4 at a time
    updated = [key for topic, records in published if topic == "inventory.updated" for key, _ in records]
    rejected = [key for topic, records in published if topic == "order.rejected" for key, _ in records]
    assert updated == [f"o{i}" for i in range(5)] and rejected == [f"o{i}" for i in range(5, 12)]
