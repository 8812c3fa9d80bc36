"""Lint, format, strict typing and the docs build, as the test command runs them.

Each runs the real tool on the checkout: ``ruff check``, ``ruff format --check``,
``mypy --strict`` over the installed layout (scripts/stage.py lays it out for mypy, which
cannot follow the package-dir mapping) and ``mkdocs build --strict`` (offline, into a
temporary folder). The tools' output is the assertion message.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_stage():  # scripts/ is not a package; one loader for the two users below
    spec = importlib.util.spec_from_file_location("rs_stage", ROOT / "scripts" / "stage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_ruff_check_passes() -> None:
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_check_passes() -> None:
    result = _run("ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_over_the_library_and_the_shop() -> None:
    stage = _load_stage().stage()
    result = _run(
        "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", "-p", "reactive_services", cwd=stage
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_docs_build_strict(tmp_path: Path) -> None:
    _load_stage().stage()
    result = _run("mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
