"""``reactive_services.metrics`` (MeteredBroker, ServiceMetrics: Prometheus) and ``reactive_services.readiness``.

Tests taking ``broker`` run on the in-memory broker, then on a real Kafka broker (see
tests/conftest.py); each works in topics and groups of its own.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from reactive_services import ClientProxy, Controller, Microservice, event_pattern, message_pattern, testing
from reactive_services.adapters import Broker, Message
from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.websocket import WebSocketServer
from reactive_services.errors import ConfigError
from reactive_services.metrics import MeteredBroker, ServiceMetrics
from reactive_services.readiness import consumer_groups, readiness, ready
from reactive_services.testing import unique_name, wait_for
from reactive_services.testing.contract import BrokerContract, ConcurrencyContract

pytestmark = pytest.mark.timeout(120)


def scrape(metrics: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` parsed back from ``render()``."""
    samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(metrics: ServiceMetrics, sample_name: str, **labels: str) -> float | None:
    return scrape(metrics).get((sample_name, tuple(sorted(labels.items()))))


class Tally(Controller):
    def __init__(self) -> None:
        self.seen: list[int] = []

    @event_pattern("metrics.events")
    async def handle(self, payload: dict) -> None:
        await asyncio.sleep(0)
        self.seen.append(payload["i"])


# --------------------------------------------------------------------------- the wrapper contract


class TestMeteredBrokerContract(BrokerContract, ConcurrencyContract):
    """The broker contract (the kit's test classes) on a MeteredBroker around the in-memory broker."""

    def make_broker(self) -> Broker:
        self.metrics = ServiceMetrics()
        metered = MeteredBroker(InMemoryBroker(), self.metrics)
        assert metered.kind == "memory"
        return metered

    @pytest.fixture(autouse=True)
    def _renders(self) -> Any:
        yield
        scrape(self.metrics)  # whatever was counted renders


async def test_messages_pass_through_untouched_and_track_still_holds_the_commit() -> None:
    async with MeteredBroker(InMemoryBroker()) as metered:
        topic, group = unique_name("t"), unique_name("g")
        await metered.create_topics([topic], partitions=1)
        await metered.emit(topic, {"i": 0})
        seen: list[Message] = []
        release = asyncio.get_running_loop().create_future()
        stop, done = asyncio.Event(), asyncio.Event()

        def on_next(m: Message) -> None:
            seen.append(m)
            m.track(release)
            stop.set()

        metered.source(topic, group_id=group, stop=stop).subscribe(on_next, lambda e: done.set(), done.set)
        await wait_for(lambda: bool(seen), what="delivery")
        assert type(seen[0]) is Message and seen[0].value == {"i": 0} and seen[0].raw == b'{"i":0}'
        await asyncio.sleep(0.05)
        assert await metered.committed(group, topic, 0) is None  # tracked work still pending
        release.set_result(None)
        await asyncio.wait_for(done.wait(), 10)
        assert await metered.committed(group, topic, 0) == 1
        assert metered.messages_in == {(topic, group): 1}
        assert metered.sources == []  # the subscription ended


async def test_source_validates_at_call_like_the_wrapped_broker() -> None:
    metered = MeteredBroker(InMemoryBroker())
    with pytest.raises(ConfigError):
        metered.source("t", group_id="")
    with pytest.raises(ConfigError):
        metered.source("t", group_id="g", concurrency=0)


# --------------------------------------------------------------------------- counts in / out


async def test_counts_in_and_out_per_topic_through_a_microservice(broker: Broker) -> None:
    metrics = ServiceMetrics()
    metered = MeteredBroker(broker, metrics)
    ns = unique_name("m") + "."
    topic = ns + "metrics.events"
    tally = Tally()
    service = Microservice(metered, [tally], name="tally", namespace=ns)
    await service.start()
    try:
        for i in range(5):
            await metered.emit(topic, {"i": i}, key=str(i))
        await metered.emit_batch(topic, [(str(i), {"i": i}) for i in range(5, 12)])
        await wait_for(lambda: len(tally.seen) == 12, timeout=60, what="12 records handled")
    finally:
        await service.stop()
    assert sorted(tally.seen) == list(range(12))
    assert metered.messages_out == {topic: 12}
    assert metered.messages_in == {(topic, service.group_id): 12}
    assert sample(metrics, "rs_messages_out_total", topic=topic) == 12
    assert sample(metrics, "rs_messages_in_total", topic=topic, group=service.group_id) == 12


async def test_sink_records_count_as_out_once_acknowledged() -> None:
    metrics = ServiceMetrics()
    async with MeteredBroker(InMemoryBroker(), metrics) as metered:
        topic = unique_name("t")
        sink = metered.sink(topic)
        for i in range(4):
            sink.on_next({"i": i})
        await sink.flush()  # type: ignore[attr-defined]
        await metered.emit(topic, {"i": 4})
        assert metered.messages_out == {topic: 5}
        assert sample(metrics, "rs_messages_out_total", topic=topic) == 5


async def test_request_reply_through_the_wrapper_counts_requests_and_replies() -> None:
    class Echo(Controller):
        @message_pattern("echo")
        def echo(self, payload: Any) -> Any:
            return payload

    metrics = ServiceMetrics()
    async with MeteredBroker(InMemoryBroker(), metrics) as metered:
        service = Microservice(metered, [Echo()], name="echo")
        await service.start()
        client = ClientProxy(metered)
        try:
            assert await client.send("echo", {"x": 1}, timeout=10) == {"x": 1}
            assert await client.send("echo", {"x": 2}, timeout=10) == {"x": 2}
        finally:
            await client.close()
            await service.stop()
        out = metered.messages_out
        assert out["echo"] == 2 and out["echo.reply"] == 2
        assert metered.messages_in[("echo", service.request_group_id)] == 2
        [reply_group] = [group for topic, group in metered.messages_in if topic == "echo.reply"]
        assert reply_group.startswith("client-replies-")
        assert metered.messages_in[("echo.reply", reply_group)] == 2


async def test_several_brokers_on_one_metrics_add_up() -> None:
    metrics = ServiceMetrics()
    async with MeteredBroker(InMemoryBroker(), metrics) as a, MeteredBroker(InMemoryBroker(), metrics) as b:
        await a.emit("shared", 1)
        await b.emit("shared", 2)
        await b.emit("other", 3)
    assert sample(metrics, "rs_messages_out_total", topic="shared") == 2
    assert sample(metrics, "rs_messages_out_total", topic="other") == 1


# --------------------------------------------------------------------------- consumer lag


async def consume(broker: Broker, topic: str, group: str, n: int, timeout: float = 60.0) -> list[Message]:
    """The first ``n`` messages read in ``group`` by the kit's ``consume`` (it stops the source, which commits)."""
    got = await testing.consume(broker, topic, n, group_id=group, timeout=timeout)
    assert got.error is None, got.error
    return got.items[:n]


async def test_consumer_lag_is_produced_minus_consumed_then_zero_after_catching_up(log_broker: Broker) -> None:
    metrics = ServiceMetrics()
    metered = MeteredBroker(log_broker, metrics)
    topic, group = unique_name("lag"), unique_name("g")
    await metered.create_topics([topic], partitions=2)
    await metered.emit_batch(topic, [(f"k{i}", {"i": i}) for i in range(10)])

    before = await metrics.refresh_lag(metered, {group: [topic]})
    assert sum(before.values()) == 10  # nothing committed yet: lag counts from offset 0

    assert len(await consume(metered, topic, group, 4)) == 4
    lag = await metrics.refresh_lag(metered, {group: [topic]})
    ends = await metered.end_offsets(topic)
    assert set(lag) == {(group, topic, p) for p in ends}
    assert sum(lag.values()) == 10 - 4
    for p, end in ends.items():
        committed = await metered.committed(group, topic, p) or 0
        assert lag[(group, topic, p)] == end - committed
        assert sample(metrics, "rs_consumer_lag", group=group, topic=topic, partition=str(p)) == end - committed

    assert len(await consume(metered, topic, group, 6)) == 6
    lag = await metrics.refresh_lag(metered, {group: [topic]})
    assert set(lag.values()) == {0}
    for p in ends:
        assert sample(metrics, "rs_consumer_lag", group=group, topic=topic, partition=str(p)) == 0
    assert metered.messages_in == {(topic, group): 10}


async def test_background_lag_refresh_updates_the_gauge_until_stopped() -> None:
    metrics = ServiceMetrics()
    async with MeteredBroker(InMemoryBroker(), metrics) as metered:
        topic, group = unique_name("lag"), unique_name("g")
        await metered.create_topics([topic], partitions=1)
        groups: dict[str, list[str]] = {group: [topic]}
        task = metrics.start_lag_refresh(metered, lambda: groups, interval_s=0.02)
        with pytest.raises(RuntimeError):
            metrics.start_lag_refresh(metered, groups, interval_s=0.02)
        await metered.emit(topic, 1)
        await metered.emit(topic, 2)
        await wait_for(
            lambda: sample(metrics, "rs_consumer_lag", group=group, topic=topic, partition="0") == 2,
            timeout=10,
            what="lag 2",
        )
        await consume(metered, topic, group, 2)
        await wait_for(
            lambda: sample(metrics, "rs_consumer_lag", group=group, topic=topic, partition="0") == 0,
            timeout=10,
            what="lag 0",
        )
        await metrics.stop()
        assert task.done()
        await metrics.stop()  # idempotent
    with pytest.raises(ConfigError):
        metrics.start_lag_refresh(metered, groups, interval_s=0)


async def test_a_failing_lag_refresh_is_counted_and_the_loop_goes_on() -> None:
    class Flaky(InMemoryBroker):
        calls = 0

        async def end_offsets(self, topic: str) -> dict[int, int]:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("metadata unavailable")
            return await super().end_offsets(topic)

    metrics = ServiceMetrics()
    broker = Flaky()
    await broker.start()
    await broker.emit("t", 1)
    metrics.start_lag_refresh(broker, {"g": ["t"]}, interval_s=0.01)
    await wait_for(
        lambda: (
            sample(
                metrics,
                "rs_consumer_lag",
                group="g",
                topic="t",
                partition=str(next(m.partition for m in broker.records("t"))),
            )
            == 1
        ),
        timeout=10,
        what="lag after a failure",
    )
    await metrics.stop()
    await broker.stop()
    assert sample(metrics, "rs_consumer_lag_refresh_errors_total") == 1


# --------------------------------------------------------------------------- websockets


async def test_websocket_metrics_read_a_real_server_and_hub_at_scrape_time() -> None:
    metrics = ServiceMetrics()
    assert sample(metrics, "rs_websocket_clients") is None  # nothing watched: not exposed
    async with WebSocketServer() as server:
        metrics.watch_hub(server)
        metrics.watch_hub(server.hub)  # the same pair: counted once
        assert sample(metrics, "rs_websocket_clients") == 0
        async with ws_connect(server.url) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "channels": ["orders"]}).decode())
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
            assert sample(metrics, "rs_websocket_clients") == 1
            for i in range(3):
                server.hub.on_next(("orders", {"i": i}))
            server.hub.on_next(("nobody", {"i": 9}))
            for _ in range(3):
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "event"
            s = scrape(metrics)
            assert s[("rs_websocket_notifications_published_total", ())] == 4
            assert s[("rs_websocket_notifications_delivered_total", ())] == 3
            assert s[("rs_websocket_notifications_dropped_total", ())] == 0
            assert s[("rs_websocket_slow_clients_closed_total", ())] == 0
            assert s[("rs_websocket_resumed_total", ())] == 0  # no notification log
            assert s[("rs_websocket_recoveries_failed_total", ())] == 0
        await wait_for(lambda: not server.clients, timeout=5, what="client gone")
        assert sample(metrics, "rs_websocket_clients") == 0
        assert sample(metrics, "rs_websocket_notifications_delivered_total") == 3


async def test_websocket_metrics_read_any_object_with_the_same_counters() -> None:
    metrics = ServiceMetrics()
    server = SimpleNamespace(clients=[object(), object()], slow_clients_closed=1)
    hub = SimpleNamespace(
        server=server, published=Counter({"a": 2, "b": 3}), delivered=7, dropped=0, slow_clients_closed=1
    )
    metrics.watch_hub(hub)
    s = scrape(metrics)
    assert s[("rs_websocket_clients", ())] == 2
    assert s[("rs_websocket_notifications_published_total", ())] == 5
    assert s[("rs_websocket_slow_clients_closed_total", ())] == 1
    # the counters move on: the next scrape reads them again, nothing was copied
    server.clients.pop()
    server.slow_clients_closed += 2
    hub.published["c"] += 1
    hub.delivered += 1
    hub.dropped = 4
    s = scrape(metrics)
    assert s[("rs_websocket_clients", ())] == 1
    assert s[("rs_websocket_slow_clients_closed_total", ())] == 3
    assert s[("rs_websocket_notifications_published_total", ())] == 6
    assert s[("rs_websocket_notifications_delivered_total", ())] == 8
    assert s[("rs_websocket_notifications_dropped_total", ())] == 4


# --------------------------------------------------------------------------- latency, exposition


def test_request_latency_histogram_observes() -> None:
    metrics = ServiceMetrics()
    metrics.observe_request("/orders/{order_id}", "get", 200, 0.003)
    metrics.observe_request("/orders/{order_id}", "GET", 200, 0.2)
    metrics.observe_request("/orders", "POST", 503, 1.5)
    labels = {"route": "/orders/{order_id}", "method": "GET", "status": "200"}
    assert sample(metrics, "rs_http_request_duration_seconds_count", **labels) == 2
    assert sample(metrics, "rs_http_request_duration_seconds_sum", **labels) == pytest.approx(0.203)
    assert sample(metrics, "rs_http_request_duration_seconds_bucket", le="0.005", **labels) == 1
    assert sample(metrics, "rs_http_request_duration_seconds_bucket", le="0.25", **labels) == 2
    assert sample(metrics, "rs_http_request_duration_seconds_bucket", le="+Inf", **labels) == 2
    assert sample(metrics, "rs_http_request_duration_seconds_count", route="/orders", method="POST", status="503") == 1


async def test_render_parses_with_the_prometheus_parser_and_has_every_family() -> None:
    metrics = ServiceMetrics()
    metrics.watch_hub(
        SimpleNamespace(clients=[], slow_clients_closed=0, hub=SimpleNamespace(published=0, delivered=0, dropped=0))
    )
    async with MeteredBroker(InMemoryBroker(), metrics) as metered:
        await metered.emit("t", 1)
    metrics.observe_request("/", "GET", 200, 0.01)
    families = {
        f.name: f.type
        for f in text_string_to_metric_families(metrics.render().decode())
        if not f.name.endswith("_created")  # prometheus_client's creation-time gauges of counters / histograms
    }
    assert families == {
        "rs_messages_in": "counter",
        "rs_messages_out": "counter",
        "rs_consumer_lag": "gauge",
        "rs_consumer_lag_refresh_errors": "counter",
        "rs_websocket_clients": "gauge",
        "rs_websocket_slow_clients_closed": "counter",
        "rs_websocket_notifications_published": "counter",
        "rs_websocket_notifications_delivered": "counter",
        "rs_websocket_notifications_dropped": "counter",
        "rs_websocket_resumed": "counter",
        "rs_websocket_recoveries_failed": "counter",
        "rs_http_request_duration_seconds": "histogram",
    }
    assert metrics.content_type.startswith("text/plain; version=0.0.4")
    # two instances in one process: separate registries, no clash, separate counts
    other = ServiceMetrics()
    assert sample(other, "rs_http_request_duration_seconds_count", route="/", method="GET", status="200") is None
    assert not math.isnan(
        sample(metrics, "rs_http_request_duration_seconds_count", route="/", method="GET", status="200") or math.nan
    )


# --------------------------------------------------------------------------- readiness


def test_ready_is_true_iff_every_bool_is_true() -> None:
    assert ready({"broker": True, "partitions_assigned": True, "services": {"a": True}})
    assert not ready({"broker": False, "partitions_assigned": True, "services": {"a": True}})
    assert not ready({"broker": True, "partitions_assigned": False, "services": {}})
    assert not ready({"broker": True, "partitions_assigned": True, "services": {"a": True, "b": False}})
    with pytest.raises(ConfigError):
        readiness(InMemoryBroker(), [], probe_timeout_s=0)


async def test_readiness_before_start_before_assignment_and_after_on_memory() -> None:
    metered = MeteredBroker(InMemoryBroker())
    service = Microservice(metered, [Tally()], name="tally")
    check = readiness(metered, [service])
    status = await check()
    assert status == {"broker": False, "partitions_assigned": False, "services": {"tally": False}}
    assert not ready(status)
    await metered.start()
    status = await check()
    assert status["broker"] and not status["partitions_assigned"] and not ready(status)
    await service.start()
    status = await check()  # subscribed, but the source task has not joined the group yet
    assert status["services"] == {"tally": True} and not status["partitions_assigned"] and not ready(status)
    await wait_for(lambda: metered.assigned(service.group_id), timeout=10, what="assignment")
    status = await check()
    assert status == {"broker": True, "partitions_assigned": True, "services": {"tally": True}}
    assert ready(status)
    assert consumer_groups([service]) == {"tally": ["metrics.events"]}
    await service.stop()
    status = await check()
    assert not status["partitions_assigned"] and not ready(status)
    await metered.stop()
    assert (await check())["broker"] is False


async def test_readiness_on_kafka(kafka_broker: KafkaBroker, kafka_bootstrap: str) -> None:
    broker = kafka_broker
    unstarted = KafkaBroker(kafka_bootstrap)
    assert (await readiness(unstarted, [], probe_topic="x")())["broker"] is False
    unreachable = MeteredBroker(KafkaBroker("127.0.0.1:1"))
    assert (await readiness(unreachable, [])())["broker"] is False

    metered = MeteredBroker(broker)
    ns = unique_name("r") + "."
    service = Microservice(metered, [Tally()], name="tally", namespace=ns)
    check = readiness(metered, [service], probe_timeout_s=5.0)
    status = await check()
    assert status["broker"] and not status["partitions_assigned"] and not ready(status)
    await service.start()
    try:
        assert not (await check())["partitions_assigned"]  # the consumer has not joined yet
        await wait_for(lambda: metered.assigned(service.group_id), timeout=60, what="assignment")
        status = await check()
        assert status == {"broker": True, "partitions_assigned": True, "services": {"tally": True}}
    finally:
        await service.stop()
    assert not ready(await check())


async def test_readiness_without_a_metered_broker_reads_the_brokers_own_state() -> None:
    async with InMemoryBroker() as raw:
        service = Microservice(raw, [Tally()], name="tally")
        check = readiness(raw, [service])
        assert not ready(await check())
        await service.start()
        await wait_for(lambda: any(raw.assignment("tally")), timeout=10, what="assignment")
        assert ready(await check())
        await service.stop()
        assert not ready(await check())


async def test_websocket_metrics_count_resumes_and_failed_recoveries() -> None:
    from reactive_services.adapters.memory import InMemoryBroker
    from reactive_services.adapters.websocket import Notification, NotificationLog

    metrics = ServiceMetrics()
    async with InMemoryBroker() as broker:
        await broker.create_topics(["t"], partitions=1)
        log = NotificationLog(broker, ["t"], lambda m: Notification("c", m.value), epoch="e", poll_timeout_s=0.05)
        await log.open()
        async with WebSocketServer(log=log, ping_interval=None) as server:
            metrics.watch_hub(server)
            for since in (log.cursor(), "v1.bad"):
                async with ws_connect(server.url) as ws:
                    await ws.send(orjson.dumps({"op": "subscribe", "channels": ["c"], "since": since}).decode())
                    assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
                    await wait_for(lambda: not server.clients[0].catching_up, timeout=5, what="live")
            s = scrape(metrics)
            assert s[("rs_websocket_resumed_total", ())] == 1
            assert s[("rs_websocket_recoveries_failed_total", ())] == 1
