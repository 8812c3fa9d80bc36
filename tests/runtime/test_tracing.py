"""OpenTelemetry tracing on both brokers: the W3C trace context travels in record headers (emit,
emit_batch), a service's handler runs in a ``process`` span whose parent is the producer's, what
it publishes joins the trace, requests and their replies are one trace; and nothing is traced
(no header, no span) when no SDK is set up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import reactivex.operators as ops
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from reactive_services import ClientProxy, Controller, Microservice, event_pattern, message_pattern
from reactive_services.adapters import Message, declare_group
from reactive_services.adapters.tracing import set_tracer_provider, tracer, tracing_enabled
from reactive_services.errors import RemoteError
from reactive_services.testing import wait_for

pytestmark = pytest.mark.timeout(60)
STEP = 20.0


def traceparent(message: Message) -> str | None:
    value = message.header("traceparent")
    return None if value is None else value.decode()


def ids(message: Message) -> tuple[int, int]:
    """(trace id, parent span id) of a record's ``traceparent`` header (W3C: version-trace-parent-flags)."""
    version, trace_id, parent_id, _flags = (traceparent(message) or "").split("-")
    assert version == "00"
    return int(trace_id, 16), int(parent_id, 16)


def by_name(span_exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in span_exporter.get_finished_spans() if s.name == name]


async def readable(broker: Any, *topics: str) -> None:
    """Declare the group :func:`read` reads each topic in, before the records are published (a
    broker without a log, RabbitMQ, keeps a group only what arrives after its queues exist)."""
    for topic in topics:
        await declare_group(broker, f"read-{topic}", [topic])


async def read(broker: Any, topic: str, count: int) -> list[Message]:
    from reactive_services.testing import collect

    messages = (await collect(broker.source(topic, group_id=f"read-{topic}"), count, timeout=STEP)).items
    return sorted(messages, key=lambda m: str(m.value))  # partitions interleave: in the order of their values


def relay_for(broker: Any, topic: str, out: str) -> Controller:
    """A controller relaying ``topic`` -> ``out`` inside its handler (so in the handler's trace)."""

    class Relay(Controller):
        @event_pattern(topic)
        async def relay(self, payload: dict[str, Any]) -> None:
            await broker.emit(out, {"accepted": payload["id"]}, key=str(payload["id"]))

    return Relay()


async def test_nothing_is_traced_without_an_sdk(broker: Any, unique_topic: Callable[..., str]) -> None:
    assert not tracing_enabled()
    topic = unique_topic()
    await broker.create_topics([topic])
    await readable(broker, topic)
    await broker.emit(topic, {"id": 1}, headers=[("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")])
    await broker.emit_batch(topic, [(None, {"id": 2})])
    first, second = await read(broker, topic, 2)
    assert traceparent(first) == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"  # the caller's header, as it was
    assert traceparent(second) is None


async def test_each_record_carries_the_context_of_its_send_span(
    broker: Any, unique_topic: Callable[..., str], span_exporter: InMemorySpanExporter
) -> None:
    topic = unique_topic()
    await broker.create_topics([topic])
    await readable(broker, topic)
    with tracer().start_as_current_span("caller") as caller:
        await broker.emit(topic, {"id": 1}, key="k", headers={"traceparent": "stale", "x": "kept"})
        await broker.emit_batch(topic, [("a", {"id": 2}), ("b", {"id": 3})])
    one, *batch = await read(broker, topic, 3)
    (single_send, batch_send) = by_name(span_exporter, f"send {topic}")
    assert single_send.kind == SpanKind.PRODUCER and single_send.parent.span_id == caller.get_span_context().span_id
    assert single_send.attributes["messaging.destination.name"] == topic
    assert single_send.attributes["messaging.system"] == broker.kind
    assert batch_send.attributes["messaging.batch.message_count"] == 2
    assert ids(one) == (single_send.context.trace_id, single_send.context.span_id)
    assert one.header("x") == b"kept" and [k for k, _ in one.headers].count("traceparent") == 1
    for message in batch:
        assert ids(message) == (batch_send.context.trace_id, batch_send.context.span_id)


async def test_a_handler_runs_in_the_producers_trace_and_what_it_publishes_joins_it(
    broker: Any, unique_topic: Callable[..., str], span_exporter: InMemorySpanExporter
) -> None:
    topic, out = unique_topic("in"), unique_topic("out")
    await broker.create_topics([topic, out])
    await readable(broker, out)
    service = Microservice(broker, [relay_for(broker, topic, out)], name=unique_topic("relay"))
    await service.start()
    try:
        with tracer().start_as_current_span("origin") as origin:
            await broker.emit(topic, {"id": 7}, key="7")
        (accepted,) = await read(broker, out, 1)
        await wait_for(lambda: by_name(span_exporter, f"process {topic}"), STEP)
    finally:
        await service.stop()
    (process,) = by_name(span_exporter, f"process {topic}")
    (send_in,) = by_name(span_exporter, f"send {topic}")
    (send_out,) = by_name(span_exporter, f"send {out}")
    trace_id = origin.get_span_context().trace_id
    assert {s.context.trace_id for s in (process, send_in, send_out)} == {trace_id}
    assert process.kind == SpanKind.CONSUMER and process.parent.span_id == send_in.context.span_id
    assert process.attributes["messaging.consumer.group.name"] == service.group_id
    assert process.attributes["messaging.kafka.message.key"] == "7"
    assert send_out.parent.span_id == process.context.span_id
    assert ids(accepted) == (trace_id, send_out.context.span_id)


async def test_a_failing_handler_is_recorded_on_its_span(
    broker: Any, unique_topic: Callable[..., str], span_exporter: InMemorySpanExporter
) -> None:
    topic = unique_topic()
    await broker.create_topics([topic])

    class Failing(Controller):
        @event_pattern(topic)
        def handle(self, payload: dict[str, Any]) -> None:
            raise ValueError(f"no {payload['id']}")

    service = Microservice(broker, [Failing()], name=unique_topic("failing"))
    await service.start()
    try:
        await broker.emit(topic, {"id": 1})
        await wait_for(lambda: service.dead_lettered.get(topic), STEP)
    finally:
        await service.stop()
    (process,) = by_name(span_exporter, f"process {topic}")
    assert process.status.status_code == StatusCode.ERROR
    assert [e.attributes["exception.type"] for e in process.events if e.name == "exception"] == ["ValueError"]


async def test_a_request_and_its_reply_are_one_trace(
    broker: Any, unique_topic: Callable[..., str], span_exporter: InMemorySpanExporter
) -> None:
    pattern = unique_topic("ask")

    class Answers(Controller):
        @message_pattern(pattern)
        async def answer(self, payload: dict[str, Any]) -> int:
            return payload["n"] * 2

    service = Microservice(broker, [Answers()], name=unique_topic("answers"))
    client = ClientProxy(broker, client_id="asker")
    await service.start()
    try:
        assert await client.send(pattern, {"n": 21}, timeout=STEP) == 42
    finally:
        await client.close()
        await service.stop()
    (request,) = by_name(span_exporter, f"request {pattern}")
    (send,) = by_name(span_exporter, f"send {pattern}")
    (process,) = by_name(span_exporter, f"process {pattern}")
    (reply,) = by_name(span_exporter, f"send {pattern}.reply")
    assert request.kind == SpanKind.CLIENT and request.parent is None
    assert send.parent.span_id == request.context.span_id
    assert process.parent.span_id == send.context.span_id
    assert reply.parent.span_id == process.context.span_id
    # the request span lasts until the reply arrived, so past the reply's send; not always past its
    # end: on Kafka the reply may be consumed before its producer has the broker's acknowledgement
    assert request.end_time >= reply.start_time


async def test_a_pipelines_synchronous_part_runs_in_the_records_trace(
    broker: Any, unique_topic: Callable[..., str], span_exporter: InMemorySpanExporter
) -> None:
    from opentelemetry import trace

    topic = unique_topic()
    await broker.create_topics([topic])
    seen: list[int] = []

    class Pipeline(Controller):
        @event_pattern(topic, pipeline=True)
        def handle(self, messages: Any) -> Any:
            return messages.pipe(
                ops.do_action(lambda m: seen.append(trace.get_current_span().get_span_context().trace_id))
            )

    service = Microservice(broker, [Pipeline()], name=unique_topic("pipeline"))
    await service.start()
    try:
        with tracer().start_as_current_span("origin") as origin:
            await broker.emit(topic, {"id": 1})
        await wait_for(lambda: seen, STEP)
    finally:
        await service.stop()
    assert seen == [origin.get_span_context().trace_id]


async def test_a_requests_process_span_lasts_until_its_reply_and_records_a_failure(
    broker: Any, unique_topic: Callable[..., str], span_exporter: InMemorySpanExporter
) -> None:
    pattern = unique_topic("slow")

    class Answers(Controller):
        @message_pattern(pattern)
        async def answer(self, payload: dict[str, Any]) -> int:
            await asyncio.sleep(0.05)
            if payload["n"] < 0:
                raise ValueError("negative")
            return payload["n"]

    service = Microservice(broker, [Answers()], name=unique_topic("answers"))
    client = ClientProxy(broker, client_id="asker")
    await service.start()
    try:
        assert await client.send(pattern, {"n": 1}, timeout=STEP) == 1
        with pytest.raises(RemoteError):
            await client.send(pattern, {"n": -1}, timeout=STEP)
        await wait_for(lambda: len(by_name(span_exporter, f"process {pattern}")) == 2, STEP)
    finally:
        await client.close()
        await service.stop()
    ok, failed = sorted(by_name(span_exporter, f"process {pattern}"), key=lambda s: s.start_time)
    assert (ok.end_time - ok.start_time) / 1e9 >= 0.05  # the handler's 50 ms inside it
    (reply, _) = sorted(by_name(span_exporter, f"send {pattern}.reply"), key=lambda s: s.start_time)
    assert reply.parent.span_id == ok.context.span_id and reply.end_time <= ok.end_time
    assert ok.status.status_code == StatusCode.UNSET and failed.status.status_code == StatusCode.ERROR
    assert ok.attributes["messaging.consumer.group.name"] == service.request_group_id


async def test_a_sinks_records_carry_the_trace_and_a_dead_letter_stays_in_it(
    broker: Any, unique_topic: Callable[..., str], span_exporter: InMemorySpanExporter
) -> None:
    topic, out = unique_topic("in"), unique_topic("out")
    await broker.create_topics([topic, out])
    await readable(broker, out, topic + ".DLT")
    with tracer().start_as_current_span("origin") as origin:
        sink = broker.sink(out)
        sink.on_next({"id": 1})
        await sink.flush()

    class Failing(Controller):
        @event_pattern(topic)
        def handle(self, payload: dict[str, Any]) -> None:
            raise ValueError("no")

    service = Microservice(broker, [Failing()], name=unique_topic("failing"))  # concurrency 1: payload routes
    await service.start()
    try:
        with tracer().start_as_current_span("producer") as producer:
            await broker.emit(topic, {"id": 2})
        await wait_for(lambda: service.dead_lettered.get(topic), STEP)
    finally:
        await service.stop()
    (sunk,) = await read(broker, out, 1)
    assert ids(sunk)[0] == origin.get_span_context().trace_id
    (dead,) = await read(broker, topic + ".DLT", 1)
    assert ids(dead)[0] == producer.get_span_context().trace_id  # the dead letter joins the record's trace
    (dlt_send,) = by_name(span_exporter, f"send {topic}.DLT")
    assert dlt_send.context.trace_id == producer.get_span_context().trace_id


async def test_each_new_provider_gets_the_spans_made_while_it_is_set() -> None:
    from reactive_services.adapters.memory import InMemoryBroker

    broker = InMemoryBroker()
    await broker.start()
    try:
        for n in range(20):  # providers come and go (ids of collected objects are reused)
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            set_tracer_provider(provider)
            try:
                await broker.emit("t", {"n": n})
            finally:
                set_tracer_provider(None)
                provider.shutdown()
            assert [s.name for s in exporter.get_finished_spans()] == ["send t"], n
            del provider, exporter
    finally:
        await broker.stop()


def test_frames_carry_the_trace_context_but_not_the_baggage(span_exporter: InMemorySpanExporter) -> None:
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    from reactive_services.adapters.tracing import trace_carrier

    token = otel_context.attach(baggage.set_baggage("user.id", "secret"))
    try:
        with tracer().start_as_current_span("delivery"):
            assert set(trace_carrier()) == {"traceparent"}
    finally:
        otel_context.detach(token)
