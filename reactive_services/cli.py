"""reactive-services: run the reference shop system.

``reactive-services demo [--bootstrap-servers HOST:PORT] [--clients N] [--orders CSV]
[--products CSV] [--logs [NAME=]FILE ...] [--report PATH]`` runs the shop end to end.

Exit codes: 0 done and every invariant held; 1 the run finished but an invariant failed,
or a stage failed; 2 bad configuration or the broker cannot be reached (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import orjson

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reactive-services", description="Reactive, event-driven microservices.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the shop end to end (orders, inventory, notifications, log analytics)")
    demo.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                      help="run on this Kafka broker instead of the embedded in-memory broker")
    demo.add_argument("--clients", type=int, default=3, help="websocket clients to connect (default 3)")
    demo.add_argument("--orders", type=Path, help="order-items CSV (Olist format)")
    demo.add_argument("--products", type=Path, help="products CSV (Olist format)")
    demo.add_argument("--logs", nargs="+", metavar="[NAME=]FILE",
                      help="log files; NAME (Apache, HDFS, Linux, OpenSSH) picks the format, "
                           "default: the file name up to its first '_'")
    demo.add_argument("--report", type=Path, metavar="PATH", help="write the report as JSON to PATH")
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each stage (default 120)")
    demo.add_argument("--connect-timeout", type=float, default=10.0,
                      help="seconds allowed to reach the Kafka broker (default 10)")
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    # aiokafka logs every failed connection attempt and group-coordinator retry at ERROR;
    # the CLI reports the outcome itself (one line), so only its CRITICAL lines are shown.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if args.command == "demo":
        return _demo(args)
    return 2  # pragma: no cover - argparse enforces the subcommands


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from examples.shop.demo import DemoConfig, check_report, parse_log_args

    from .errors import BrokerUnavailableError, ConfigError

    err = Console(stderr=True)
    try:
        config = DemoConfig(clients=args.clients, bootstrap_servers=args.bootstrap_servers,
                            timeout_s=args.timeout, connect_timeout_s=args.connect_timeout)
        if args.orders:
            config.orders = args.orders
        if args.products:
            config.products = args.products
        if args.logs:
            config.logs = parse_log_args(args.logs)
        config.validate()
        if args.report:
            _check_writable(args.report)
    except ConfigError as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2

    try:
        report = asyncio.run(_run_with_progress(config, quiet=args.quiet, console=err))
    except BrokerUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, not a traceback
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]  # type: ignore[assignment]
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    problems = check_report(report, orders_file=config.orders, log_files=config.logs)
    report["invariants"] = {"ok": not problems, "violations": problems}
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    _summary(report, Console())
    for p in problems:
        print(f"invariant violated: {p}", file=sys.stderr)
    return 0 if not problems else 1


def _check_writable(path: Path) -> None:
    """Fail at start, not after the run, when the report cannot be written (parents are created)."""
    from .errors import ConfigError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ConfigError("report", f"cannot write {path}: {exc.strerror or exc}") from exc


async def _run_with_progress(config: Any, *, quiet: bool, console: Any) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from examples.shop.demo import run_demo

    if quiet:
        return await run_demo(config)
    with Progress(TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return await run_demo(config, progress)


def _summary(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    o, inv, n = report["orders"], report["inventory"], report["notifications"]
    t = Table(title=f"reactive-services demo on the {report['broker']} broker ({report['elapsed_s']:.1f} s)")
    t.add_column("what")
    t.add_column("figures")
    t.add_row("orders", f"{o['items_read']} item rows read, {o['invalid_rows']} invalid, {o['emitted']} orders emitted")
    t.add_row("inventory", f"{o['applied']} applied, {o['rejected']} rejected, {o['dead_lettered']} dead-lettered, "
                           f"{inv['stock_low_events']} stock.low events")
    t.add_row("notifications", ", ".join(f"{ch}: {k}" for ch, k in n["published"].items()))
    for i, c in enumerate(n["clients"]):
        t.add_row(f"ws client {i + 1}", f"{'+'.join(c['channels'])}: received {c['received']}"
                                         + (" (closed 1001)" if c["completed"] else f" ({c['error']})"))
    for name, s in report["logs"].items():
        levels = ", ".join(f"{k} {v}" for k, v in s["by_level"].items())
        unparsed = f", {s['unparsed']} unparsed (level 'unknown')" if s["unparsed"] else ""
        t.add_row(f"logs {name}", f"{s['lines']} lines ({levels}{unparsed}); {s['windows']} windows, "
                                  f"{s['alerts']} alerts")
    inv_ok = report.get("invariants", {}).get("ok")
    if inv_ok is not None:
        t.add_row("invariants", "all hold" if inv_ok else "VIOLATED")
    console.print(t)


if __name__ == "__main__":
    sys.exit(main())
