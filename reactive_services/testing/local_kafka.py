"""A single-node Apache Kafka broker (KRaft mode) on loopback, with no Docker, for integration tests.

Command line (``scripts/local_kafka.py`` in the repository is the same)::

    python -m reactive_services.testing.local_kafka start  [--state-dir DIR] [--port PORT]
    python -m reactive_services.testing.local_kafka stop   [--state-dir DIR]
    python -m reactive_services.testing.local_kafka status [--state-dir DIR]
    python -m reactive_services.testing.local_kafka env    [--state-dir DIR]
    python -m reactive_services.testing.local_kafka fetch

``start`` prints ``KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>`` once the broker answers a
Kafka ``ApiVersions`` request; ``env`` prints ``export KAFKA_BOOTSTRAP_SERVERS=...`` for a
running broker (``eval "$(python scripts/local_kafka.py env)"``); ``fetch`` only downloads
the jars into the cache (for CI set-up) and prints their directory.

The broker jars come from Maven Central through the machine's ``mvn`` (the dependency list is
``kafka-pom.xml``, shipped beside this module) and are cached in
``${RS_KAFKA_CACHE:-~/.cache/reactive-services}/kafka-<version>/libs``; only the first run
downloads. ``java`` (17 or later) and ``mvn`` must be on ``PATH``.

State (``server.properties``, the log4j2 config, ``data/``, ``broker.log``, ``state.json``)
lives in the state directory, ``./.local-kafka`` by default.

The same operations from Python (standard library only), e.g. in a session-scoped fixture::

    from reactive_services.testing import local_kafka

    @pytest.fixture(scope="session")
    def kafka_bootstrap(tmp_path_factory) -> Iterator[str]:
        state_dir = tmp_path_factory.mktemp("kafka")
        bootstrap = local_kafka.start(state_dir)    # "127.0.0.1:<port>"
        yield bootstrap
        local_kafka.stop(state_dir)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = [
    "KAFKA_VERSION",
    "LocalKafkaError",
    "api_versions_ok",
    "ensure_libs",
    "is_running",
    "start",
    "status",
    "stop",
]

#: The Apache Kafka version resolved by kafka-pom.xml (keep the two in step).
KAFKA_VERSION = "4.1.1"

DEFAULT_STATE_DIR = ".local-kafka"
#: The Maven project listing the broker's jars (package data beside this module).
POM = Path(__file__).resolve().parent / "kafka-pom.xml"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


#: Brokers this process started, so their Popen objects are kept (and reaped by ``stop``).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LocalKafkaError(RuntimeError):
    """The local broker could not be installed, started or stopped."""


# --------------------------------------------------------------------------- jars


def cache_root() -> Path:
    """``$RS_KAFKA_CACHE`` or ``~/.cache/reactive-services``."""
    return Path(os.environ.get("RS_KAFKA_CACHE") or Path.home() / ".cache" / "reactive-services")


def ensure_libs(version: str = KAFKA_VERSION) -> Path:
    """Return the directory holding the broker jars, downloading them with ``mvn`` if needed.

    Raises:
        LocalKafkaError: ``mvn`` is missing or failed.
    """
    home = cache_root() / f"kafka-{version}"
    libs = home / "libs"
    if (home / ".complete").exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError("`mvn` is not on PATH; install Maven (apt-get install maven) or use Docker")
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
    ]
    print(f"local_kafka: fetching Apache Kafka {version} jars with mvn (first run only)...", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LocalKafkaError(f"mvn failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    if libs.exists():
        shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    (home / ".complete").write_text(version + "\n")
    return libs


# --------------------------------------------------------------------------- probes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """True when nothing listens on ``port`` (connections of a stopped broker in TIME_WAIT
    do not count: the JVM binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def api_versions_ok(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions (v0) request with error code 0.

    A KRaft broker opens its client listener only once it has caught up with the
    metadata log, so a successful answer means the broker is ready for clients.
    """
    client_id = b"local_kafka"
    correlation_id = 7
    # Request header v1: api_key int16 (18 = ApiVersions), api_version int16, correlation_id
    # int32, client_id nullable string; ApiVersions v0 has an empty body.
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, size)
    except (OSError, ConnectionError, struct.error):
        return False
    if len(payload) < 6:
        return False
    got_id, error_code = struct.unpack(">ih", payload[:6])
    return bool(got_id == correlation_id and error_code == 0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
    except OSError:
        pass
    return True


def _is_our_broker(pid: int) -> bool:
    """The pid is alive and (where /proc exists) runs ``kafka.Kafka``."""
    if not _pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"kafka.Kafka" in f.read()
    except OSError:
        return True  # no /proc: trust the pid


# --------------------------------------------------------------------------- state


def _state_path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def _read_state(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    tmp = _state_path(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(_state_path(state_dir))


def is_running(state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> bool:
    """True when the broker recorded in ``state_dir`` is alive."""
    state = _read_state(Path(state_dir))
    pid = state.get("pid")
    return isinstance(pid, int) and _is_our_broker(pid)


def status(state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """``{"running": bool, "ready": bool, "pid": int|None, "bootstrap": str|None, ...}``."""
    state = _read_state(Path(state_dir))
    running = is_running(state_dir)
    ready = running and api_versions_ok(HOST, int(state["port"]))
    return {**state, "running": running, "ready": ready}


# --------------------------------------------------------------------------- config


def _server_properties(state_dir: Path, port: int, cport: int) -> str:
    data = state_dir / "data"
    return "\n".join(
        [
            "# written by scripts/local_kafka.py; single-node KRaft broker for development and tests",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{cport}",
            f"listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=3",
            "default.replication.factor=1",
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=5",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=5",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "num.network.threads=2",
            "num.io.threads=4",
            "log.retention.hours=24",
            "",
        ]
    )


def _log4j2_properties(state_dir: Path) -> str:
    log = state_dir / "broker.log"
    return "\n".join(
        [
            "# written by scripts/local_kafka.py: broker logs at WARN into broker.log",
            "status = error",
            "name = local-kafka",
            "appender.file.type = File",
            "appender.file.name = FILE",
            f"appender.file.fileName = {log}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = WARN",
            "rootLogger.appenderRef.file.ref = FILE",
            "",
        ]
    )


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError(
            "`java` (17 or later) is not on PATH; install a JDK (apt-get install openjdk-17-jre-headless)"
        )
    return java


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- start / stop


def start(
    state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
    port: int | None = None,
    *,
    timeout_s: float = START_TIMEOUT_S,
) -> str:
    """Start the broker (or find it running) and return its bootstrap address ``"127.0.0.1:<port>"``.

    Args:
        state_dir: where config, data, logs and ``state.json`` live (created if missing).
        port: the client port; a free one is picked when None (a previous run's port is
            reused when it is still free).
        timeout_s: how long to wait for the broker to answer, in seconds.

    Raises:
        LocalKafkaError: java/mvn missing, storage format failed, or the broker did not
            answer within ``timeout_s`` (the message ends with the tail of its log).
    """
    sd = Path(state_dir).resolve()
    sd.mkdir(parents=True, exist_ok=True)
    previous = _read_state(sd)
    if is_running(sd):
        bootstrap = previous["bootstrap"]
        if port is None or int(previous["port"]) == port:
            if _wait_ready(int(previous["port"]), int(previous["pid"]), timeout_s):
                return str(bootstrap)
        raise LocalKafkaError(f"a broker is already running from {sd} at {bootstrap}; stop it first")

    java = _java()
    libs = ensure_libs()
    attempts = 1 if port is not None else 3  # a picked port can be taken before the JVM binds it
    for attempt in range(attempts):
        try:
            return _launch(sd, java, libs, port, previous if attempt == 0 else {}, timeout_s)
        except _EarlyExit as exc:
            if attempt == attempts - 1:
                raise LocalKafkaError(str(exc)) from None
    raise AssertionError("unreachable")


class _EarlyExit(LocalKafkaError):
    """The broker process exited while starting."""


def _launch(sd: Path, java: str, libs: Path, port: int | None, previous: dict[str, Any], timeout_s: float) -> str:
    if port is None:
        old = previous.get("port")
        port = int(old) if isinstance(old, int) and port_free(old) else free_port()
    old_c = previous.get("controller_port")
    cport = int(old_c) if isinstance(old_c, int) and old_c != port and port_free(old_c) else free_port()
    while cport == port:
        cport = free_port()
    for p in (port, cport):
        if not port_free(p):
            raise _EarlyExit(f"port {p} on {HOST} is already in use")

    props = sd / "server.properties"
    props.write_text(_server_properties(sd, port, cport))
    log4j = sd / "log4j2.properties"
    log4j.write_text(_log4j2_properties(sd))
    classpath = f"{libs}/*"
    jvm_common = [f"-Dlog4j2.configurationFile={log4j}", "-Djava.awt.headless=true"]

    if not (sd / "data" / "meta.properties").exists():
        cluster_id = previous.get("cluster_id") or _cluster_id()
        fmt = subprocess.run(
            [
                java,
                "-Xmx256m",
                *jvm_common,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if fmt.returncode != 0:
            raise LocalKafkaError(f"kafka-storage format failed ({fmt.returncode}):\n{fmt.stdout[-4000:]}")
    else:
        cluster_id = _read_state(sd).get("cluster_id", "")

    out = open(sd / "broker.out", "ab")  # JVM stdout/stderr (crashes before log4j starts)
    try:
        proc = subprocess.Popen(
            [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", *jvm_common, "-cp", classpath, "kafka.Kafka", str(props)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=sd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        out.close()
    _CHILDREN[proc.pid] = proc
    bootstrap = f"{HOST}:{port}"
    _write_state(
        sd,
        {
            "pid": proc.pid,
            "bootstrap": bootstrap,
            "port": port,
            "controller_port": cport,
            "cluster_id": cluster_id,
            "version": KAFKA_VERSION,
            "started_at": time.time(),
        },
    )
    if not _wait_ready(port, proc.pid, timeout_s, proc):
        alive = proc.poll() is None
        if alive:
            _terminate(proc.pid, 10.0)
        what = f"did not answer within {timeout_s:.0f} s" if alive else f"exited with {proc.returncode}"
        message = (
            f"Kafka broker {what} (state dir {sd}).\n--- broker.out ---\n{_tail(sd / 'broker.out')}"
            f"\n--- broker.log ---\n{_tail(sd / 'broker.log')}"
        )
        raise LocalKafkaError(message) if alive else _EarlyExit(message)
    return bootstrap


def _cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding (22 chars).

    Never one that starts with ``-``: ``kafka-storage format -t <id>`` would read it as an option
    (about one id in 64 did; Kafka's own ``Uuid.randomUuid`` skips those ids too).
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _wait_ready(port: int, pid: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if proc is None and not _pid_alive(pid):
            return False
        if api_versions_ok(HOST, port, timeout_s=1.0):
            return True
        time.sleep(0.2)
    return False


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; reaps the child if it is ours."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        _reap(pid)
        if not _pid_alive(pid):
            return
        time.sleep(0.1)


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR, *, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the broker recorded in ``state_dir``: SIGTERM, then SIGKILL after ``timeout_s`` seconds.

    Returns True when a broker was running. Data and logs stay in ``state_dir``.
    """
    sd = Path(state_dir).resolve()
    state = _read_state(sd)
    pid = state.get("pid")
    was_running = False
    if isinstance(pid, int) and _is_our_broker(pid):
        was_running = True
        _terminate(pid, timeout_s)
    if state:
        state["pid"] = None
        _write_state(sd, state)
    return was_running


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local single-node Apache Kafka broker (KRaft).")
    parser.add_argument("command", choices=["start", "stop", "status", "env", "fetch"])
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="default: ./.local-kafka")
    parser.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(f"KAFKA_BOOTSTRAP_SERVERS={start(args.state_dir, args.port)}")
            return 0
        if args.command == "fetch":
            print(ensure_libs())
            return 0
        if args.command == "stop":
            print("stopped" if stop(args.state_dir) else "not running")
            return 0
        st = status(args.state_dir)
        if args.command == "status":
            if st["running"]:
                print(f"running pid={st['pid']} bootstrap={st['bootstrap']} ready={st['ready']}")
                return 0
            print("not running")
            return 1
        if not st["running"]:
            print(f"local_kafka: no broker running from {args.state_dir}", file=sys.stderr)
            return 1
        print(f"export KAFKA_BOOTSTRAP_SERVERS={st['bootstrap']}")
        return 0
    except LocalKafkaError as exc:
        print(f"local_kafka: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
