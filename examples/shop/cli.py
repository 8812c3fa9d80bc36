"""The shop's commands of ``reactive-services``: ``demo``, ``serve``, ``logs analyze``, ``users``.

Registered through the entry point ``shop`` of the group ``reactive_services.cli``
(pyproject.toml), which names :func:`register`; the library's CLI core
(:mod:`reactive_services.cli`) imports nothing from the shop.

``reactive-services demo [--bootstrap-servers HOST:PORT | --rabbitmq-url URL] [--clients N] [--orders CSV]
[--products CSV] [--logs [NAME=]FILE ...] [--report PATH]`` runs the shop end to end.

``reactive-services serve [--only SERVICE ...] [--bootstrap-servers HOST:PORT | --rabbitmq-url URL] [--host H]
[--port P] [--grpc-port P | --no-grpc] [--inventory-transport broker|grpc]
[--inventory-grpc-address HOST:PORT] [--dev] ...`` runs the shop's services, the inventory's
gRPC server and the gateway until SIGTERM (:mod:`reactive_services.examples.shop.system`).

``reactive-services logs analyze FILE --format FMT [--mask REGEX ...] [--assignments OUT.csv]
[--report OUT.json]`` runs the log-analytics service over one file on the embedded broker.

``reactive-services users add NAME [--scope S ...] [--db PATH] [--password-stdin]`` creates a
user of the shop's auth service (``users list`` lists them); the database is ``--db``, else
``$RS_AUTH_DB``, else ``data/auth.db``. The password is prompted for (twice) unless
``--password-stdin``.

Exit codes: 0 done and every invariant held; 1 the run finished but an invariant failed,
or a stage failed; 2 bad configuration or the broker cannot be reached (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from reactive_services.cli import Commands, check_writable, run_command
from reactive_services.errors import ConfigError, ValidationError

T = TypeVar("T")

__all__ = ["register"]

# system.GRPC_PORT, written out: the shop's modules are imported only by the command that runs
GRPC_PORT = 50051


def register(commands: Commands) -> None:
    """Add the shop's commands to ``reactive-services`` (the entry point's function)."""
    demo = commands.add_parser("demo", help="run the shop end to end (orders, inventory, notifications, log analytics)")
    demo.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="run on this Kafka broker instead of the embedded in-memory broker",
    )
    demo.add_argument(
        "--rabbitmq-url",
        metavar="amqp://USER:PASSWORD@HOST:PORT/",
        help="run on this RabbitMQ server instead (not with --bootstrap-servers)",
    )
    demo.add_argument("--clients", type=int, default=3, help="websocket clients to connect (default 3)")
    demo.add_argument("--orders", type=Path, help="order-items CSV (Olist format)")
    demo.add_argument("--products", type=Path, help="products CSV (Olist format)")
    demo.add_argument(
        "--logs",
        nargs="+",
        metavar="[NAME=]FILE",
        help="log files; NAME (Apache, HDFS, Linux, OpenSSH) picks the format, "
        "default: the file name up to its first '_'",
    )
    demo.add_argument("--report", type=Path, metavar="PATH", help="write the report as JSON to PATH")
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each stage (default 120)")
    demo.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds allowed to reach the Kafka broker (default 10)"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress display")
    demo.set_defaults(handler=_demo)

    logs = commands.add_parser("logs", help="log analytics")
    logs_commands = logs.add_subparsers(dest="logs_command", required=True)
    an = logs_commands.add_parser(
        "analyze",
        help="template mining, event-time windows and alerts over one log file",
        description="Replay FILE to the 'logs' topic of the embedded broker and run the log-analytics "
        "service over it: templates (LogMiner, or drain3), event-time windows with a watermark, alerts.",
    )
    an.add_argument("file", type=Path, metavar="FILE", help="the log file")
    an.add_argument(
        "--format",
        required=True,
        metavar="FMT",
        help="a loghub format string, e.g. '<Date> <Time> <Pid> <Level> <Component>: <Content>', "
        "or a shipped source: Apache, HDFS, Linux, OpenSSH",
    )
    an.add_argument(
        "--mask",
        action="append",
        default=[],
        metavar="REGEX",
        help="mask matches before template mining: REGEX (masked as <*>) or <NAME>=REGEX "
        "(masked as <NAME>); repeatable, applied in order before the default masks",
    )
    an.add_argument(
        "--no-default-masks",
        action="store_true",
        help="drop the default masks (the default miner's: dates, quantities with a unit, paths; drain3's: "
        "block ids, IPs, hex ids, numbers)",
    )
    an.add_argument("--name", help="source name (default: the shipped name, else 'log')")
    an.add_argument(
        "--miner",
        choices=("default", "drain3"),
        help="template miner: default (the project's LogMiner, general settings; --mask and "
        "--no-default-masks apply) or drain3 (--depth, --sim-th, --max-children apply too)",
    )
    an.add_argument("--depth", type=int, help="drain3 parse-tree depth (>= 3; with --miner drain3 only)")
    an.add_argument("--sim-th", type=float, help="drain3 similarity threshold in [0, 1] (with --miner drain3 only)")
    an.add_argument("--max-children", type=int, help="drain3 maximum children per tree node (with --miner drain3 only)")
    an.add_argument(
        "--level-field",
        metavar="FIELD",
        help="field holding the level ('none': infer it from the content; default: Level if present)",
    )
    an.add_argument(
        "--time-format",
        metavar="STRPTIME",
        help="strptime pattern of the time fields joined by spaces (default: detected)",
    )
    an.add_argument("--year", type=int, help="year for times that have none (default: the shipped source's, else 2000)")
    an.add_argument("--window", type=float, metavar="SECONDS", help="window length (default 600)")
    an.add_argument(
        "--slide",
        type=float,
        metavar="SECONDS",
        help="step between window starts; less than --window for sliding windows (default: tumbling)",
    )
    an.add_argument("--lateness", type=float, metavar="SECONDS", help="allowed lateness of the watermark (default 0)")
    an.add_argument(
        "--error-rate",
        type=float,
        metavar="FRACTION",
        help="least error rate of an error alert (default 0.1; see AlertRules)",
    )
    # str, not Path: a trailing '/' (a folder, an error) would be dropped
    an.add_argument(
        "--assignments",
        metavar="OUT.csv",
        help="write line_no,template_id,template for every line (the folder must exist)",
    )
    an.add_argument("--report", metavar="OUT.json", help="write the report as JSON (the folder must exist)")
    an.add_argument("--top", type=int, default=10, help="templates listed on the terminal (default 10)")
    an.add_argument("--quiet", action="store_true", help="no progress display")
    an.set_defaults(handler=_logs_analyze)

    users = commands.add_parser("users", help="users of the shop's auth service")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    for name, text in (
        ("add", "create a user that can log in (auth.login)"),
        ("list", "list the users and their scopes"),
    ):
        u = users_commands.add_parser(name, help=text, description=text.capitalize() + ".")
        if name == "add":
            u.add_argument("name", metavar="NAME", help="the username (1..64 characters, no spaces)")
            u.add_argument(
                "--scope",
                action="append",
                default=[],
                metavar="SCOPE",
                help="a granted scope (orders:write, orders:read, inventory:read, notifications:read, "
                "logs:read, admin); repeatable",
            )
            u.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from the first line of standard input instead of prompting",
            )
        u.add_argument(
            "--db",
            type=Path,
            metavar="PATH",
            help="the auth service's database (default: $RS_AUTH_DB, else data/auth.db)",
        )
        u.set_defaults(handler=_users)

    sv = commands.add_parser(
        "serve",
        help="run the shop's services, the notification hub and the API gateway until SIGTERM",
        description="Run the shop as long-running services: orders, inventory, auth, logs and the gateway "
        "(HTTP API, /ws, dashboard). All in one process by default; --only picks some (on Kafka). "
        "Stops gracefully on SIGTERM / SIGINT.",
    )
    sv.add_argument(
        "--only",
        action="append",
        metavar="SERVICE",
        help="run only these services (orders, inventory, auth, logs, gateway); repeatable or "
        "comma-separated; needs --bootstrap-servers or --rabbitmq-url",
    )
    sv.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="Kafka (default: the embedded broker)")
    sv.add_argument(
        "--rabbitmq-url",
        metavar="amqp://USER:PASSWORD@HOST:PORT/",
        help="RabbitMQ instead of Kafka (not with --bootstrap-servers)",
    )
    sv.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="gateway port (default 8000; 0: any free port)")
    sv.add_argument(
        "--grpc-port",
        type=int,
        default=GRPC_PORT,
        help=f"port of the inventory's gRPC server, on --host, where the inventory runs (default {GRPC_PORT}; "
        "0: any free port, printed at start)",
    )
    sv.add_argument("--no-grpc", action="store_true", help="no gRPC server for the inventory")
    sv.add_argument(
        "--inventory-transport",
        default="broker",
        metavar="broker|grpc",
        help="how the gateway asks the inventory: request-reply over the broker (default) or gRPC "
        "(needs --inventory-grpc-address)",
    )
    sv.add_argument(
        "--inventory-grpc-address",
        metavar="HOST:PORT",
        help="the inventory's gRPC server, for --inventory-transport grpc",
    )
    sv.add_argument("--data-dir", type=Path, default=Path("data"), help="databases folder (default ./data)")
    sv.add_argument(
        "--namespace",
        default="",
        help="topic prefix shared by the processes of one deployment: letters, digits, '.', '-', '_',"
        " ending with '.', '-' or '_' (e.g. 'staging.')",
    )
    sv.add_argument("--instance", help="instance name (the hub's consumer group is notifications.<instance>)")
    sv.add_argument("--products", type=Path, help="products CSV seeding an empty inventory (default: the shipped one)")
    sv.add_argument("--replay-logs", action="store_true", help="replay the shipped loghub files to 'logs' at start")
    sv.add_argument(
        "--overflow",
        choices=["close", "drop_oldest", "keep_latest"],
        default="close",
        help="what the hub does when a client's queue is full (default close, code 1013)",
    )
    sv.add_argument("--queue-size", type=int, default=1000, help="hub queue per client, messages (default 1000)")
    sv.add_argument(
        "--log-idle-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="publish a log source's open windows after S seconds without a line (default 30; 0: never)",
    )
    sv.add_argument(
        "--dev",
        action="store_true",
        help="development: a random JWT secret when RS_JWT_* is not set, and print a token with every scope",
    )
    sv.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .system import ServeConfig, ServeInfo, parse_only, serve

    logging.getLogger("reactive_services").setLevel(logging.WARNING)
    config = ServeConfig(
        only=parse_only(args.only),
        bootstrap_servers=args.bootstrap_servers,
        rabbitmq_url=args.rabbitmq_url,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        namespace=args.namespace,
        dev=args.dev,
        replay_logs=args.replay_logs,
        overflow=args.overflow,
        queue_size=args.queue_size,
        log_idle_timeout_s=args.log_idle_timeout or None,
        grpc_port=None if args.no_grpc else args.grpc_port,
        inventory_transport=args.inventory_transport,
        inventory_grpc_address=args.inventory_grpc_address,
    )
    if args.instance:
        config.instance = args.instance
    if args.products:
        config.products = args.products

    def ready(info: ServeInfo) -> None:
        print(f"serving {', '.join(info.services)}" + (f" at {info.url}" if info.url else ""), flush=True)
        if info.grpc_address:
            print(f"inventory gRPC: {info.grpc_address}", flush=True)
        if info.url:
            print(f"dashboard: {info.url}   API docs: {info.url}docs", flush=True)
        if info.dev_token:
            print(f"dev token (every scope): {info.dev_token}", flush=True)
        print("ready", flush=True)

    try:
        config.validate()
    except ConfigError as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2
    code, exit_code = run_command(lambda: serve(config, on_ready=ready))
    return code or (exit_code or 0)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .demo import DemoConfig, check_report, parse_log_args

    err = Console(stderr=True)
    try:
        config = DemoConfig(
            clients=args.clients,
            bootstrap_servers=args.bootstrap_servers,
            rabbitmq_url=args.rabbitmq_url,
            timeout_s=args.timeout,
            connect_timeout_s=args.connect_timeout,
        )
        if args.orders:
            config.orders = args.orders
        if args.products:
            config.products = args.products
        if args.logs:
            config.logs = parse_log_args(args.logs)
        config.validate()
        if args.report:
            check_writable(args.report)
    except ConfigError as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2

    code, report = run_command(lambda: _run_with_progress(config, quiet=args.quiet, console=err))
    if report is None:
        return code
    problems = check_report(report, orders_file=config.orders, log_files=config.logs)
    report["invariants"] = {"ok": not problems, "violations": problems}
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    _summary(report, Console())
    for p in problems:
        print(f"invariant violated: {p}", file=sys.stderr)
    return 0 if not problems else 1


def _recording(into: list[str], function: Callable[..., T]) -> Callable[..., T]:
    """``function`` with the warnings it raises appended to ``into`` (as text), not printed."""

    def call(*args: Any, **kwargs: Any) -> T:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return function(*args, **kwargs)
            finally:
                into.extend(str(w.message) for w in caught)

    return call


#: ``logs analyze``: the flag a user typed for each setting a ConfigError may name (the
#: settings' names as make_source / LogSource / check_writable give them).
_ANALYZE_FLAGS = {
    "format": "--format",
    "mask": "--mask",
    "miner": "--miner",
    "depth": "--depth",
    "sim_th": "--sim-th",
    "max_children": "--max-children",
    "level_field": "--level-field",
    "time_format": "--time-format",
    "year": "--year",
    "window": "--window",
    "window_s": "--window",
    "slide": "--slide",
    "slide_s": "--slide",
    "lateness": "--lateness",
    "allowed_lateness_s": "--lateness",
    "alerts": "--error-rate",
    "report": "--report",
    "assignments": "--assignments",
    "name": "--name",
    "top": "--top",
}


def _logs_analyze(args: argparse.Namespace) -> int:
    from rich.console import Console

    from reactive_services.logs import analyze_file, make_source

    from .log_sources import SOURCES

    err = Console(stderr=True)
    caught: list[str] = []  # make_source's warnings
    report_path: Path | None = None
    assignments_path: Path | None = None
    try:
        if not args.file.exists():
            raise ConfigError("FILE", f"no such file: {args.file}")
        if not args.file.is_file():
            raise ConfigError("FILE", f"not a file: {args.file}")
        for key, given in (("report", args.report), ("assignments", args.assignments)):
            if given is not None and Path(given).exists() and Path(given).resolve() == args.file.resolve():
                raise ConfigError(key, f"{given} is the input file")
        if args.name is not None and not args.name.strip():
            raise ConfigError("name", "must not be empty")
        if args.top < 0:
            raise ConfigError("top", f"must be >= 0, got {args.top}")
        level_field = (
            "" if args.level_field is None else (None if args.level_field.lower() == "none" else args.level_field)
        )
        source = _recording(caught, make_source)(
            args.format,
            known=SOURCES,
            name=args.name,
            masks=args.mask,
            default_masks=not args.no_default_masks,
            miner=args.miner,
            depth=args.depth,
            sim_th=args.sim_th,
            max_children=args.max_children,
            level_field=level_field,
            time_format=args.time_format,
            year=args.year,
            window_s=args.window,
            slide_s=args.slide,
            allowed_lateness_s=args.lateness,
            alerts=None if args.error_rate is None else {"error_rate": args.error_rate},
        )
        if args.report is not None:
            report_path = check_writable(args.report, "report", parents=False)
        if args.assignments is not None:
            assignments_path = check_writable(args.assignments, "assignments", parents=False, example="out.csv")
    except ConfigError as exc:  # named by the flag the user typed, not the setting behind it
        flag = _ANALYZE_FLAGS.get(exc.key, exc.key)
        message = exc.message
        if exc.key in ("depth", "sim_th", "max_children"):  # make_source names the Python settings
            message = message.replace(f"{exc.key} applies", f"{flag} applies").replace(
                "miner='drain3'", "--miner drain3"
            )
        print(f"error: bad configuration: {flag}: {message}", file=sys.stderr)
        return 2
    warned = set(caught)
    for text in caught:
        print(f"warning: {text}", file=sys.stderr)

    async def run() -> dict[str, Any]:
        if args.quiet:
            return await analyze_file(args.file, source, assignments=assignments_path)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("lines analysed"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("lines", total=None)
            return await analyze_file(
                args.file,
                source,
                assignments=assignments_path,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report lists them: printed below
        code, report = run_command(run)
    if report is None:
        return code
    if report_path is not None:
        report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    _logs_summary(report, Console(), top=args.top)
    for text in report["warnings"]:
        if text not in warned:
            print(f"warning: {text}", file=sys.stderr)
    if report["time"] is None and report["lines"] > report["blank"]:  # (no line at all: analyze_file says so)
        hint = f"with --time-format {args.time_format!r}" if args.time_format else "(give --time-format)"
        print(
            f"warning: no time could be read from the format's time fields {hint}; those lines are unparsed",
            file=sys.stderr,
        )
    return 0


def _users(args: argparse.Namespace) -> int:
    import getpass
    import sqlite3

    from .auth import SCOPES, UserStore, default_db_path

    db = args.db or default_db_path()
    password = ""
    try:
        if args.users_command == "add":
            unknown = [s for s in args.scope if s not in SCOPES]
            if unknown:
                raise ConfigError("scope", f"unknown scope {unknown[0]!r} (known: {', '.join(sorted(SCOPES))})")
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\r\n")
            else:
                password = getpass.getpass(f"password for {args.name}: ")
                if getpass.getpass("repeat it: ") != password:
                    raise ConfigError("password", "the two passwords differ")
    except ConfigError as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        print("error: no password given", file=sys.stderr)
        return 2

    async def run() -> list[tuple[str, tuple[str, ...]]]:
        async with UserStore(db) as store:
            if args.users_command == "add":
                await store.add_user(args.name, password, args.scope)
                return []
            return [(name, await store.scopes_of(name) or ()) for name in await store.usernames()]

    try:
        listed = asyncio.run(run())
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot use the database {db}: {exc}", file=sys.stderr)
        return 1
    if args.users_command == "add":
        print(f"user {args.name!r} added to {db} with scopes: {' '.join(sorted(set(args.scope))) or '(none)'}")
    for name, scopes in listed:
        print(f"{name}\t{' '.join(scopes)}")
    return 0


#: The most characters of a log line or template the terminal report shows (the rest: "...").
SHOWN_CHARS = 240

# C0 and C1 control characters and DEL (a tab is shown as one space)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` fit for a terminal: control characters escaped (``\\x1b``: a log line cannot
    move the cursor, retitle the window or clear the screen), tabs as spaces, at most
    ``limit`` characters (cut with ``...``). The JSON report keeps the text as it is."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.replace("\t", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _logs_summary(report: dict[str, Any], console: Any, *, top: int) -> None:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"{report['file']}: {report['source']} ({report['elapsed_s']:.1f} s)")
    t.add_column("what")
    t.add_column("figures")
    levels = ", ".join(f"{k} {v}" for k, v in report["by_level"].items())
    t.add_row(
        "lines",
        f"{report['lines']} ({report['parsed']} parsed, {report['unparsed']} unparsed, "
        f"{report['late']} late, {report['dead_lettered']} dead-lettered)",
    )
    t.add_row("levels", levels or "-")
    t.add_row("time", report["time"] or "none")  # None: no time could be read (a warning says so)
    t.add_row("templates", str(len(report["templates"])))
    settings = report["settings"]
    t.add_row(
        "windows",
        f"{len(report['windows'])} (length {settings['window_s']:g} s, slide {settings['slide_s']:g} s, "
        f"lateness {settings['allowed_lateness_s']:g} s)",
    )
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(report["alerts_by_kind"].items()))
    t.add_row("alerts", f"{len(report['alerts'])}" + (f" ({kinds})" if kinds else ""))
    console.print(t)
    tt = Table(title=f"top {min(top, len(report['templates']))} templates")
    tt.add_column("id", justify="right")
    tt.add_column("lines", justify="right")
    tt.add_column("template", overflow="fold")
    for row in report["templates"][:top]:
        tt.add_row(str(row["template_id"]), str(row["lines"]), Text(_shown(row["template"])))  # no markup
    console.print(tt)
    _print_alerts(report["alerts"], console)


def _print_alerts(alerts: list[dict[str, Any]], console: Any, *, limit: int = 50) -> None:
    """The alerts themselves, one block each: window, kind, message, the first sample line."""
    if not alerts:
        console.print("no alerts", highlight=False)
        return
    console.print(f"alerts ({len(alerts)}):", highlight=False)
    for alert in alerts[:limit]:
        start, end = alert["window_start"], alert["window_end"]
        if start[:10] == end[:10]:
            end = end[11:]
        console.print(
            f"  {start}..{end}  {alert['kind']}  {_shown(alert['message'], 2 * SHOWN_CHARS)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        evidence = alert["evidence"]
        for key, label in (("templates", "errors"), ("new_templates", "new"), ("rising_templates", "rising")):
            if alert["kind"] == "error_rate" and evidence.get(key):
                listed = ", ".join(f"{_shown(t['template'])!r} x{t['count']}" for t in evidence[key][:3])
                console.print(f"      {label}: {listed}", markup=False, highlight=False, soft_wrap=True)
        if alert["sample"]:
            console.print(f"      e.g. {_shown(alert['sample'][0])}", markup=False, highlight=False, soft_wrap=True)
    if len(alerts) > limit:
        console.print(f"  ... {len(alerts) - limit} more (all in --report)", highlight=False)


async def _run_with_progress(config: Any, *, quiet: bool, console: Any) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .demo import run_demo

    if quiet:
        return await run_demo(config)
    with Progress(
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
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
    t.add_row(
        "inventory",
        f"{o['applied']} applied, {o['rejected']} rejected, {o['dead_lettered']} dead-lettered, "
        f"{inv['stock_low_events']} stock.low events",
    )
    t.add_row("notifications", ", ".join(f"{ch}: {k}" for ch, k in n["published"].items()))
    for i, c in enumerate(n["clients"]):
        t.add_row(
            f"ws client {i + 1}",
            f"{'+'.join(c['channels'])}: received {c['received']}"
            + (" (closed 1001)" if c["completed"] else f" ({c['error']})"),
        )
    for name, s in report["logs"].items():
        levels = ", ".join(f"{k} {v}" for k, v in s["by_level"].items())
        unparsed = f", {s['unparsed']} unparsed (level 'unknown')" if s["unparsed"] else ""
        t.add_row(
            f"logs {name}", f"{s['lines']} lines ({levels}{unparsed}); {s['windows']} windows, {s['alerts']} alerts"
        )
    inv_ok = report.get("invariants", {}).get("ok")
    if inv_ok is not None:
        t.add_row("invariants", "all hold" if inv_ok else "VIOLATED")
    console.print(t)
