"""Fault tests of the shop's inventory on RabbitMQ (RabbitBroker), each inventory instance a process of its own.

The scenarios are R1, R3 and R4 of examples/shop/faults.py on RabbitMQ (R1-rmq, R3-rmq, R4-rmq);
`python bench/faults.py --rabbitmq` prints them as a table.
"""

from __future__ import annotations

import re

import pytest

from reactive_services.examples.shop.faults import RABBIT_PARTITIONS, ScenarioResult, run_scenario

#: RabbitBroker's default prefetch (the inventory process keeps it): unacknowledged deliveries per partition
PREFETCH = 256


def _last_instance(result: ScenarioResult) -> tuple[int, int]:
    """``(records handled, orders found applied already)`` of the last instance, from its note."""
    found = re.fullmatch(
        r"last instance: (\d+) records handled, (\d+) orders found applied already, \d+ events published again",
        result.notes[-1],
    )
    assert found is not None, result.notes
    return int(found[1]), int(found[2])


def _no_order_lost(result: ScenarioResult, name: str) -> None:
    assert result.scenario == name
    assert result.sent == 1024
    assert result.processed == result.sent and result.lost == 0
    assert result.stock_exact


@pytest.mark.timeout(300)
async def test_R1_rmq_an_inventory_killed_mid_stream_loses_no_order_and_absorbs_the_redeliveries(
    rabbitmq_url: str,
) -> None:
    """SIGKILL with orders delivered and not acknowledged: RabbitMQ redelivers them to the restarted
    instance, which finds those it applied already (the stock is exact), none lost; only what the
    killed instance held unacknowledged (at most the prefetch of each partition) comes again."""
    result = await run_scenario("R1-rmq", rabbitmq_url=rabbitmq_url)
    _no_order_lost(result, "R1-rmq")
    assert result.dead_lettered == 0
    killed = re.fullmatch(r"SIGKILL after (\d+) orders", result.notes[0])
    assert killed is not None, result.notes
    handled, again = _last_instance(result)
    assert again <= RABBIT_PARTITIONS * PREFETCH
    assert handled >= result.sent - int(killed[1])  # every order not applied before the kill, at least


@pytest.mark.timeout(300)
async def test_R3_rmq_a_server_restarted_mid_stream_loses_no_order() -> None:
    """The server (a node of the test's own) stops for 5 s and comes back on its state directory and port:
    the inventory's source reconnects by itself, the publishes retry while the connection is down, nothing
    is lost; what was delivered and not acknowledged when the server stopped comes again, and is absorbed."""
    result = await run_scenario("R3-rmq")
    _no_order_lost(result, "R3-rmq")
    assert result.dead_lettered == 0
    stopped, restarted = result.notes[:2]
    assert stopped.startswith("server stopped after ")
    assert restarted == "server restarted on the same state directory after 5 s"
    resent = re.fullmatch(
        r"order producer: (\d+) batch\(es\) of up to 50 sent again, "
        r"(\d+) record\(s\) published again after a lost connection",
        result.notes[2],
    )
    assert resent is not None, result.notes
    handled, again = _last_instance(result)
    # redelivered (at most the prefetch of each partition), plus the orders of batches the producer
    # sent again because their confirms were lost with the connection, plus the records the broker
    # client published again itself (the first attempt may have reached the server)
    assert again <= RABBIT_PARTITIONS * PREFETCH + 50 * int(resent[1]) + int(resent[2])
    assert handled == result.sent + again  # one instance throughout: each order once, plus what came again


@pytest.mark.timeout(300)
async def test_R4_rmq_bad_records_go_to_the_dead_letters_with_their_reasons(rabbitmq_url: str) -> None:
    """Records that are not JSON, or not orders, interleaved with the good ones: each is in
    ``order.created.DLT`` once, with its reason and in its key's order; every good order is applied."""
    result = await run_scenario("R4-rmq", rabbitmq_url=rabbitmq_url)
    _no_order_lost(result, "R4-rmq")
    assert result.dead_lettered == 20
    assert result.notes[-3:-1] == [
        "per-key order kept for 5 keys",
        "dead-letter reasons: DecodeError 5, ValidationError 15",
    ]
    handled, again = _last_instance(result)
    # no fault: each record once (the 5 not JSON are dead-lettered by the source, before the controller)
    assert (handled, again) == (result.sent + 15, 0)
