"""reactive-services: the command line.

``reactive-services run MODULE:ATTRIBUTE [--app MODULE:ATTRIBUTE] [--host HOST] [--port PORT]
[--shutdown-timeout SECONDS] [--log-level LEVEL]`` imports ``MODULE`` (from the current folder
first, as uvicorn does) and runs ``ATTRIBUTE`` with :func:`reactive_services.run`: a
Microservice, a list of them, a :class:`reactive_services.System`, or a factory (a callable
without arguments, sync or async, returning one of those). ``--app`` adds an ASGI app served on
uvicorn at ``--host``:``--port``. It prints ``ready`` (with the app's URL) once everything runs,
and stops gracefully on SIGTERM / SIGINT.

``reactive-services asyncapi MODULE:ATTRIBUTE [--format json|yaml] [--output FILE]`` writes the
AsyncAPI 3.0 document (:mod:`reactive_services.asyncapi`) of ``ATTRIBUTE``: a
:class:`~reactive_services.asyncapi.Deployment`, a Microservice, a ClientProxy, a System, a
list of those, or a factory returning one (nothing is started). ``reactive-services topology
MODULE:ATTRIBUTE [--format svg|dot|mermaid] [--output FILE]`` draws the same applications'
topology (:mod:`reactive_services.topology`; SVG needs Graphviz's ``dot``).

``reactive-services token --sub NAME [--scope S ...] [--ttl SECONDS] [--secret SECRET]`` prints a
development access token signed with the ``RS_JWT_*`` configuration (:mod:`reactive_services.auth`).

Other commands come from installed packages (the shop's ``demo``, ``serve``, ``logs analyze``,
``users``): every entry point of the group :data:`ENTRY_POINT_GROUP` names a function
``register(commands)``, called with the ``argparse`` sub-parsers action of ``reactive-services``;
it adds its commands, each with ``set_defaults(handler=fn)``, where ``fn(args) -> int`` returns the
exit code. In ``pyproject.toml``::

    [project.entry-points."reactive_services.cli"]
    shop = "reactive_services.examples.shop.cli:register"

A package whose commands cannot be loaded is named in one warning line on stderr; the other
commands still work.

Exit codes: 0 done; 1 a failure while running (one line on stderr); 2 bad configuration, a bad
``MODULE:ATTRIBUTE``, or a broker that cannot be reached (one line on stderr); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, cast

from ._run import ASGIApp, Running, RunTarget, serve
from .auth import JwtConfig, issue_token
from .errors import BrokerUnavailableError, ConfigError, ValidationError

__all__ = ["ENTRY_POINT_GROUP", "Commands", "LoadError", "check_writable", "load", "main", "run_command"]

T = TypeVar("T")

#: The entry-point group of the packages that add commands (see the module docstring).
ENTRY_POINT_GROUP = "reactive_services.cli"

#: An argparse ``add_subparsers()`` action: what ``register(commands)`` receives.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    # aiokafka logs every failed connection attempt and group-coordinator retry at ERROR;
    # the CLI reports the outcome itself (one line), so only its CRITICAL lines are shown.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reactive-services", description="Reactive, event-driven microservices.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_describe(commands)
    _add_token(commands)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            register = ep.load()
            register(commands)
        except Exception as exc:  # one package's broken commands must not take the others down
            print(
                f"warning: the commands of {ep.name!r} ({ep.value}) cannot be loaded: {_one_line(exc)}", file=sys.stderr
            )
    return parser


# --------------------------------------------------------------------------- helpers for commands


def run_command(run: Callable[[], Coroutine[Any, Any, T]]) -> tuple[int, T | None]:
    """``asyncio.run(run())``, with a failure reported as one line on stderr, not a traceback.

    Returns:
        ``(0, result)``; or ``(2, None)`` for a bad configuration (``error: bad configuration:
        KEY: ...``) or an unreachable broker, ``(130, None)`` when interrupted, ``(1, None)``
        for any other failure (``error: TYPE: message``).
    """
    try:
        return 0, asyncio.run(run())
    except ConfigError as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2, None
    except BrokerUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130, None
    except Exception as exc:  # one line, not a traceback
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1, None


def _one_line(exc: BaseException) -> str:
    """``TYPE: message`` of ``exc`` (of the first leaf of an exception group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def check_writable(path: str | Path, key: str = "report", *, parents: bool = True, example: str = "out.json") -> Path:
    """Fail at start, not after the run, when ``path`` cannot be written.

    Args:
        path: the file to write; a string keeps a trailing ``/``, which names a folder.
        key: the setting (or flag) named in the error.
        parents: create missing parent folders (the default); False: a missing parent folder
            is an error.
        example: the file name suggested in the folder ``path`` names (``out.csv`` for a CSV).

    Returns:
        ``path`` as a :class:`~pathlib.Path` (the file exists, possibly empty: opened for appending).

    Raises:
        ConfigError(key, ...): ``path`` names a folder (ends with ``/`` or is one), its parent
            folder does not exist (with ``parents=False``) or is not a folder, or the file
            cannot be opened for appending.
    """
    text = str(path)
    path = Path(path)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise ConfigError(key, f"{text} is a folder, not a file: give a file name (e.g. {path / example})")
    if not parents and not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise ConfigError(key, f"cannot write {text}: the folder {path.parent} {what} (create it first)")
    try:
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ConfigError(key, f"cannot write {text}: {exc.strerror or exc}") from exc
    return path


class LoadError(ValueError):
    """A ``MODULE:ATTRIBUTE`` reference that does not name an object (the message says why)."""


def load(reference: str) -> object:
    """The object ``MODULE:ATTRIBUTE`` names (``ATTRIBUTE`` may be dotted: ``app:system.services``).

    The current folder is searched first for ``MODULE`` (as ``uvicorn module:app`` does).

    Raises:
        LoadError: not of the form ``MODULE:ATTRIBUTE``, no such module, or no such attribute.
        Exception: whatever importing ``MODULE`` raised otherwise (an error in the module itself).
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise LoadError(f"{reference!r} is not MODULE:ATTRIBUTE (e.g. myapp.main:services)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise LoadError(f"cannot import {reference!r}: no module named {exc.name!r}") from exc
        raise
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise LoadError(
                f"cannot load {reference!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return found


# --------------------------------------------------------------------------- run


def _add_run(commands: Commands) -> None:
    run = commands.add_parser(
        "run",
        help="run services (and an ASGI app) from MODULE:ATTRIBUTE until SIGTERM / SIGINT",
        description="Import MODULE and run ATTRIBUTE: a Microservice, a list of them, a reactive_services.System, "
        "or a factory (a callable without arguments, sync or async, returning one of those). The brokers "
        "that are not started are started (and stopped at the end). On SIGTERM / SIGINT the services stop "
        "fetching, finish in-flight work, commit and close.",
    )
    run.add_argument("target", metavar="MODULE:ATTRIBUTE", help="what to run, e.g. myapp.main:services")
    run.add_argument("--app", metavar="MODULE:ATTRIBUTE", help="an ASGI app to serve on uvicorn while they run")
    run.add_argument("--host", default="127.0.0.1", help="the app's address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="the app's port (default 8000; 0: any free port)")
    run.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds each service may take to finish in-flight work at shutdown (default 30)",
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="level of the reactive_services loggers (default warning)",
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        target = load(args.target)
        app = load(args.app) if args.app else None
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the user's module failed while being imported
        print(f"error: importing failed: {_one_line(exc)}", file=sys.stderr)
        return 1
    if app is not None and not callable(app):
        print(f"error: --app {args.app!r} is not an ASGI app (not callable)", file=sys.stderr)
        return 2
    logging.getLogger("reactive_services").setLevel(args.log_level.upper())

    def ready(running: Running) -> None:
        names = ", ".join(s.name for s in running.services) or "no services"
        print(f"running {names}" + (f" at {running.url}" if running.url else ""), flush=True)
        print("ready", flush=True)

    code, exit_code = run_command(
        lambda: serve(
            cast(RunTarget, target),  # checked by serve: a ConfigError names what it is
            app=cast(ASGIApp | None, app),  # callable (checked above); uvicorn checks the protocol
            host=args.host,
            port=args.port,
            on_ready=ready,
            shutdown_timeout_s=args.shutdown_timeout,
        )
    )
    return code or (exit_code or 0)


# --------------------------------------------------------------------------- asyncapi, topology


def _add_describe(commands: Commands) -> None:
    target_help = (
        "what to describe: a reactive_services.asyncapi.Deployment, a Microservice, a ClientProxy, a System, a list "
        "of those, or a factory (a callable without arguments, sync or async) returning one; nothing is started"
    )
    doc = commands.add_parser(
        "asyncapi",
        help="write the AsyncAPI 3.0 document of services and clients from MODULE:ATTRIBUTE",
        description="Write the AsyncAPI 3.0 document of the services and clients MODULE:ATTRIBUTE names: "
        "channels (topics, dead-letter and reply topics), operations, payload schemas from the handlers' types.",
    )
    doc.add_argument("target", metavar="MODULE:ATTRIBUTE", help=target_help)
    doc.add_argument("--format", choices=["json", "yaml"], default="json", help="default json")
    doc.add_argument("--output", "-o", type=Path, metavar="FILE", help="write to FILE (default: standard output)")
    doc.set_defaults(handler=_asyncapi)
    topo = commands.add_parser(
        "topology",
        help="draw which service consumes and produces which topic and answers which request",
        description="Draw the topology of the services and clients MODULE:ATTRIBUTE names, as SVG (Graphviz's "
        "dot, Debian package graphviz), DOT source or a Mermaid flowchart.",
    )
    topo.add_argument("target", metavar="MODULE:ATTRIBUTE", help=target_help)
    topo.add_argument("--format", choices=["svg", "dot", "mermaid"], default="svg", help="default svg")
    topo.add_argument("--output", "-o", type=Path, metavar="FILE", help="write to FILE (default: standard output)")
    topo.add_argument("--no-dead-letters", action="store_true", help="leave the dead-letter topics out")
    topo.set_defaults(handler=_topology)


def _describe(args: argparse.Namespace, write: Callable[[Any], bytes]) -> int:
    try:
        target = load(args.target)
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the user's module failed while being imported
        print(f"error: importing failed: {_one_line(exc)}", file=sys.stderr)
        return 1

    async def build() -> bytes:
        found: Any = target
        if callable(found) and not isinstance(found, type):
            from ._contract import Deployment
            from ._runtime import ClientProxy, Microservice

            if not isinstance(found, Microservice | ClientProxy | Deployment):
                found = found()
                if inspect.isawaitable(found):
                    found = await found
        return write(found)

    code, data = run_command(build)
    if code or data is None:
        return code or 1
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_bytes(data)
        except OSError as exc:
            print(
                f"error: bad configuration: --output: cannot write {args.output}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
    return 0


def _asyncapi(args: argparse.Namespace) -> int:
    from .asyncapi import asyncapi_document, dumps

    return _describe(args, lambda found: dumps(asyncapi_document(found), args.format))


def _topology(args: argparse.Namespace) -> int:
    from .topology import render_svg, topology

    def write(found: Any) -> bytes:
        graph = topology(found, dead_letters=not args.no_dead_letters)
        if args.format == "mermaid":
            return graph.to_mermaid().encode()
        if args.format == "dot":
            return graph.to_dot().encode()
        return render_svg(graph.to_dot())

    return _describe(args, write)


# --------------------------------------------------------------------------- token


def _add_token(commands: Commands) -> None:
    tok = commands.add_parser(
        "token",
        help="print a development access token (JWT) signed with the RS_JWT_* configuration",
        description="Sign an access token with the configuration of the environment (RS_JWT_ALGORITHM, "
        "RS_JWT_SECRET or RS_JWT_PRIVATE_KEY[_FILE], RS_JWT_ISSUER, RS_JWT_AUDIENCE, RS_JWT_TTL_S) "
        "and print it on one line. For development: a real login goes through the auth service.",
    )
    tok.add_argument("--sub", required=True, metavar="NAME", help="the subject (user) of the token")
    tok.add_argument(
        "--scope", action="append", default=[], metavar="SCOPE", help="a granted scope, e.g. orders:write; repeatable"
    )
    tok.add_argument("--ttl", type=int, metavar="SECONDS", help="lifetime (default RS_JWT_TTL_S, else 3600)")
    tok.add_argument(
        "--secret",
        metavar="SECRET",
        help="sign with HS256 and this secret (>= 32 bytes) instead of RS_JWT_SECRET / keys; "
        "development only: it shows in the process list",
    )
    tok.set_defaults(handler=_token)


def _token(args: argparse.Namespace) -> int:
    try:
        env = dict(os.environ)
        if args.secret is not None:
            env.update(RS_JWT_ALGORITHM="HS256", RS_JWT_SECRET=args.secret)
        try:
            config = JwtConfig.from_env(env)
        except ConfigError as exc:
            if args.secret is not None and exc.key == "RS_JWT_SECRET":
                raise ConfigError("--secret", str(exc).split(": ", 1)[1]) from None
            raise
        if args.ttl is not None and args.ttl < 1:
            raise ConfigError("--ttl", f"must be >= 1 second, got {args.ttl}")
        if not config.can_issue:
            raise ConfigError("RS_JWT_PRIVATE_KEY", "not set: RS256 needs the private key (or _FILE) to sign tokens")
        token = issue_token(config, args.sub, args.scope, ttl_s=args.ttl)
    except (ConfigError, ValidationError) as exc:
        print(f"error: bad configuration: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
