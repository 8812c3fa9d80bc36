"""``serve`` on a real RabbitMQ server (in process): an order posted to the gateway is applied by
the inventory and its outcome is answered through request-reply over RabbitMQ; the settings are
checked at start, naming the key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from shopcheck import serving

from reactive_services.auth import JwtConfig, issue_token
from reactive_services.errors import ConfigError
from reactive_services.examples.shop.inventory import initial_stock
from reactive_services.examples.shop.system import ServeConfig
from reactive_services.testing import unique_name

pytestmark = pytest.mark.timeout(120)

STEP = 45.0  # seconds serve may take to start or to stop (2 shared cores)


def config(tmp_path: Path, **settings: Any) -> ServeConfig:
    return ServeConfig(port=0, data_dir=tmp_path, jwt=JwtConfig.development(), grpc_port=None, **settings)


async def test_an_order_goes_through_the_shop_served_on_rabbitmq(tmp_path: Path, rabbitmq_url: str) -> None:
    product, units = next((p, u) for p, u in initial_stock(ServeConfig().products).items() if u > 2)
    settings = config(tmp_path, rabbitmq_url=rabbitmq_url, namespace=unique_name("shop") + ".")
    async with serving(settings, STEP) as info:
        jwt = settings.jwt_config()
        write = {"Authorization": f"Bearer {issue_token(jwt, 't', ['orders:write'])}"}
        read = {"Authorization": f"Bearer {issue_token(jwt, 't', ['orders:read', 'inventory:read'])}"}
        async with httpx.AsyncClient(base_url=str(info.url), timeout=10) as http:
            posted = await http.post("/orders", json={"items": [{"product_id": product, "quantity": 2}]}, headers=write)
            assert posted.status_code == 202, posted.text
            order_id = posted.json()["order_id"]
            view: dict[str, Any] = {}
            for _ in range(200):  # the inventory applies it, then answers for it
                view = (await http.get(f"/orders/{order_id}", headers=read)).json()
                if view.get("inventory"):
                    break
                await asyncio.sleep(0.1)
            assert view["inventory"], view
            assert view["order"]["order_id"] == order_id
            stock = await http.get(f"/inventory/{product}", headers=read)
            assert stock.status_code == 200 and stock.json()["stock"] == units - 2


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"rabbitmq_url": "amqp://h/", "bootstrap_servers": "127.0.0.1:9092"}, "rabbitmq_url"),
        ({"rabbitmq_url": "http://h/"}, "rabbitmq_url"),
        ({"only": ("orders",)}, "only"),
    ],
)
def test_bad_broker_settings_are_refused_naming_the_key(tmp_path: Path, settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}"):
        config(tmp_path, **settings).validate()
