"""The shop's inventory service: reserves stock for each ``order.created`` in its own SQLite database.

Pipeline (wired by the runtime)::

    broker.source("order.created", group_id="inventory")
      -> ops.map(lambda message: parse_order(message.value))      Order (ValidationError -> dead letter)
      -> InventoryService (Observer)                               reserve in SQLite, then publish

Topics published (JSON values; keys in brackets), each value built as its model of
:mod:`~reactive_services.examples.shop.messages`::

    inventory.updated [order_id]   InventoryUpdated {"order_id", "items": [{"product_id", "quantity", "remaining"}]}
    order.rejected    [order_id]   OrderRejected    {"order_id", "reason", "items": [{"product_id", "quantity"}]}
    stock.low         [product_id] StockLow         {"product_id", "remaining", "threshold", "order_id"}
                                                    (order_id: the order that took it low)

Initial stock rule (:func:`initial_stock`)
-------------------------------------------
A product's initial stock is its ``product_photos_qty`` from ``products.csv`` (a listing with
more photos stands for a better-stocked product). A product whose ``product_photos_qty`` or
``product_weight_g`` is empty or not a non-negative integer (the 15 uncategorised products of the
shipped file) gets 0. The rule reads nothing else, so the same file always gives the same stock.
On the shipped data (952 products, 1,024 orders processed in file order, each order all or
none) it gives **908 applied and 116 rejected orders** (stock ranges 0..13; 490 products start
with 1 unit, so any product ordered twice runs out).

Idempotency
-----------
Every processed order id is stored with its outcome (applied or rejected) in the same
transaction as the stock change. A redelivered ``order.created`` (at-least-once delivery)
changes nothing and returns the stored outcome with ``duplicate=True``; the service then
**re-publishes the same events** (same values and keys) as the first time: if the service died
after the commit but before publishing, the redelivery is what gets those events out.
Consumers therefore see each event at least once and de-duplicate by ``order_id``. The
counters ``applied`` / ``rejected`` / ``stock_low_events`` / ``applied_orders`` count first
processing only; redeliveries are counted in ``duplicates`` (and their events in ``republished``).

Low stock
---------
``stock.low`` is published for each item of an *applied* order whose remaining stock is below
the threshold, "below" meaning ``remaining < low_stock_threshold``. It is level-based, not
edge-based: each sale that leaves a product low alerts again (a product at 0 cannot be sold,
so this never repeats without a sale).
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal, TypeAlias

import aiosqlite
import orjson
from opentelemetry import context as otel_context
from reactivex.abc import ObserverBase
from reactivex.subject import Subject

from reactive_services.adapters import Hold, hold, track
from reactive_services.adapters.tracing import tracing_enabled
from reactive_services.errors import ConfigError

from ._sqlite import SqliteStore
from .messages import MAX_ORDER_BYTES, ORDER_CREATED, InventoryUpdated, OrderRejected, StockLow

__all__ = [
    "MAX_ORDER_BYTES",
    "Emit",
    "EmitBatch",
    "InventoryService",
    "InventoryStore",
    "Order",
    "OrderItem",
    "Outcome",
    "StockChange",
    "initial_stock",
    "parse_order",
]

log = logging.getLogger(__name__)

#: ``await emit(topic, value, key=key)``: publish one record and wait for the acknowledgement
#: (``Broker.emit`` has this shape). Raises on failure.
Emit = Callable[..., Awaitable[Any]]

#: ``await emit_batch(topic, [(key, value), ...])``: publish records to one topic, in order, and
#: wait for every acknowledgement (``ClientProxy.emit_batch`` has this shape). Raises on failure.
EmitBatch = Callable[[str, Sequence[tuple[str, Any]]], Awaitable[Any]]

#: A value the inventory publishes (a pydantic model: the emitters write it as its JSON).
_Event: TypeAlias = InventoryUpdated | OrderRejected | StockLow


# --------------------------------------------------------------------------- initial stock


def _non_negative_int(text: str | None) -> int | None:
    text = (text or "").strip()
    if not text.isdigit():  # rejects "", "-1", "1.5", "abc"
        return None
    return int(text)


def initial_stock(products_csv_path: str | PathLike[str]) -> dict[str, int]:
    """The initial stock of every product in ``products.csv``, by the rule in the module docstring.

    ``stock = int(product_photos_qty)``; 0 if ``product_photos_qty`` or ``product_weight_g`` is
    empty or not a non-negative integer. When a product id appears twice, the first row counts.

    Args:
        products_csv_path: the Olist products file (header row first).

    Returns:
        ``{product_id: units}``, in file order; every value >= 0.

    Raises:
        ConfigError: the header lacks ``product_id``, ``product_photos_qty`` or
            ``product_weight_g`` (``err.key`` names it).
        OSError: the file cannot be read.
    """
    stock: dict[str, int] = {}
    with open(products_csv_path, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        names = [name.strip() for name in reader.fieldnames or ()]
        for column in ("product_id", "product_photos_qty", "product_weight_g"):
            if column not in names:
                raise ConfigError(column, f"{products_csv_path}: the header has no {column!r} column")
        reader.fieldnames = names
        for row in reader:
            product_id = (row.get("product_id") or "").strip()
            if not product_id or product_id in stock:
                continue
            photos = _non_negative_int(row.get("product_photos_qty"))
            weight = _non_negative_int(row.get("product_weight_g"))
            stock[product_id] = photos if photos is not None and weight is not None else 0
    return stock


# --------------------------------------------------------------------------- orders and outcomes


@dataclass(frozen=True, slots=True)
class OrderItem:
    """``quantity`` units (>= 1) of one product."""

    product_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Order:
    """A validated ``order.created`` value: a non-empty id and >= 1 items with distinct products."""

    order_id: str
    items: tuple[OrderItem, ...]


def parse_order(value: Any) -> Order:
    """Validate an ``order.created`` value and turn it into an :class:`Order`.

    The value is validated as :class:`~reactive_services.examples.shop.messages.OrderCreated`
    (:data:`~reactive_services.examples.shop.messages.ORDER_CREATED`): ``{"order_id": str
    (non-blank), "items": [{"product_id": str (non-blank), "quantity": int >= 1}, ...]
    (non-empty)}``; other keys are ignored. Items with the same product are merged (quantities
    added), keeping the first one's position.

    Raises:
        ValidationError: the value has the wrong shape; the message names each offending field,
            e.g. ``"invalid order.created: items[1].quantity: Input should be greater than or
            equal to 1 (got 0)"``, and its ``fields`` are their paths.
    """
    created = ORDER_CREATED(value)
    quantities: dict[str, int] = {}
    for item in created.items:
        quantities[item.product_id] = quantities.get(item.product_id, 0) + item.quantity
    return Order(created.order_id, tuple(OrderItem(p, q) for p, q in quantities.items()))


@dataclass(frozen=True, slots=True)
class StockChange:
    """A product's new level: ``units`` in stock after ``order_id`` was applied; ``version``: the
    store's :attr:`InventoryStore.version` after that transaction."""

    product_id: str
    units: int
    order_id: str
    version: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`InventoryStore.reserve` decided for an order.

    Attributes:
        order_id: the order.
        status: ``"applied"`` (every item reserved) or ``"rejected"`` (nothing reserved).
        items: applied: ``[{"product_id", "quantity", "remaining"}]`` (units left after the
            order); rejected: ``[{"product_id", "quantity"}]`` (units requested).
        reason: why it was rejected (names the product and, for a shortage, requested and
            available units); None when applied.
        duplicate: True when the order had already been processed: this is the stored
            outcome of that first time and nothing was changed.
    """

    order_id: str
    status: Literal["applied", "rejected"]
    items: tuple[dict[str, Any], ...]
    reason: str | None = None
    duplicate: bool = False

    @property
    def applied(self) -> bool:
        return self.status == "applied"

    def to_json(self) -> bytes:
        """The stored form (``duplicate`` is not stored)."""
        return orjson.dumps(
            {"order_id": self.order_id, "status": self.status, "items": list(self.items), "reason": self.reason}
        )

    @classmethod
    def from_json(cls, data: bytes | str, *, duplicate: bool = False) -> Outcome:
        stored = orjson.loads(data)
        return cls(stored["order_id"], stored["status"], tuple(stored["items"]), stored["reason"], duplicate)

    def event(self) -> tuple[str, InventoryUpdated | OrderRejected]:
        """``(topic, value)`` of the event announcing this outcome: ``("inventory.updated",
        InventoryUpdated)`` or ``("order.rejected", OrderRejected)``.

        Raises:
            pydantic.ValidationError: the outcome does not make a valid event (not for an
                outcome :class:`InventoryStore` decided).
        """
        if self.applied:
            return "inventory.updated", InventoryUpdated.model_validate(
                {"order_id": self.order_id, "items": self.items}
            )
        return "order.rejected", OrderRejected.model_validate(
            {"order_id": self.order_id, "reason": self.reason, "items": self.items}
        )


# --------------------------------------------------------------------------- the store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    product_id TEXT PRIMARY KEY,
    quantity   INTEGER NOT NULL CHECK (quantity >= 0)
);
CREATE TABLE IF NOT EXISTS processed_orders (
    order_id TEXT PRIMARY KEY,
    outcome  TEXT NOT NULL  -- JSON, see Outcome.to_json
);
"""


class InventoryStore(SqliteStore):
    """The inventory's own SQLite database (aiosqlite); no other service opens it.

    Tables: ``stock(product_id PK, quantity >= 0)`` and ``processed_orders(order_id PK,
    outcome JSON)``. Use as ``async with InventoryStore(path, seed=...) as store:`` or call
    :meth:`open` / :meth:`close`. Calls are serialized by an internal lock.

    Args:
        db_path: the database file (created if missing), or ``":memory:"``.
        seed: ``{product_id: units}`` written by :meth:`open` when the stock table is empty
            (a restarted service keeps its stock), e.g. ``initial_stock(products_csv)``.
    """

    schema = _SCHEMA
    isolation_level = None  # explicit BEGIN IMMEDIATE / COMMIT

    def __init__(self, db_path: str | PathLike[str], *, seed: Mapping[str, int] | None = None) -> None:
        super().__init__(db_path)
        #: transactions that changed the stock since the store was made
        self.version = 0
        #: a hot Observable of the :class:`StockChange` s of each transaction that changed the stock
        #: (one tuple per transaction, the products' new levels), pushed right after its commit (in
        #: commit order, synchronously, under the store's lock: an observer must not block)
        self.changes: Subject[tuple[StockChange, ...]] = Subject()
        self._seed = dict(seed or {})
        bad = {p: q for p, q in self._seed.items() if isinstance(q, bool) or not isinstance(q, int) or q < 0}
        if bad:
            raise ConfigError("seed", f"quantities must be integers >= 0: {bad}")

    async def _prepare(self, db: aiosqlite.Connection) -> None:
        """Seed the stock when its table is empty (a restarted service keeps its stock)."""
        await db.execute("BEGIN IMMEDIATE")
        async with db.execute("SELECT COUNT(*) FROM stock") as cursor:
            (count,) = await cursor.fetchone() or (0,)
        if count == 0 and self._seed:
            await db.executemany("INSERT INTO stock (product_id, quantity) VALUES (?, ?)", self._seed.items())
        await db.execute("COMMIT")

    async def reserve(self, order: Order) -> Outcome:
        """Reserve every item of ``order`` in one transaction, all or none, at most once per order id.

        Returns:
            The :class:`Outcome`. Already processed order id: the stored outcome with
            ``duplicate=True``, nothing changed. A product not in the stock table: rejected
            (``"unknown product '<id>'"``). Too few units of any product: rejected
            (``"insufficient stock for product '<id>': requested 3, available 1"``; shortages of
            several products are joined with ``"; "``). Otherwise every quantity is decremented.
            Rejections are stored too, so a redelivery gets the same answer.

        Raises:
            RuntimeError: the store is not open.
            sqlite3.Error: the transaction failed; it was rolled back, nothing changed.
        """
        [outcome] = await self.reserve_many([order])
        return outcome

    async def reserve_many(self, orders: Sequence[Order]) -> list[Outcome]:
        """:meth:`reserve` for each of ``orders``, in order, in one transaction (all the orders'
        changes commit together, or none of them).

        The outcome of each order is the one :meth:`reserve` would give if the orders were
        reserved one after another (an order sees the stock the earlier ones left; an order id
        seen earlier in the list is a duplicate). Five statements whatever the number of orders
        (two reads, the stock updates and the outcome inserts as ``executemany``), so a batch
        costs about one order's round trips and one commit.

        Returns:
            One :class:`Outcome` per order, in the order given.

        Raises:
            RuntimeError: the store is not open.
            sqlite3.Error: the transaction failed; it was rolled back, nothing changed.
        """
        if not orders:
            return []
        return await self.transaction(lambda db: self._reserve_many(db, orders), self._announce)

    def _announce(self, outcomes: list[Outcome]) -> None:
        """After a commit, under the lock: count it in :attr:`version` and push each new level to
        :attr:`changes` (an observer that raises is logged, never undoes the commit)."""
        changes = [
            (item["product_id"], item["remaining"], outcome.order_id)
            for outcome in outcomes
            if outcome.applied and not outcome.duplicate
            for item in outcome.items
        ]
        if not changes:
            return
        self.version += 1
        try:
            self.changes.on_next(tuple(StockChange(p, u, o, self.version) for p, u, o in changes))
        except Exception:
            log.exception("inventory: an observer of the stock changes raised")

    async def stock_levels(self, product_ids: Sequence[str] | None = None) -> tuple[dict[str, int], int]:
        """``({product_id: units}, version)``: the stock of ``product_ids`` (unknown ones left out;
        None: every product) and :attr:`version` read together, under the lock: a change pushed to
        :attr:`changes` with a greater version is not in the levels, one with this version or less is."""
        db = self._conn()
        async with self._lock:
            rows: list[tuple[Any, Any]]
            if product_ids is None:
                async with db.execute("SELECT product_id, quantity FROM stock ORDER BY product_id") as cur:
                    rows = [tuple(row) for row in await cur.fetchall()]
            else:
                rows = await _select_in(
                    db, "SELECT product_id, quantity FROM stock WHERE product_id IN", list(dict.fromkeys(product_ids))
                )
            return {product_id: quantity for product_id, quantity in rows}, self.version

    async def _reserve_many(self, db: aiosqlite.Connection, orders: Sequence[Order]) -> list[Outcome]:
        stored = await _select_in(
            db, "SELECT order_id, outcome FROM processed_orders WHERE order_id IN", [o.order_id for o in orders]
        )
        products = {item.product_id for order in orders for item in order.items}
        available: dict[str, int] = dict(
            await _select_in(db, "SELECT product_id, quantity FROM stock WHERE product_id IN", list(products))
        )
        seen: dict[str, bytes | str] = dict(stored)
        changed: set[str] = set()
        outcomes: list[Outcome] = []
        inserts: list[tuple[str, bytes]] = []
        for order in orders:
            previous = seen.get(order.order_id)
            if previous is not None:
                outcomes.append(Outcome.from_json(previous, duplicate=True))
                continue
            outcome = _decide(order, available)
            if outcome.applied:
                for item in order.items:
                    available[item.product_id] -= item.quantity
                    changed.add(item.product_id)
            stored_form = outcome.to_json()
            seen[order.order_id] = stored_form
            inserts.append((order.order_id, stored_form))
            outcomes.append(outcome)
        if changed:
            await db.executemany(
                "UPDATE stock SET quantity = ? WHERE product_id = ?", [(available[p], p) for p in sorted(changed)]
            )
        if inserts:
            await db.executemany("INSERT INTO processed_orders (order_id, outcome) VALUES (?, ?)", inserts)
        return outcomes

    async def stock(self) -> dict[str, int]:
        """``{product_id: units}`` of every product, sorted by product id."""
        db = self._conn()
        async with self._lock:
            async with db.execute("SELECT product_id, quantity FROM stock ORDER BY product_id") as cur:
                return {product_id: quantity for product_id, quantity in await cur.fetchall()}

    async def stock_of(self, product_ids: list[str]) -> dict[str, int | None]:
        """``{product_id: units}`` for each of ``product_ids``, in the order given; None for an
        id not in the stock table. (The ``inventory.get_stock`` request's answer.)"""
        db = self._conn()
        wanted = list(dict.fromkeys(product_ids))
        found: dict[str, int] = {}
        async with self._lock:
            for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                async with db.execute(
                    f"SELECT product_id, quantity FROM stock WHERE product_id IN ({marks})", chunk
                ) as cur:
                    found.update({product_id: quantity for product_id, quantity in await cur.fetchall()})
        return {product_id: found.get(product_id) for product_id in wanted}

    async def stock_page(
        self,
        *,
        threshold: int,
        limit: int = 100,
        offset: int = 0,
        order: Literal["recent", "product", "stock"] = "recent",
        low_only: bool = False,
    ) -> tuple[list[tuple[str, int]], int, int]:
        """One page of the stock table (the ``inventory.list_stock`` request's answer).

        Args:
            threshold: a product is low when its units are ``< threshold``.
            limit, offset: the page: ``limit`` products (>= 1) after the first ``offset`` (>= 0).
            order: ``"recent"``: the products of the latest applied orders first (by the last
                applied order that took some, in the order outcomes were stored; among the latest
                :data:`RECENT_SCAN` outcomes: reading them takes about 30 ms, under the store's
                lock), then the others by product id; ``"product"``: by product id; ``"stock"``:
                fewest units first, then by product id.
            low_only: only the low products.

        Returns:
            ``([(product_id, units), ...], total, low)``: the page; how many products match
            (all of them, or the low ones with ``low_only``); how many products are low.

        Raises:
            RuntimeError: the store is not open.
            ValueError: ``limit`` < 1, ``offset`` < 0 or an unknown ``order``.
        """
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be >= 1 and offset >= 0, got {limit} and {offset}")
        if order not in _STOCK_ORDERS:
            raise ValueError(f"order must be one of {sorted(_STOCK_ORDERS)}, got {order!r}")
        where = "WHERE quantity < :threshold" if low_only else ""
        params = {"threshold": threshold, "limit": limit, "offset": offset, "scan": RECENT_SCAN}
        db = self._conn()
        async with self._lock:
            if order == "recent":
                # the products of the latest outcomes, with the rowid of the last that took some;
                # then every product by id, sorted here (a join would scan them once per product)
                async with db.execute(_SOLD_LAST, params) as cur:
                    sold = {str(product_id): int(last) for product_id, last in await cur.fetchall()}
                async with db.execute(
                    f"SELECT product_id, quantity FROM stock {where} ORDER BY product_id", params
                ) as cur:
                    every = [(str(product_id), int(units)) for product_id, units in await cur.fetchall()]
                every.sort(key=lambda row: -sold.get(row[0], 0))  # stable: by product id within ties
                rows = every[offset : offset + limit]
            else:
                query = f"SELECT product_id, quantity FROM stock {where} ORDER BY {_STOCK_ORDERS[order]}"
                async with db.execute(query + " LIMIT :limit OFFSET :offset", params) as cur:
                    rows = [(str(product_id), int(units)) for product_id, units in await cur.fetchall()]
            async with db.execute("SELECT COUNT(*), COALESCE(SUM(quantity < :threshold), 0) FROM stock", params) as cur:
                count, low = await cur.fetchone() or (0, 0)
        return rows, int(low if low_only else count), int(low)

    async def outcomes(self, order_ids: Sequence[str]) -> dict[str, Outcome | None]:
        """The stored outcome of each of ``order_ids`` (in the order given, each once), None for
        an order never processed. (The ``inventory.get_outcomes`` request's answer.)"""
        wanted = list(dict.fromkeys(order_ids))
        db = self._conn()
        async with self._lock:
            rows = await _select_in(db, "SELECT order_id, outcome FROM processed_orders WHERE order_id IN", wanted)
        found = {order_id: Outcome.from_json(outcome) for order_id, outcome in rows}
        return {order_id: found.get(order_id) for order_id in wanted}

    async def outcome(self, order_id: str) -> Outcome | None:
        """The stored outcome of ``order_id`` (``duplicate=False``), or None if never processed."""
        db = self._conn()
        async with self._lock:
            async with db.execute("SELECT outcome FROM processed_orders WHERE order_id = ?", (order_id,)) as cur:
                row = await cur.fetchone()
        return None if row is None else Outcome.from_json(row[0])


#: How many of the latest outcomes ``InventoryStore.stock_page(order="recent")`` reads.
RECENT_SCAN = 2000

#: ``inventory.list_stock``'s orders but "recent" (sorted in Python): name -> the ORDER BY clause.
_STOCK_ORDERS: Mapping[str, str] = {
    "recent": "product_id",
    "product": "product_id",
    "stock": "quantity, product_id",
}

#: The products of the latest :data:`RECENT_SCAN` outcomes that were applied, each with the rowid
#: (the order outcomes were stored in) of the last one that took some.
_SOLD_LAST = """
    SELECT json_extract(item.value, '$.product_id'), MAX(p.rowid)
    FROM (SELECT rowid, outcome FROM processed_orders ORDER BY rowid DESC LIMIT :scan) AS p,
        json_each(CAST(p.outcome AS TEXT), '$.items') AS item
    WHERE json_extract(CAST(p.outcome AS TEXT), '$.status') = 'applied'
    GROUP BY 1
"""


def _decide(order: Order, available: Mapping[str, int]) -> Outcome:
    """The outcome of ``order`` against the units ``available`` (see :meth:`InventoryStore.reserve`)."""
    problems = []
    for item in order.items:
        have = available.get(item.product_id)
        if have is None:
            problems.append(f"unknown product {item.product_id!r}")
        elif have < item.quantity:
            problems.append(
                f"insufficient stock for product {item.product_id!r}: requested {item.quantity}, available {have}"
            )
    if problems:
        return Outcome(
            order.order_id,
            "rejected",
            tuple({"product_id": i.product_id, "quantity": i.quantity} for i in order.items),
            "; ".join(problems),
        )
    return Outcome(
        order.order_id,
        "applied",
        tuple(
            {"product_id": i.product_id, "quantity": i.quantity, "remaining": available[i.product_id] - i.quantity}
            for i in order.items
        ),
    )


async def _select_in(db: aiosqlite.Connection, query: str, keys: list[str]) -> list[tuple[Any, Any]]:
    """``query (?, ?, ...)`` for ``keys``, 500 at a time (under SQLite's bound-parameter limit)."""
    rows: list[tuple[Any, Any]] = []
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        async with db.execute(f"{query} ({','.join('?' * len(chunk))})", chunk) as cursor:
            rows.extend(tuple(row) for row in await cursor.fetchall())
    return rows


# --------------------------------------------------------------------------- the service


@dataclass
class _Counters:
    applied: int = 0
    rejected: int = 0
    duplicates: int = 0
    stock_low_events: int = 0
    republished: int = 0
    applied_orders: list[str] = field(default_factory=list)


class InventoryService(ObserverBase[Order]):
    """Observer of validated orders: reserves stock, then publishes the outcomes (group commit).

    ``on_next(order)`` queues the order and holds back its record's commit
    (:func:`reactive_services.adapters.hold`); one task applies the orders queued meanwhile, in
    arrival order, in **one** SQLite transaction (:meth:`InventoryStore.reserve_many`: at most
    ``max_batch`` orders), publishes their events, and only then releases the holds: a broker
    source commits an order's offset only after the transaction *and* the publishes finished.
    While the orders of one transaction are applied, the next ones queue up, so the more
    orders arrive, the larger the transactions (one commit, and one fsync, for many orders).
    At most ``max_queued`` orders wait: past that, ``on_next`` tracks the queue's drain
    (:func:`reactive_services.adapters.track`), so the source waits (backpressure; the
    consumer lag then grows where the metrics show it). Must be called from inside a running
    event loop.

    Events (see the module docstring): ``inventory.updated`` or ``order.rejected`` keyed by
    order id, then ``stock.low`` keyed by product id for each applied item with
    ``remaining < low_stock_threshold``. A duplicate re-publishes the stored outcome's events.
    Within a topic, events are published in the order of the orders; the topics of a
    transaction's events are published one after another, in the order they first appear (as one
    order at a time would publish them).

    A failed transaction or publish fails the holds of its orders (the source ends with the
    error; the orders are read again from the committed offset and their redelivery is absorbed
    by order id), is logged, added to :attr:`errors` and raised by :meth:`wait_idle`.

    Args:
        store: an open :class:`InventoryStore`.
        emit: ``await emit(topic, value, key=key)``, e.g. ``broker.emit``.
        emit_batch: ``await emit_batch(topic, [(key, value), ...])`` (e.g.
            ``ClientProxy.emit_batch``): each transaction's events of one topic are then
            published as one batch (None: one ``emit`` after another).
        low_stock_threshold: units; ``stock.low`` when remaining < this (>= 0).
        max_batch: the most orders in one transaction (>= 1).
        max_queued: the most orders waiting (>= 1).

    Attributes:
        applied, rejected, duplicates, stock_low_events, republished: counters (first
            processing only, except ``duplicates`` / ``republished``).
        applied_orders: order ids applied, in processing order.
        transactions: SQLite transactions committed (``applied + rejected + duplicates``
            orders in all).
        errors: failures of the work (database, publish) and the error passed to ``on_error``.
        completed: ``on_completed`` was called.
    """

    def __init__(
        self,
        store: InventoryStore,
        emit: Emit,
        *,
        emit_batch: EmitBatch | None = None,
        low_stock_threshold: int = 2,
        updated_topic: str = "inventory.updated",
        rejected_topic: str = "order.rejected",
        low_stock_topic: str = "stock.low",
        max_batch: int = 500,
        max_queued: int = 2000,
    ) -> None:
        if isinstance(low_stock_threshold, bool) or not isinstance(low_stock_threshold, int) or low_stock_threshold < 0:
            raise ConfigError("low_stock_threshold", f"must be an integer >= 0, got {low_stock_threshold!r}")
        for key, value in (("max_batch", max_batch), ("max_queued", max_queued)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(key, f"must be an integer >= 1, got {value!r}")
        self.store = store
        self._emit = emit
        self._emit_batch = emit_batch
        self.low_stock_threshold = low_stock_threshold
        self.max_batch = max_batch
        self.max_queued = max_queued
        self._topics = {"inventory.updated": updated_topic, "order.rejected": rejected_topic}
        self.low_stock_topic = low_stock_topic
        self._counters = _Counters()
        self._lock = asyncio.Lock()
        self._queue: deque[tuple[Order, Hold, otel_context.Context]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._unraised: list[BaseException] = []
        self.transactions = 0
        self.errors: list[BaseException] = []
        self.completed = False

    # counters, read-only views

    @property
    def applied(self) -> int:
        """Orders applied (first processing)."""
        return self._counters.applied

    @property
    def rejected(self) -> int:
        """Orders rejected (first processing)."""
        return self._counters.rejected

    @property
    def duplicates(self) -> int:
        """Redelivered orders (already processed; nothing changed)."""
        return self._counters.duplicates

    @property
    def stock_low_events(self) -> int:
        """``stock.low`` events published for first-time outcomes."""
        return self._counters.stock_low_events

    @property
    def republished(self) -> int:
        """Events published again for duplicates."""
        return self._counters.republished

    @property
    def applied_orders(self) -> list[str]:
        """Order ids applied, in processing order (a copy)."""
        return list(self._counters.applied_orders)

    @property
    def queued(self) -> int:
        """Orders received and not yet taken into a transaction."""
        return len(self._queue)

    def counters(self) -> dict[str, Any]:
        """A snapshot: ``{"applied", "rejected", "duplicates", "stock_low_events", "republished",
        "applied_orders"}``."""
        c = self._counters
        return {
            "applied": c.applied,
            "rejected": c.rejected,
            "duplicates": c.duplicates,
            "stock_low_events": c.stock_low_events,
            "republished": c.republished,
            "applied_orders": list(c.applied_orders),
        }

    # Observer

    def on_next(self, value: Order) -> None:
        queue = self._queue
        # the order's trace (OpenTelemetry), so that its events join it though published later
        queue.append((value, hold(), otel_context.get_current()))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain(), name="inventory: transactions")
        if len(queue) >= self.max_queued:  # backpressure: the source waits until half the queue is applied
            if self._space is None:
                self._space = asyncio.get_running_loop().create_future()
            track(self._space)

    def on_error(self, error: Exception) -> None:
        log.error("inventory: order stream failed: %r", error)
        self.errors.append(error)
        self.completed = True

    def on_completed(self) -> None:
        self.completed = True

    # work

    async def _drain(self) -> None:
        """Apply what is queued, ``max_batch`` orders per transaction, until the queue is empty."""
        queue = self._queue
        while queue:
            taken = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
            space = self._space
            if space is not None and len(queue) <= self.max_queued // 2:
                self._space = None
                if not space.done():
                    space.set_result(None)
            try:
                await self.handle([order for order, _, _ in taken], [ctx for _, _, ctx in taken])
            except asyncio.CancelledError as cancelled:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    for _, held, _ in taken:
                        held.cancel()
                    raise
                # the work was cancelled from inside (not this task): a failure like any other
                exc = RuntimeError(f"inventory: a transaction's work was cancelled: {cancelled!r}")
                self.errors.append(exc)
                self._unraised.append(exc)
                for _, held, _ in taken:
                    held.fail(exc)
            except Exception as exc:
                self._unraised.append(exc)
                for _, held, _ in taken:
                    held.fail(exc)
            else:
                for _, held, _ in taken:
                    held.release()

    async def handle(
        self, orders: Sequence[Order], contexts: Sequence[otel_context.Context] | None = None
    ) -> list[Outcome]:
        """Apply ``orders`` in one transaction, publish their events, update the counters.

        ``contexts``: the OpenTelemetry context of each order (its trace); with tracing set up,
        each order's events are published one by one inside its own context, so they join the
        order's trace (without tracing they go out in one ``emit_batch`` per topic).

        Returns:
            The outcomes, one per order.

        Raises:
            sqlite3.Error: the transaction failed (nothing applied, nothing published).
            Exception: a publish failed (the transaction is committed: a redelivery of the
                orders re-publishes their stored outcomes). Both are also logged and added to
                :attr:`errors`.
        """
        async with self._lock:
            try:
                outcomes = await self.store.reserve_many(orders)
                self.transactions += 1
                c = self._counters
                events: list[tuple[str, _Event, str, Outcome]] = []
                traced: list[otel_context.Context | None] = []
                for n, outcome in enumerate(outcomes):
                    if outcome.duplicate:
                        c.duplicates += 1
                    elif outcome.applied:
                        c.applied += 1
                        c.applied_orders.append(outcome.order_id)
                    else:
                        c.rejected += 1
                    for topic, value, key in self._events(outcome):
                        events.append((topic, value, key, outcome))
                        traced.append(contexts[n] if contexts is not None else None)
                if contexts is not None and tracing_enabled():
                    await self._publish_traced(events, traced)
                else:
                    await self._publish(events)
                for topic, _, _, outcome in events:
                    if outcome.duplicate:
                        c.republished += 1
                    elif topic == self.low_stock_topic:
                        c.stock_low_events += 1
                return outcomes
            except Exception as exc:
                log.error("inventory: orders %s failed: %r", [o.order_id for o in orders][:5], exc)
                self.errors.append(exc)
                raise

    async def _publish_traced(
        self, events: list[tuple[str, _Event, str, Outcome]], contexts: list[otel_context.Context | None]
    ) -> None:
        for (topic, value, key, _), ctx in zip(events, contexts, strict=True):
            token = otel_context.attach(ctx) if ctx is not None else None
            try:
                await self._emit(topic, value, key=key)
            finally:
                if token is not None:
                    otel_context.detach(token)

    async def _publish(self, events: list[tuple[str, _Event, str, Outcome]]) -> None:
        if self._emit_batch is None or len(events) == 1:
            for topic, value, key, _ in events:
                await self._emit(topic, value, key=key)
            return
        by_topic: dict[str, list[tuple[str, _Event]]] = {}
        for topic, value, key, _ in events:
            by_topic.setdefault(topic, []).append((key, value))
        for topic, records in by_topic.items():  # in order of first appearance, as one order at a time would
            await self._emit_batch(topic, records)

    def _events(self, outcome: Outcome) -> list[tuple[str, _Event, str]]:
        topic, value = outcome.event()
        events: list[tuple[str, _Event, str]] = [(self._topics[topic], value, outcome.order_id)]
        if isinstance(value, InventoryUpdated):
            threshold = self.low_stock_threshold
            for item in value.items:
                if item.remaining < threshold:
                    low = StockLow(
                        product_id=item.product_id,
                        remaining=item.remaining,
                        threshold=threshold,
                        order_id=outcome.order_id,
                    )
                    events.append((self.low_stock_topic, low, item.product_id))
        return events

    async def wait_idle(self) -> None:
        """Wait until every order received so far has been applied and announced.

        Raises:
            Exception: the first failure of that work not raised before (it was also logged,
                added to :attr:`errors` and, under a broker source, ended the stream).
        """
        while self._worker is not None and not self._worker.done():
            await asyncio.wait({self._worker})
        if self._unraised:
            first, self._unraised = self._unraised[0], []
            raise first
