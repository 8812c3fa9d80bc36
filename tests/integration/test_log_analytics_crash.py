"""The log analytics as a process of its own on real Kafka, SIGKILLed three times during a replay.

Two shipped loghub files (Apache and HDFS, 2,000 lines each) are replayed, interleaved, into a
``logs`` topic of ONE partition (so that the windows of one source close while the other's are
open: a restart then replays lines of windows already published), at about 200 lines/s, while
``reactive-services serve --only logs`` consumes them; the process is SIGKILLed three times and
restarted each time. At the end every source has been quiet for the idle timeout, so its last
windows are published too. The check: for every (source, hourly window), the ``lines`` of the
last ``log.stats`` record published for it equal the count of that hour in the loghub ground
truth (the ``*_structured.csv`` time columns, read here independently of the code under
test): no line lost, none counted twice.
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.testing import consume, unique_name, wait_for

ROOT = Path(__file__).resolve().parents[2]
LOGHUB = ROOT / "examples" / "shop" / "data" / "loghub"
WINDOW_S = 3600  # the shop's sources use hourly windows

# how to read the time of a ground-truth row (written here, not taken from the code under test)
TRUTH_TIME = {
    "Apache": lambda r: datetime.strptime(r["Time"], "%a %b %d %H:%M:%S %Y"),
    "HDFS": lambda r: datetime.strptime(f"{r['Date']} {r['Time']}", "%y%m%d %H%M%S"),
}


def expected_windows() -> Counter[tuple[str, float]]:
    """``{(source, window start s): lines}`` from the ground truth's own time columns."""
    counts: Counter[tuple[str, float]] = Counter()
    for name, read_time in TRUTH_TIME.items():
        with open(LOGHUB / f"{name}_2k.log_structured.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                epoch = read_time(row).replace(tzinfo=UTC).timestamp()
                counts[(name, float(int(epoch // WINDOW_S) * WINDOW_S))] += 1
    return counts


class LogsProcess:
    """``reactive-services serve --only logs`` on Kafka, output in files."""

    def __init__(self, bootstrap: str, namespace: str, workdir: Path, n: int) -> None:
        self.out = workdir / f"logs-{n}.out"
        self.err = workdir / f"logs-{n}.err"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reactive_services.cli",
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
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    async def ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "ready" not in self.out.read_text(errors="replace").splitlines():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"not ready (exit {self.proc.poll()}): {self.out.read_text()} {self.err.read_text()}"
                )
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.mark.timeout(300)
async def test_every_line_is_counted_once_in_the_published_windows_across_three_sigkills(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, tmp_path: Path
) -> None:
    ns = unique_name("lc") + "."
    await kafka_broker.create_topics([f"{ns}logs"], partitions=1)
    lines = {name: (LOGHUB / f"{name}_2k.log").read_text(encoding="utf-8").splitlines() for name in TRUTH_TIME}
    records: list[tuple[str, dict[str, Any]]] = [
        (name, {"source": name, "line_no": n + 1, "line": lines[name][n]})
        for n in range(2000)
        for name in ("Apache", "HDFS")
    ]

    async def replay() -> None:  # about 20 s: the three kills fall while lines arrive
        for start in range(0, len(records), 20):
            await kafka_broker.emit_batch(f"{ns}logs", records[start : start + 20])
            await asyncio.sleep(0.1)

    process = LogsProcess(kafka_bootstrap, ns, tmp_path, 0)
    await process.ready()
    replaying = asyncio.create_task(replay())
    kills = 0
    for n in range(1, 4):  # SIGKILL three times while the lines arrive, restart each time
        await asyncio.sleep(3.0)
        process.kill()
        kills += 1
        process = LogsProcess(kafka_bootstrap, ns, tmp_path, n)
        await process.ready()
    await replaying

    group = f"{ns}log-analytics"

    async def all_committed() -> bool:  # the idle timeout published the last windows: all committed
        return await kafka_broker.committed(group, f"{ns}logs", 0) == len(records)

    await wait_for(all_committed, timeout=90, what="every line committed")
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(60) == 0, process.err.read_text()

    ends = await kafka_broker.end_offsets(f"{ns}log.stats")
    published = await consume(kafka_broker, f"{ns}log.stats", sum(ends.values()), timeout=60)
    final: dict[tuple[str, float], int] = {}
    for m in published.items:  # the last record of each window stands
        final[(m.value["source"], m.value["window_start_s"])] = m.value["lines"]
    assert kills == 3
    assert sum(final.values()) == len(records)
    assert Counter(final) == expected_windows()
