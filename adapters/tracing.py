"""OpenTelemetry tracing: spans for publishing and processing records, and the W3C trace context
carried in record headers and websocket event frames.

Nothing is traced until an OpenTelemetry SDK is set up (``opentelemetry.trace.set_tracer_provider``
with the SDK's ``TracerProvider``, or :func:`set_tracer_provider` here for this library only):
without one, the only cost is :func:`tracing_enabled`, one module attribute read, checked once per
``emit`` / ``emit_batch``, once per service start and once per websocket notification.

With one, following the OpenTelemetry semantic conventions for messaging
(https://opentelemetry.io/docs/specs/semconv/messaging/):

- ``send <topic>`` (PRODUCER) around each ``emit`` / ``emit_batch``; each record gets the
  ``traceparent`` (and ``tracestate``) header of that span (W3C Trace Context,
  https://www.w3.org/TR/trace-context/), so the consumer's span joins the same trace;
- ``process <topic>`` (CONSUMER) around the delivery of each record to a service's handler, its
  parent the context in the record's headers (:func:`process_span`);
- ``send <channel>`` (PRODUCER) around a websocket notification; the event frame carries the
  context as ``"trace": {"traceparent": ...}``.

Attributes: ``messaging.system`` (``"kafka"``, or ``"memory"`` for the in-memory broker),
``messaging.destination.name``, ``messaging.operation.type`` (``send`` / ``process``),
``messaging.consumer.group.name``, ``messaging.destination.partition.id``,
``messaging.kafka.offset``, ``messaging.kafka.message.key``, ``messaging.batch.message_count``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._codec import encode_headers
from ._message import HeadersIn, Message

__all__ = [
    "TRACE_HEADERS",
    "TraceHeaders",
    "extract_context",
    "process_span",
    "publish_span",
    "record_failure",
    "set_tracer_provider",
    "start_process_span",
    "trace_carrier",
    "tracer",
    "tracer_provider",
    "tracing_enabled",
    "with_trace",
]

#: The record headers the trace context travels in (W3C Trace Context).
TRACE_HEADERS = ("traceparent", "tracestate")

#: Record headers, ``((name, bytes), ...)``.
TraceHeaders = tuple[tuple[str, bytes], ...]

_override: trace.TracerProvider | None = None
_cached: tuple[Any, trace.Tracer] | None = None  # (provider, its tracer): compared with ``is``


def set_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Trace this library with ``provider`` instead of OpenTelemetry's global one (None: the
    global one again). For tests, and for an application that keeps several providers."""
    global _override
    _override = provider


def _provider() -> Any:
    if _override is not None:
        return _override
    # the global provider once set_tracer_provider was called; None until then (a plain read:
    # get_tracer_provider() looks the environment up each time nothing is set)
    return getattr(trace, "_TRACER_PROVIDER", None)


def tracing_enabled() -> bool:
    """True when a real (SDK) tracer provider is set up, globally or with :func:`set_tracer_provider`."""
    provider = _provider()
    return provider is not None and not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)


def tracer_provider() -> trace.TracerProvider:
    """The provider this library traces with: :func:`set_tracer_provider`'s, else the global one
    (e.g. for an instrumentation such as OpenTelemetry's ASGI middleware to join the same)."""
    return _override if _override is not None else trace.get_tracer_provider()


def tracer() -> trace.Tracer:
    """The library's tracer (instrumentation scope ``reactive_services``) of the current provider."""
    global _cached
    provider = _provider() or trace.get_tracer_provider()
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer("reactive_services", _version()))
    return _cached[1]


def _version() -> str | None:
    try:
        return importlib.metadata.version("reactive-services")
    except importlib.metadata.PackageNotFoundError:
        return None


_W3C = TraceContextTextMapPropagator()


def trace_carrier() -> dict[str, str]:
    """The current context as W3C Trace Context fields only (``{"traceparent": ...,
    "tracestate"?: ...}``; empty without a valid span): what a websocket frame carries to
    clients (not the baggage, which may hold internal values)."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def _header_carrier() -> dict[str, str]:
    """The current context as the configured propagators write it (W3C Trace Context and
    baggage by default): what a record carries to the services that read it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def publish_span(
    system: str, topic: str, *, count: int = 1, key: Any = None
) -> Iterator[tuple[tuple[str, bytes], ...]]:
    """A ``send <topic>`` PRODUCER span, current inside the block; yields the trace headers to add
    to each record published in it. An exception leaving the block is recorded on the span."""
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": topic,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
    }
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    if isinstance(key, str):
        attributes["messaging.kafka.message.key"] = key
    with tracer().start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes):
        yield tuple((name, value.encode()) for name, value in _header_carrier().items())


def with_trace(
    headers: HeadersIn | None, trace_headers: tuple[tuple[str, bytes], ...]
) -> tuple[tuple[str, bytes], ...]:
    """``headers`` (any shape ``emit`` takes) with their trace headers (``traceparent``,
    ``tracestate``, and the fields of the configured propagators, e.g. ``baggage``) replaced by
    ``trace_headers``.

    Raises:
        TypeError: as :func:`~reactive_services.adapters.encode_headers`.
    """
    fields = {*TRACE_HEADERS, *propagate.get_global_textmap().fields}
    kept = tuple(h for h in encode_headers(headers) if h[0] not in fields)
    return kept + trace_headers


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        found = [v.decode("latin-1") for k, v in carrier if k == key and v is not None]
        return found or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _HeaderGetter()


def extract_context(headers: Iterable[tuple[str, bytes]]) -> otel_context.Context:
    """The trace context in record headers (an empty one when they carry none)."""
    return propagate.extract(list(headers), getter=_GETTER)


def _process_attributes(system: str, message: Message, group_id: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": message.topic,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.partition.id": str(message.partition),
        "messaging.kafka.offset": message.offset,
    }
    if group_id is not None:
        attributes["messaging.consumer.group.name"] = group_id
    key = message.key
    if isinstance(key, bytes):
        attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
    return attributes


def start_process_span(
    system: str, message: Message, group_id: str | None = None
) -> tuple[trace.Span, otel_context.Context]:
    """A started ``process <topic>`` CONSUMER span for ``message``, its parent the trace context
    of the record's headers, and the context to make current while handling it (the span in
    the record's context: its baggage included). Not made current here; the caller ends it."""
    parent = extract_context(message.headers)
    span = tracer().start_span(
        f"process {message.topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=_process_attributes(system, message, group_id),
    )
    return span, trace.set_span_in_context(span, parent)


def record_failure(error: BaseException, span: trace.Span | None = None) -> None:
    """Record ``error`` on ``span`` (default: the current span), if it is recording, and mark
    the span failed. A cancellation is not a failure: nothing is recorded for it."""
    span = span if span is not None else trace.get_current_span()
    if span.is_recording() and not isinstance(error, asyncio.CancelledError):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


@contextmanager
def process_span(system: str, message: Message, group_id: str | None = None) -> Iterator[None]:
    """A ``process <topic>`` CONSUMER span around the handling of ``message`` (see
    :func:`start_process_span`), current inside the block. An exception leaving the block is
    recorded on the span."""
    span, context = start_process_span(system, message, group_id)
    token = otel_context.attach(context)
    try:
        yield
    except BaseException as exc:
        record_failure(exc, span)
        raise
    finally:
        otel_context.detach(token)
        span.end()
