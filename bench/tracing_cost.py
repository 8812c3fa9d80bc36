"""What OpenTelemetry tracing costs: a service consuming and publishing, tracing off and on, side by side.

    python bench/tracing_cost.py [--records 20000] [--rounds 5] [--kafka HOST:PORT]

The work (in this process, on the in-memory broker unless ``--kafka`` names a broker): a
:class:`~reactive_services.Microservice` whose ``async def`` payload handler publishes one record
for each record it reads (``emit``, acknowledged), so each record costs one consume, one handler
call and one publish: the spans a traced deployment makes (``process <topic>`` and ``send
<topic>``), plus the trace context injected into the published record's headers and extracted
from the consumed one's.

Contenders, interleaved in each round (off, on, off, on, ...):

  off: no OpenTelemetry SDK set up (the API alone: what every user has by default);
  on:  the SDK's ``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter that drops
       the spans (the cost of making, recording and queueing them; not of shipping them), set
       with :func:`reactive_services.adapters.tracing.set_tracer_provider`; every trace sampled;
  10%: the same with the sampler production setups use, ``ParentBased(TraceIdRatioBased(0.1))``:
       a tenth of the traces recorded, the others carried (context propagated) but not recorded.

The input records are published before the clock starts, each in a trace of its own (its own
``send`` span, as a traced producer would); the clock runs from the service's start until the
last output record is acknowledged. Prints records/s per round, the median of the rounds for
each contender and the ratio to "off" of the medians. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from reactive_services import Controller, Microservice, event_pattern
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.tracing import set_tracer_provider


class _Drop(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


CONTENDERS = ("off", "on", "10%")


async def one_run(broker: Any, records: int, contender: str) -> float:
    """records/s of one run."""
    exporter = _Drop()
    provider = None
    traced = contender != "off"
    if traced:
        provider = (
            TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.1))) if contender == "10%" else TracerProvider()
        )
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=records * 4))
        set_tracer_provider(provider)
    try:
        run = uuid.uuid4().hex[:8]
        source, sink = f"in-{run}", f"out-{run}"
        await broker.create_topics([source, sink])
        for i in range(records):
            await broker.emit(source, {"n": i}, key=str(i % 64))
        done = asyncio.Event()
        handled = 0

        class Relay(Controller):
            @event_pattern(source)
            async def relay(self, payload: dict[str, Any]) -> None:
                nonlocal handled
                await broker.emit(sink, {"n": payload["n"] * 2})
                handled += 1
                if handled == records:
                    done.set()

        service = Microservice(broker, [Relay()], name=f"relay-{run}")
        started = time.perf_counter()
        await service.start()
        await asyncio.wait_for(done.wait(), 300)
        elapsed = time.perf_counter() - started
        await service.stop()
        return records / elapsed
    finally:
        if provider is not None:
            set_tracer_provider(None)
            provider.shutdown()  # exports what is queued
        if contender == "on" and exporter.spans < records * 3:
            print(f"  warning: only {exporter.spans} spans exported for {records} records", file=sys.stderr)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kafka", metavar="HOST:PORT", help="a Kafka broker instead of the in-memory one")
    args = parser.parse_args(argv)
    if args.kafka:
        from reactive_services.adapters.kafka import KafkaBroker

        broker: Any = KafkaBroker(args.kafka)
    else:
        broker = InMemoryBroker()
    await broker.start()
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    try:
        await one_run(broker, min(args.records, 2000), "off")  # warm-up
        for n in range(1, args.rounds + 1):
            for name in CONTENDERS:
                rates[name].append(await one_run(broker, args.records, name))
            print(f"round {n}: " + "   ".join(f"{name} {rates[name][-1]:>8,.0f}/s" for name in CONTENDERS))
    finally:
        await broker.stop()
    medians = {name: statistics.median(rates[name]) for name in CONTENDERS}
    where = f"Kafka at {args.kafka}" if args.kafka else "the in-memory broker"
    print(f"\n{args.records:,} records, consume + async handler + emit, on {where}; median of {args.rounds} rounds")
    labels = {
        "off": "tracing off (no SDK)",
        "on": "tracing on, every trace sampled",
        "10%": "tracing on, 10% of traces sampled",
    }
    for name in CONTENDERS:
        print(f"  {labels[name]:<36} {medians[name]:>9,.0f} records/s   {medians[name] / medians['off']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
