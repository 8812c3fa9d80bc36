"""One trace from ``POST /orders`` to the websocket frame a client receives: the gateway's HTTP
span, the order's topic, the inventory, the inventory's event, the notification service and the
websocket delivery, with the OpenTelemetry SDK's in-memory span_exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from gatewayshop import STEP, Shop, start_shop
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from websockets.asyncio.client import connect as ws_connect

from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.testing import wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def traced_shop(
    span_exporter: InMemorySpanExporter, memory_broker: InMemoryBroker, tmp_path: Path
) -> AsyncIterator[Shop]:
    async with start_shop(memory_broker, tmp_path) as shop:
        yield shop


def trace_id_of(traceparent: str) -> int:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
    return int(trace_id, 16)


async def test_one_order_is_one_trace_from_the_http_request_to_the_websocket_frame(
    traced_shop: Shop, span_exporter: InMemorySpanExporter
) -> None:
    shop = traced_shop
    headers = {"Authorization": f"Bearer {shop.token('alice')}"}
    async with ws_connect(shop.ws_url, proxy=None, additional_headers=headers) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channels": ["inventory"]}).decode())
        assert orjson.loads(await asyncio.wait_for(ws.recv(), STEP))["type"] == "subscribed"
        response = await shop.http.post(
            "/orders", headers=headers, json={"items": [{"product_id": "p-plenty", "quantity": 1}]}
        )
        assert response.status_code == 202, response.text
        order_id = response.json()["order_id"]
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), STEP))
    assert frame["type"] == "event" and frame["event"]["data"]["order_id"] == order_id
    trace_id = trace_id_of(frame["trace"]["traceparent"])

    def spans() -> list[ReadableSpan]:
        return [s for s in span_exporter.get_finished_spans() if s.context.trace_id == trace_id]

    await wait_for(lambda: any(s.name == "send inventory" for s in spans()), STEP)
    ns = shop.namespace
    found = {(s.name, s.kind) for s in spans()}
    http = [s for s in spans() if s.kind == SpanKind.SERVER and s.name == "POST /orders"]
    assert len(http) == 1, found
    assert http[0].parent is None  # the trace starts at the gateway
    assert {
        (f"send {ns}order.created", SpanKind.PRODUCER),
        (f"process {ns}order.created", SpanKind.CONSUMER),  # the inventory (and the order query service)
        (f"send {ns}inventory.updated", SpanKind.PRODUCER),
        (f"process {ns}inventory.updated", SpanKind.CONSUMER),  # the notification service
        ("send inventory", SpanKind.PRODUCER),  # the websocket delivery
    } <= found

    by_id = {s.context.span_id: s for s in spans()}

    def chain(span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    (delivery,) = [s for s in spans() if s.name == "send inventory"]
    assert delivery.attributes["reactive_services.websocket.subscribers"] == 1
    # the frame carries the delivery span's own context
    assert f"{delivery.context.span_id:016x}" == frame["trace"]["traceparent"].split("-")[2]
    ancestry = chain(delivery)
    assert ancestry[:3] == [
        f"process {ns}inventory.updated",
        f"send {ns}inventory.updated",
        f"process {ns}order.created",
    ]
    assert ancestry[3] == f"send {ns}order.created"
    assert by_id[delivery.context.span_id] is delivery and ancestry[-1] == http[0].name
    groups = {s.attributes.get("messaging.consumer.group.name") for s in spans() if s.kind == SpanKind.CONSUMER}
    assert {f"{ns}inventory", f"{ns}notifications"} <= groups
