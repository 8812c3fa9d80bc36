"""Order service: CSV rows -> validated rows -> orders grouped by order_id -> batches published."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest
import reactivex

from reactive_services.adapters import encode_value
from reactive_services.errors import ConfigError, PublishError
from reactive_services.examples.shop.messages import OrderCreated
from reactive_services.examples.shop.orders import (
    InvalidRow,
    OrderItemRow,
    OrderService,
    build_order,
    group_orders,
    read_order_rows,
)

SHIPPED = Path(__file__).parents[2] / "examples" / "shop" / "data" / "olist" / "order_items.csv"

HEADER = '"order_id","order_item_id","product_id","seller_id","shipping_limit_date","price","freight_value"\n'
# Physical line numbers on the right; o2 comes before o1 (unsorted), o5's date spans two lines.
SMALL = (
    HEADER  # 1
    + '"o2",1,"pA","s1",2017-01-01 10:00:00,10.00,1.00\n'  # 2  valid
    + "o1,1,pB,s2,2017-01-01 10:00:00,5.50,2\n"  # 3  valid
    + 'o2,2,pA,"s1",2017-01-01 10:00:00,10.00,1.00\n'  # 4  valid, same (o2, pA)
    + "o3,1,pC\n"  # 5  broken: 3 fields
    + ",1,pD,s3,2017-01-01 10:00:00,1.00,1.00\n"  # 6  missing order_id
    + "o1,2,pC,s3,2017-01-01 10:00:00,abc,1.00\n"  # 7  non-numeric price
    + "o3,1,,s3,2017-01-01 10:00:00,1.00,1.00\n"  # 8  missing product_id
    + "o1,3,pB,s2,2017-01-01 10:00:00,5.50,2\n"  # 9  valid, same (o1, pB)
    + "o4,1,pE,s4,2017-01-01 10:00:00,-1.00,0\n"  # 10 negative price
    + "o3,1,pF,s5,2017-01-01 10:00:00,3.00,inf\n"  # 11 non-finite freight
    + 'o3,2,pC,s5,"2017-01-01 10:00:00",7.25,0.5\n'  # 12 valid
    + 'o5,1,pG,s6,"2017-01-01\nlate",1.00,1.00\n'  # 13-14 valid, one row on two lines
    + "o6\n"  # 15 broken: 1 field
    + "o1,4,pH,s2,2017-01-01 10:00:00,2.00,0.00\n"  # 16 valid
)
VALID_LINES = [2, 3, 4, 9, 12, 13, 16]
INVALID_LINES = [5, 6, 7, 8, 10, 11, 15]


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    path = tmp_path / "items.csv"
    path.write_text(SMALL, encoding="utf-8")
    return path


class Recorder:
    """The injected ``emit_batch``: records the calls, each value as it goes on the wire (encoded
    as the brokers encode it, decoded again), optionally failing the first ones."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.calls: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
        self.models: list[Any] = []  # the values as they were given
        self.attempts = 0
        self.failures = list(failures or [])

    async def __call__(self, topic: str, records: list[tuple[str, Any]]) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.models.extend(value for _, value in records)
        self.calls.append((topic, [(key, orjson.loads(encode_value(value) or b"null")) for key, value in records]))

    @property
    def records(self) -> list[tuple[str, dict[str, Any]]]:
        return [record for _, batch in self.calls for record in batch]


# ------------------------------------------------------------------------------ reading rows


def test_rows_are_valid_or_invalid_with_physical_line_numbers(small_csv: Path) -> None:
    rows = list(read_order_rows(small_csv))
    assert [r.line_no for r in rows if isinstance(r, OrderItemRow)] == VALID_LINES
    assert [r.line_no for r in rows if isinstance(r, InvalidRow)] == INVALID_LINES
    reasons = {r.line_no: r.reason for r in rows if isinstance(r, InvalidRow)}
    assert reasons[5] == "expected 7 fields, got 3"
    assert reasons[6] == "order_id: missing"
    assert reasons[7] == "price: not a number: 'abc'"
    assert reasons[8] == "product_id: missing"
    assert reasons[10] == "price: negative: '-1.00'"
    assert reasons[11].startswith("freight_value: not a finite number")
    assert reasons[15] == "expected 7 fields, got 1"


def test_valid_row_fields_are_unquoted_and_typed(small_csv: Path) -> None:
    first = next(iter(read_order_rows(small_csv)))
    assert first == OrderItemRow(2, "o2", "1", "pA", "s1", 10.0, 1.0)


def test_header_without_a_required_column_fails_at_start(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("order_id,order_item_id,product_id,seller_id,freight_value\no1,1,p,s,1\n")
    with pytest.raises(ConfigError) as info:
        read_order_rows(path)  # not iterated: the header is checked on the call
    assert info.value.key == "price"
    assert "price" in str(info.value)


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("")
    with pytest.raises(ConfigError):
        read_order_rows(path)


async def test_run_raises_the_header_error(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("order_id,product_id,price\n")
    recorder = Recorder()
    with pytest.raises(ConfigError) as info:
        await OrderService(recorder, path).run()
    assert info.value.key == "order_item_id"
    assert recorder.attempts == 0


# ------------------------------------------------------------------------------ grouping


def test_group_orders_counts_quantities_and_keeps_first_seen_order(small_csv: Path) -> None:
    valid = [r for r in read_order_rows(small_csv) if isinstance(r, OrderItemRow)]
    models: list[OrderCreated] = []
    reactivex.from_iterable(valid).pipe(group_orders()).subscribe(models.append)
    orders = [o.model_dump() for o in models]
    assert [o["order_id"] for o in orders] == ["o2", "o1", "o3", "o5"]
    by_id = {o["order_id"]: o for o in orders}
    assert by_id["o2"]["items"] == [{"product_id": "pA", "quantity": 2, "unit_price": 10.0, "seller_id": "s1"}]
    assert [(i["product_id"], i["quantity"]) for i in by_id["o1"]["items"]] == [("pB", 2), ("pH", 1)]
    assert by_id["o1"]["total"] == 13.0  # 5.50 + 5.50 + 2.00
    assert by_id["o1"]["freight"] == 4.0
    assert [(i["product_id"], i["quantity"]) for i in by_id["o3"]["items"]] == [("pC", 1)]


def test_group_orders_passes_errors_on() -> None:
    errors: list[Exception] = []
    reactivex.throw(OSError("disk")).pipe(group_orders()).subscribe(on_error=errors.append)
    assert [str(e) for e in errors] == ["disk"]


def test_build_order_refuses_mixed_orders() -> None:
    with pytest.raises(ValueError):
        build_order([OrderItemRow(2, "a", "1", "p", "s", 1, 0), OrderItemRow(3, "b", "1", "p", "s", 1, 0)])


def test_build_order_makes_an_order_created_written_as_the_order_service_always_wrote_it() -> None:
    order = build_order([OrderItemRow(2, "a", "1", "p", "s", 58.9, 13.29), OrderItemRow(3, "a", "2", "p", "t", 1, 0)])
    assert isinstance(order, OrderCreated)
    # the same bytes as the dict the service used to publish: no null gateway fields, same key order
    assert encode_value(order) == orjson.dumps(
        {
            "order_id": "a",
            "items": [{"product_id": "p", "quantity": 2, "unit_price": 58.9, "seller_id": "s"}],
            "total": 59.9,
            "freight": 13.29,
        }
    )


def test_ids_longer_than_an_order_created_allows_are_invalid_rows(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        HEADER
        + f"o1,1,{'p' * 257},s,2017-01-01,1,1\n{'o' * 257},1,p,s,2017-01-01,1,1\n"
        + f"o2,1,{'p' * 256},s,d,1,1\n"
    )
    rows = list(read_order_rows(path))
    assert [r.reason for r in rows if isinstance(r, InvalidRow)] == [
        "product_id: longer than 256 characters",
        "order_id: longer than 256 characters",
    ]
    assert [len(r.product_id) for r in rows if isinstance(r, OrderItemRow)] == [256]


# ------------------------------------------------------------------------------ the service


async def test_run_reports_counts_and_publishes_keyed_orders(small_csv: Path) -> None:
    recorder = Recorder()
    report = await OrderService(recorder, small_csv, batch_size=3).run()
    assert report["items_read"] == len(VALID_LINES)
    assert report["invalid_rows"] == len(INVALID_LINES)
    assert [entry["line"] for entry in report["invalid"]] == INVALID_LINES
    assert report["invalid"][2] == {"line": 7, "reason": "price: not a number: 'abc'"}
    assert report["emitted"] == 4
    assert [topic for topic, _ in recorder.calls] == ["order.created", "order.created"]
    assert [len(batch) for _, batch in recorder.calls] == [3, 1]
    assert [key for key, _ in recorder.records] == ["o2", "o1", "o3", "o5"]
    assert all(key == order["order_id"] for key, order in recorder.records)
    assert all(isinstance(order, OrderCreated) for order in recorder.models)


async def test_shipped_file_every_data_line_is_accounted_for() -> None:
    with open(SHIPPED, encoding="utf-8") as file:
        data_lines = sum(1 for _ in file) - 1  # minus the header
    assert data_lines == 1160
    report = await OrderService(Recorder(), SHIPPED).run()
    assert report["items_read"] + report["invalid_rows"] == data_lines


async def test_shipped_file_publishes_one_record_per_distinct_order() -> None:
    with open(SHIPPED, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    first_seen = list(dict.fromkeys(row["order_id"] for row in rows if row["order_id"] and row["product_id"]))
    quantities: dict[tuple[str, str], int] = {}
    for row in rows:
        quantities[row["order_id"], row["product_id"]] = quantities.get((row["order_id"], row["product_id"]), 0) + 1

    recorder = Recorder()
    report = await OrderService(recorder, SHIPPED, batch_size=100, topic="orders").run()

    assert report["invalid_rows"] == 0
    assert report["emitted"] == len(first_seen) == 1024
    assert [key for key, _ in recorder.records] == first_seen
    assert all(len(batch) <= 100 for _, batch in recorder.calls)
    assert {topic for topic, _ in recorder.calls} == {"orders"}
    published = {(o["order_id"], i["product_id"]): i["quantity"] for _, o in recorder.records for i in o["items"]}
    assert published == quantities


async def test_retriable_publish_errors_are_retried(small_csv: Path) -> None:
    recorder = Recorder([PublishError("no ack"), PublishError("no ack")])
    service = OrderService(recorder, small_csv, batch_size=10, retries=2, retry_delay=0)
    report = await service.run()
    assert report["emitted"] == 4
    assert recorder.attempts == 3
    assert service.retried == 2
    assert len(recorder.records) == 4


async def test_publish_error_left_after_retries_is_raised(small_csv: Path) -> None:
    recorder = Recorder([PublishError("down")] * 3)
    service = OrderService(recorder, small_csv, batch_size=1, retries=2, retry_delay=0)
    with pytest.raises(PublishError, match="down"):
        await service.run()
    assert recorder.attempts == 3  # the first batch, three times; later batches are not sent
    assert recorder.calls == []


async def test_non_retriable_error_is_raised_without_retry(small_csv: Path) -> None:
    recorder = Recorder([TypeError("not serialisable")])
    with pytest.raises(TypeError):
        await OrderService(recorder, small_csv, retries=5, retry_delay=0).run()
    assert recorder.attempts == 1


async def test_a_failure_after_some_batches_keeps_the_earlier_ones(small_csv: Path) -> None:
    class FailSecond(Recorder):
        async def __call__(self, topic: str, records: list[tuple[str, dict[str, Any]]]) -> None:
            if self.calls:
                self.attempts += 1
                raise ValueError("bad batch")
            await super().__call__(topic, records)

    recorder = FailSecond()
    with pytest.raises(ValueError, match="bad batch"):
        await OrderService(recorder, small_csv, batch_size=2).run()
    assert [key for key, _ in recorder.records] == ["o2", "o1"]


@pytest.mark.parametrize("kwargs, key", [({"batch_size": 0}, "batch_size"), ({"retries": -1}, "retries")])
def test_bad_settings_are_config_errors(small_csv: Path, kwargs: dict[str, int], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        OrderService(Recorder(), small_csv, **kwargs)
    assert info.value.key == key


def test_blank_lines_are_not_data_lines(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(HEADER + "o1,1,p,s,d,1,1\n\no2,1,p,s,d,1,1\n")
    rows = list(read_order_rows(path))
    assert [(type(r).__name__, r.line_no) for r in rows] == [("OrderItemRow", 2), ("OrderItemRow", 4)]
