"""Fault scenarios of the shop on a real Kafka broker, each inventory instance a process of its own.

Every scenario publishes the shipped orders (``order.created``, keyed by order id) into a
fresh topic namespace, runs :mod:`reactive_services.examples.shop.inventory_process` instances on one shared
SQLite file, injects its fault, waits until every order has an outcome, stops the instances
with SIGTERM and then checks, from the database and the topics:

- ``processed``: distinct orders with a stored outcome; ``lost`` = sent - processed (must be 0);
- the stock is exact: initial stock minus the quantities of the applied orders, never negative;
- ``duplicates``: redeliveries absorbed by idempotency = outcome events published
  (``inventory.updated`` + ``order.rejected``) minus distinct orders among them;
- ``dead_lettered``: records in ``order.created.DLT``.

Scenarios: R1 the instance is SIGKILLed mid-stream and restarted; R2 a second instance joins
mid-stream (both must get partitions); R3 the broker is stopped for 5 s and restarted on the
same data directory; R4 bad records of four kinds interleaved with the good ones (each must be
in the DLT with its reason, every good order processed); R7 SIGTERM under load, then a restart
(nothing processed twice).

R8 is not the inventory: :data:`R8_RECORDS` records ``{"id": i}`` (keyed ``str(i)``, over 3
partitions) are read by :mod:`reactive_services.examples.shop.batch_insert_process`
(``batch(0.2, 50)``, one tracked SQLite transaction per batch, kept open
:data:`R8_INSERT_DELAY_S` before ``COMMIT``), which is SIGKILLed while a batch is being inserted
once a fifth of the records are, then restarted and run until the group committed the end
of the topic. ``processed`` = distinct ids in the table, ``lost`` = sent - processed (must be
0), ``duplicates`` = rows - distinct ids (redeliveries of batches inserted but not yet
committed; at-least-once allows them); there is no stock (``stock_exact`` is None). It also
checks that every batch is all or nothing (rows = the sum of the committed batches' sizes) and
that the batch in flight at the kill left no row.

R9 is the log analytics as a process of its own (``reactive-services serve --only logs
--log-idle-timeout 2``): two shipped loghub files (:data:`R9_SOURCES`, 2,000 lines each) are
replayed, interleaved, at about 200 lines/s into a ``logs`` topic of ONE partition (so that
the windows of one source close while the other's are open: a restart then replays lines of
windows already published); the process is SIGKILLed three times during the replay and
restarted each time. Once the group committed every line (every source was quiet for the idle
timeout, so its last windows are published too) it gets SIGTERM. The final windows are the
last ``log.stats`` record of each (source, window start); they are compared with the loghub
ground truth (:func:`_loghub_windows`: the ``*_structured.csv`` time columns, read here with
strptime, independently of the code under test): ``sent`` = lines replayed, ``processed`` =
the sum of ``lines`` over the final windows, ``lost`` = the sum over windows of
max(0, truth - published) and ``duplicates`` = the sum of max(0, published - truth), both of
which must be 0 (every line counted exactly once); there is no stock. A window may be
published more than once (its lines come again after a kill: at-least-once input); every
republish must then carry the same count.

R10 is exactly-once: :data:`R10_RECORDS` records ``{"id", "qty", "price"}`` (keyed, over 3
partitions) are read by :mod:`reactive_services.examples.shop.transform_process` with
``processing_guarantee="exactly_once"``, a pipeline ending in a sink that publishes one
``{"id", "amount"}`` per record to an output topic, in the transaction that commits the input
offsets. The process is SIGKILLed
twice (once a third, then two thirds, of the input offsets are committed, 0.2 s into the next
transaction) and restarted each time; once the group committed the end of the input, the output
is read with Kafka's own ``read_committed`` consumer: ``processed`` = distinct ids,
``lost`` = inputs without an output and ``duplicates`` = outputs beyond one per id must all be
right (0 lost, 0 duplicates), and every output must be its input's transform. R11 is the same
at-least-once: 0 lost, and the duplicates are the outputs of records handled after the last
offset commit before each kill (they are published, then read again after the restart).

R1-rmq, R3-rmq and R4-rmq are R1, R3 and R4 on RabbitMQ (:class:`~reactive_services.adapters.rabbitmq.RabbitBroker`,
the inventory processes started with ``--rabbitmq-url``; R3-rmq restarts a server of its own with
:mod:`reactive_services.testing.local_rabbitmq` on the same state directory and port). RabbitMQ
keeps no offsets, so where the Kafka scenarios ask the group's committed offsets these ask its
queues: "committed to the end" is no message ready in the group's queues and, once the instances
stopped, none left unacknowledged either (the queues are empty); and since a group only receives
what is published after its queues exist, the outcome topics and the dead letters are read in a
check group declared before the first instance starts. A dead letter's original offset is the
delivery's position in its subscription, so R4-rmq tells the bad records apart by key and value.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from reactive_services import ClientProxy, KafkaBroker
from reactive_services.adapters import Broker, Message, headers_to_dict
from reactive_services.errors import BrokerUnavailableError
from reactive_services.testing import consume, local_kafka, local_rabbitmq, unique_name, wait_for

from .demo import DATA_DIR
from .inventory import initial_stock
from .orders import OrderItemRow, OrderService, read_order_rows

if TYPE_CHECKING:  # aio-pika (the ``rabbitmq`` extra) is imported only by the -rmq scenarios
    from reactive_services.adapters.rabbitmq import RabbitBroker

__all__ = ["RABBITMQ_SCENARIOS", "SCENARIOS", "ScenarioResult", "run_scenario"]

ROOT = Path(__file__).resolve().parents[2]

#: R4's bad records: kind -> value (bytes are sent as they are)
BAD_RECORDS: dict[str, Any] = {
    "not-json": b"{order_id: oops",
    "wrong-shape": [1, 2, 3],
    "wrong-types": {"order_id": 42, "items": "many"},
    "too-large": {"order_id": "big", "items": [{"product_id": "p", "quantity": 1}], "pad": "x" * 100_000},
}
#: R8: records published, and how long each batch transaction stays open before COMMIT (seconds)
R8_RECORDS = 5000
#: RabbitMQ stores no partition count: the scenarios and their processes agree on this one
RABBIT_PARTITIONS = 3
R8_INSERT_DELAY_S = 0.05
ORDERS = DATA_DIR / "olist" / "order_items.csv"
PRODUCTS = DATA_DIR / "olist" / "products.csv"
LOGHUB = DATA_DIR / "loghub"
#: R9: the loghub sources replayed (``<name>_2k.log``, interleaved line by line), the length of
#: the shop's log windows (those of the shipped sources: LogSource's default, 10 minutes), and the
#: replay pace: lines per batch, seconds between batches
R9_SOURCES = ("Apache", "HDFS")
R9_WINDOW_S = 600
R9_BATCH, R9_PAUSE_S = 20, 0.1
#: R10 / R11: records transformed, seconds of work per record, SIGKILLs
R10_RECORDS, R10_WORK_S, R10_KILLS = 3000, 0.002, 2
#: R9: seconds between a (re)started log-analytics process being ready and its SIGKILL; kills
R9_KILL_AFTER_S, R9_KILLS = 3.0, 3
#: how to read the time of a loghub ground-truth row (written here, not taken from the code under test)
_TRUTH_TIME: dict[str, Callable[[dict[str, str]], datetime]] = {
    "Apache": lambda r: datetime.strptime(r["Time"], "%a %b %d %H:%M:%S %Y"),
    "HDFS": lambda r: datetime.strptime(f"{r['Date']} {r['Time']}", "%y%m%d %H%M%S"),
}


@dataclass
class ScenarioResult:
    """One row of the fault table.

    ``stock_exact`` is None for a scenario that keeps no stock (R8, R9).
    """

    scenario: str
    sent: int
    processed: int
    duplicates: int
    lost: int
    dead_lettered: int
    stock_exact: bool | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Process:
    """A ``python -m MODULE ARGS...`` child process that prints a line ``ready`` (maybe after others) once it runs."""

    def __init__(self, module: str, args: list[str]) -> None:
        self.module = module
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def ready(self, timeout: float = 60.0) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        lines: list[str] = []

        async def until_ready() -> None:  # up to ``ready`` or the end of the output (kept for the error message)
            while True:
                lines.append(await asyncio.to_thread(stdout.readline))
                if not lines[-1] or lines[-1].strip() == "ready":
                    return

        await asyncio.wait_for(until_ready(), timeout)
        if lines[-1].strip() != "ready":
            raise RuntimeError(f"{self.module} did not start: {''.join(lines)!r} {self.proc.stderr.read()}")  # type: ignore[union-attr]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)


def _kill_all(processes: Sequence[_Process]) -> None:
    """SIGKILL every process of a scenario still running (its cleanup)."""
    for process in processes:
        if process.proc.poll() is None:
            process.kill()


def _failed(name: str, exc: BaseException, processes: Sequence[_Process]) -> RuntimeError:
    """A scenario's failure, with the end of each process's stderr (they are killed first)."""
    _kill_all(processes)
    tails = [process.proc.stderr.read()[-1500:] for process in processes]  # type: ignore[union-attr]
    return RuntimeError(f"{name} failed: {exc}; process stderr: {tails}")


class _Instance(_Process):
    """An inventory_process child process (on RabbitMQ when ``bootstrap`` is an ``amqp://`` URL)."""

    def __init__(self, bootstrap: str, db: Path, namespace: str, workdir: Path, n: int, delay_s: float) -> None:
        self.stats_path = workdir / f"stats-{n}.json"
        where = (
            ["--rabbitmq-url", bootstrap, "--partitions", str(RABBIT_PARTITIONS)]
            if _is_amqp(bootstrap)
            else ["--bootstrap-servers", bootstrap]
        )
        super().__init__(
            "reactive_services.examples.shop.inventory_process",
            [
                *where,
                "--db",
                str(db),
                "--products",
                str(PRODUCTS),
                "--namespace",
                namespace,
                "--stats",
                str(self.stats_path),
                "--handle-delay-s",
                str(delay_s),
                "--shutdown-timeout-s",
                "20",
            ],
        )

    def stats(self) -> dict[str, Any]:
        return orjson.loads(self.stats_path.read_bytes()) if self.stats_path.exists() else {}


def _processed(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            rows = conn.execute("SELECT order_id, outcome FROM processed_orders").fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return {}
    return {order_id: outcome for order_id, outcome in rows}


def _stock(db: Path) -> dict[str, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        return dict(conn.execute("SELECT product_id, quantity FROM stock").fetchall())


def _stock_exact(db: Path) -> bool:
    processed = _processed(db)
    applied = {oid for oid, outcome in processed.items() if orjson.loads(outcome).get("status") == "applied"}
    taken = Counter(
        r.product_id for r in read_order_rows(ORDERS) if isinstance(r, OrderItemRow) and r.order_id in applied
    )
    start, final = initial_stock(PRODUCTS), _stock(db)
    return all(final.get(pid) == qty - taken[pid] >= 0 for pid, qty in start.items())


def _is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://"))


async def _declare_group(broker: Broker, topics: Sequence[str], group: str, timeout: float = 30.0) -> None:
    """Declare ``group``'s queues of ``topics`` on RabbitMQ (subscribe until assigned, then stop):
    from now on they keep every record published to those topics, for :func:`_read_topic`."""
    assigned, stop, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()
    source = broker.source(list(topics), group_id=group, decode=None, stop=stop, on_assigned=assigned.set)
    source.subscribe(on_error=lambda _: ended.set(), on_completed=ended.set)
    await asyncio.wait_for(assigned.wait(), timeout)
    stop.set()
    await asyncio.wait_for(ended.wait(), timeout)


async def _waiting(broker: Broker, group: str, topic: str) -> int:
    """Messages ready in ``group``'s RabbitMQ queues of ``topic``."""
    return sum((await cast("RabbitBroker", broker).queue_depths(group, topic)).values())


async def _read_topic(broker: Broker, topic: str, group: str | None = None) -> list[Message]:
    """Every record of ``topic`` (raw values), read in a fresh consumer group (on RabbitMQ: what
    waits in ``group``'s queues, declared with :func:`_declare_group` before the records came)."""
    if broker.kind == "rabbitmq":
        assert group is not None
        total = await _waiting(broker, group, topic)
        if total == 0:
            return []
        got = await consume(broker, topic, total, group_id=group, timeout=60, decode=None)
        return got.items
    total = sum((await broker.end_offsets(topic)).values())
    if total == 0:
        return []
    got = await consume(broker, topic, total, group_id=unique_name("fault-check"), timeout=60, decode=None)
    return got.items


async def _until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> None:
    """:func:`reactive_services.testing.wait_for` every 0.2 s, raising TimeoutError (not a test failure)."""
    try:
        await wait_for(predicate, timeout, interval=0.2, what=what)
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None


async def run_scenario(
    name: str, bootstrap: str | None = None, *, timeout: float = 180.0, rabbitmq_url: str | None = None
) -> ScenarioResult:
    """Run one scenario (a name of :data:`SCENARIOS`) and return its row.

    ``bootstrap`` names a running Kafka broker; None (and always for R3, which restarts the
    broker) starts a local one with reactive_services.testing.local_kafka for the scenario.
    The ``-rmq`` scenarios run on the RabbitMQ server ``rabbitmq_url`` instead; None (and always
    for R3-rmq) starts one with reactive_services.testing.local_rabbitmq.

    Raises:
        TimeoutError: the orders (R8: the records; R9: the lines) were not all processed within ``timeout`` seconds.
        RuntimeError: the scenario failed (its cause chained; the processes' stderr tails in the message).
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}: one of {', '.join(SCENARIOS)}")
    scenario_name, name = name, name.removesuffix("-rmq")
    rabbit = scenario_name != name
    local: Any = None
    with tempfile.TemporaryDirectory(prefix=f"fault-{scenario_name}-") as tmp:
        workdir = Path(tmp)
        server_dir = workdir / ("rabbitmq" if rabbit else "kafka")
        if rabbit:
            bootstrap = rabbitmq_url
        if bootstrap is None or name == "R3":
            local = local_rabbitmq if rabbit else local_kafka
            bootstrap = local.start(server_dir)
        if name in ("R8", "R9", "R10", "R11"):
            try:
                if name in ("R10", "R11"):
                    return await _transform_scenario(name, bootstrap, timeout)
                scenario = _batch_insert_scenario if name == "R8" else _log_windows_scenario
                return await scenario(bootstrap, workdir, timeout)
            finally:
                if local is not None:
                    local.stop(server_dir)
        namespace = f"fault-{scenario_name.lower()}-{uuid.uuid4().hex[:6]}."
        db = workdir / "inventory.db"
        broker: Broker
        if rabbit:
            from reactive_services.adapters.rabbitmq import RabbitBroker

            broker = RabbitBroker(bootstrap, partitions=RABBIT_PARTITIONS, publish_timeout_s=30.0)
        else:
            broker = KafkaBroker(bootstrap, request_timeout_s=30.0)
        await broker.start()
        instances: list[_Instance] = []
        notes: list[str] = []
        check = namespace + "fault-check"  # RabbitMQ: the group reading the outcomes and dead letters
        try:
            topics = ["order.created", "inventory.updated", "order.rejected", "stock.low"]
            await broker.create_topics([namespace + t for t in topics + (["order.created.DLT"] if rabbit else [])])
            if rabbit:
                read = ("inventory.updated", "order.rejected", "order.created.DLT")
                await _declare_group(broker, [namespace + t for t in read], check)
            # seconds per order, so that the faults fall mid-stream; R2's second instance must join
            # (process start, group rebalance: seconds on a loaded machine) before the first one
            # has handled every order, or it gets no partition with records left
            delay = {"R1": 0.004, "R2": 0.012, "R3": 0.004, "R4": 0.0, "R7": 0.006}[name]
            first = _Instance(bootstrap, db, namespace, workdir, 1, delay)
            instances.append(first)
            await first.ready()
            client = ClientProxy(broker, namespace=namespace)
            sender = OrderService(client.emit_batch, ORDERS, batch_size=50, retries=20, max_retry_delay=2.0)
            send_task = asyncio.ensure_future(sender.run())
            bad_sent: dict[str, str] = {}
            if name == "R4":  # bad records of several kinds, interleaved with the good ones
                for i in range(5):
                    await asyncio.sleep(0.05)
                    for kind, value in BAD_RECORDS.items():
                        meta = await broker.emit(namespace + "order.created", value, key=f"bad-{i}")
                        bad_sent[_bad_id(rabbit, f"bad-{i}", value, meta.partition, meta.offset)] = kind
            await _until(lambda: len(_processed(db)) >= 100, timeout, "the first 100 orders")
            sent_total = len({r.order_id for r in read_order_rows(ORDERS) if isinstance(r, OrderItemRow)})

            if name == "R1":
                first.kill()
                notes.append(f"SIGKILL after {len(_processed(db))} orders")
                instances.append(_Instance(bootstrap, db, namespace, workdir, 2, delay))
                await instances[-1].ready()
            elif name == "R2":
                instances.append(_Instance(bootstrap, db, namespace, workdir, 2, delay))
                await instances[-1].ready()
                notes.append(f"second instance joined after {len(_processed(db))} orders")
            elif name == "R3" and rabbit:  # stopping and starting take seconds: the loop runs meanwhile
                await asyncio.to_thread(local.stop, server_dir)
                notes.append(f"server stopped after {len(_processed(db))} orders")
                await asyncio.sleep(5)
                port = urlsplit(bootstrap).port
                await asyncio.to_thread(local.start, server_dir, port=port)
                notes.append("server restarted on the same state directory after 5 s")
            elif name == "R3":
                assert local is not None
                local.stop(server_dir)
                notes.append(f"broker stopped after {len(_processed(db))} orders")
                await asyncio.sleep(5)
                local.start(server_dir, port=int(bootstrap.rsplit(":", 1)[1]))
                notes.append("broker restarted on the same data directory after 5 s")
            elif name == "R7":
                code = await first.terminate()
                notes.append(f"SIGTERM after {len(_processed(db))} orders: exit {code}")
                if code != 0:
                    raise RuntimeError(f"graceful shutdown exited {code}: {first.proc.stderr.read()}")  # type: ignore[union-attr]
                instances.append(_Instance(bootstrap, db, namespace, workdir, 2, delay))
                await instances[-1].ready()

            report = await asyncio.wait_for(send_task, timeout)
            sent = report["emitted"]
            if name == "R3" and rabbit:  # a batch whose confirms were lost is sent again: its orders come twice
                again = getattr(broker, "published_again", 0)  # records the RabbitMQ client published again
                notes.append(
                    f"order producer: {sender.retried} batch(es) of up to 50 sent again, "
                    f"{again} record(s) published again after a lost connection"
                )
            await _until(lambda: len(_processed(db)) >= sent_total, timeout, "every order to be processed")
            topic, group = namespace + "order.created", namespace + "inventory"

            async def committed_to_the_end() -> bool:  # every record handled and committed (bad ones included)
                if rabbit:  # no offsets: nothing waits in the group's queues
                    try:
                        return await _waiting(broker, group, topic) == 0
                    except BrokerUnavailableError:  # R3: the client is still reconnecting after the restart
                        return False
                ends = await broker.end_offsets(topic)
                return all([((await broker.committed(group, topic, p)) or 0) >= end for p, end in ends.items()])

            await _until(committed_to_the_end, timeout, f"group {group} to commit the end of {topic}")
            for inst in instances:
                if inst.proc.poll() is None:
                    code = await inst.terminate()
                    if code != 0:
                        notes.append(f"instance exit code {code}")
            if rabbit and (left := await _waiting(broker, group, topic)):  # unacknowledged ones went back
                raise AssertionError(f"{scenario_name}: {left} records of {topic} not acknowledged at shutdown")
            stats = [inst.stats() for inst in instances]
            dead = await _read_topic(broker, namespace + "order.created.DLT", check)
            if name == "R4":
                by_offset = {
                    _dead_letter_id(rabbit, m, h): h for m, h in ((m, headers_to_dict(m.headers)) for m in dead)
                }
                missing = set(bad_sent) - set(by_offset)
                if missing or len(dead) != len(bad_sent):
                    raise AssertionError(
                        f"R4: bad records not dead-lettered exactly once: missing {missing}, "
                        f"{len(dead)} dead letters for {len(bad_sent)} bad records"
                    )
                per_key: dict[bytes | None, list[int]] = {}
                for m in dead:  # one key's bad records share a partition: their dead letters keep its order
                    per_key.setdefault(m.key, []).append(int(headers_to_dict(m.headers)["dlt.original.offset"]))
                if any(offsets != sorted(offsets) or len(offsets) != len(BAD_RECORDS) for offsets in per_key.values()):
                    raise AssertionError(f"R4: per-key order of the dead letters not kept: {per_key}")
                notes.append(f"per-key order kept for {len(per_key)} keys")
                reasons = Counter(by_offset[k]["dlt.exception.type"] for k in bad_sent)
                notes.append("dead-letter reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
            if name == "R2":
                parts = [len(s.get("partitions", [])) for s in stats]
                notes.append(f"partitions per instance: {parts}")
                if not all(parts):
                    raise AssertionError(f"R2: an instance got no partition: {parts}")
            if rabbit:  # the last instance's counters (a SIGKILLed one writes none)
                last = stats[-1]
                notes.append(
                    f"last instance: {last.get('handled', 0)} records handled, {last.get('duplicates', 0)} orders "
                    f"found applied already, {last.get('republished', 0)} events published again"
                )
            if name == "R7" and stats[1].get("duplicates", 0):
                notes.append(f"restart redelivered {stats[1]['duplicates']} orders")
            outcomes = [
                m
                for t in ("inventory.updated", "order.rejected")
                for m in await _read_topic(broker, namespace + t, check)
            ]
            keys = Counter(m.key for m in outcomes)
            processed = len(_processed(db))
            return ScenarioResult(
                scenario=scenario_name,
                sent=sent,
                processed=processed,
                duplicates=sum(keys.values()) - len(keys),
                lost=sent - processed,
                dead_lettered=len(dead),
                stock_exact=_stock_exact(db),
                notes=notes,
            )
        except BaseException as exc:
            raise _failed(scenario_name, exc, instances) from exc
        finally:
            _kill_all(instances)
            await broker.stop()
            if local is not None:
                local.stop(server_dir)


def _canonical(raw: bytes) -> bytes:
    try:
        return orjson.dumps(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return raw


def _bad_id(rabbit: bool, key: str, value: Any, partition: int, offset: int) -> str:
    """What tells R4's bad record apart: its position on Kafka, its key and value on RabbitMQ (no offsets)."""
    if not rabbit:
        return f"{partition}:{offset}"
    return f"{key}:" + _canonical(value if isinstance(value, bytes) else orjson.dumps(value)).decode("latin-1")


def _dead_letter_id(rabbit: bool, dead: Message, headers: dict[str, str]) -> str:
    """:func:`_bad_id` of the record a dead letter carries."""
    if not rabbit:
        return f"{headers['dlt.original.partition']}:{headers['dlt.original.offset']}"
    key = dead.key.decode() if isinstance(dead.key, bytes) else str(dead.key)
    return f"{key}:" + _canonical(dead.value or b"").decode("latin-1")


class _BatchInsertInstance(_Process):
    """A batch_insert_process child process, with its progress file."""

    def __init__(self, bootstrap: str, topic: str, group: str, db: Path, workdir: Path, n: int) -> None:
        self.progress = workdir / f"progress-{n}.log"
        super().__init__(
            "reactive_services.examples.shop.batch_insert_process",
            [
                "--bootstrap-servers",
                bootstrap,
                "--topic",
                topic,
                "--group",
                group,
                "--db",
                str(db),
                "--batch-timespan-s",
                "0.2",
                "--batch-count",
                "50",
                "--insert-delay-s",
                str(R8_INSERT_DELAY_S),
                "--progress",
                str(self.progress),
                "--shutdown-timeout-s",
                "20",
            ],
        )

    def transactions(self) -> tuple[int, tuple[int, int] | None]:
        """``(records inserted, (seq, size) of the batch transaction open now or None)``, from the progress file."""
        lines = self.progress.read_text().splitlines() if self.progress.exists() else []
        begun: dict[int, int] = {}
        inserted, open_batch = 0, None
        for line in lines:
            word, seq, *size = line.split()
            if word == "begin":
                begun[int(seq)] = int(size[0])
                open_batch = (int(seq), int(size[0]))
            elif word == "commit":
                inserted += begun[int(seq)]
                open_batch = None
        return inserted, open_batch


def _table(db: Path) -> tuple[list[int | None], dict[tuple[int, int], int]]:
    """``(ids of every row of records, {(pid, seq): size} of batches)`` of the R8 database."""
    with sqlite3.connect(db, timeout=30) as conn:
        ids = [i for (i,) in conn.execute("SELECT id FROM records")]
        batches = {(pid, seq): size for pid, seq, size in conn.execute("SELECT pid, seq, size FROM batches")}
    return ids, batches


async def _batch_insert_scenario(bootstrap: str, workdir: Path, timeout: float) -> ScenarioResult:
    """R8 (see the module docstring) on the running broker ``bootstrap``."""
    namespace = f"fault-r8-{uuid.uuid4().hex[:6]}."
    topic, group = namespace + "records", namespace + "batch-insert"
    db = workdir / "batches.db"
    broker = KafkaBroker(bootstrap, request_timeout_s=30.0)
    await broker.start()
    instances: list[_BatchInsertInstance] = []
    notes: list[str] = []
    try:
        await broker.create_topics([topic], partitions=3)
        placed: Counter[int] = Counter()
        for start in range(0, R8_RECORDS, 500):
            chunk = [(str(i), {"id": i}) for i in range(start, min(start + 500, R8_RECORDS))]
            placed.update(meta.partition for meta in await broker.emit_batch(topic, chunk))
        sent = sum(placed.values())
        notes.append("no stock: batch-insert table; records per partition " + str([placed[p] for p in sorted(placed)]))

        first = _BatchInsertInstance(bootstrap, topic, group, db, workdir, 1)
        instances.append(first)
        await first.ready()

        def inside_a_transaction() -> bool:  # a fifth inserted, and a batch transaction open right now
            inserted, open_batch = first.transactions()
            return inserted >= sent // 5 and open_batch is not None

        try:
            await wait_for(inside_a_transaction, timeout, interval=0.005, what="a batch transaction, a fifth inserted")
        except AssertionError as exc:
            raise TimeoutError(str(exc)) from None
        first.kill()
        _, open_batch = first.transactions()
        ids, batches = _table(db)
        ends = await broker.end_offsets(topic)
        committed = sum([(await broker.committed(group, topic, p)) or 0 for p in ends])
        where = f"SIGKILL after {len(ids)} of {sent} records inserted ({committed} offsets committed), "
        if open_batch is None:
            where += "between two batch transactions"
        elif (first.proc.pid, open_batch[0]) in batches:
            where += f"batch {open_batch[0]} ({open_batch[1]} records) committed in SQLite just before"
        else:
            where += (
                f"while batch {open_batch[0]} ({open_batch[1]} records) was being inserted: none of its rows stored"
            )
        notes.append(where)

        second = _BatchInsertInstance(bootstrap, topic, group, db, workdir, 2)
        instances.append(second)
        await second.ready()

        async def committed_to_the_end() -> bool:  # every record inserted and its offset committed
            return all([((await broker.committed(group, topic, p)) or 0) >= end for p, end in ends.items()])

        await _until(committed_to_the_end, timeout, f"group {group} to commit the end of {topic}")
        code = await second.terminate()
        if code != 0:
            notes.append(f"instance exit code {code}")
        ids, batches = _table(db)
        distinct = {i for i in ids if i is not None}
        strays = [i for i in ids if i is None or not 0 <= i < sent]
        if strays:
            raise AssertionError(f"R8: rows with ids that were not sent: {strays[:10]}")
        if len(ids) != sum(batches.values()):
            raise AssertionError(f"R8: {len(ids)} rows, but the committed batches hold {sum(batches.values())}")
        restart = sum(size for (pid, _), size in batches.items() if pid == second.proc.pid)
        notes.append(
            f"every batch all or nothing: {len(ids)} rows in {len(batches)} batch transactions; "
            f"the restart inserted {restart} records"
        )
        dead = await _read_topic(broker, topic + ".DLT")
        return ScenarioResult(
            scenario="R8",
            sent=sent,
            processed=len(distinct),
            duplicates=len(ids) - len(distinct),
            lost=sent - len(distinct),
            dead_lettered=len(dead),
            stock_exact=None,
            notes=notes,
        )
    except BaseException as exc:
        raise _failed("R8", exc, instances) from exc
    finally:
        _kill_all(instances)
        await broker.stop()


class _LogsProcess(_Process):
    """``reactive-services serve --only logs`` (the log analytics alone) child process."""

    def __init__(self, bootstrap: str, namespace: str, workdir: Path) -> None:
        super().__init__(
            "reactive_services.cli",
            [
                "serve",
                "--bootstrap-servers",
                bootstrap,
                "--only",
                "logs",
                "--namespace",
                namespace,
                "--data-dir",
                str(workdir / "data"),
                "--log-idle-timeout",
                "2",
            ],
        )


def _loghub_windows(names: Sequence[str] = R9_SOURCES, window_s: int = R9_WINDOW_S) -> Counter[tuple[str, float]]:
    """``{(source, window start s): lines}`` of the shipped loghub files ``<name>_2k.log``, from the
    ground truth's own time columns (``<name>_2k.log_structured.csv``, read with strptime as UTC)."""
    counts: Counter[tuple[str, float]] = Counter()
    for name in names:
        read_time = _TRUTH_TIME[name]
        with open(LOGHUB / f"{name}_2k.log_structured.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                epoch = read_time(row).replace(tzinfo=UTC).timestamp()
                counts[(name, float(int(epoch // window_s) * window_s))] += 1
    return counts


async def _log_windows_scenario(bootstrap: str, workdir: Path, timeout: float) -> ScenarioResult:
    """R9 (see the module docstring) on the running broker ``bootstrap``."""
    namespace = f"fault-r9-{uuid.uuid4().hex[:6]}."
    topic, group = namespace + "logs", namespace + "log-analytics"
    broker = KafkaBroker(bootstrap, request_timeout_s=30.0)
    await broker.start()
    processes: list[_LogsProcess] = []
    notes = ["no stock: log windows"]
    replaying: asyncio.Future[None] | None = None
    try:
        await broker.create_topics([topic], partitions=1)
        lines = {name: (LOGHUB / f"{name}_2k.log").read_text(encoding="utf-8").splitlines() for name in R9_SOURCES}
        records: list[tuple[str | bytes | None, Any]] = [
            (name, {"source": name, "line_no": n + 1, "line": lines[name][n]})
            for n in range(max(len(v) for v in lines.values()))
            for name in R9_SOURCES
            if n < len(lines[name])
        ]
        sent = 0

        async def replay() -> None:  # about 20 s: the kills fall while lines arrive
            nonlocal sent
            for start in range(0, len(records), R9_BATCH):
                sent += len(await broker.emit_batch(topic, records[start : start + R9_BATCH]))
                await asyncio.sleep(R9_PAUSE_S)

        processes.append(_LogsProcess(bootstrap, namespace, workdir))
        await processes[-1].ready()
        replaying = asyncio.ensure_future(replay())
        killed_at: list[int] = []
        for _ in range(R9_KILLS):  # SIGKILL while the lines arrive, restart each time
            await asyncio.sleep(R9_KILL_AFTER_S)
            processes[-1].kill()
            killed_at.append(sent)
            processes.append(_LogsProcess(bootstrap, namespace, workdir))
            await processes[-1].ready()
        await asyncio.wait_for(replaying, timeout)
        during = sum(1 for n in killed_at if n < sent)

        async def committed_to_the_end() -> bool:  # the idle timeout published the last windows: all committed
            return ((await broker.committed(group, topic, 0)) or 0) >= sent

        await _until(committed_to_the_end, timeout, f"group {group} to commit the end of {topic}")
        code = await processes[-1].terminate()
        notes.append(
            f"{len(killed_at)} SIGKILLs ({during} during the replay), after "
            + ", ".join(str(n) for n in killed_at)
            + f" of {sent} lines sent; restarted each time; SIGTERM at the end: exit {code}"
        )

        published = [orjson.loads(m.value) for m in await _read_topic(broker, namespace + "log.stats")]
        counts: dict[tuple[str, float], list[int]] = {}
        for stats in published:  # in publishing order: the last record of each window stands
            counts.setdefault((stats["source"], stats["window_start_s"]), []).append(stats["lines"])
        final = {window: c[-1] for window, c in counts.items()}
        republished = sum(1 for c in counts.values() if len(c) > 1)
        differing = sum(1 for c in counts.values() if len(set(c)) > 1)
        again = "each time with the same count" if not differing else f"{differing} of them with another count"
        notes.append(
            f"{len(published)} log.stats records for {len(final)} windows: "
            + (f"{republished} published again, {again}" if republished else "none published twice")
        )
        truth = _loghub_windows()
        windows = set(truth) | set(final)
        lost = sum(max(0, truth[w] - final.get(w, 0)) for w in windows)
        duplicates = sum(max(0, final.get(w, 0) - truth[w]) for w in windows)
        wrong = sum(1 for w in windows if final.get(w, 0) != truth[w])
        notes.append(
            f"every window equals the ground truth ({len(truth)} windows, {sum(truth.values())} lines)"
            if not wrong
            else f"{wrong} of {len(windows)} windows differ from the ground truth"
        )
        dead = await _read_topic(broker, topic + ".DLT")
        return ScenarioResult(
            scenario="R9",
            sent=sent,
            processed=sum(final.values()),
            duplicates=duplicates,
            lost=lost,
            dead_lettered=len(dead),
            stock_exact=None,
            notes=notes,
        )
    except BaseException as exc:
        raise _failed("R9", exc, processes) from exc
    finally:
        if replaying is not None and not replaying.done():
            replaying.cancel()
        _kill_all(processes)
        await broker.stop()


class _TransformInstance(_Process):
    """A transform_process child process."""

    def __init__(self, bootstrap: str, topic: str, output: str, group: str, guarantee: str) -> None:
        super().__init__(
            "reactive_services.examples.shop.transform_process",
            [
                "--bootstrap-servers",
                bootstrap,
                "--topic",
                topic,
                "--output",
                output,
                "--group",
                group,
                "--guarantee",
                guarantee,
                "--work-s",
                str(R10_WORK_S),
            ],
        )


async def _read_committed(bootstrap: str, topic: str, partitions: Sequence[int]) -> list[Any]:
    """Every record of ``partitions`` of ``topic`` a ``read_committed`` consumer sees (the values,
    JSON-decoded), up to each one's last stable offset (Kafka's own reader, not the code under test)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offsets
        values: list[Any] = []
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                values.extend(orjson.loads(r.value) for r in records)
        return values
    finally:
        await consumer.stop()


async def _transform_scenario(name: str, bootstrap: str, timeout: float) -> ScenarioResult:
    """R10 / R11 (see the module docstring) on the running broker ``bootstrap``."""
    guarantee = "exactly_once" if name == "R10" else "at_least_once"
    namespace = f"fault-{name.lower()}-{uuid.uuid4().hex[:6]}."
    topic, output, group = namespace + "orders", namespace + "amounts", namespace + "transform"
    broker = KafkaBroker(bootstrap, request_timeout_s=30.0)
    await broker.start()
    processes: list[_TransformInstance] = []
    notes: list[str] = [f"processing_guarantee={guarantee}"]
    try:
        await broker.create_topics([topic, output], partitions=3)
        for start in range(0, R10_RECORDS, 500):
            chunk = [
                (str(i), {"id": i, "qty": 1 + i % 5, "price": 2.5}) for i in range(start, min(start + 500, R10_RECORDS))
            ]
            await broker.emit_batch(topic, chunk)
        ends = await broker.end_offsets(topic)

        async def handled() -> int:
            return sum([((await broker.committed(group, topic, p)) or 0) for p in ends])

        for kill in range(1, R10_KILLS + 1):  # SIGKILL at a third and two thirds of the input, restart each time
            process = _TransformInstance(bootstrap, topic, output, group, guarantee)
            processes.append(process)
            await process.ready()
            target = R10_RECORDS * kill // (R10_KILLS + 1)

            async def far_enough(target: int = target) -> bool:
                return await handled() >= target

            await _until(far_enough, timeout, f"{target} records committed")
            await asyncio.sleep(0.2)  # into the next transaction
            process.kill()
            notes.append(f"SIGKILL {kill} with {await handled()} of {R10_RECORDS} input offsets committed")
        last = _TransformInstance(bootstrap, topic, output, group, guarantee)
        processes.append(last)
        await last.ready()

        async def committed_to_the_end() -> bool:
            return all([((await broker.committed(group, topic, p)) or 0) >= end for p, end in ends.items()])

        await _until(committed_to_the_end, timeout, f"group {group} to commit the end of {topic}")
        code = await last.terminate()
        if code != 0:
            notes.append(f"last instance exit code {code}")
        values = await _read_committed(bootstrap, output, sorted(await broker.end_offsets(output)))
        ids = Counter(v["id"] for v in values)
        wrong = [v for v in values if v["amount"] != (1 + v["id"] % 5) * 2.5]
        if wrong:
            raise AssertionError(f"{name}: outputs that are not the transform of their input: {wrong[:5]}")
        notes.append(f"{len(values)} outputs read with read_committed")
        dead = await _read_topic(broker, topic + ".DLT")
        return ScenarioResult(
            scenario=name,
            sent=R10_RECORDS,
            processed=len(ids),
            duplicates=sum(ids.values()) - len(ids),
            lost=R10_RECORDS - len(set(ids) & set(range(R10_RECORDS))),
            dead_lettered=len(dead),
            stock_exact=None,
            notes=notes,
        )
    except BaseException as exc:
        raise _failed(name, exc, processes) from exc
    finally:
        _kill_all(processes)
        await broker.stop()


SCENARIOS: dict[str, str] = {
    "R1": "inventory process SIGKILLed mid-stream, restarted",
    "R2": "second inventory instance joins mid-stream",
    "R3": "broker stopped 5 s, restarted on the same data directory",
    "R4": "bad records (not JSON, wrong shape, wrong types, over the size limit) among good ones",
    "R7": "SIGTERM under load, then restart",
    "R8": "batch-insert pipeline SIGKILLed mid-run, restarted",
    "R9": "log analytics SIGKILLed three times during a replay, restarted: every line once in the windows",
    "R10": "exactly-once transform SIGKILLed twice mid-stream: every output once (read_committed)",
    "R11": "the same transform at-least-once: the kills repeat outputs, none lost",
    "R1-rmq": "R1 on RabbitMQ: inventory process SIGKILLed mid-stream, restarted",
    "R3-rmq": "R3 on RabbitMQ: server stopped 5 s, restarted on the same state directory and port",
    "R4-rmq": "R4 on RabbitMQ: bad records among good ones, to order.created.DLT",
}
#: the scenarios run on RabbitMQ
RABBITMQ_SCENARIOS = [name for name in SCENARIOS if name.endswith("-rmq")]


async def run_all(
    bootstrap: str | None,
    names: list[str],
    report: Callable[[ScenarioResult], Awaitable[None] | None],
    *,
    rabbitmq_url: str | None = None,
) -> list[ScenarioResult]:
    results = []
    for name in names:
        result = await run_scenario(name, bootstrap, rabbitmq_url=rabbitmq_url)
        results.append(result)
        report(result)
    return results
