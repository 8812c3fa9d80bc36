"""The demo end to end on the in-memory broker, with real websocket clients over loopback.

Every expected figure is recomputed here from the input files, independently of the code
under test (csv module and plain counting).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from shopcheck import LOGHUB, OLIST, check_invariants, check_shipped_logs

from reactive_services.cli import main
from reactive_services.examples.shop.demo import DemoConfig, run_demo


async def test_demo_on_shipped_data_satisfies_every_invariant() -> None:
    report = await run_demo(DemoConfig(clients=3))
    assert report["broker"] == "memory"
    check_invariants(report, OLIST / "order_items.csv", OLIST / "products.csv")
    assert len(report["notifications"]["clients"]) == 3
    check_shipped_logs(report)


def write_other_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Other files of the same formats: every 3rd order of the shipped file, with bad rows, and generated products."""
    with open(OLIST / "order_items.csv", newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    order_ids = sorted({r[0] for r in rows})[::3]
    keep = [r for r in rows if r[0] in set(order_ids)]
    keep.reverse()  # not sorted by order_id any more
    orders = tmp_path / "orders.csv"
    with open(orders, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(keep[:40])
        w.writerow(["", "1", "p", "s", "2018-01-01 00:00:00", "1.0", "1.0"])  # missing order id
        w.writerow(["o-bad", "1", keep[0][2], "s", "2018-01-01 00:00:00", "cheap", "1.0"])  # non-numeric price
        f.write('"o-broken",1,"only three fields"\n')  # broken CSV line
        w.writerows(keep[40:])
    products = tmp_path / "products.csv"
    with open(OLIST / "products.csv", newline="", encoding="utf-8") as f:
        p_header, *p_rows = list(csv.reader(f))
    with open(products, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(p_header)
        for i, r in enumerate(p_rows):
            r[4] = str(i % 4)  # photos: 0..3
            w.writerow(r)
    log = tmp_path / "HDFS_other.log"
    log.write_text("\n".join((LOGHUB / "HDFS_2k.log").read_text().splitlines()[500:900]) + "\n")
    return orders, products, log


def test_cli_demo_with_other_input_files_writes_a_valid_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    orders, products, log = write_other_inputs(tmp_path)
    report_path = tmp_path / "report.json"
    code = main(
        [
            "demo",
            "--quiet",
            "--clients",
            "4",
            "--orders",
            str(orders),
            "--products",
            str(products),
            "--logs",
            f"HDFS={log}",
            "--report",
            str(report_path),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["orders"]["invalid_rows"] == 3
    lines = {i["line"] for i in report["orders"]["invalid"]}
    assert lines == {42, 43, 44}
    good_rows = tmp_path / "good.csv"
    with open(orders, newline="", encoding="utf-8") as f_in, open(good_rows, "w", newline="") as f_out:
        w = csv.writer(f_out)
        for r in csv.reader(f_in):
            if len(r) == 7 and r[0] and r[0] != "o-bad":
                w.writerow(r)
    data_lines = len(orders.read_text().splitlines()) - 1
    check_invariants(report, good_rows, products, data_lines)
    assert len(report["notifications"]["clients"]) == 4
    assert report["logs"]["HDFS"]["lines"] == 400
    assert report["invariants"] == {"ok": True, "violations": []}


def test_cli_bad_configuration_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", "demo", "--orders", str(tmp_path / "nope.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: bad configuration: orders: no such file: {tmp_path / 'nope.csv'}"
    ]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_broker_gives_one_error_line_and_exit_2_within_30_s() -> None:
    import time

    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", "demo", "--bootstrap-servers", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot reach Kafka at 127.0.0.1:{port}: no broker answered (connection refused or closed)"
    ]
    assert proc.stdout == ""


def test_orders_file_without_a_required_column_names_it_and_exits_2_promptly(tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,product_id,price\no1,p1,1.0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", "demo", "--quiet", "--orders", str(orders)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: bad configuration: order_item_id:")


@pytest.mark.parametrize(
    ("args", "first_words"),
    [
        (["--logs", "Foo=x.log"], "error: bad configuration: logs: cannot tell the log format of 'Foo=x.log'"),
        (["--logs", "HDFS=a.log", "hdfs=b.log"], "error: bad configuration: logs: source 'HDFS' given twice"),
        (["--report", "{file}/r.json"], "error: bad configuration: report: cannot write"),
        (["--orders", "{dir}"], "error: bad configuration: orders: not a file"),
    ],
)
def test_bad_arguments_are_refused_at_start_with_one_line(tmp_path: Path, args: list[str], first_words: str) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = [a.format(file=a_file, dir=tmp_path) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", "demo", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(first_words), line


def test_an_empty_log_file_is_reported_with_zero_lines(tmp_path: Path) -> None:
    empty = tmp_path / "hdfs_empty.log"
    empty.write_text("")
    report_path = tmp_path / "r.json"
    assert main(["demo", "--quiet", "--clients", "1", "--logs", str(empty), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["logs"] == {
        "HDFS": {
            "lines": 0,
            "by_level": {},
            "unparsed": 0,
            "late": 0,
            "windows": 0,
            "alerts": 0,
            "alerts_by_kind": {},
            "templates": 0,
            "top_templates": [],
        }
    }
    assert report["notifications"]["published"]["logs"] == 0
