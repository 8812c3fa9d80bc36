"""The shop's order service: reads order-item rows from a CSV file and publishes orders.

Data flow (one reactivex pipeline, subscribed by :meth:`OrderService.run`)::

    read_order_rows(path)                 OrderItemRow | InvalidRow, one per data line
      -> ops.do(_RowCounter)              counts valid rows, keeps invalid ones (line, reason)
      -> ops.filter(valid)                OrderItemRow only
      -> group_orders()                   group_by(order_id) + to_list: one OrderCreated per order_id
      -> ops.buffer_with_count(n)         lists of up to n orders
      -> _BatchPublisher (Observer)       emit_batch(topic, [(order_id, order), ...]) with retry

The input file is read as CSV (``csv`` module, so the Olist file's mixed quoting is fine)
and must have a header row naming at least :data:`REQUIRED_COLUMNS`; extra columns (such as
``shipping_limit_date``) are ignored. Rows are *not* assumed sorted by ``order_id``: grouping
waits for the end of the file, so memory is O(rows); orders are published in the order their
``order_id`` first appears.

An ``order.created`` value is an :class:`~reactive_services.examples.shop.messages.OrderCreated`
(built by :func:`build_order`), written as this JSON object (no ``created_at`` / ``customer_id``:
those are the gateway's, and a model leaves out its fields that are None)::

    {
      "order_id": "00010242fe8c5a6d1ba2dd792cb16214",
      "items": [{"product_id": "4244...", "quantity": 1, "unit_price": 58.9, "seller_id": "4843..."}],
      "total": 58.9,      # sum of the item rows' prices (BRL), freight excluded, rounded to cents
      "freight": 13.29    # sum of the item rows' freight values (BRL), rounded to cents
    }

An item's ``quantity`` is the number of rows with the same ``(order_id, product_id)``; its
``unit_price`` and ``seller_id`` come from the first of those rows. Items keep the order in
which their product first appears within the order. A row whose ``order_id`` or
``product_id`` is longer than an id may be (:data:`~reactive_services.examples.shop.messages.MAX_ID_CHARS`)
is invalid, like one without them, so every order built is a valid ``OrderCreated``.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, TypeAlias, cast

import reactivex
from reactivex import Observable, compose
from reactivex import operators as ops
from reactivex.abc import DisposableBase, ObserverBase
from reactivex.observable import GroupedObservable

from reactive_services.errors import ConfigError

from .messages import MAX_ID_CHARS, OrderCreated, OrderLine

__all__ = [
    "REQUIRED_COLUMNS",
    "EmitBatch",
    "InvalidRow",
    "OrderItemRow",
    "OrderService",
    "RowResult",
    "build_order",
    "group_orders",
    "read_order_rows",
]

log = logging.getLogger(__name__)

#: Columns the header of an order-items file must name (any order; extra columns are ignored).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "order_id",
    "order_item_id",
    "product_id",
    "seller_id",
    "price",
    "freight_value",
)

#: ``await emit_batch(topic, [(key, value), ...])``: publishes the records and waits for the
#: broker's acknowledgement (``Broker.emit_batch`` has this shape). Raises on failure; an
#: exception whose ``retriable`` attribute is true is retried by :class:`OrderService`.
EmitBatch: TypeAlias = Callable[[str, Sequence[tuple[str, Any]]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class OrderItemRow:
    """One valid data line of an order-items file.

    Attributes:
        line_no: physical line number in the file where the row starts (header = line 1).
        order_id, order_item_id, product_id, seller_id: as in the file (strings, unquoted).
        price: item price in BRL (finite, >= 0).
        freight_value: freight in BRL (finite, >= 0).
    """

    line_no: int
    order_id: str
    order_item_id: str
    product_id: str
    seller_id: str
    price: float
    freight_value: float


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A data line that could not be used, with the reason (e.g. ``"price: not a number: 'abc'"``)."""

    line_no: int
    reason: str


RowResult: TypeAlias = OrderItemRow | InvalidRow


def _read_header(path: str | PathLike[str]) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as file:
        header = next(csv.reader(file), None)
    if not header:
        raise ConfigError("header", f"{path}: the file is empty, a header row is required")
    names = [name.strip() for name in header]
    for column in REQUIRED_COLUMNS:
        if column not in names:
            raise ConfigError(column, f"{path}: the header has no {column!r} column (header: {names})")
    return names


def _amount(name: str, text: str) -> float | str:
    """The parsed non-negative amount, or the reason it is invalid."""
    text = text.strip()
    if not text:
        return f"{name}: missing"
    try:
        value = float(text)
    except ValueError:
        return f"{name}: not a number: {text!r}"
    if not math.isfinite(value):
        return f"{name}: not a finite number: {text!r}"
    if value < 0:
        return f"{name}: negative: {text!r}"
    return value


def _parse_row(line_no: int, fields: list[str], index: dict[str, int]) -> RowResult:
    if len(fields) != len(index):
        return InvalidRow(line_no, f"expected {len(index)} fields, got {len(fields)}")

    def get(name: str) -> str:
        return fields[index[name]].strip()

    for name in ("order_id", "product_id"):
        text = get(name)
        if not text:
            return InvalidRow(line_no, f"{name}: missing")
        if len(text) > MAX_ID_CHARS:
            return InvalidRow(line_no, f"{name}: longer than {MAX_ID_CHARS} characters")
    price = _amount("price", get("price"))
    if isinstance(price, str):
        return InvalidRow(line_no, price)
    freight = _amount("freight_value", get("freight_value"))
    if isinstance(freight, str):
        return InvalidRow(line_no, freight)
    return OrderItemRow(
        line_no=line_no,
        order_id=get("order_id"),
        order_item_id=get("order_item_id"),
        product_id=get("product_id"),
        seller_id=get("seller_id"),
        price=price,
        freight_value=freight,
    )


def _rows(path: str | PathLike[str]) -> Iterator[RowResult]:
    with open(path, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = next(reader)
        index = {name.strip(): i for i, name in enumerate(header)}  # names are unique (checked)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a NUL byte; the reader goes on with the next line
                yield InvalidRow(start, f"broken CSV line: {exc}")
                continue
            if not fields:  # a blank line is not a data line
                continue
            yield _parse_row(start, fields, index)


def read_order_rows(path: str | PathLike[str]) -> Iterator[RowResult]:
    """Stream the data lines of an order-items CSV file.

    The header is checked when this function is called; the rows are read lazily, one
    line at a time, as the returned iterator is consumed. Blank lines are skipped (they
    are not data lines). A line is invalid when it has a different number of fields than
    the header, an empty ``order_id`` or ``product_id`` or one longer than
    :data:`~reactive_services.examples.shop.messages.MAX_ID_CHARS` characters, or a ``price``
    / ``freight_value`` that is empty, not a finite number, or negative.

    Args:
        path: the CSV file (UTF-8, optional BOM), header row first.

    Returns:
        An iterator of :class:`OrderItemRow` (valid line) or :class:`InvalidRow`, one per
        data line, in file order; ``line_no`` is the physical line number (header = 1).

    Raises:
        ConfigError: the file is empty, or its header lacks one of :data:`REQUIRED_COLUMNS`
            (``err.key`` is the missing column's name).
        OSError: the file cannot be opened.
    """
    columns = _read_header(path)
    if len(set(columns)) != len(columns):
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        raise ConfigError(duplicates[0], f"{path}: the header names {duplicates[0]!r} more than once")
    return _rows(path)


def build_order(rows: Sequence[OrderItemRow]) -> OrderCreated:
    """The ``order.created`` value for the rows of one order (all with the same ``order_id``):
    one :class:`~reactive_services.examples.shop.messages.OrderLine` per product (``quantity``:
    its rows; ``unit_price``, ``seller_id``: its first row's), ``total`` and ``freight`` the
    sums of the rows' prices and freight values (BRL, rounded to cents).

    Raises:
        ValueError: ``rows`` is empty or mixes order ids (or, for rows not read by
            :func:`read_order_rows`, makes an invalid order: ``pydantic.ValidationError``).
    """
    if not rows:
        raise ValueError("an order needs at least one row")
    order_id = rows[0].order_id
    first: dict[str, OrderItemRow] = {}  # product id -> its first row, in order of appearance
    quantity: dict[str, int] = {}
    for row in rows:
        if row.order_id != order_id:
            raise ValueError(f"rows of orders {order_id!r} and {row.order_id!r} mixed")
        first.setdefault(row.product_id, row)
        quantity[row.product_id] = quantity.get(row.product_id, 0) + 1
    return OrderCreated(
        order_id=order_id,
        items=[
            OrderLine(product_id=product_id, quantity=quantity[product_id], unit_price=r.price, seller_id=r.seller_id)
            for product_id, r in first.items()
        ],
        total=round(sum(row.price for row in rows), 2),
        freight=round(sum(row.freight_value for row in rows), 2),
    )


def group_orders() -> Callable[[Observable[OrderItemRow]], Observable[OrderCreated]]:
    """Group item rows into ``order.created`` values, one per ``order_id``.

    Orders are emitted when the source completes (the rows need not be sorted), in the
    order their ``order_id`` was first seen::

        rows:    -a1-b1-a2-c1-|
        orders:  -------------(ABC)|      A = build_order([a1, a2])

    Returns:
        An operator ``Observable[OrderItemRow] -> Observable[OrderCreated]`` (see :func:`build_order`).
    """

    def order_id(row: OrderItemRow) -> str:
        return row.order_id

    def order_of(group: GroupedObservable[str, OrderItemRow]) -> Observable[OrderCreated]:
        rows: Observable[list[OrderItemRow]] = group.pipe(ops.to_list())
        return rows.pipe(ops.map(build_order))

    return compose(ops.group_by(order_id), ops.flat_map(order_of))


def _is_valid_row(row: RowResult) -> bool:
    return isinstance(row, OrderItemRow)


class _RowCounter(ObserverBase[RowResult]):
    """Tap that counts valid rows and keeps the invalid ones."""

    def __init__(self) -> None:
        self.items_read = 0
        self.invalid: list[InvalidRow] = []

    def on_next(self, value: RowResult) -> None:
        if isinstance(value, InvalidRow):
            self.invalid.append(value)
        else:
            self.items_read += 1

    def on_error(self, error: Exception) -> None:  # the publisher records the error
        pass

    def on_completed(self) -> None:
        pass


class _BatchPublisher(ObserverBase[list[OrderCreated]]):
    """Publishes each batch of orders in its own task, one batch at a time, in order.

    Tasks run in the caller's task group; a failed batch is recorded (first error kept) and
    the batches after it are not published, so no later order overtakes a lost one.
    """

    def __init__(self, service: OrderService, tasks: asyncio.TaskGroup) -> None:
        self._service = service
        self._tasks = tasks
        self._lock = asyncio.Lock()  # FIFO: batches are published in arrival order
        self.emitted = 0
        self.batches = 0
        self.error: BaseException | None = None
        self.completed = False

    def on_next(self, value: list[OrderCreated]) -> None:
        self._tasks.create_task(self._publish(value))

    def on_error(self, error: Exception) -> None:
        log.error("order pipeline failed: %r", error)
        if self.error is None:
            self.error = error

    def on_completed(self) -> None:
        self.completed = True

    async def _publish(self, batch: list[OrderCreated]) -> None:
        async with self._lock:
            if self.error is not None:
                return
            try:
                await self._service._emit_with_retry([(order.order_id, order) for order in batch])
            except Exception as exc:
                log.error("publishing %d orders failed: %r", len(batch), exc)
                self.error = exc
                return
            self.emitted += len(batch)
            self.batches += 1


class OrderService:
    """Reads an order-items CSV file and publishes one ``order.created`` record per order.

    Args:
        emit_batch: ``await emit_batch(topic, [(order_id, order), ...])``, e.g. ``broker.emit_batch``.
        path: the order-items CSV file (see :func:`read_order_rows`).
        batch_size: orders per ``emit_batch`` call (messages, >= 1).
        topic: the topic to publish to.
        retries: extra attempts for a batch whose publish raised a retriable error
            (``err.retriable`` true, e.g. :class:`~reactive_services.errors.PublishError`); >= 0.
        retry_delay: seconds before the first retry; doubled for each further retry,
            capped at ``max_retry_delay`` seconds.

    Raises:
        ConfigError: ``batch_size`` < 1, ``retries`` < 0 or a negative delay.
    """

    def __init__(
        self,
        emit_batch: EmitBatch,
        path: str | PathLike[str],
        *,
        batch_size: int = 100,
        topic: str = "order.created",
        retries: int = 3,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
        if retries < 0:
            raise ConfigError("retries", f"must be >= 0, got {retries}")
        if retry_delay < 0 or max_retry_delay < 0:
            raise ConfigError("retry_delay", "delays must be >= 0 seconds")
        self._emit_batch = emit_batch
        self.path = path
        self.batch_size = batch_size
        self.topic = topic
        self.retries = retries
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        #: publish attempts that failed and were retried (across all runs).
        self.retried = 0

    def pipeline(self, rows: Iterable[RowResult], counter: ObserverBase[RowResult]) -> Observable[list[OrderCreated]]:
        """The batches of orders built from ``rows``; ``counter`` sees every row first."""
        source: Observable[RowResult] = reactivex.from_iterable(rows)
        checked: Observable[RowResult] = source.pipe(ops.do(counter), ops.filter(_is_valid_row))
        valid = cast(Observable[OrderItemRow], checked)  # ops.filter cannot narrow the item type
        orders: Observable[OrderCreated] = valid.pipe(group_orders())
        return orders.pipe(ops.buffer_with_count(self.batch_size))

    async def _emit_with_retry(self, records: list[tuple[str, OrderCreated]]) -> None:
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            try:
                await self._emit_batch(self.topic, records)
                return
            except Exception as exc:
                if not getattr(exc, "retriable", False) or attempt == self.retries:
                    raise
                self.retried += 1
                log.warning(
                    "publish to %s failed (%r), retry %d/%d in %.2fs", self.topic, exc, attempt + 1, self.retries, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)

    async def run(self) -> dict[str, Any]:
        """Read the whole file, publish every order, and report.

        Returns:
            ``{"items_read": valid item rows, "invalid_rows": n,
            "invalid": [{"line": line_no, "reason": str}, ...], "emitted": orders published,
            "batches": emit_batch calls that succeeded}``;
            ``items_read + invalid_rows`` is the number of data lines in the file.

        Raises:
            ConfigError: the header lacks a required column.
            OSError: the file cannot be read.
            Exception: the error of a batch that could not be published (after the retries
                for a retriable one), e.g. :class:`~reactive_services.errors.PublishError`.
                Batches after a failed one are not published.
        """
        rows = read_order_rows(self.path)
        counter = _RowCounter()
        subscription: DisposableBase | None = None
        async with asyncio.TaskGroup() as tasks:
            publisher = _BatchPublisher(self, tasks)
            subscription = self.pipeline(rows, counter).subscribe(publisher)
        subscription.dispose()
        if publisher.error is not None:
            raise publisher.error
        if not publisher.completed:  # cannot happen with a synchronous source; never silent
            raise RuntimeError("the order pipeline ended without completing")
        return {
            "items_read": counter.items_read,
            "invalid_rows": len(counter.invalid),
            "invalid": [{"line": row.line_no, "reason": row.reason} for row in counter.invalid],
            "emitted": publisher.emitted,
            "batches": publisher.batches,
        }
