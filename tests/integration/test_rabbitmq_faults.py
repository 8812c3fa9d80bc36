"""Fault tests of the shop's inventory on RabbitMQ (RabbitBroker), each inventory instance a process of its own.

The scenarios are R1, R3 and R4 of examples/shop/faults.py on RabbitMQ (R1-rmq, R3-rmq, R4-rmq);
`python bench/faults.py --rabbitmq` prints them as a table.
"""

from __future__ import annotations

import pytest

from reactive_services.examples.shop.faults import run_scenario


@pytest.mark.timeout(300)
async def test_R1_rmq_an_inventory_killed_mid_stream_loses_no_order_and_absorbs_the_redeliveries(
    rabbitmq_url: str,
) -> None:
    """SIGKILL with orders delivered and not acknowledged: RabbitMQ redelivers them to the restarted
    instance, which finds them applied already (the stock is exact), none lost."""
    result = await run_scenario("R1-rmq", rabbitmq_url=rabbitmq_url)
    assert result.scenario == "R1-rmq"
    assert result.sent == 1024
    assert result.processed == result.sent and result.lost == 0
    assert result.stock_exact
    assert result.dead_lettered == 0
    assert result.notes[0].startswith("SIGKILL after ")


@pytest.mark.timeout(300)
async def test_R3_rmq_a_server_restarted_mid_stream_loses_no_order() -> None:
    """The server (a node of the test's own) stops for 5 s and comes back on its state directory and port:
    the inventory's source reconnects by itself, the sender retries what failed, nothing is lost."""
    result = await run_scenario("R3-rmq")
    assert result.scenario == "R3-rmq"
    assert result.sent == 1024
    assert result.processed == result.sent and result.lost == 0
    assert result.stock_exact
    assert result.dead_lettered == 0
    stopped, restarted = result.notes[:2]
    assert stopped.startswith("server stopped after ")
    assert restarted == "server restarted on the same state directory after 5 s"


@pytest.mark.timeout(300)
async def test_R4_rmq_bad_records_go_to_the_dead_letters_with_their_reasons(rabbitmq_url: str) -> None:
    result = await run_scenario("R4-rmq", rabbitmq_url=rabbitmq_url)
    assert result.scenario == "R4-rmq"
    assert result.sent == 1024
    assert result.processed == result.sent and result.lost == 0
    assert result.stock_exact
    assert result.dead_lettered == 20
    assert result.notes[-2:] == [
        "per-key order kept for 5 keys",
        "dead-letter reasons: DecodeError 5, ValidationError 15",
    ]
