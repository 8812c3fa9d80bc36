"""A RabbitMQ server of its own on loopback, from Debian's ``rabbitmq-server`` package, for
integration tests (no Docker, no system service).

Command line::

    python -m reactive_services.testing.local_rabbitmq start  [--state-dir DIR] [--port PORT]
    python -m reactive_services.testing.local_rabbitmq stop   [--state-dir DIR]
    python -m reactive_services.testing.local_rabbitmq status [--state-dir DIR]

``start`` prints ``RABBITMQ_URL=amqp://guest:guest@127.0.0.1:<port>/`` once the server answers
the AMQP 0-9-1 protocol header with ``Connection.Start``.

Each server is a node of its own: node name ``rs-<8 hex>@localhost``, AMQP and Erlang
distribution ports chosen free on 127.0.0.1 (or ``--port``), and everything it writes (its
Mnesia database, logs, the Erlang cookie, its config: ``127.0.0.1`` only, no plugins) in the
state directory, ``./.local-rabbitmq`` by default. Started again on the same state directory
(``port=`` the same to come back where clients look), it is the same node, with its durable
queues and persistent messages. Several can run side by side, and beside a
system RabbitMQ. The only shared piece is Erlang's port mapper daemon (``epmd``, port 4369),
which the first node starts and which outlives it, as it does for every Erlang node.

Needs Debian's ``rabbitmq-server`` (3.10 here): ``apt-get install rabbitmq-server``;
``scripts/install_tools.sh`` installs it. Its system service is not used (or started).

From Python, e.g. in a session-scoped fixture::

    from reactive_services.testing import local_rabbitmq

    @pytest.fixture(scope="session")
    def rabbitmq_url(tmp_path_factory) -> Iterator[str]:
        state_dir = tmp_path_factory.mktemp("rabbitmq")
        url = local_rabbitmq.start(state_dir)       # "amqp://guest:guest@127.0.0.1:<port>/"
        yield url
        local_rabbitmq.stop(state_dir)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["LocalRabbitMQError", "amqp_ok", "is_running", "server_command", "start", "status", "stop"]

DEFAULT_STATE_DIR = Path(".local-rabbitmq")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

#: Where Debian installs the server's own scripts (``/usr/sbin/rabbitmq-server`` switches to
#: the ``rabbitmq`` user and the system's folders; these run as the caller with our settings).
_DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")


class LocalRabbitMQError(RuntimeError):
    """The server cannot be started (not installed, exited early, not ready in time)."""


def server_command() -> Path:
    """The ``rabbitmq-server`` script to run.

    Raises:
        LocalRabbitMQError: RabbitMQ is not installed (the message says how to install it).
    """
    script = _DEBIAN_BIN / "rabbitmq-server"
    if script.is_file():
        return script
    raise LocalRabbitMQError(
        "RabbitMQ is not installed: apt-get install rabbitmq-server (scripts/install_tools.sh does it), "
        "or set RABBITMQ_URL to a running server"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def amqp_ok(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when an AMQP 0-9-1 server at ``host:port`` answers the protocol header with a
    method frame (its ``Connection.Start``)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
    except OSError:
        return False
    return len(frame) == 7 and frame[0] == 1  # frame type 1: a method frame


def _state_path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def _read_state(state_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(_state_path(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    return state


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_running(state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> bool:
    """True when the server of ``state_dir`` runs and answers AMQP."""
    state = _read_state(Path(state_dir))
    pid = state.get("pid")
    return isinstance(pid, int) and _pid_alive(pid) and amqp_ok("127.0.0.1", int(state["port"]))


def status(state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """``{"running": bool, "url", "port", "node", "pid"}`` (the last four when it was started)."""
    state = _read_state(Path(state_dir))
    return {"running": is_running(state_dir), **state}


def _env(sd: Path, node: str, port: int, dist_port: int) -> dict[str, str]:
    home = sd / "home"  # the Erlang cookie lives in $HOME
    home.mkdir(parents=True, exist_ok=True)
    (sd / "enabled_plugins").write_text("[].\n")
    (sd / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\n"
        "log.console = false\n"
        f"log.file = {sd / 'log' / 'rabbit.log'}\n"
        "disk_free_limit.absolute = 50MB\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
    env.update(
        HOME=str(home),
        RABBITMQ_NODENAME=node,
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_MNESIA_BASE=str(sd / "mnesia"),
        RABBITMQ_LOG_BASE=str(sd / "log"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(sd / "enabled_plugins"),
        RABBITMQ_CONFIG_FILE=str(sd / "rabbitmq.conf"),
        RABBITMQ_PID_FILE=str(sd / "rabbitmq.pid"),
    )
    return env


def start(
    state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
    *,
    port: int | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> str:
    """Start a server (or reuse the one of ``state_dir`` if it runs); returns its AMQP URL.

    Raises:
        LocalRabbitMQError: not installed, it exited early (the message quotes its output), or
            it did not answer AMQP within ``timeout_s`` seconds (it is stopped then).
    """
    sd = Path(state_dir).resolve()
    sd.mkdir(parents=True, exist_ok=True)
    if is_running(sd):
        url: str = _read_state(sd)["url"]
        return url
    script = server_command()
    port = port or _free_port()
    dist_port = _free_port()
    # the node of an earlier run of this state dir comes back under its own name: RabbitMQ keeps
    # a node's database (queues, persistent messages) in ``mnesia/<node>``, so a new name would
    # start from an empty one
    node = _read_state(sd).get("node") or f"rs-{uuid.uuid4().hex[:8]}@localhost"
    out = open(sd / "server.out", "wb")  # noqa: SIM115 - the server keeps writing after we return
    proc = subprocess.Popen(
        [str(script)],
        cwd=sd,
        env=_env(sd, node, port, dist_port),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() signals the whole node
    )
    out.close()
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    _state_path(sd).write_text(json.dumps({"pid": proc.pid, "port": port, "node": node, "url": url}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalRabbitMQError(f"rabbitmq-server exited with {proc.returncode}:\n{_tail(sd / 'server.out')}")
        if amqp_ok("127.0.0.1", port):
            return url
        time.sleep(0.25)
    stop(sd)
    raise LocalRabbitMQError(f"rabbitmq-server did not answer on port {port} within {timeout_s:g} s")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output)"


def stop(state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR, *, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the server of ``state_dir`` (SIGTERM to its process group, SIGKILL after
    ``timeout_s`` seconds); returns whether one was running."""
    sd = Path(state_dir)
    state = _read_state(sd)
    pid = state.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:  # not our child (started by another process): poll instead
            if not _pid_alive(pid):
                break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_rabbitmq", description="A RabbitMQ server on loopback for tests.")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(f"RABBITMQ_URL={start(args.state_dir, port=args.port)}")
        elif args.command == "stop":
            print("stopped" if stop(args.state_dir) else "not running")
        else:
            print(json.dumps(status(args.state_dir)))
    except LocalRabbitMQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
