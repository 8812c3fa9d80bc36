"""Log analytics end to end through a real Apache Kafka broker, with the alerts pushed to a real
websocket client.

One hand-crafted log file (a custom loghub format with ISO times) is replayed into ``logs`` of a
namespace of its own; the :class:`LogAnalyticsController` windows it by event time (60 s tumbling
windows, 10 s allowed lateness) and publishes ``log.stats``, ``log.alert`` and ``logs.late``; two
malformed records go to ``logs.DLT``; the :class:`NotificationController` forwards the alerts to
the websocket channel ``alerts``. Everything is read back from Kafka with a fresh consumer group
and compared with expectations written down by hand from the file below, not computed with the
code under test.
"""

from __future__ import annotations

import asyncio
import calendar
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reactive_services import ClientProxy, Microservice, start_all_microservices
from reactive_services.adapters import DeadLetterSink, Message, headers_to_dict
from reactive_services.adapters.kafka import KafkaBroker
from reactive_services.adapters.websocket import WebSocketServer, connect
from reactive_services.examples.shop.notifications import CHANNELS, NotificationController
from reactive_services.examples.shop.services import LogAnalyticsController
from reactive_services.logs import (
    ALERT_TOPIC,
    LATE_TOPIC,
    LOGS_TOPIC,
    STATS_TOPIC,
    AlertRules,
    LogAnalyticsService,
    LogSource,
    replay_logs,
)
from reactive_services.testing import unique_name, wait_for

pytestmark = pytest.mark.timeout(90)

SOURCE = "app"
FORMAT = "<Date> <Time> <Level> <Component>: <Content>"
WINDOW_S = 60
LATENESS_S = 10
#: small thresholds, so that a short file triggers each rule once
RULES = AlertRules(
    error_rate=0.5,  # errors / lines >= 0.5 ...
    min_lines=4,  # ... in a window of >= 4 lines
    min_errors=3,  # ... with >= 3 errors (and >= error_factor 3 x the baseline's errors per window)
    new_template_min=3,  # a never-seen template >= 3 times (after `warmup` windows)
    rise_factor=3.0,  # a known template >= 3 x its mean count per earlier window ...
    rise_min_count=6,  # ... and >= 6 times
    history=6,
    warmup=2,
    sample_size=3,
)

#: 2024-01-01 00:00:00 UTC, a multiple of 60 s: window k covers [BASE + 60 k, BASE + 60 (k + 1))
BASE_S = calendar.timegm((2024, 1, 1, 0, 0, 0, 0, 0, 0))
assert BASE_S % WINDOW_S == 0


@dataclass(frozen=True)
class Line:
    """One line of the crafted file.

    ``t``: seconds after BASE_S. ``fate``: ``"on_time"``; ``"allowed"`` (out of order by less
    than the allowed lateness: still counted in its own window); ``"late"`` (out of order by far
    more: every window holding it has closed, so it must be on ``logs.late``). ``tpl``: the
    template family (A request, B heartbeat, C cache miss, E db error, N disk quota).
    """

    t: int
    level: str
    component: str
    content: str
    tpl: str
    fate: str = "on_time"

    @property
    def text(self) -> str:
        hh, rest = divmod(self.t, 3600)
        mm, ss = divmod(rest, 60)
        return f"2024-01-01 {hh:02d}:{mm:02d}:{ss:02d} {self.level} {self.component}: {self.content}"

    @property
    def window(self) -> int:
        """Start (seconds after BASE_S) of the window of its event time."""
        return self.t // WINDOW_S * WINDOW_S


def A(t: int, ms: int, level: str = "INFO", fate: str = "on_time") -> Line:
    return Line(t, level, "web", f"Request served in {ms} ms", "A", fate)


def B(t: int, node: int, fate: str = "on_time") -> Line:
    return Line(t, "INFO", "hb", f"Heartbeat ok from node {node}", "B", fate)


def C(t: int, key: int, fate: str = "on_time") -> Line:
    return Line(t, "INFO", "cache", f"Cache miss for key {key}", "C", fate)


def E(t: int, retries: int, fate: str = "on_time") -> Line:
    return Line(t, "ERROR", "db", f"Database connection failed after {retries} retries", "E", fate)


def N(t: int, volume: int, blocks: int) -> Line:
    return Line(t, "WARN", "disk", f"Disk quota exceeded on volume {volume} by {blocks} blocks", "N")


# The file, in order. Watermark = largest time so far - 10 s; a window [s, s+60) closes when
# the watermark reaches s + 60.
LINES: list[Line] = [
    # W0 [0, 60): warm-up, every template but N once or twice
    A(5, 12),
    B(12, 1),
    C(20, 42),
    E(31, 3),
    A(45, 15),
    # W1 [60, 120): warm-up
    A(62, 9),
    B(57, 2, fate="allowed"),  # 5 s behind 62: watermark 52 < 60, W0 still open -> counted in W0
    C(70, 7),  # watermark 60: W0 closes
    E(88, 1),
    A(101, 950, level="WARN"),
    B(115, 1),
    # W2 [120, 180): error window, 4 ERROR of 7 lines
    E(121, 2),
    A(126, 11),
    E(133, 5),  # watermark 123: W1 closes
    E(140, 4),
    B(152, 3),
    E(166, 6),
    # W3 [180, 240): a never-seen template x3
    N(183, 7, 12),
    A(175, 14, fate="allowed"),  # 8 s behind 183: watermark 173 < 180 -> counted in W2
    N(190, 3, 40),  # watermark 180: W2 closes
    B(205, 2),
    N(222, 7, 5),
    A(230, 10),
    # W4 [240, 300): C x6 against a baseline of (1 + 1 + 0 + 0) / 4 = 0.5 per window
    C(242, 11),
    C(248, 12),
    C(251, 13),  # watermark 241: W3 closes
    A(100, 13, fate="late"),  # W1 closed long ago -> logs.late, reported with the next window (W4)
    B(255, 1),
    E(130, 9, fate="late"),  # W2 closed -> logs.late with W4 (an error that must not count anywhere)
    C(262, 14),
    C(270, 15),
    A(281, 12),
    C(293, 16),
    # W5 [300, 360): flushed when the stream completes
    A(305, 8),
    B(312, 3),  # watermark 302: W4 closes (carrying the two late lines above)
    C(245, 17, fate="late"),  # W4 closed just now -> logs.late with the next window (W5)
    A(330, 7),
]

# Hand-written expectations (the test also checks they agree with LINES).
EXPECTED_LINES = {0: 6, 60: 5, 120: 7, 180: 5, 240: 8, 300: 3}  # window start -> on-time lines
EXPECTED_ERRORS = {0: 1, 60: 1, 120: 4, 180: 0, 240: 0, 300: 0}
EXPECTED_LATE = {0: 0, 60: 0, 120: 0, 180: 0, 240: 2, 300: 1}  # window start -> late lines it carries
EXPECTED_ALERTS = [("error_rate", 120), ("new_template", 180), ("template_rate", 240)]

MALFORMED_JSON = {"nope": 1}
NOT_JSON = b"\xffthis is not JSON"


def _line_no(line: Line) -> int:
    return LINES.index(line) + 1


def _window_lines(start: int) -> list[Line]:
    """The lines counted in window ``start``, in arrival (= file) order."""
    return [line for line in LINES if line.fate != "late" and line.window == start]


def _check_crafted_file() -> None:
    """The hand-written tables describe LINES (guards against editing one without the other)."""
    assert len(set(line.text for line in LINES)) == len(LINES)
    assert {s: len(_window_lines(s)) for s in EXPECTED_LINES} == EXPECTED_LINES
    assert {s: sum(1 for x in _window_lines(s) if x.level == "ERROR") for s in EXPECTED_ERRORS} == EXPECTED_ERRORS
    assert sum(EXPECTED_LINES.values()) + sum(EXPECTED_LATE.values()) == len(LINES)
    # the out-of-order lines are what their fate says: allowed ones by < 10 s, late ones by far more
    for i, line in enumerate(LINES):
        behind = max(x.t for x in LINES[: i + 1]) - line.t
        if line.fate == "allowed":
            assert 0 < behind < LATENESS_S, line
        elif line.fate == "late":
            assert behind > 2 * LATENESS_S, line
        else:
            assert behind == 0, line


async def record_count(broker: KafkaBroker, topics: list[str]) -> int:
    """How many records ``topics`` hold (sum of their end offsets)."""
    total = 0
    for topic in topics:
        total += sum((await broker.end_offsets(topic)).values())
    return total


async def read_back(broker: KafkaBroker, topics: list[str], expected: int, *, decode: Any = "json") -> list[Message]:
    """The ``expected`` records of ``topics``, read from the earliest offset in a fresh consumer group."""
    if expected == 0:
        return []
    messages: list[Message] = []
    stop = asyncio.Event()
    done = asyncio.Event()
    errors: list[BaseException] = []

    def on_next(message: Message) -> None:
        messages.append(message)
        if len(messages) >= expected:
            stop.set()

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        done.set()

    source = broker.source(topics, group_id=unique_name("readback"), decode=decode, stop=stop)
    subscription = source.subscribe(on_next, on_error, done.set)
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        subscription.dispose()
    assert not errors, errors
    return messages


def _by_partition_order(messages: list[Message]) -> list[Message]:
    return sorted(messages, key=lambda m: (m.topic, m.partition, m.offset))


async def test_log_analytics_through_kafka_windows_alerts_late_lines_and_dead_letters(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    _check_crafted_file()
    path = tmp_path / "app.log"
    path.write_text("".join(line.text + "\n" for line in LINES), encoding="utf-8")
    source = LogSource(name=SOURCE, format=FORMAT, window_s=WINDOW_S, allowed_lateness_s=LATENESS_S, alerts=RULES)

    broker = kafka_broker
    namespace = f"logtest-{uuid.uuid4().hex[:8]}."
    topics = {t: namespace + t for t in (LOGS_TOPIC, LOGS_TOPIC + ".DLT", STATS_TOPIC, ALERT_TOPIC, LATE_TOPIC)}
    await broker.create_topics(sorted({*topics.values(), *(namespace + t for t in CHANNELS)}))

    client = ClientProxy(broker, namespace=namespace)
    server = WebSocketServer("127.0.0.1", 0)
    frames: list[dict[str, Any]] = []
    ws_state: dict[str, Any] = {"error": None}
    subscribed = asyncio.Event()
    closed = asyncio.Event()

    def on_frame(frame: dict[str, Any]) -> None:
        if frame.get("type") == "subscribed":
            subscribed.set()
        else:
            frames.append(frame)

    def on_ws_error(exc: Exception) -> None:
        ws_state["error"] = exc
        subscribed.set()
        closed.set()

    services: list[Microservice] = []
    ws_subscription = None
    try:
        # a real websocket server and client, subscribed to "alerts" before anything flows
        await server.start()
        ws_subscription = connect(server.url, subscribe=["alerts"]).subscribe(on_frame, on_ws_error, closed.set)
        await asyncio.wait_for(subscribed.wait(), 10)
        assert ws_state["error"] is None, ws_state["error"]

        analytics = LogAnalyticsService(client.emit)
        dead_letter = DeadLetterSink(broker)
        logs_ctl = LogAnalyticsController(analytics, dead_letter, sources={SOURCE: source})
        notifications = NotificationController(server.hub, namespace=namespace)
        logs_svc = Microservice(broker, [logs_ctl], name="log-analytics", namespace=namespace)
        notify_svc = Microservice(broker, [notifications], name="notifications", namespace=namespace)
        services = [logs_svc, notify_svc]
        await start_all_microservices(*services)

        # two malformed records first, on the source's partition (same key) so that they are
        # handled before the last line is: one JSON object of the wrong shape, one not JSON
        await broker.emit(topics[LOGS_TOPIC], MALFORMED_JSON, key=SOURCE)
        await broker.emit(topics[LOGS_TOPIC], NOT_JSON, key=SOURCE)
        replayed = await replay_logs(client, {SOURCE: path}, formats={SOURCE: source})
        assert replayed == {SOURCE: len(LINES)}

        # the non-JSON record is dead-lettered by the Kafka source before the pipeline: not counted
        await wait_for(
            lambda: logs_ctl.received >= len(LINES) + 1, 20, what="the log analytics to receive every record"
        )
        await logs_svc.stop()  # completes the stream: the last window is emitted
        await analytics.flush()
        await dead_letter.flush()
        assert logs_svc.errors == [] and analytics.error is None
        assert logs_ctl.received == len(LINES) + 1
        assert dead_letter.sent == 1

        # -- read everything back from Kafka --------------------------------------------------
        # (end offsets one after the other: KafkaBroker.end_offsets creates its helper consumer
        # lazily without a lock, so two concurrent first calls leak one consumer)
        output_topics = [topics[STATS_TOPIC], topics[ALERT_TOPIC], topics[LATE_TOPIC]]
        dlt_topics = [topics[LOGS_TOPIC + ".DLT"]]
        n_outputs = await record_count(broker, output_topics)
        n_dlt = await record_count(broker, dlt_topics)
        outputs, dlt = await asyncio.gather(
            read_back(broker, output_topics, n_outputs),
            read_back(broker, dlt_topics, n_dlt, decode=None),  # raw: one of them is not JSON
        )
        outputs = _by_partition_order(outputs)
        stats = [m for m in outputs if m.topic == topics[STATS_TOPIC]]
        alerts = [m for m in outputs if m.topic == topics[ALERT_TOPIC]]
        late = [m for m in outputs if m.topic == topics[LATE_TOPIC]]
        assert all(m.key_str == SOURCE for m in outputs)

        # stats: one record per window, in window order, with the hand-computed counts
        starts = [m.value["window_start_s"] - BASE_S for m in stats]
        assert starts == sorted(EXPECTED_LINES), starts
        for m in stats:
            s = m.value["window_start_s"] - BASE_S
            value = m.value
            assert value["source"] == SOURCE
            assert value["window_end_s"] - value["window_start_s"] == WINDOW_S
            assert value["lines"] == EXPECTED_LINES[s], (s, value)
            assert value["errors"] == EXPECTED_ERRORS[s], (s, value)
            assert value["error_rate"] == pytest.approx(EXPECTED_ERRORS[s] / EXPECTED_LINES[s])
            assert value["late"] == EXPECTED_LATE[s], (s, value)
            assert value["by_level"] == dict(Counter(x.level for x in _window_lines(s))), (s, value)
            assert value["unparsed"] == 0
            assert sum(count for _t, count in value["top_templates"]) <= value["lines"]
        # the out-of-order lines within the allowed lateness are in their own windows
        w0 = next(m.value for m in stats if m.value["window_start_s"] == BASE_S)
        assert w0["by_level"] == {"INFO": 5, "ERROR": 1}  # incl. the heartbeat at 00:00:57, read after 00:01:02
        # nothing lost: every line is in exactly one window or late
        assert sum(m.value["lines"] for m in stats) + sum(m.value["late"] for m in stats) == len(LINES)

        # alerts: exactly the three designed ones, once each, in window order
        assert [(m.value["kind"], m.value["window_start_s"] - BASE_S) for m in alerts] == EXPECTED_ALERTS
        by_kind = {m.value["kind"]: m.value for m in alerts}
        for value in by_kind.values():
            assert value["source"] == SOURCE
            assert value["window_end_s"] - value["window_start_s"] == WINDOW_S

        error = by_kind["error_rate"]
        w2 = _window_lines(120)
        assert error["evidence"]["lines"] == 7 and error["evidence"]["errors"] == 4
        assert error["evidence"]["error_rate"] == pytest.approx(4 / 7)
        assert error["evidence"]["threshold"] == 0.5 and error["evidence"]["min_lines"] == 4
        assert error["sample"] == [x.text for x in w2 if x.level == "ERROR"][:3]
        assert all(x.text not in error["sample"] for x in LINES if x.fate == "late")

        new = by_kind["new_template"]
        n_lines = [x for x in LINES if x.tpl == "N"]
        assert [t["count"] for t in new["evidence"]["templates"]] == [3]
        assert new["evidence"]["templates"][0]["template"] == "Disk quota exceeded on volume <*> by <*> blocks"
        assert new["evidence"]["min_count"] == 3 and new["evidence"]["lines"] == 5
        assert new["sample"] == [x.text for x in n_lines]

        rate = by_kind["template_rate"]
        c_per_window = [sum(1 for x in _window_lines(s) if x.tpl == "C") for s in (0, 60, 120, 180)]
        assert c_per_window == [1, 1, 0, 0]
        baseline = sum(c_per_window) / 4  # 0.5 lines of C per window before W4
        [rising] = rate["evidence"]["templates"]
        assert rising["template"] == "Cache miss for key <*>"
        assert rising["count"] == 6 and rising["baseline"] == pytest.approx(baseline)
        assert rising["factor"] == pytest.approx(6 / baseline)
        assert rate["evidence"]["history_windows"] == 4 and rate["evidence"]["rise_factor"] == 3.0
        assert rate["sample"] == [x.text for x in _window_lines(240) if x.tpl == "C"][:3]

        # every too-late line is on logs.late, with its line number and text, exactly once
        too_late = [x for x in LINES if x.fate == "late"]
        assert sorted((m.value["line_no"], m.value["line"]) for m in late) == sorted(
            (_line_no(x), x.text) for x in too_late
        )
        for m in late:
            line = LINES[m.value["line_no"] - 1]
            assert m.value["source"] == SOURCE
            assert m.value["event_time_s"] == BASE_S + line.t
            assert m.value["event_time"] == line.text[:10] + "T" + line.text[11:19] + "Z"
        reported = Counter(m.value["reported_with_window_start_s"] - BASE_S for m in late)
        assert reported == {s: n for s, n in EXPECTED_LATE.items() if n}

        # the two malformed records are on logs.DLT, raw, with the reason in their headers
        assert len(dlt) == 2, [m.value for m in dlt]
        dead = {m.value: headers_to_dict(m.headers) for m in dlt}
        assert set(dead) == {b'{"nope":1}', NOT_JSON}
        assert all(m.key_str == SOURCE for m in dlt)
        for headers in dead.values():
            assert headers["dlt.original.topic"] == topics[LOGS_TOPIC]
            assert headers["dlt.reason"]
        assert dead[b'{"nope":1}']["dlt.exception.type"] == "ValidationError"
        assert "line" in dead[b'{"nope":1}']["dlt.reason"]
        assert dead[NOT_JSON]["dlt.exception.type"] == "DecodeError"

        # the service's own totals agree
        report = analytics.report()[SOURCE]
        assert (report["lines"], report["late"], report["windows"], report["alerts"]) == (len(LINES), 3, 6, 3)

        # -- the websocket client got every alert on channel "alerts", and nothing else ---------
        await wait_for(
            lambda: (
                notifications.forwarded.get("alerts", 0) >= len(alerts)
                and notifications.forwarded.get("logs", 0) >= len(stats)
            ),
            20,
            what="the notification service to forward every alert and stats record",
        )
        await asyncio.wait_for(server.hub.wait_idle(), 10)
        await wait_for(lambda: len(frames) >= len(alerts), 20, what="the websocket client to receive every alert")
        await notify_svc.stop()  # completes the hub: the client is closed with 1001
        await asyncio.wait_for(closed.wait(), 10)
        assert ws_state["error"] is None, ws_state["error"]
        assert notify_svc.errors == []
        assert [f["type"] for f in frames] == ["event"] * len(alerts)
        assert {f["channel"] for f in frames} == {"alerts"}
        assert [f["event"]["topic"] for f in frames] == ["log.alert"] * len(alerts)
        assert [f["event"]["data"] for f in frames] == [m.value for m in alerts]
        assert [
            (f["event"]["data"]["kind"], f["event"]["data"]["window_start_s"] - BASE_S) for f in frames
        ] == EXPECTED_ALERTS
    finally:
        if ws_subscription is not None:
            ws_subscription.dispose()
        for service in services:
            if service.started:
                await service.stop(timeout=5)
        await server.stop()
