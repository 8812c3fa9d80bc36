"""A batch-insert pipeline as a process of its own (the fault scenario R8 kills and restarts it).

    python -m reactive_services.examples.shop.batch_insert_process --bootstrap-servers HOST:PORT \
        --topic TOPIC --group GROUP --db rows.db [--batch-timespan-s 0.2] [--batch-count 50] \
        [--insert-delay-s S] [--progress progress.log]

It consumes ``TOPIC`` in consumer group ``GROUP`` with one pipeline handler
(``@event_pattern(TOPIC, pipeline=True)``): ``messages.pipe(batch(0.2, 50))``, and inserts each
batch into the SQLite file ``--db`` in **one** transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``),
``track``-ed, so that no record of a batch is committed to Kafka before the batch's transaction
committed (:func:`reactive_services.operators.batch` holds each record's offset until then).
Killed at any moment, it loses nothing: a batch not inserted yet is redelivered on restart;
one inserted but not yet committed to Kafka is inserted again (at-least-once: duplicates, no
loss). The tables (created if missing)::

    records(id INTEGER NULL, "partition" INTEGER, "offset" INTEGER)   one row per record inserted
    batches(pid INTEGER, seq INTEGER, size INTEGER)                   one row per batch transaction

``id`` is the record value's ``"id"`` (an integer; NULL when the value is not an object with an
integer ``"id"``); ``pid`` is this process's id, ``seq`` the batch's number in this process (from
1), ``size`` its record count. No uniqueness is enforced: a redelivered record is a second row.

It prints ``ready`` on stdout once the group assigned it partitions, runs until SIGTERM / SIGINT,
then shuts down gracefully (see :func:`reactive_services.serve`: the partial batch is flushed,
inserted and committed). ``--insert-delay-s`` keeps each batch transaction open that many
seconds after its inserts, before ``COMMIT`` (a slower database, for fault tests; default 0).
``--progress`` appends ``begin SEQ SIZE`` before each batch transaction and ``commit SEQ`` after
it (unbuffered writes, so after a SIGKILL a ``begin`` without its ``commit`` names the batch that
was in flight).

Exit codes: 0 after a graceful shutdown; 1 a failure while running (one line on stderr); 2 a bad
argument (one line on stderr naming the option) or a broker that cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite
import reactivex.operators as ops
from reactivex import Observable

from reactive_services import (
    Controller,
    KafkaBroker,
    Message,
    Microservice,
    Running,
    System,
    event_pattern,
    serve,
    track,
)
from reactive_services.cli import check_writable, run_command
from reactive_services.errors import ConfigError
from reactive_services.operators import batch
from reactive_services.readiness import readiness, ready

from ._sqlite import SqliteStore

__all__ = ["BatchInserter", "BatchStore", "Row", "batch_insert_controller", "main", "run"]

PROG = "python -m reactive_services.examples.shop.batch_insert_process"

#: One stored record: ``(id or None, partition, offset)``.
Row = tuple[int | None, int, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (id INTEGER, "partition" INTEGER NOT NULL, "offset" INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    pid INTEGER NOT NULL, seq INTEGER NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (pid, seq)
);
"""


class BatchStore(SqliteStore):
    """The ``records`` and ``batches`` tables (see the module docstring), one transaction per batch.

    Args:
        db_path: the SQLite file (created with its folder if missing).
        insert_delay_s: seconds each batch transaction stays open after its inserts, before
            ``COMMIT`` (>= 0; a slower database in fault tests).
        progress: a file to append ``begin SEQ SIZE`` / ``commit SEQ`` lines to around each
            transaction (unbuffered), or None.

    Attributes:
        batches: batch transactions committed by this store.
        rows: records inserted by those transactions.

    Raises:
        ConfigError: ``insert_delay_s`` is negative or not finite.
    """

    schema = _SCHEMA
    isolation_level = None  # explicit BEGIN IMMEDIATE / COMMIT

    def __init__(
        self, db_path: str | os.PathLike[str], *, insert_delay_s: float = 0.0, progress: Path | None = None
    ) -> None:
        if not (math.isfinite(insert_delay_s) and insert_delay_s >= 0):
            raise ConfigError("insert_delay_s", f"must be a finite number of seconds >= 0, got {insert_delay_s!r}")
        super().__init__(db_path)
        self.insert_delay_s = insert_delay_s
        self.progress = progress
        self.batches = 0
        self.rows = 0
        self._pid = os.getpid()
        self._progress_fd: int | None = None

    async def _prepare(self, db: aiosqlite.Connection) -> None:
        if self.progress is not None:
            self._progress_fd = os.open(self.progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def close(self) -> None:
        """Close the database and the progress file (idempotent)."""
        fd, self._progress_fd = self._progress_fd, None
        if fd is not None:
            os.close(fd)
        await super().close()

    def _mark(self, line: str) -> None:
        if self._progress_fd is not None:
            os.write(self._progress_fd, line.encode() + b"\n")

    async def insert(self, rows: Sequence[Row]) -> None:
        """Insert ``rows`` and one ``batches`` row in one transaction: all of them or none.

        Transactions run one at a time, in call order.

        Raises:
            RuntimeError: the store is not open.
            sqlite3.Error: the transaction failed; it was rolled back, nothing was inserted.
        """
        db = self._conn()
        async with self._lock:
            seq = self.batches + 1
            self._mark(f"begin {seq} {len(rows)}")
            await db.execute("BEGIN IMMEDIATE")
            try:
                await db.executemany('INSERT INTO records (id, "partition", "offset") VALUES (?, ?, ?)', rows)
                await db.execute("INSERT INTO batches (pid, seq, size) VALUES (?, ?, ?)", (self._pid, seq, len(rows)))
                if self.insert_delay_s:
                    await asyncio.sleep(self.insert_delay_s)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
            self.batches, self.rows = seq, self.rows + len(rows)
            self._mark(f"commit {seq}")


def _row(message: Message) -> Row:
    value = message.value
    record_id = value.get("id") if isinstance(value, dict) else None
    if isinstance(record_id, bool) or not isinstance(record_id, int):
        record_id = None
    return (record_id, message.partition, message.offset)


class BatchInserter:
    """The pipeline: ``messages.pipe(batch(timespan_s, count))``, each batch inserted by ``store``.

    Args:
        store: an open :class:`BatchStore`.
        timespan_s: the longest wait of a batch's first record, in seconds (> 0).
        count: the most records per batch (>= 1).

    Raises:
        ValueError: ``timespan_s <= 0`` (or not finite) or ``count < 1`` (from ``batch``).
    """

    def __init__(self, store: BatchStore, *, timespan_s: float = 0.2, count: int = 50) -> None:
        self.store = store
        self._batch = batch(timespan_s, count)

    def pipeline(self, messages: Observable[Message]) -> Observable[list[Message]]:
        """The records of ``messages`` in batches, each one's insert tracked (its records are
        committed once its transaction committed; a failed insert ends the stream)."""
        return messages.pipe(self._batch, ops.do_action(on_next=self._insert))

    def _insert(self, records: list[Message]) -> None:
        track(self.store.insert([_row(m) for m in records]))


def batch_insert_controller(topic: str, inserter: BatchInserter) -> Controller:
    """A controller whose ``@event_pattern(topic, pipeline=True)`` handler is ``inserter.pipeline``.

    Raises:
        ConfigError: ``topic`` is empty.
    """

    class BatchInsertController(Controller):
        @event_pattern(topic, pipeline=True)
        def records(self, messages: Observable[Message]) -> Observable[list[Message]]:
            return inserter.pipeline(messages)

    return BatchInsertController()


async def run(args: argparse.Namespace) -> int:
    """Run the pipeline until SIGTERM / SIGINT (:func:`reactive_services.serve`); returns the exit code.

    Raises:
        BrokerUnavailableError: the broker cannot be reached at start.
        sqlite3.Error: the database cannot be opened.
    """
    announcing: list[asyncio.Task[None]] = []

    async def system() -> System:
        broker = KafkaBroker(
            args.bootstrap_servers, connect_timeout_s=args.connect_timeout_s, request_timeout_s=args.request_timeout_s
        )
        await broker.start()
        store = BatchStore(args.db, insert_delay_s=args.insert_delay_s, progress=args.progress)
        try:
            await store.open()
        except BaseException:
            await broker.stop()
            raise
        inserter = BatchInserter(store, timespan_s=args.batch_timespan_s, count=args.batch_count)
        service = Microservice(
            broker, [batch_insert_controller(args.topic, inserter)], name="batch-insert", group_id=args.group
        )

        def stop_announcing() -> None:
            for task in announcing:
                task.cancel()

        # broker.stop waits for the source, which waits for the last batch's insert: close the store after it
        return System([service], on_stopped=[stop_announcing, broker.stop, store.close])

    def on_ready(running: Running) -> None:
        announcing.append(asyncio.ensure_future(_announce_when_assigned(running)))

    return await serve(system, on_ready=on_ready, shutdown_timeout_s=args.shutdown_timeout_s)


async def _announce_when_assigned(running: Running) -> None:
    """Print ``ready`` once every service's source was assigned partitions."""
    check = readiness(running.services[0].broker, running.services)
    while not ready(await check()):
        await asyncio.sleep(0.05)
    print("ready", flush=True)


class _Parser(argparse.ArgumentParser):
    """argparse with bad arguments reported on one line (exit 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _checked(kind: Callable[[str], Any], ok: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


def _bootstrap_ok(value: str) -> bool:
    hosts = value.split(",")
    return all(
        host.rpartition(":")[0] and host.rpartition(":")[2].isdigit() and 0 < int(host.rpartition(":")[2]) < 65536
        for host in hosts
    )


def _parser() -> argparse.ArgumentParser:
    seconds = _checked(float, lambda v: math.isfinite(v) and v > 0, "a number of seconds > 0")
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bootstrap-servers",
        required=True,
        metavar="HOST:PORT",
        type=_checked(str, _bootstrap_ok, "HOST:PORT[,HOST:PORT...]"),
    )
    parser.add_argument("--topic", required=True, type=_checked(str, bool, "a topic name"))
    parser.add_argument("--group", required=True, type=_checked(str, bool, "a consumer group name"))
    parser.add_argument("--db", required=True, type=Path, help="the SQLite file the batches are inserted into")
    parser.add_argument("--batch-timespan-s", type=seconds, default=0.2, help="seconds (default 0.2)")
    parser.add_argument(
        "--batch-count", type=_checked(int, lambda v: v >= 1, "an integer >= 1"), default=50, help="(default 50)"
    )
    parser.add_argument(
        "--insert-delay-s",
        type=_checked(float, lambda v: math.isfinite(v) and v >= 0, "a number of seconds >= 0"),
        default=0.0,
        help="seconds each batch transaction stays open before COMMIT (default 0)",
    )
    parser.add_argument("--progress", type=Path, help="append begin/commit lines of each batch transaction here")
    parser.add_argument("--connect-timeout-s", type=seconds, default=10.0)
    parser.add_argument("--request-timeout-s", type=seconds, default=30.0)
    parser.add_argument("--shutdown-timeout-s", type=seconds, default=30.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run; returns the exit code (see the module docstring)."""
    parser = _parser()
    args = parser.parse_args(argv)
    for option, path in (("--db", args.db), ("--progress", args.progress)):
        if path is not None:
            try:
                check_writable(path, option)
            except ConfigError as exc:
                parser.error(f"argument {exc}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    code, result = run_command(lambda: run(args))
    return result if code == 0 and result is not None else code


if __name__ == "__main__":
    sys.exit(main())
