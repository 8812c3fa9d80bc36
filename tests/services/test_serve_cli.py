"""`reactive-services serve` refuses bad settings at start: one line naming the setting, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def serve(*args: str, timeout: float = 30.0) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RS_JWT_")}
    started = time.monotonic()
    proc = subprocess.run(
        # --grpc-port 0: the inventory's gRPC server (bound first) never on a port someone else holds
        [sys.executable, "-m", "reactive_services.cli", "serve", "--dev", "--grpc-port", "0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return proc.returncode, proc.stderr.strip(), time.monotonic() - started


def test_a_port_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err, seconds = serve("--port", str(port), "--data-dir", str(tmp_path))
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith("error: bad configuration: port: ") and str(port) in line
    assert seconds < 15


def test_a_host_that_does_not_resolve_is_a_configuration_error(tmp_path: Path) -> None:
    code, err, _ = serve("--host", "no-such-host.invalid", "--port", "0", "--data-dir", str(tmp_path))
    assert code == 2 and err.startswith("error: bad configuration: host: ")


def test_a_database_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    (tmp_path / "inventory.db").write_bytes(b"this is not a database" * 100)
    code, err, _ = serve("--port", "0", "--data-dir", str(tmp_path))
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith("error: bad configuration: data_dir: ") and "inventory.db" in line
