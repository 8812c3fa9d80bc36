"""The shop's demo end to end on a real RabbitMQ server (RabbitBroker), with real websocket clients over loopback."""

from __future__ import annotations

import pytest
from shopcheck import OLIST, check_invariants, check_shipped_logs

from reactive_services.errors import ConfigError
from reactive_services.examples.shop.demo import DemoConfig, run_demo


async def test_demo_on_rabbitmq_holds_the_invariants_and_gives_the_memory_brokers_figures(rabbitmq_url: str) -> None:
    on_rabbit = await run_demo(DemoConfig(clients=3, rabbitmq_url=rabbitmq_url))
    assert on_rabbit["broker"] == "rabbitmq"
    assert on_rabbit["namespace"].startswith("demo-")
    check_invariants(on_rabbit, OLIST / "order_items.csv", OLIST / "products.csv")
    check_shipped_logs(on_rabbit)

    in_memory = await run_demo(DemoConfig(clients=3))
    assert on_rabbit["orders"]["emitted"] == in_memory["orders"]["emitted"] == 1024
    assert on_rabbit["orders"]["items_read"] == in_memory["orders"]["items_read"]
    for source, stats in in_memory["logs"].items():
        for key in ("lines", "by_level", "windows", "alerts"):
            assert on_rabbit["logs"][source][key] == stats[key], (source, key)
    # which orders run out of stock depends on the order across partitions: only the log figures must match
    assert on_rabbit["notifications"]["published"]["logs"] == in_memory["notifications"]["published"]["logs"]
    assert on_rabbit["notifications"]["published"]["alerts"] == in_memory["notifications"]["published"]["alerts"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rabbitmq_url": "amqp://guest:guest@127.0.0.1:5672/", "bootstrap_servers": "127.0.0.1:9092"}, "not both"),
        ({"rabbitmq_url": "127.0.0.1:5672"}, "amqp:// or amqps://"),
    ],
)
def test_a_rabbitmq_url_is_refused_with_kafka_servers_or_without_its_scheme(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        DemoConfig(**settings).validate()  # type: ignore[arg-type]
    assert raised.value.key == "rabbitmq_url" and message in str(raised.value)
