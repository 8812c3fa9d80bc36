"""Lint, format, strict typing and the docs build, as the test command runs them.

Each runs the real tool on the checkout: ``ruff check``, ``ruff format --check``,
``mypy --strict`` over the installed layout (scripts/stage.py lays it out for mypy, which
cannot follow the package-dir mapping) and ``mkdocs build --strict`` (offline, into a
temporary folder). The tools' output is the assertion message.
"""

from __future__ import annotations

import importlib.util
import os
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


_TYPED_USER_MODULE = """
from __future__ import annotations

import pydantic
import reactivex.operators as ops
from reactivex import Observable

from reactive_services import ClientProxy, Controller, Message, event_pattern, message_pattern


class Order(pydantic.BaseModel):
    order_id: str
    qty: int


def quantity(message: Message[Order]) -> int:
    return message.value.qty


class Orders(Controller):
    @event_pattern("order.created")
    async def created(self, order: Order, message: Message[Order]) -> None:
        units: int = order.qty
        order_id: str = message.value.order_id
        print(units, order_id, message.offset)

    @event_pattern("orders", pipeline=True)
    def quantities(self, messages: Observable[Message[Order]]) -> Observable[int]:
        return messages.pipe(ops.map(quantity))

    @message_pattern("orders.get")
    def get(self, order: Order) -> Order:
        return order


async def ask(client: ClientProxy) -> Order:
    reply: Order = await client.send("orders.get", Order(order_id="o-1", qty=1), reply_model=Order)
    return reply
"""


def test_a_users_typed_handlers_check_under_mypy_strict(tmp_path: Path) -> None:
    """``Message`` is generic and the decorators keep the handlers' types: a user's module with
    handlers annotated ``Order`` / ``Message[Order]`` checks clean under ``mypy --strict``, and a
    mistake on the typed payload is reported."""
    stage = _load_stage().stage()
    good = tmp_path / "typed_handlers.py"
    good.write_text(_TYPED_USER_MODULE)
    bad = tmp_path / "typed_mistake.py"
    bad.write_text(_TYPED_USER_MODULE.replace("units: int = order.qty", "units: str = order.qty"))

    def mypy_strict(module: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--no-incremental",
                "--cache-dir",
                str(tmp_path / ".c"),
                str(module),
            ],
            cwd=stage,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "MYPYPATH": str(stage)},
        )

    ok = mypy_strict(good)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = mypy_strict(bad)
    assert wrong.returncode == 1 and 'has type "int", variable has type "str"' in wrong.stdout, wrong.stdout
