"""``reactive-services run MODULE:ATTRIBUTE``: a user's module run as a process, stopped by SIGTERM / SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

USER_MODULE = '''
import asyncio
from pathlib import Path
from typing import Any

from reactive_services import Controller, InMemoryBroker, Microservice, System, event_pattern

OUT = Path(__file__).with_name("out.txt")
broker = InMemoryBroker()


class Echo(Controller):
    @event_pattern("cli.events")
    async def handle(self, payload):
        OUT.write_text(f"handled {payload}")


service = Microservice(broker, [Echo()], name="echo")
services = [service, Microservice(broker, [Echo()], name="echo2", group_id="other")]
not_services = 42
PENDING = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def factory():
    """Called inside the loop, before run starts the broker: publishes once everything runs."""

    async def publish_soon():
        await asyncio.sleep(0.2)
        await broker.emit("cli.events", {"i": 1})

    async def stopped():
        OUT.write_text(OUT.read_text() + "; stopped, broker started: " + str(broker.started))

    PENDING.append(asyncio.get_running_loop().create_task(publish_soon()))
    return System([service], on_stopped=[stopped])
'''


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    (tmp_path / "userapp.py").write_text(textwrap.dedent(USER_MODULE))
    return subprocess.Popen(
        [sys.executable, "-m", "reactive_services.cli", "run", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str], timeout: float = 30.0) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip() == "ready":
            return lines
    proc.kill()
    raise AssertionError(f"not ready: stdout {lines}, stderr {proc.communicate()[1]}")


def run_once(tmp_path: Path, *args: str) -> tuple[int, str]:
    (tmp_path / "userapp.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "broken.py").write_text("raise RuntimeError('no config file')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", "run", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stderr.strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_factory_runs_until_the_signal_then_stops_gracefully(tmp_path: Path, sig: signal.Signals) -> None:
    proc = start(tmp_path, "userapp:factory")
    lines = wait_ready(proc)
    assert lines == ["running echo", "ready"]
    out = tmp_path / "out.txt"
    deadline = time.monotonic() + 20
    while not (out.exists() and out.read_text().startswith("handled")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # on_stopped ran before run stopped the broker it had started
    assert out.read_text() == "handled {'i': 1}; stopped, broker started: True"


def test_a_list_of_services_with_an_app_on_a_free_port(tmp_path: Path) -> None:
    proc = start(tmp_path, "userapp:services", "--app", "userapp:app", "--port", "0")
    lines = wait_ready(proc)
    assert lines[0].startswith("running echo, echo2 at http://127.0.0.1:"), lines
    url = lines[0].rsplit(" ", 1)[1]
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"ok"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.parametrize(
    ("reference", "code", "message"),
    [
        ("userapp", 2, "error: 'userapp' is not MODULE:ATTRIBUTE (e.g. myapp.main:services)"),
        ("nosuchmodule:x", 2, "error: cannot import 'nosuchmodule:x': no module named 'nosuchmodule'"),
        ("userapp:missing", 2, "error: cannot load 'userapp:missing': module 'userapp' has no attribute 'missing'"),
        (
            "userapp:not_services",
            2,
            "error: bad configuration: services: int 42 is not a Microservice, a list of them, a System or a factory",
        ),
        ("broken:x", 1, "error: importing failed: RuntimeError: no config file"),
    ],
)
def test_a_bad_reference_is_one_line_and_an_exit_code(tmp_path: Path, reference: str, code: int, message: str) -> None:
    assert run_once(tmp_path, reference) == (code, message)


def test_an_app_that_is_not_callable_is_refused(tmp_path: Path) -> None:
    code, err = run_once(tmp_path, "userapp:service", "--app", "userapp:not_services")
    assert code == 2 and err == "error: --app 'userapp:not_services' is not an ASGI app (not callable)"


# --------------------------------------------------------------------------- commands of other packages


class FakeEntryPoint:
    def __init__(self, name: str, load: Any) -> None:
        self.name, self.value, self._load = name, f"fake.{name}:register", load

    def load(self) -> Any:
        return self._load()


def test_installed_packages_add_commands_through_the_entry_point_group() -> None:
    from importlib.metadata import entry_points

    from reactive_services.cli import ENTRY_POINT_GROUP

    [shop] = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "shop"]
    assert shop.value == "reactive_services.examples.shop.cli:register"


def test_a_registered_command_runs_and_a_broken_package_is_one_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reactive_services import cli

    def register(commands: Any) -> None:
        hello = commands.add_parser("hello", help="say hello")
        hello.add_argument("--name", default="world")
        hello.set_defaults(handler=lambda args: print(f"hello {args.name}") or 3)

    def broken() -> Any:
        raise ImportError("no module named 'missing_dependency'")

    monkeypatch.setattr(
        cli,
        "entry_points",
        lambda group: [FakeEntryPoint("b-broken", broken), FakeEntryPoint("a-hello", lambda: register)],
    )
    assert cli.main(["hello", "--name", "you"]) == 3
    out, err = capsys.readouterr()
    assert out == "hello you\n"
    assert err == (
        "warning: the commands of 'b-broken' (fake.b-broken:register) cannot be loaded: "
        "ImportError: no module named 'missing_dependency'\n"
    )
    # the core's own commands are there whatever the packages do
    with pytest.raises(SystemExit):
        cli.main(["token", "--help"])
    assert "--sub NAME" in capsys.readouterr().out
