"""The shop end to end on a real Apache Kafka broker, with real websocket clients over loopback."""

from __future__ import annotations

from shopcheck import OLIST, check_invariants, check_shipped_logs

from reactive_services.examples.shop.demo import DemoConfig, run_demo


async def test_demo_on_kafka_gives_the_same_figures_as_on_the_memory_broker(kafka_bootstrap: str) -> None:
    on_kafka = await run_demo(DemoConfig(clients=3, bootstrap_servers=kafka_bootstrap))
    assert on_kafka["broker"] == "kafka"
    assert on_kafka["namespace"].startswith("demo-")
    check_invariants(on_kafka, OLIST / "order_items.csv", OLIST / "products.csv")
    check_shipped_logs(on_kafka)

    in_memory = await run_demo(DemoConfig(clients=3))
    assert on_kafka["orders"]["emitted"] == in_memory["orders"]["emitted"]
    assert on_kafka["orders"]["items_read"] == in_memory["orders"]["items_read"]
    for source, stats in in_memory["logs"].items():
        for key in ("lines", "by_level", "windows", "alerts"):
            assert on_kafka["logs"][source][key] == stats[key], (source, key)
    assert on_kafka["notifications"]["published"]["logs"] == in_memory["notifications"]["published"]["logs"]


async def test_two_demo_runs_on_one_broker_do_not_see_each_other(kafka_bootstrap: str) -> None:
    first = await run_demo(DemoConfig(clients=1, bootstrap_servers=kafka_bootstrap, logs={}))
    second = await run_demo(DemoConfig(clients=1, bootstrap_servers=kafka_bootstrap, logs={}))
    assert first["namespace"] != second["namespace"]
    for report in (first, second):
        check_invariants(report, OLIST / "order_items.csv", OLIST / "products.csv")
        assert report["orders"]["applied"] + report["orders"]["rejected"] == report["orders"]["emitted"] == 1024
