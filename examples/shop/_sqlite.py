"""The lifecycle every shop database shares: one aiosqlite connection, opened and closed once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from os import PathLike
from pathlib import Path
from typing import TypeVar

import aiosqlite

__all__ = ["SqliteStore"]

S = TypeVar("S", bound="SqliteStore")
T = TypeVar("T")


class SqliteStore:
    """Base of a service's own SQLite database (aiosqlite, WAL journal).

    Subclasses set :attr:`schema` (SQL run at every open: ``CREATE TABLE IF NOT EXISTS ...``) and
    may override :meth:`_prepare` to write initial rows in the same open. Use as ``async with
    Store(path) as store:`` or call :meth:`open` / :meth:`close`; :attr:`_lock` is there for
    subclasses to serialize their calls.

    Args:
        db_path: the database file (its folder and the file are created if missing), or
            ``":memory:"``.
    """

    #: SQL script creating the tables (idempotent).
    schema = ""
    #: aiosqlite's isolation level: ``""`` (implicit transactions, the default) or None
    #: (autocommit: the subclass writes ``BEGIN IMMEDIATE`` / ``COMMIT`` itself).
    isolation_level: str | None = ""

    def __init__(self, db_path: str | PathLike[str]) -> None:
        self.db_path = db_path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Open the database, create its tables if needed, then :meth:`_prepare` it.

        Raises:
            sqlite3.Error: the database cannot be opened or written (e.g. not a database).
            OSError: its folder cannot be created.
        """
        if str(self.db_path) != ":memory:":
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(self.db_path), isolation_level=self.isolation_level)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.executescript(self.schema)
            await self._prepare(db)
            await db.commit()
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def _prepare(self, db: aiosqlite.Connection) -> None:
        """Called once the tables exist, before :meth:`open` returns (default: nothing)."""

    async def close(self) -> None:
        """Close the database (idempotent)."""
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def __aenter__(self: S) -> S:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        return self._db

    async def transaction(
        self, work: Callable[[aiosqlite.Connection], Awaitable[T]], committed: Callable[[T], None] | None = None
    ) -> T:
        """``await work(db)`` inside one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` when it
        raises), one transaction at a time (under :attr:`_lock`), for a store opened in autocommit
        (``isolation_level = None``).

        Shielded: a caller cancelled mid-way (a service stopping, a subscription disposed) does
        not leave the connection inside an open transaction; the transaction commits or rolls
        back regardless, and the caller gets ``CancelledError``.

        ``committed(result)`` is called right after the ``COMMIT``, still under the lock (nothing
        else reads or writes in between: what it announces is exactly what was committed).

        Raises:
            RuntimeError: the store is not open.
            sqlite3.Error: the transaction failed; it was rolled back.
        """
        db = self._conn()

        async def run() -> T:
            async with self._lock:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    result = await work(db)
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
                await db.execute("COMMIT")
                if committed is not None:
                    committed(result)
                return result

        return await asyncio.shield(run())
