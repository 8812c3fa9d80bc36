"""``serve`` runs the inventory's gRPC server beside the services and the gateway (in process, on
the embedded broker): health says SERVING, the typed and the generic services answer from the
inventory's database, the gateway asks it over gRPC when told to, and the stop takes it down
with the rest. Also the gRPC settings of ``serve`` refused at start, naming the key."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shopcheck import serving

from reactive_services.auth import JwtConfig, issue_token
from reactive_services.errors import ConfigError
from reactive_services.examples.shop.inventory import initial_stock
from reactive_services.examples.shop.inventory_grpc import SERVICE_NAME
from reactive_services.examples.shop.proto import inventory_pb2 as pb
from reactive_services.examples.shop.proto import inventory_pb2_grpc as pb_grpc
from reactive_services.examples.shop.system import GRPC_PORT, ServeConfig, serve
from reactive_services.grpc import SERVICE, GrpcClient
from reactive_services.testing.local_kafka import free_port

pytestmark = pytest.mark.timeout(90)

STEP = 30.0  # seconds serve may take to start or to stop (2 shared cores)


def config(tmp_path: Path, **settings: Any) -> ServeConfig:
    return ServeConfig(port=0, data_dir=tmp_path, jwt=JwtConfig.development(), **settings)


async def health(address: str, service: str) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return reply.status


async def test_serve_runs_the_inventorys_grpc_server_and_the_gateway_asks_it(tmp_path: Path) -> None:
    product, units = next((p, u) for p, u in initial_stock(ServeConfig().products).items() if u > 0)
    port = free_port()
    address = f"127.0.0.1:{port}"
    settings = config(tmp_path, grpc_port=port, inventory_transport="grpc", inventory_grpc_address=address)
    async with serving(settings, STEP) as info:
        assert info.grpc_address == address
        for service in ("", SERVICE_NAME, SERVICE):
            assert await health(address, service) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.InventoryStub(channel)  # type: ignore[no-untyped-call]
            reply = await stub.GetStock(pb.GetStockRequest(product_ids=[product]), timeout=5)
            assert [(level.product_id, level.units) for level in reply.levels] == [(product, units)]
        async with GrpcClient(address) as generic:  # the inventory's @message_pattern handlers
            assert await generic.send("inventory.get_stock", {"product_ids": [product]}, timeout=5) == {product: units}
        token = issue_token(settings.jwt_config(), "t", ["inventory:read"])
        async with httpx.AsyncClient(base_url=str(info.url), timeout=10) as http:
            response = await http.get(f"/inventory/{product}", headers={"Authorization": f"Bearer {token}"})
            assert (response.status_code, response.json()) == (200, {"product_id": product, "stock": units})
    with pytest.raises(grpc.aio.AioRpcError) as gone:  # stopped with the rest
        await health(address, "")
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_gateway_told_to_use_grpc_does_not_fall_back_to_the_broker(tmp_path: Path) -> None:
    # nothing listens at the address: the broker's inventory would answer, the gateway must not ask it
    nowhere = f"127.0.0.1:{free_port()}"
    settings = config(tmp_path, grpc_port=None, inventory_transport="grpc", inventory_grpc_address=nowhere)
    async with serving(settings, STEP) as info:
        assert info.grpc_address is None  # --no-grpc
        token = issue_token(settings.jwt_config(), "t", ["inventory:read"])
        async with httpx.AsyncClient(base_url=str(info.url), timeout=10) as http:
            response = await http.get("/inventory/any", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 503, response.text


def test_the_default_grpc_port_and_transport() -> None:
    assert (ServeConfig().grpc_port, GRPC_PORT) == (50051, 50051)
    assert ServeConfig().gateway_settings().inventory_transport == "broker"
    from reactive_services.examples.shop import cli

    assert cli.GRPC_PORT == GRPC_PORT


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"grpc_port": 70000}, "grpc_port"),
        ({"grpc_port": -1}, "grpc_port"),
        ({"grpc_port": "50051"}, "grpc_port"),
        ({"inventory_transport": "grpc"}, "inventory_grpc_address"),
        ({"inventory_transport": "rest"}, "inventory_transport"),
        ({"inventory_transport": "grpc", "inventory_grpc_address": "nohost"}, "inventory_grpc_address"),
    ],
)
def test_bad_grpc_settings_are_refused_before_anything_starts(
    tmp_path: Path, settings: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        config(tmp_path, **settings).validate()
    assert refused.value.key == key


async def test_a_grpc_port_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError) as refused:
            await serve(config(tmp_path, grpc_port=taken.getsockname()[1]), stop=asyncio.Event())
    assert refused.value.key == "grpc_port"


def cli_serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", "serve", "--dev", "--port", "0", "--data-dir", str(tmp_path)]
        + list(args),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_line_names_the_bad_setting(tmp_path: Path) -> None:
    done = cli_serve(tmp_path, "--inventory-transport", "grpc")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: bad configuration: inventory_grpc_address: needed with inventory_transport 'grpc' (HOST:PORT)"
    ]


def test_a_grpc_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli_serve(tmp_path, "--grpc-port", str(port))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()  # nothing from grpc's own log
    assert line.startswith("error: bad configuration: grpc_port: cannot listen on 127.0.0.1:") and str(port) in line
