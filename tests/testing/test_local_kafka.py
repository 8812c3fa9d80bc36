"""The local Kafka launcher's parts that need no broker: the command-line shim, the probes, the packaged pom."""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from reactive_services.testing import local_kafka

ROOT = Path(__file__).resolve().parents[2]


def test_the_jar_list_ships_beside_the_module() -> None:
    assert local_kafka.POM.is_file()
    assert f"<kafka.version>{local_kafka.KAFKA_VERSION}</kafka.version>" in local_kafka.POM.read_text()


def test_nothing_runs_in_a_fresh_state_dir(tmp_path: Path) -> None:
    assert not local_kafka.is_running(tmp_path)
    assert local_kafka.status(tmp_path)["running"] is False
    assert local_kafka.stop(tmp_path) is False
    assert not local_kafka.api_versions_ok("127.0.0.1", local_kafka.free_port(), timeout_s=0.5)


def test_the_script_is_a_shim_over_the_module(tmp_path: Path) -> None:
    for command in (
        [sys.executable, str(ROOT / "scripts" / "local_kafka.py")],
        [sys.executable, "-m", local_kafka.__name__],
    ):
        done = subprocess.run(
            [*command, "status", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout.strip()) == (1, "not running"), done.stderr


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # `kafka-storage format -t -xyz...` reads an id that starts with "-" as an option; 16 random
    # bytes whose first 6 bits are 62 encode to such an id (about 1 in 64)
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))
    plain = uuid.UUID(bytes=b"\x10" + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")  # the case is real
    drawn = iter([dashed, dashed, plain])
    monkeypatch.setattr(local_kafka.uuid, "uuid4", lambda: next(drawn))
    cluster_id = local_kafka._cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
