"""scripts/install_tools.sh, run on a copy of the scripts with fake node, npm, dot, apt-get, sudo
and id on PATH (no network, no root): ``npm ci`` only when scripts/asyncapi/node_modules is
missing or older than the lock file, Debian's packages only for the commands that are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the real commands the script itself runs
REAL = ("bash", "dirname", "id", "touch")


class Sandbox:
    """A copy of install_tools.sh and the validator's package files, and a PATH of fakes only."""

    def __init__(self, tmp: Path) -> None:
        self.repo = tmp / "repo"
        self.bin = tmp / "bin"
        self.log = tmp / "calls.log"
        (self.repo / "scripts" / "asyncapi").mkdir(parents=True)
        shutil.copy2(ROOT / "scripts" / "install_tools.sh", self.repo / "scripts")
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(ROOT / "scripts" / "asyncapi" / name, self.repo / "scripts" / "asyncapi")
        self.bin.mkdir()
        for name in REAL:  # copies, never links: a fake written over one must not reach the system's
            real = shutil.which(name)
            assert real is not None, name
            shutil.copy2(real, self.bin / name)
        # node, npm, dot: log the call (npm ci: "installs", or fails when NPM_FAILS is set)
        self.fake(".tool", f'[ -z "$NPM_FAILS" ] || exit 1\n{shutil.which("mkdir")} -p node_modules')
        # apt-get install: "installs" the commands of the packages named
        packages = "nodejs) c=node;; npm) c=npm;; graphviz) c=dot;; *) continue;;"
        install = f"{shutil.which('cp')} {self.bin}/.tool {self.bin}/$c"
        self.fake("apt-get", f'for p in "$@"; do case $p in {packages} esac; {install}; done')
        self.log.touch()

    def fake(self, name: str, body: str = "", log: bool = True) -> None:
        """A command that logs ``name args @folder`` then runs ``body``."""
        path = self.bin / name
        path.unlink(missing_ok=True)  # replace the file (say the copy of id), never write into it
        logged = f'echo "${{0##*/}} $* @${{PWD##*/}}" >> {self.log}\n' if log else ""
        path.write_text(f"#!/bin/bash\n{logged}{body}\n")
        path.chmod(0o755)

    def tools(self, *names: str) -> None:
        for name in names:
            (self.bin / name).unlink(missing_ok=True)
            shutil.copy2(self.bin / ".tool", self.bin / name)

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        self.log.write_text("")
        return subprocess.run(
            [str(self.repo / "scripts" / "install_tools.sh")],
            # RabbitMQ counts as installed (a file that exists) unless a test says otherwise
            env={"PATH": str(self.bin), "RS_RABBITMQ_SERVER": str(self.bin / "bash"), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    @property
    def stamp(self) -> Path:
        return self.repo / "scripts" / "asyncapi" / "node_modules" / ".installed"


APT = "apt-get -q -o DPkg::Lock::Timeout=300 install -y"
NPM_CI = "npm ci --ignore-scripts --no-audit --no-fund --loglevel=error @asyncapi"


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def test_npm_ci_runs_when_node_modules_is_missing_or_older_than_the_lock(box: Sandbox) -> None:
    box.tools("node", "npm", "dot")
    first = box.run()
    assert first.returncode == 0, first.stderr
    assert box.calls() == [NPM_CI]
    assert box.stamp.exists()

    again = box.run()  # installed and up to date: nothing runs
    assert again.returncode == 0, again.stderr
    assert box.calls() == []

    lock = box.repo / "scripts" / "asyncapi" / "package-lock.json"
    later = box.stamp.stat().st_mtime + 10
    os.utime(lock, (later, later))  # e.g. a pull that changed the lock
    assert box.run().returncode == 0
    assert box.calls() == [NPM_CI]


def test_a_failed_npm_ci_leaves_no_stamp_and_is_retried(box: Sandbox) -> None:
    box.tools("node", "npm", "dot")
    failed = box.run(NPM_FAILS="1")
    assert failed.returncode != 0
    assert not box.stamp.exists()
    assert box.run().returncode == 0
    assert box.calls() == [NPM_CI] and box.stamp.exists()


def test_missing_commands_are_installed_from_debian_packages(box: Sandbox) -> None:
    box.fake("id", "echo 0", log=False)
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert box.calls() == [f"{APT} nodejs npm graphviz @repo", NPM_CI]
    assert box.stamp.exists()


def test_not_root_uses_sudo_or_says_what_to_install(box: Sandbox) -> None:
    box.tools("node", "npm")
    box.fake("id", "echo 1000", log=False)
    refused = box.run()  # dot missing, no sudo
    assert refused.returncode == 1
    assert "error: graphviz missing and installing them needs root (apt-get install graphviz)" in refused.stderr
    assert box.calls() == []

    box.fake("sudo", 'exec "$@"')
    done = box.run()
    assert done.returncode == 0, done.stderr
    assert box.calls() == [f"sudo {APT} graphviz @repo", f"{APT} graphviz @repo", NPM_CI]
