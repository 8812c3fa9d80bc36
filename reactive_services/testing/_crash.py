"""A crash checker for pipelines: does at-least-once hold when the consumer dies at any point?

:func:`check_at_least_once` runs a pipeline over a list of records on the in-memory broker, kills
its consumer at many points (every ``crash_every`` deliveries, and at seeded random points),
restarts it each time from the committed offsets, and reports every input whose effect never
reached the sink although the pipeline, run without a crash, lets it through. A pipeline that
commits a record before the output carrying it was handled (an operator that keeps records
without :meth:`~reactive_services.adapters.Message.hold`-ing their commits, such as reactivex's
``buffer_with_count``) loses records this way; one built from commit-safe operators loses none::

    from reactive_services.operators import batch
    from reactive_services.testing import check_at_least_once

    async def test_the_batch_insert_pipeline_loses_nothing() -> None:
        report = await check_at_least_once(
            lambda source: source.pipe(batch(0.05, 10)),
            [{"id": i} for i in range(200)],
        )
        report.assert_ok()

What a crash does here: the subscription is disposed during the ``on_next`` of the chosen
delivery (the process's memory is gone: batches, windows, ``map_async`` work in flight; that
delivery is not committed), while every commit already made stays; the next run subscribes again in the same
consumer group. The in-memory broker commits each offset as soon as it may, so it finds a
too-early commit sooner than a broker with a commit interval would (a late commit can only add
duplicates, never lose a record).

What counts as an effect: each value the pipeline emits reaches the sink, the Observer at its
end; ``inputs_of(output)`` names the input records it carries (default: a ``Message`` carries
its value, a ``Window`` its items and late items, a list or tuple each of its elements, any
other value itself). Inputs are compared by their JSON form. The sink may hold the commit
itself (``sink=`` any callable, e.g. one that :func:`~reactive_services.adapters.track`-s a
write).
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import reactivex.operators as ops
from reactivex import Observable
from reactivex.abc import DisposableBase

from reactive_services.adapters import Batch, Message
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.operators import Window

__all__ = ["CrashPoint", "CrashReport", "LostRecord", "check_at_least_once"]


@dataclass(frozen=True)
class CrashPoint:
    """One crash of a scenario.

    Attributes:
        deliveries: the records delivered (redeliveries included) when the consumer was killed.
        committed: ``{partition: committed offset}`` at that moment.
    """

    deliveries: int
    committed: dict[int, int]


@dataclass(frozen=True)
class LostRecord:
    """An input whose effect never reached the sink.

    Attributes:
        value: the record's value.
        partition: its partition.
        offset: its offset.
        scenario: the scenario that lost it (``"every 25"``, ``"random #3"``).
        crash: the first crash whose committed offset had passed it (None when no crash had:
            the pipeline dropped it without a crash).
    """

    value: Any
    partition: int
    offset: int
    scenario: str
    crash: CrashPoint | None


@dataclass
class CrashReport:
    """What :func:`check_at_least_once` found.

    Attributes:
        records: how many input records each scenario published.
        scenarios: the scenario names, each with its crashes.
        lost: the inputs some scenario lost (empty when at-least-once held).
        duplicates: effects beyond the first per input, summed over the scenarios (redeliveries
            after crashes; at-least-once allows them), beyond those of the run without crash.
        errors: scenarios that ended with an error, ``{scenario: "<type>: <message>"}``.
        double_counted: with ``output_id``: ``(input value, scenario, times)`` for each input that
            the final outputs (the last one per id) carry more often than those of the run without
            a crash (``times``: 2 for one extra). With ``output_id`` an input that they carry less
            often is in :attr:`lost`.
    """

    records: int
    scenarios: dict[str, list[CrashPoint]] = field(default_factory=dict)
    lost: list[LostRecord] = field(default_factory=list)
    duplicates: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    double_counted: list[tuple[Any, str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no input was lost, none was counted twice (with ``output_id``) and no scenario failed."""
        return not self.lost and not self.errors and not self.double_counted

    def assert_ok(self) -> None:
        """Raise when at-least-once did not hold.

        Raises:
            AssertionError: the message lists the first lost inputs (value, partition, offset,
                the crash that had committed past them) and names the usual cause.
        """
        if self.ok:
            return
        lines = [f"at-least-once violated: {len(self.lost)} input(s) lost in {len(self.scenarios)} scenario(s)"]
        if self.double_counted:
            lines = [f"{len(self.double_counted)} input(s) counted more than once in the final outputs"]
            lines += [f"  {value!r} ({scenario}): {times} times" for value, scenario, times in self.double_counted[:10]]
        for lost in self.lost[:10]:
            where = (
                f"committed (offset {lost.crash.committed.get(lost.partition)}) by the crash after "
                f"{lost.crash.deliveries} deliveries before its effect reached the sink"
                if lost.crash is not None
                else "dropped without a crash"
            )
            lines.append(
                f"  {lost.value!r} (partition {lost.partition}, offset {lost.offset}, {lost.scenario}): {where}"
            )
        if len(self.lost) > 10:
            lines.append(f"  ... and {len(self.lost) - 10} more")
        for scenario, error in self.errors.items():
            lines.append(f"  scenario {scenario} failed: {error}")
        if any(lost.crash is not None for lost in self.lost):
            lines.append(
                "An operator kept these records for a later output without holding their commits: "
                "reactivex's buffer_*, window_*, scan, reduce or group_by + an aggregate do that. Use batch() "
                "or the event-time windows of reactive_services.operators (they hold each record until "
                "the output containing it was handled), or take Message.hold() in your own operator."
            )
        raise AssertionError("\n".join(lines))


def _default_inputs_of(output: Any) -> Iterable[Any]:
    if isinstance(output, Message):
        yield output.value
    elif isinstance(output, Window):
        for item in (*output.items, *output.late):
            yield from _default_inputs_of(item)
    elif isinstance(output, list | tuple):
        for item in output:
            yield from _default_inputs_of(item)
    else:
        yield output


def _value(ident: Hashable) -> Any:
    """The input value an identity stands for (the inverse of :func:`_ident`)."""
    return orjson.loads(ident) if isinstance(ident, bytes) else ident


def _ident(value: Any) -> Hashable:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return repr(value)


async def check_at_least_once(
    pipeline: Callable[..., Observable[Any]],
    records: Sequence[Any],
    *,
    inputs_of: Callable[[Any], Iterable[Any]] | None = None,
    key: Callable[[Any], str | bytes | None] | None = None,
    partitions: int = 1,
    concurrency: int = 1,
    crash_every: int | None = None,
    random_scenarios: int = 5,
    seed: int = 0,
    sink: Callable[[Any], None] | None = None,
    output_id: Callable[[Any], Hashable] | None = None,
    topic: str = "crash-check",
    timeout_s: float = 60.0,
    batch_size: int | None = None,
) -> CrashReport:
    """Run ``pipeline`` over ``records`` with consumer crashes, and report inputs that were lost.

    Scenarios: one run without a crash (the baseline: which inputs' effects reach the sink at
    all), one that crashes every ``crash_every`` deliveries, and ``random_scenarios`` that each
    crash at 1 to 3 random deliveries (``random.Random(seed)``). Each scenario starts from a
    fresh broker; after each crash the pipeline is subscribed again in the same consumer group;
    once every record has been delivered the source is stopped gracefully (operators flush,
    commits follow).

    Args:
        pipeline: ``Observable[Message] -> Observable[output]``, the code under test (a fresh
            pipeline is built for each run); a function of two arguments also gets the broker
            (e.g. for a :class:`~reactive_services.operators.ChangelogStore`).
        records: the input values (JSON-serialisable; each input should be distinct, e.g. carry
            an id, since inputs are told apart by their JSON form).
        inputs_of: ``output -> the input values it carries`` (see the module docstring).
        key: ``record -> key`` (default: no key).
        partitions: partitions of the input topic (>= 1).
        concurrency: the source's ``concurrency``.
        crash_every: deliveries between two crashes (default: a tenth of the records, >= 1).
        random_scenarios: scenarios with random crash points (>= 0).
        seed: the seed of the random crash points.
        sink: called with each output inside the sink's ``on_next`` (it may ``track`` work).
        output_id: ``output -> its identity`` (e.g. a window's ``(key, start)``): then the check
            is also *effectively once*: the last output of each identity stands (an output
            published again replaces the earlier one, as a consumer keeping the latest value
            per key sees it), and an input that those final outputs carry more than once is
            reported in :attr:`CrashReport.double_counted`.
        topic: the input topic's name (a controller's pipeline may route by topic).
        timeout_s: seconds each run may take before the check gives up on it.
        batch_size: None: ``pipeline`` gets ``Observable[Message]`` (``broker.source``); a number:
            it gets ``Observable[Batch]`` (``broker.source_batches``) of at most that many
            records each, and the crash points count records within the batches (a crash during
            a batch's delivery: nothing of it commits).

    Returns:
        A :class:`CrashReport`; call :meth:`CrashReport.assert_ok` in a test.

    Raises:
        ValueError: no records, or a count below its minimum.
        TimeoutError: a run did not finish within ``timeout_s`` seconds.
    """
    if not records:
        raise ValueError("records must not be empty")
    if partitions < 1 or concurrency < 1 or random_scenarios < 0:
        raise ValueError("partitions and concurrency must be >= 1, random_scenarios >= 0")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size!r}")
    every = crash_every if crash_every is not None else max(1, len(records) // 10)
    if every < 1:
        raise ValueError(f"crash_every must be >= 1, got {crash_every!r}")
    carried = inputs_of or _default_inputs_of
    rng = random.Random(seed)
    plans: list[tuple[str, list[int]]] = [(f"every {every}", list(range(every, 10 * len(records), every)))]
    for n in range(random_scenarios):
        points = sorted(rng.sample(range(1, len(records) + 1), min(len(records), rng.randint(1, 3))))
        plans.append((f"random #{n + 1}", points))

    report = CrashReport(len(records))

    async def scenario(crash_after: list[int]) -> _Outcome:
        return await _scenario(
            pipeline,
            records,
            key,
            partitions,
            concurrency,
            crash_after,
            carried,
            sink,
            output_id,
            topic,
            timeout_s,
            batch_size,
        )

    _, base_counts, _, base_error = await scenario([])
    if base_error is not None:
        report.errors["without a crash"] = f"{type(base_error).__name__}: {base_error}"
        return report
    expected = set(base_counts)
    base_duplicates = sum(c - 1 for c in base_counts.values())
    for name, crash_after in plans:
        crashes, counts, places, error = await scenario(crash_after)
        report.scenarios[name] = crashes
        if error is not None:
            report.errors[name] = f"{type(error).__name__}: {error}"
        if output_id is not None:  # compared with the run without a crash, input by input
            for ident, times in counts.items():
                if ident in expected and times > base_counts[ident]:
                    report.double_counted.append((_value(ident), name, times - base_counts[ident] + 1))
            missing = {i for i in expected if counts.get(i, 0) < base_counts[i]}
        else:
            missing = expected - set(counts)
        for ident in sorted(missing, key=lambda i: places.get(i, (0, 0))):
            partition, offset = places.get(ident, (0, -1))
            crash = next((c for c in crashes if c.committed.get(partition, 0) > offset), None)
            report.lost.append(LostRecord(_value(ident), partition, offset, name, crash))
        report.duplicates += max(0, sum(c - 1 for c in counts.values()) - base_duplicates)
    return report


_Outcome = tuple[list["CrashPoint"], Counter[Hashable], dict[Hashable, tuple[int, int]], BaseException | None]


async def _scenario(
    pipeline: Callable[..., Observable[Any]],
    records: Sequence[Any],
    key: Callable[[Any], str | bytes | None] | None,
    partitions: int,
    concurrency: int,
    crash_after: list[int],
    inputs_of: Callable[[Any], Iterable[Any]],
    sink: Callable[[Any], None] | None,
    output_id: Callable[[Any], Hashable] | None,
    topic: str,
    timeout_s: float,
    batch_size: int | None = None,
) -> _Outcome:
    """One scenario: ``(crashes, effects per input, input -> (partition, offset), error)``."""
    async with InMemoryBroker(partitions=partitions, max_batch=batch_size or 500) as broker:
        await broker.create_topics([topic], partitions=partitions)
        metas = await broker.emit_batch(topic, [(key(r) if key else None, r) for r in records])
        places = {_ident(r): (m.partition, m.offset) for r, m in zip(records, metas, strict=True)}
        state = _State(broker, topic, partitions, list(crash_after), await broker.end_offsets(topic))
        with_broker = len(inspect.signature(pipeline).parameters) >= 2
        while True:
            run = _Run(state, inputs_of, sink, output_id)
            source: Observable[Any]
            if batch_size is None:
                source = broker.source(topic, group_id=_GROUP, stop=run.stop, concurrency=concurrency).pipe(
                    ops.do_action(run.delivered)
                )
            else:
                source = broker.source_batches(topic, group_id=_GROUP, stop=run.stop, concurrency=concurrency).pipe(
                    ops.do_action(run.delivered_batch)
                )
            built = pipeline(source, broker) if with_broker else pipeline(source)
            run.subscription = built.subscribe(run.on_next, run.on_error, run.ended.set)
            async with asyncio.timeout(timeout_s):
                if await run.until_crash_or_end():
                    continue
                if output_id is not None:  # the final outputs: the last one of each identity
                    state.effects = Counter(ident for idents in state.latest.values() for ident in idents)
                return state.crashes, state.effects, places, state.error


_GROUP = "crash-check"


class _State:
    """What a scenario keeps across its runs."""

    def __init__(
        self, broker: InMemoryBroker, topic: str, partitions: int, pending: list[int], ends: dict[int, int]
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.partitions = partitions
        self.pending = pending  # delivery counts still to crash at
        self.ends = ends
        self.deliveries = 0
        self.crashes: list[CrashPoint] = []
        self.effects: Counter[Hashable] = Counter()
        self.latest: dict[Hashable, list[Hashable]] = {}  # output_id -> the inputs of its last output
        self.error: BaseException | None = None

    async def committed(self) -> dict[int, int]:
        return {p: await self.broker.committed(_GROUP, self.topic, p) or 0 for p in range(self.partitions)}


class _Run:
    """One subscription of the pipeline, from the committed offsets to a crash or the end."""

    def __init__(
        self,
        state: _State,
        inputs_of: Callable[[Any], Iterable[Any]],
        sink: Callable[[Any], None] | None,
        output_id: Callable[[Any], Hashable] | None,
    ) -> None:
        self.state = state
        self.inputs_of = inputs_of
        self.sink = sink
        self.output_id = output_id
        self.stop = asyncio.Event()
        self.ended = asyncio.Event()
        self.crashed = asyncio.Event()
        self.reached: dict[int, int] = {}
        self.subscription: DisposableBase | None = None

    def delivered(self, m: Message) -> None:
        state = self.state
        state.deliveries += 1
        self.reached[m.partition] = max(self.reached.get(m.partition, -1), m.offset)
        if state.pending and state.deliveries >= state.pending[0]:
            state.pending.pop(0)
            self.crash()  # during this delivery: the source delivers nothing more, commits nothing more

    def delivered_batch(self, batch: Batch) -> None:
        state = self.state
        state.deliveries += len(batch.values)
        offsets = batch.offsets
        if offsets:
            self.reached[batch.partition] = max(self.reached.get(batch.partition, -1), offsets[-1])
        if state.pending and state.deliveries >= state.pending[0]:
            while state.pending and state.deliveries >= state.pending[0]:
                state.pending.pop(0)
            self.crash()  # during this batch: nothing of it commits

    def crash(self) -> None:
        if self.subscription is not None and not self.crashed.is_set():
            self.crashed.set()
            self.subscription.dispose()

    def on_next(self, output: Any) -> None:
        idents = [_ident(value) for value in self.inputs_of(output)]
        for ident in idents:
            self.state.effects[ident] += 1
        if self.output_id is not None:
            self.state.latest[self.output_id(output)] = idents
        if self.sink is not None:
            self.sink(output)

    def on_error(self, exc: Exception) -> None:
        self.state.error = exc
        self.ended.set()

    async def all_delivered(self) -> bool:
        done, ends = await self.state.committed(), self.state.ends
        return all(done[p] >= ends.get(p, 0) or self.reached.get(p, -1) + 1 >= ends.get(p, 0) for p in done)

    async def until_crash_or_end(self) -> bool:
        """Run until a crash (returns True: run again) or the end (stop gracefully; returns False)."""
        state = self.state
        while not (self.crashed.is_set() or self.ended.is_set() or await self.all_delivered()):
            await asyncio.sleep(0.005)
        if self.crashed.is_set():
            state.crashes.append(CrashPoint(state.deliveries, await state.committed()))
            await asyncio.sleep(0)  # let the disposed source end
            return True
        if not self.ended.is_set():
            await asyncio.sleep(0.02)  # let asynchronous work settle, then stop gracefully
            self.stop.set()
            await self.ended.wait()
        while state.broker.assignment(_GROUP):  # it commits (after the holds), then leaves the group
            await asyncio.sleep(0.005)
        return False
