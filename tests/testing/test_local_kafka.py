"""The local Kafka launcher's parts that need no broker: the command-line shim, the probes, the packaged pom."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
