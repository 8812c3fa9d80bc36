"""``reactive-services asyncapi`` and ``reactive-services topology``: a user's module described
from the command line, and the gateway serving the same document and picture."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import yaml
from asyncapi_check import assert_valid_asyncapi

from reactive_services.asyncapi import asyncapi_document
from reactive_services.auth import JwtConfig
from reactive_services.examples.shop.gateway import create_app
from reactive_services.examples.shop.system import deployment, gateway_client

USER_MODULE = """
from pydantic import BaseModel
from reactive_services import ClientProxy, Controller, InMemoryBroker, Microservice, event_pattern
from reactive_services.asyncapi import Deployment

class Order(BaseModel):
    order_id: str
    qty: int

class Billing(Controller):
    @event_pattern("orders", emits=["invoices"])
    async def bill(self, order: Order) -> None: ...

broker = InMemoryBroker()
service = Microservice(broker, [Billing()], name="billing")
client = ClientProxy(broker, client_id="shop-front", emits={"orders": Order})

def everything():
    return [service, client]

async def described():
    return Deployment([service, client], title="Billing", version="3.2.1")

not_a_service = 42
"""


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "billing_app.py").write_text(textwrap.dedent(USER_MODULE))
    return subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", *args], cwd=tmp_path, capture_output=True, timeout=120
    )


def test_asyncapi_writes_the_document_of_a_factory_as_json_or_yaml(tmp_path: Path) -> None:
    done = cli(tmp_path, "asyncapi", "billing_app:described")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["info"] == {"title": "Billing", "version": "3.2.1", "description": document["info"]["description"]}
    assert {c["address"] for c in document["channels"].values()} == {"orders", "orders.DLT", "invoices"}
    done = cli(tmp_path, "asyncapi", "billing_app:everything", "--format", "yaml", "-o", "out/api.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    written = yaml.safe_load((tmp_path / "out" / "api.yaml").read_text())
    assert written["channels"] == document["channels"]
    assert_valid_asyncapi(tmp_path / "out" / "api.yaml")


def test_topology_draws_svg_dot_or_mermaid(tmp_path: Path) -> None:
    done = cli(tmp_path, "topology", "billing_app:everything")
    assert done.returncode == 0, done.stderr
    texts = {t.text for t in ET.fromstring(done.stdout).iter("{http://www.w3.org/2000/svg}text")}
    assert {"billing", "shop-front", "orders", "invoices", "orders.DLT"} <= texts
    done = cli(tmp_path, "topology", "billing_app:service", "--format", "dot", "--no-dead-letters")
    assert done.returncode == 0, done.stderr
    assert b'"service:billing" -> "topic:invoices"' in done.stdout
    assert b"DLT" not in done.stdout
    done = cli(tmp_path, "topology", "billing_app:everything", "--format", "mermaid")
    assert done.stdout.startswith(b"flowchart LR\n")


@pytest.mark.parametrize(
    "target, code, message",
    [
        ("billing_app:not_a_service", 2, b"error: bad configuration: target: expected a Microservice"),
        ("billing_app:nothing", 2, b"has no attribute 'nothing'"),
        ("no_such_module:x", 2, b"no module named 'no_such_module'"),
        ("billing_app", 2, b"is not MODULE:ATTRIBUTE"),
    ],
)
def test_bad_targets_fail_with_one_line(tmp_path: Path, target: str, code: int, message: bytes) -> None:
    done = cli(tmp_path, "asyncapi", target)
    assert done.returncode == code
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_shop_document_from_the_command_line_is_the_one_the_library_makes() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "reactive_services.cli",
            "asyncapi",
            "reactive_services.examples.shop.system:deployment",
        ],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == asyncapi_document(deployment())


async def test_the_gateway_serves_the_document_and_the_picture() -> None:
    from reactive_services.adapters.memory import InMemoryBroker

    broker = InMemoryBroker()
    app = create_app(client=gateway_client(broker), jwt=JwtConfig.development(), description=deployment())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        document = (await http.get("/asyncapi.json")).json()
        assert document == json.loads(json.dumps(asyncapi_document(deployment())))
        as_yaml = await http.get("/asyncapi.yaml")
        assert as_yaml.headers["content-type"].startswith("application/yaml")
        assert yaml.safe_load(as_yaml.text) == document
        picture = await http.get("/topology.svg")
        assert picture.status_code == 200
        assert picture.headers["content-type"] == "image/svg+xml"
        assert ET.fromstring(picture.content).tag == "{http://www.w3.org/2000/svg}svg"
    without = create_app(client=gateway_client(broker), jwt=JwtConfig.development())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=without), base_url="http://gateway") as http:
        assert (await http.get("/asyncapi.json")).status_code == 404
