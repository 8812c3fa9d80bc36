"""Checks of demo reports shared by the memory, Kafka and RabbitMQ tests, and `serving` (serve in a task).

Every expected figure is recomputed from the input files (csv module, plain counting),
independently of the code under test.
"""

from __future__ import annotations

import asyncio
import csv
import re
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from reactive_services.examples.shop.demo import DATA_DIR

OLIST = DATA_DIR / "olist"
LOGHUB = DATA_DIR / "loghub"


def photos_stock(products: Path) -> dict[str, int]:
    """The documented initial-stock rule, recomputed: product_photos_qty, 0 when photos or weight missing."""
    out: dict[str, int] = {}
    with open(products, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ok = row["product_photos_qty"].isdigit() and row["product_weight_g"].isdigit()
            out.setdefault(row["product_id"], int(row["product_photos_qty"]) if ok else 0)
    return out


def check_invariants(report: dict, orders_csv: Path, products_csv: Path, data_lines: int | None = None) -> None:
    """``orders_csv`` holds the valid rows; ``data_lines`` the data lines of the file the demo read."""
    with open(orders_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    o, inv = report["orders"], report["inventory"]
    assert o["items_read"] == (data_lines if data_lines is not None else len(rows)) - o["invalid_rows"]
    assert o["emitted"] == len({r["order_id"] for r in rows if r["order_id"] and r["product_id"]})
    assert o["applied"] + o["rejected"] + o["dead_lettered"] == o["emitted"]
    assert o["applied"] > 0 and o["rejected"] > 0
    assert inv["initial_stock"] == photos_stock(products_csv)
    applied = set(inv["applied_orders"])
    assert len(applied) == o["applied"]
    taken = Counter(r["product_id"] for r in rows if r["order_id"] in applied)
    for pid, start in inv["initial_stock"].items():
        assert inv["final_stock"][pid] == start - taken[pid] >= 0
    published = report["notifications"]["published"]
    assert published["orders"] == o["emitted"] + o["rejected"]
    assert published["inventory"] == o["applied"]
    assert published["stock"] == inv["stock_low_events"]
    for c in report["notifications"]["clients"]:
        assert c["received"] == sum(published.get(ch, 0) for ch in c["channels"])
        assert c["completed"] and c["error"] is None


def level_counts(path: Path, pattern: str) -> Counter:
    rx = re.compile(pattern)
    return Counter(m.group(1) for line in path.read_text().splitlines() if (m := rx.search(line)))


def check_shipped_logs(report: dict) -> None:
    logs = report["logs"]
    assert set(logs) == {"Apache", "HDFS", "Linux", "OpenSSH"}
    for name in logs:
        assert logs[name]["lines"] == len((LOGHUB / f"{name}_2k.log").read_text().splitlines())
    assert logs["Apache"]["by_level"] == dict(level_counts(LOGHUB / "Apache_2k.log", r"^\[[^]]+\] \[(\w+)\]"))
    assert logs["HDFS"]["by_level"] == dict(level_counts(LOGHUB / "HDFS_2k.log", r"^\d+ \d+ \d+ (\w+) "))
    assert logs["Apache"]["by_level"] == {"notice": 1405, "error": 595}
    assert logs["HDFS"]["by_level"] == {"INFO": 1920, "WARN": 80}
    assert report["notifications"]["published"]["logs"] == sum(s["windows"] for s in logs.values())
    assert report["notifications"]["published"]["alerts"] == sum(s["alerts"] for s in logs.values())


@asynccontextmanager
async def serving(config: Any, step: float = 30.0) -> AsyncIterator[Any]:
    """``serve(config)`` (the shop's :func:`~reactive_services.examples.shop.system.serve`) in a
    task until the block ends, yielding its ``ServeInfo``; it must be ready within ``step``
    seconds, and return 0 within ``step`` seconds of the stop."""
    from reactive_services.examples.shop.system import serve

    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, on_ready=started.set_result, stop=stop))
    done, _ = await asyncio.wait([started, task], timeout=step, return_when=asyncio.FIRST_COMPLETED)
    assert started in done, task.result() if task.done() else "serve not ready in time"
    try:
        yield started.result()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, step) == 0
