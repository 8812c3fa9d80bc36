"""Marble tests, in virtual time, of the shop's pipelines.

Every source is a hot observable of a :class:`reactivex.testing.TestScheduler`; nothing sleeps,
no broker runs. Each test asserts *when* (virtual ticks) things reach the Observers at the end
of the pipeline, not only what.
"""

from __future__ import annotations

import calendar
import dataclasses
from typing import Any

from reactivex import Observable
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.mockobserver import MockObserver

from reactive_services.adapters import Message
from reactive_services.adapters.websocket import Notification
from reactive_services.errors import DecodeError, ValidationError
from reactive_services.examples.shop.inventory import Order, OrderItem, parse_order
from reactive_services.examples.shop.log_sources import SOURCES as SHIPPED
from reactive_services.examples.shop.messages import OrderCreated
from reactive_services.examples.shop.notifications import NotificationController
from reactive_services.examples.shop.orders import InvalidRow, OrderItemRow, OrderService, build_order, group_orders
from reactive_services.examples.shop.services import InventoryController
from reactive_services.logs import WindowReport, build_pipeline
from reactive_services.operators import DeadLetter
from reactive_services.testing import make_message

#: the shipped log sources with hourly windows (the log tests here are written for them; the
#: default window is 10 minutes)
SOURCES = {name: dataclasses.replace(source, window_s=3600.0) for name, source in SHIPPED.items()}

on_next = ReactiveTest.on_next
on_error = ReactiveTest.on_error
on_completed = ReactiveTest.on_completed
subscribe = ReactiveTest.subscribe


# ----------------------------------------------------------------------------------- helpers


def record(topic: str, value: Any, *, offset: int = 0, key: bytes | None = None, raw: bytes | None = None) -> Message:
    """A Message as a broker source would emit it: ``value`` decoded, ``raw`` the wire bytes (default: encoded)."""
    if raw is None:
        return make_message(value, topic=topic, offset=offset, key=key)
    return make_message(value, topic=topic, offset=offset, key=key, raw=raw)


def kinds(messages: list[Any]) -> list[tuple[int, str]]:
    """``[(tick, "N" | "E" | "C"), ...]`` of recorded notifications."""
    return [(m.time, m.value.kind) for m in messages]


def values_at(messages: list[Any]) -> list[tuple[int, Any]]:
    """``[(tick, value), ...]`` of the on_next notifications."""
    return [(m.time, m.value.value) for m in messages if m.value.kind == "N"]


class Boom(Exception):
    pass


# ----------------------------------------------------------------------------------- inventory


def valid_order(order_id: str, *items: tuple[str, int]) -> dict[str, Any]:
    return {"order_id": order_id, "items": [{"product_id": p, "quantity": q} for p, q in items]}


def test_inventory_valid_orders_reach_the_inventory_at_their_times_bad_ones_are_dead_lettered() -> None:
    scheduler = TestScheduler()
    inventory = scheduler.create_observer()
    dead_letters = scheduler.create_observer()
    a = record("order.created", valid_order("o-1", ("p1", 2)), offset=0)
    not_json = record("order.created", b"{not json", offset=1)
    wrong_shape = record("order.created", ["o-2"], offset=2)
    b = record("order.created", valid_order("o-3", ("p1", 1), ("p2", 1), ("p1", 3)), offset=3)
    wrong_types = record(
        "order.created", {"order_id": "o-4", "items": [{"product_id": "p1", "quantity": "2"}]}, offset=4
    )
    missing_items = record("order.created", {"order_id": "o-5"}, offset=5)
    zero = record("order.created", valid_order("o-6", ("p1", 0)), offset=6)
    tombstone = record("order.created", None, offset=7)
    c = record("order.created", valid_order("o-7", ("p9", 1)), offset=8)
    xs = scheduler.create_hot_observable(
        on_next(150, record("order.created", valid_order("before", ("p", 1)))),  # before subscription
        on_next(210, a),
        on_next(220, not_json),
        on_next(230, wrong_shape),
        on_next(240, b),
        on_next(250, wrong_types),
        on_next(260, missing_items),
        on_next(270, zero),
        on_next(280, tombstone),
        on_next(290, c),
        on_completed(300),
    )
    controller = InventoryController(inventory, dead_letters)  # type: ignore[arg-type]

    results = scheduler.start(lambda: controller.orders(xs))

    expected_orders = [
        on_next(210, Order("o-1", (OrderItem("p1", 2),))),
        on_next(240, Order("o-3", (OrderItem("p1", 4), OrderItem("p2", 1)))),  # merged, first position kept
        on_next(290, Order("o-7", (OrderItem("p9", 1),))),
        on_completed(300),
    ]
    assert inventory.messages == expected_orders
    assert [parse_order(m.value) for m in (a, b, c)] == [r.value.value for r in expected_orders[:3]]
    # the pipeline's own output is what the inventory saw
    assert results.messages == expected_orders
    assert xs.subscriptions == [subscribe(200, 300)]

    letters = values_at(dead_letters.messages)
    assert [t for t, _ in letters] == [220, 230, 250, 260, 270, 280]
    assert all(isinstance(d, DeadLetter) for _, d in letters)
    assert [d.message for _, d in letters] == [not_json, wrong_shape, wrong_types, missing_items, zero, tombstone]
    assert [type(d.error) for _, d in letters] == [
        DecodeError,
        ValidationError,
        ValidationError,
        ValidationError,
        ValidationError,
        DecodeError,
    ]
    reasons = [str(d.error) for _, d in letters]
    assert reasons[1].startswith("invalid order.created: (root): ")
    assert reasons[2].startswith("invalid order.created: items[0].quantity: ")
    assert reasons[3].startswith("invalid order.created: items: Field required")
    assert reasons[4] == "invalid order.created: items[0].quantity: Input should be greater than or equal to 1 (got 0)"
    assert all(d.topic == "order.created.DLT" and d.attempts == 1 for _, d in letters)
    # the dead-letter Observer is a side channel: the stream's end is not forwarded to it
    assert kinds(dead_letters.messages) == [(t, "N") for t in (220, 230, 250, 260, 270, 280)]

    assert controller.received == 9  # every record after subscription, valid or not


def test_inventory_upstream_error_propagates_to_the_inventory_and_the_result() -> None:
    scheduler = TestScheduler()
    inventory = scheduler.create_observer()
    dead_letters = scheduler.create_observer()
    boom = Boom("consumer died")
    xs = scheduler.create_hot_observable(
        on_next(210, record("order.created", valid_order("o-1", ("p1", 1)))),
        on_next(220, record("order.created", b"nope")),
        on_error(230, boom),
        on_next(240, record("order.created", valid_order("o-2", ("p1", 1)))),
    )
    controller = InventoryController(inventory, dead_letters)  # type: ignore[arg-type]

    results = scheduler.start(lambda: controller.orders(xs))

    expected = [on_next(210, Order("o-1", (OrderItem("p1", 1),))), on_error(230, boom)]
    assert inventory.messages == expected
    assert results.messages == expected
    assert kinds(dead_letters.messages) == [(220, "N")]
    assert xs.subscriptions == [subscribe(200, 230)]
    assert controller.received == 2


def test_inventory_observer_raising_errors_the_stream() -> None:
    scheduler = TestScheduler()
    dead_letters = scheduler.create_observer()
    seen: list[Order] = []

    class FailingInventory(MockObserver[Order]):
        def on_next(self, value: Order) -> None:
            seen.append(value)
            raise Boom("database locked")

    inventory = FailingInventory(scheduler)
    xs = scheduler.create_hot_observable(
        on_next(210, record("order.created", valid_order("o-1", ("p1", 1)))),
        on_next(220, record("order.created", valid_order("o-2", ("p1", 1)))),
        on_completed(300),
    )
    controller = InventoryController(inventory, dead_letters)  # type: ignore[arg-type]

    results = scheduler.start(lambda: controller.orders(xs))

    assert kinds(results.messages) == [(210, "E")]
    assert isinstance(results.messages[0].value.exception, Boom)
    assert [o.order_id for o in seen] == ["o-1"]
    assert xs.subscriptions == [subscribe(200, 210)]


def test_inventory_dead_letter_observer_raising_errors_the_stream() -> None:
    scheduler = TestScheduler()
    inventory = scheduler.create_observer()

    class FailingDeadLetters(MockObserver[DeadLetter]):
        def on_next(self, value: DeadLetter) -> None:
            raise Boom("DLT unavailable")

    xs = scheduler.create_hot_observable(
        on_next(210, record("order.created", valid_order("o-1", ("p1", 1)))),
        on_next(220, record("order.created", b"not json")),
        on_next(230, record("order.created", valid_order("o-2", ("p1", 1)))),
        on_completed(300),
    )
    controller = InventoryController(inventory, FailingDeadLetters(scheduler))  # type: ignore[arg-type]

    results = scheduler.start(lambda: controller.orders(xs))

    assert kinds(inventory.messages) == [(210, "N"), (220, "E")]
    assert isinstance(inventory.messages[1].value.exception, Boom)
    assert kinds(results.messages) == [(210, "N"), (220, "E")]


# ----------------------------------------------------------------------------------- notifications

#: topic -> channel, written out here (not read from CHANNELS) so a change there fails a test.
EXPECTED_CHANNEL = {
    "order.created": "orders",
    "order.rejected": "orders",
    "inventory.updated": "inventory",
    "stock.low": "stock",
    "log.stats": "logs",
    "log.alert": "alerts",
}


#: a valid value of each topic (the shop's events validate; log events are forwarded as they are)
EVENT = {
    "order.created": {"order_id": "o-1", "items": [{"product_id": "p", "quantity": 1}], "extra": "kept"},
    "order.rejected": {
        "order_id": "o-2",
        "reason": "unknown product 'p'",
        "items": [{"product_id": "p", "quantity": 1}],
    },
    "inventory.updated": {"order_id": "o-1", "items": [{"product_id": "p", "quantity": 1, "remaining": 0}]},
    "stock.low": {"product_id": "p", "remaining": 0, "threshold": 2, "order_id": "o-1"},
    "log.stats": {"n": 4},
    "log.alert": ["not", "an", "object"],
}


def test_notifications_each_topic_goes_to_its_channel_at_its_time() -> None:
    scheduler = TestScheduler()
    hub = scheduler.create_observer()
    topics = list(EXPECTED_CHANNEL) + ["order.created", "stock.low"]
    events = [(210 + 10 * i, topic, EVENT[topic]) for i, topic in enumerate(topics)]
    xs = scheduler.create_hot_observable(
        *[on_next(t, record(topic, value, offset=i)) for i, (t, topic, value) in enumerate(events)],
        on_completed(400),
    )
    controller = NotificationController(hub)

    results = scheduler.start(lambda: controller.events(xs))

    expected = [  # the data as received, every key kept
        on_next(t, Notification(EXPECTED_CHANNEL[topic], {"topic": topic, "data": value})) for t, topic, value in events
    ] + [on_completed(400)]
    assert hub.messages == expected
    assert results.messages == expected
    assert controller.forwarded == {"orders": 3, "inventory": 1, "stock": 2, "logs": 1, "alerts": 1}
    assert controller.refused == {}


def test_notifications_strip_the_namespace() -> None:
    scheduler = TestScheduler()
    hub = scheduler.create_observer()
    xs = scheduler.create_hot_observable(
        on_next(210, record("demo-x.order.created", EVENT["order.created"])),
        on_next(220, record("demo-x.log.alert", {"source": "HDFS"})),
        on_next(230, record("stock.low", EVENT["stock.low"])),  # no namespace: used as it is
        on_completed(240),
    )
    controller = NotificationController(hub, namespace="demo-x.")

    scheduler.start(lambda: controller.events(xs))

    assert hub.messages == [
        on_next(210, Notification("orders", {"topic": "order.created", "data": EVENT["order.created"]})),
        on_next(220, Notification("alerts", {"topic": "log.alert", "data": {"source": "HDFS"}})),
        on_next(230, Notification("stock", {"topic": "stock.low", "data": EVENT["stock.low"]})),
        on_completed(240),
    ]
    assert controller.forwarded == {"orders": 1, "alerts": 1, "stock": 1}


def test_notifications_dead_letter_the_shop_events_that_do_not_validate_naming_the_field() -> None:
    scheduler = TestScheduler()
    hub = scheduler.create_observer()
    dead_letters = scheduler.create_observer()
    bad = {
        "inventory.updated": {"order_id": "o-1", "items": [{"product_id": "p", "quantity": 1, "remaining": "none"}]},
        "order.rejected": {"order_id": "o-2", "items": [{"product_id": "p", "quantity": 1}]},
        "stock.low": {"product_id": "p", "remaining": -1, "threshold": 2, "order_id": "o-1"},
        "order.created": {"order_id": " ", "items": []},
    }
    records = [record(topic, value, offset=i) for i, (topic, value) in enumerate(bad.items())]
    good = record("inventory.updated", EVENT["inventory.updated"], offset=9)
    xs = scheduler.create_hot_observable(
        *[on_next(210 + 10 * i, r) for i, r in enumerate(records)],
        on_next(300, good),
        on_next(310, record("log.stats", {"anything": True})),
        on_completed(400),
    )
    controller = NotificationController(hub, dead_letter=dead_letters)  # type: ignore[arg-type]

    scheduler.start(lambda: controller.events(xs))

    # only the valid event and the log event reach the hub; the stream goes on
    assert [(t, n.event["topic"]) for t, n in values_at(hub.messages)] == [
        (300, "inventory.updated"),
        (310, "log.stats"),
    ]
    assert kinds(hub.messages)[-1] == (400, "C")
    letters = values_at(dead_letters.messages)
    assert [t for t, _ in letters] == [210, 220, 230, 240]
    assert [d.message for _, d in letters] == records
    assert all(isinstance(d.error, ValidationError) for _, d in letters)
    assert [str(d.error) for _, d in letters] == [
        "invalid inventory.updated: items[0].remaining: Input should be a valid integer (got 'none')",
        "invalid order.rejected: reason: Field required (got {'order_id': 'o-2', 'items': [{'produ...)",
        "invalid stock.low: remaining: Input should be greater than or equal to 0 (got -1)",
        "invalid order.created: order_id: String should match pattern '\\S' (got ' '); items: List should have"
        " at least 1 item after validation, not 0 (got [])",
    ]
    assert [d.error.fields for _, d in letters] == [  # type: ignore[attr-defined]
        ("items[0].remaining",),
        ("reason",),
        ("remaining",),
        ("order_id", "items"),
    ]
    assert [d.topic for _, d in letters] == [f"{t}.DLT" for t in bad]
    assert controller.refused == {t: 1 for t in bad}
    assert controller.forwarded == {"inventory": 1, "logs": 1}
    assert controller.indexed_orders == 1  # o-1, from the valid inventory.updated only


def test_notifications_without_a_dead_letter_end_the_stream_at_an_event_that_does_not_validate() -> None:
    scheduler = TestScheduler()
    hub = scheduler.create_observer()
    xs = scheduler.create_hot_observable(
        on_next(210, record("stock.low", EVENT["stock.low"])),
        on_next(220, record("stock.low", {"product_id": "p"})),
        on_next(230, record("stock.low", EVENT["stock.low"])),
        on_completed(240),
    )
    controller = NotificationController(hub)

    scheduler.start(lambda: controller.events(xs))

    assert kinds(hub.messages) == [(210, "N"), (220, "E")]
    error = hub.messages[1].value.exception
    assert isinstance(error, ValidationError) and error.fields == ("remaining", "threshold", "order_id")
    assert xs.subscriptions == [subscribe(200, 220)]


def test_notifications_unknown_topic_errors_the_stream() -> None:
    scheduler = TestScheduler()
    hub = scheduler.create_observer()
    xs = scheduler.create_hot_observable(
        on_next(210, record("order.created", EVENT["order.created"])),
        on_next(220, record("payments.settled", {"id": 1})),
        on_next(230, record("stock.low", EVENT["stock.low"])),
        on_completed(240),
    )
    controller = NotificationController(hub)

    results = scheduler.start(lambda: controller.events(xs))

    assert kinds(hub.messages) == [(210, "N"), (220, "E")]
    error = hub.messages[1].value.exception
    assert isinstance(error, KeyError) and error.args == ("payments.settled",)
    assert kinds(results.messages) == [(210, "N"), (220, "E")]
    assert xs.subscriptions == [subscribe(200, 220)]
    assert controller.forwarded == {"orders": 1}


def test_notifications_upstream_error_reaches_the_hub() -> None:
    scheduler = TestScheduler()
    hub = scheduler.create_observer()
    boom = Boom("broker gone")
    xs = scheduler.create_hot_observable(on_next(210, record("log.stats", {"lines": 3})), on_error(220, boom))
    controller = NotificationController(hub)

    scheduler.start(lambda: controller.events(xs))

    assert hub.messages == [
        on_next(210, Notification("logs", {"topic": "log.stats", "data": {"lines": 3}})),
        on_error(220, boom),
    ]


# ----------------------------------------------------------------------------------- orders


def row(
    line_no: int, order_id: str, product_id: str, price: float, freight: float = 1.0, seller: str = "s1"
) -> OrderItemRow:
    return OrderItemRow(
        line_no=line_no,
        order_id=order_id,
        order_item_id=str(line_no),
        product_id=product_id,
        seller_id=seller,
        price=price,
        freight_value=freight,
    )


def test_group_orders_emits_every_order_on_completion_with_quantities() -> None:
    scheduler = TestScheduler()
    a1, b1, a2, c1, a3, b2 = (
        row(2, "A", "p1", 10.0, 1.5),
        row(3, "B", "p2", 5.0, 0.5),
        row(4, "A", "p1", 10.0, 1.5),
        row(5, "C", "p3", 7.25, 2.0),
        row(6, "A", "p4", 1.1, 0.25),
        row(7, "B", "p2", 5.0, 0.5),
    )
    xs = scheduler.create_hot_observable(
        on_next(210, a1),
        on_next(220, b1),
        on_next(230, a2),
        on_next(240, c1),
        on_next(250, a3),
        on_next(260, b2),
        on_completed(300),
    )

    results = scheduler.start(lambda: xs.pipe(group_orders()))

    assert results.messages == [
        on_next(
            300,
            OrderCreated.model_validate(
                {
                    "order_id": "A",
                    "items": [
                        {"product_id": "p1", "quantity": 2, "unit_price": 10.0, "seller_id": "s1"},
                        {"product_id": "p4", "quantity": 1, "unit_price": 1.1, "seller_id": "s1"},
                    ],
                    "total": 21.1,
                    "freight": 3.25,
                }
            ),
        ),
        on_next(
            300,
            OrderCreated.model_validate(
                {
                    "order_id": "B",
                    "items": [{"product_id": "p2", "quantity": 2, "unit_price": 5.0, "seller_id": "s1"}],
                    "total": 10.0,
                    "freight": 1.0,
                }
            ),
        ),
        on_next(
            300,
            OrderCreated.model_validate(
                {
                    "order_id": "C",
                    "items": [{"product_id": "p3", "quantity": 1, "unit_price": 7.25, "seller_id": "s1"}],
                    "total": 7.25,
                    "freight": 2.0,
                }
            ),
        ),
        on_completed(300),
    ]


def test_order_batches_are_emitted_on_completion_last_one_partial() -> None:
    scheduler = TestScheduler()
    rows = [row(2 + i, f"O{i % 5}", f"p{i}", 1.0) for i in range(7)]  # 5 orders: O0 and O1 have 2 items
    xs = scheduler.create_hot_observable(*[on_next(210 + 10 * i, r) for i, r in enumerate(rows)], on_completed(400))

    results = scheduler.start(lambda: xs.pipe(group_orders(), ops.buffer_with_count(2)))

    assert kinds(results.messages) == [(400, "N"), (400, "N"), (400, "N"), (400, "C")]
    batches = [m for _, m in values_at(results.messages)]
    assert [[o.order_id for o in batch] for batch in batches] == [["O0", "O1"], ["O2", "O3"], ["O4"]]
    assert [len(o.items) for batch in batches for o in batch] == [2, 2, 1, 1, 1]
    assert batches[0][0] == build_order([rows[0], rows[5]])


def test_order_grouping_error_emits_no_partial_orders() -> None:
    scheduler = TestScheduler()
    boom = Boom("file vanished")
    xs = scheduler.create_hot_observable(on_next(210, row(2, "A", "p1", 1.0)), on_error(220, boom))

    results = scheduler.start(lambda: xs.pipe(group_orders(), ops.buffer_with_count(2)))

    assert results.messages == [on_error(220, boom)]


def test_order_service_pipeline_counts_every_row_and_batches_orders() -> None:
    scheduler = TestScheduler()
    counter = scheduler.create_observer()

    async def emit_batch(topic: str, records: Any) -> None:  # pragma: no cover - never called here
        raise AssertionError("the pipeline does not publish")

    service = OrderService(emit_batch, "unused.csv", batch_size=2)
    bad = InvalidRow(4, "price: not a number: 'abc'")
    rows = [row(2, "A", "p1", 3.0), row(3, "B", "p1", 4.0), bad, row(5, "A", "p1", 3.0), row(6, "C", "p2", 1.0)]

    results = scheduler.start(lambda: service.pipeline(rows, counter))

    # a synchronous iterable source: everything happens at the subscription tick
    assert [m for _, m in values_at(counter.messages)] == rows
    assert kinds(counter.messages)[-1] == (200, "C")
    assert kinds(results.messages) == [(200, "N"), (200, "N"), (200, "C")]
    batches = [m for _, m in values_at(results.messages)]
    assert [[(o.order_id, [i.quantity for i in o.items]) for o in b] for b in batches] == [
        [("A", [2]), ("B", [1])],
        [("C", [1])],
    ]


# ----------------------------------------------------------------------------------- log analytics


def _epoch(hms: str) -> float:
    h, m, s = (int(x) for x in hms.split(":"))
    return float(calendar.timegm((2005, 12, 4, h, m, s, 0, 0, 0)))


def apache(hms: str, level: str, text: str) -> str:
    return f"[Sun Dec 04 {hms} 2005] [{level}] {text}"


def log_record(source: str, line_no: int, line: str) -> Message:
    return record("logs", {"source": source, "line_no": line_no, "line": line}, offset=line_no - 1, key=source.encode())


def test_log_windows_close_when_the_next_hour_arrives_and_on_completion() -> None:
    scheduler = TestScheduler()
    lines = [
        apache("04:10:00", "notice", "jk2_init() Found child 1 in scoreboard slot 10"),
        apache("04:20:00", "error", "mod_jk child workerEnv in error state 6"),
        apache("04:59:59", "notice", "jk2_init() Found child 2 in scoreboard slot 8"),
        apache("05:00:00", "notice", "jk2_init() Found child 3 in scoreboard slot 6"),  # closes [04:00, 05:00)
        apache("05:45:00", "error", "mod_jk child workerEnv in error state 7"),
    ]
    xs = scheduler.create_hot_observable(
        *[on_next(210 + 10 * i, log_record("Apache", i + 1, line)) for i, line in enumerate(lines)],
        on_completed(300),
    )

    results = scheduler.start(lambda: build_pipeline(xs, sources=SOURCES))

    assert kinds(results.messages) == [(240, "N"), (300, "N"), (300, "C")]
    first, second = (r for _, r in values_at(results.messages))
    assert isinstance(first, WindowReport) and isinstance(second, WindowReport)
    assert (first.window.key, first.window.start, first.window.end) == (
        "Apache",
        _epoch("04:00:00"),
        _epoch("05:00:00"),
    )
    assert [e.line_no for e in first.window.items] == [1, 2, 3]
    assert (
        first.stats["lines"] == 3
        and first.stats["errors"] == 1
        and first.stats["by_level"] == {"notice": 2, "error": 1}
    )
    assert first.stats["window_start"].startswith("2005-12-04T04:00:00")
    assert (second.window.start, second.window.end) == (_epoch("05:00:00"), _epoch("06:00:00"))
    assert [e.line_no for e in second.window.items] == [4, 5]
    assert second.stats["lines"] == 2 and second.stats["late"] == 0
    assert first.alerts == () and second.alerts == ()  # fewer lines than the alert minimum


def test_log_windows_of_two_sources_close_independently() -> None:
    scheduler = TestScheduler()
    hdfs = (
        "081109 {} 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating"
    )
    records = [
        (210, log_record("Apache", 1, apache("04:10:00", "notice", "workerEnv.init() ok"))),
        (220, log_record("HDFS", 1, hdfs.format("203615"))),
        (230, log_record("HDFS", 2, hdfs.format("213615"))),  # HDFS's 20:00 window closes here
        (240, log_record("Apache", 2, apache("04:30:00", "notice", "workerEnv.init() ok"))),
        (250, log_record("Apache", 3, apache("06:05:00", "notice", "workerEnv.init() ok"))),  # Apache 04:00 closes
        (260, log_record("Apache", 4, apache("03:59:00", "notice", "workerEnv.init() ok"))),  # late
    ]
    xs = scheduler.create_hot_observable(*[on_next(t, m) for t, m in records], on_completed(300))

    results = scheduler.start(lambda: build_pipeline(xs, sources=SOURCES))

    assert kinds(results.messages) == [(230, "N"), (250, "N"), (300, "N"), (300, "N"), (300, "C")]
    reports = [r for _, r in values_at(results.messages)]
    summary = [(r.window.key, r.stats["lines"], r.stats["late"]) for r in reports]
    # at completion each source's open window is flushed (Apache's carries the late line)
    assert summary == [("HDFS", 1, 0), ("Apache", 2, 0), ("Apache", 1, 1), ("HDFS", 1, 0)]
    assert [e.line_no for e in reports[2].window.late] == [4]


def test_log_pipeline_bad_record_errors_the_stream() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        on_next(210, log_record("Apache", 1, apache("04:10:00", "notice", "workerEnv.init() ok"))),
        on_next(220, record("logs", b"not a dict")),
        on_completed(300),
    )

    results = scheduler.start(lambda: build_pipeline(xs, sources=SOURCES))

    assert kinds(results.messages) == [(220, "E")]
    assert isinstance(results.messages[0].value.exception, ValidationError)
    assert xs.subscriptions == [subscribe(200, 220)]


def test_log_pipeline_is_cold_each_subscription_gets_fresh_windows() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(
        on_next(10, log_record("Apache", 1, apache("04:10:00", "notice", "workerEnv.init() ok"))),
        on_completed(20),
    )
    pipeline: Observable[WindowReport] = build_pipeline(xs, sources=SOURCES)
    first, second = scheduler.create_observer(), scheduler.create_observer()
    scheduler.schedule_absolute(100, lambda *_: pipeline.subscribe(first))
    scheduler.schedule_absolute(200, lambda *_: pipeline.subscribe(second))

    scheduler.start()

    assert kinds(first.messages) == [(120, "N"), (120, "C")]
    assert kinds(second.messages) == [(220, "N"), (220, "C")]
    assert first.messages[0].value.value.stats["lines"] == second.messages[0].value.value.stats["lines"] == 1
