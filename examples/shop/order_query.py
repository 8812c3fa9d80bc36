"""The shop's order query service: keeps every ``order.created`` in its own SQLite database and
answers ``orders.get``, so that the API gateway can show an order as it was created.

Pipeline (wired by the runtime)::

    broker.source("order.created", group_id=<the service's group>)
      -> OrderQueryController.created (payload handler)     validate (OrderCreated), INSERT OR IGNORE
                                                             (bad record -> order.created.DLT)

Request ``orders.get`` (``@message_pattern``)::

    request  {"order_id": str}
    reply    the order.created value as it was received (every key kept: "order_id", "items",
             and "customer_id", "created_at" from the gateway, or "total", "freight" from the
             order file), or null when the order is unknown
    errors   ValidationError  the payload is not {"order_id": non-empty string <= 256 characters}

Request ``orders.latest`` (``@message_pattern``; a dashboard's first view)::

    request  {"limit": 1..1000 (default 50)} or nothing
    reply    {"orders": [<order.created value> + "received_at": seconds since the epoch, ...],
              "total": int}: the ``limit`` orders stored last, newest first (the order in which
             this service stored them: orders on different partitions may come in another order
             than they were placed); total: orders stored
    errors   ValidationError  a limit that is not an integer in 1..1000

Idempotency: the order id is the table's primary key and orders are inserted with
``INSERT OR IGNORE``, so a redelivered ``order.created`` (at-least-once delivery) changes
nothing; the first value stored for an order id is kept.

Run it in a consumer group of its own (e.g. ``Microservice(broker, [controller],
name="order-query")``), apart from the inventory's, so that it reads every order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from reactive_services import Controller, event_pattern, message_pattern
from reactive_services.adapters import Message
from reactive_services.errors import ValidationError

from ._sqlite import SqliteStore
from .messages import MAX_ID_CHARS, MAX_ORDER_BYTES, ORDER_CREATED, ORDER_QUERY, LatestOrdersQuery, OrderQuery

__all__ = ["MAX_ORDER_ID_CHARS", "OrderQueryController", "OrderStore", "order_id_of"]


#: The longest order id a query accepts (characters).
MAX_ORDER_ID_CHARS = MAX_ID_CHARS


def order_id_of(payload: Any) -> str:
    """The order id of a query payload ``{"order_id": str}`` (the shape of ``orders.get``,
    ``inventory.get_order`` and ``notifications.get_order``:
    :class:`~reactive_services.examples.shop.messages.OrderQuery`).

    Raises:
        ValidationError: ``payload`` is not an object, or its ``order_id`` is not a non-blank
            string of at most :data:`MAX_ORDER_ID_CHARS` characters; the message names the field.
    """
    query: OrderQuery = ORDER_QUERY(payload)
    return query.order_id


_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id    TEXT PRIMARY KEY,
    value       TEXT NOT NULL,   -- the order.created value, JSON
    received_at REAL NOT NULL    -- when this service stored it, seconds since the epoch
);
"""


class OrderStore(SqliteStore):
    """The order query service's own SQLite database (aiosqlite); no other service opens it.

    Table ``orders(order_id PK, value JSON, received_at)``. Use as ``async with
    OrderStore(path) as store:`` or call :meth:`open` / :meth:`close`. Calls are serialized
    by an internal lock.

    Args:
        db_path: the database file (its folder and the file are created if missing), or
            ``":memory:"``.
    """

    schema = _SCHEMA

    async def add(self, order: Mapping[str, Any]) -> bool:
        """Store ``order`` (an ``order.created`` value with a string ``order_id``) unless its
        order id is stored already.

        Returns:
            True if stored now, False if the order id was already there (nothing changed).

        Raises:
            RuntimeError: the store is not open.
            sqlite3.Error: the insert failed (nothing changed).
        """
        db = self._conn()
        value = orjson.dumps(dict(order)).decode()
        async with self._lock:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO orders (order_id, value, received_at) VALUES (?, ?, ?)",
                (order["order_id"], value, time.time()),
            )
            await db.commit()
            return cursor.rowcount == 1

    async def get(self, order_id: str) -> dict[str, Any] | None:
        """The stored value of ``order_id``, or None."""
        db = self._conn()
        async with self._lock:
            async with db.execute("SELECT value FROM orders WHERE order_id = ?", (order_id,)) as cur:
                row = await cur.fetchone()
        return None if row is None else orjson.loads(row[0])

    async def latest(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` orders stored last (by insertion), newest first: each its stored value
        plus ``received_at`` (seconds since the epoch, when this service stored it)."""
        db = self._conn()
        async with self._lock:
            async with db.execute("SELECT value, received_at FROM orders ORDER BY rowid DESC LIMIT ?", (limit,)) as cur:
                rows = await cur.fetchall()
        return [{**orjson.loads(value), "received_at": received_at} for value, received_at in rows]

    async def count(self) -> int:
        """How many orders are stored."""
        async with self._lock:
            async with self._conn().execute("SELECT COUNT(*) FROM orders") as cur:
                (n,) = await cur.fetchone() or (0,)
        return int(n)


class OrderQueryController(Controller):
    """``order.created`` into the :class:`OrderStore`; the request ``orders.get``.

    Args:
        store: the open store.

    Attributes:
        stored: orders stored (first time).
        duplicates: ``order.created`` records whose order id was stored already.
    """

    def __init__(self, store: OrderStore) -> None:
        self.store = store
        self.stored = 0
        self.duplicates = 0

    @event_pattern("order.created")
    async def created(self, payload: Any, message: Message) -> None:
        """Store one order (idempotent by order id).

        Raises:
            ValidationError: a record over :data:`~reactive_services.examples.shop.messages.MAX_ORDER_BYTES`
                (64 KiB), or not an :class:`~reactive_services.examples.shop.messages.OrderCreated`
                (the message names the fields); the runtime dead-letters the record.
        """
        if message.raw is not None and len(message.raw) > MAX_ORDER_BYTES:
            raise ValidationError(f"order: record of {len(message.raw)} bytes, at most {MAX_ORDER_BYTES}")
        ORDER_CREATED(payload)  # stored as received (every key kept), once it validates
        if await self.store.add(payload):
            self.stored += 1
        else:
            self.duplicates += 1

    @message_pattern("orders.get")
    async def get(self, query: OrderQuery) -> dict[str, Any] | None:
        """The request ``orders.get`` ``{"order_id"}``: the order as created, or ``null``. A
        malformed payload is refused by the runtime (an error reply naming the field)."""
        return await self.store.get(query.order_id)

    @message_pattern("orders.latest")
    async def latest(self, query: LatestOrdersQuery | None) -> dict[str, Any]:
        """The request ``orders.latest`` ``{"limit"}`` (or nothing): ``{"orders": [...], "total"}``,
        the latest orders newest first (the module docstring has the shapes)."""
        query = query or LatestOrdersQuery()
        return {"orders": await self.store.latest(query.limit), "total": await self.store.count()}
