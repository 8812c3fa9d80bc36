"""The topology graph: which application consumes and produces which topic and answers which
request, for the shop; expected edges computed from the services and clients themselves."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from reactive_services import ClientProxy, InMemoryBroker, Microservice, event_pattern
from reactive_services.adapters import dead_letter_topic
from reactive_services.examples.shop.system import deployment
from reactive_services.topology import render_svg, topology


def test_the_shops_edges_are_the_services_own_topics() -> None:
    shop = deployment()
    graph = topology(shop)
    services = [a for a in shop.applications if isinstance(a, Microservice)]
    clients = [a for a in shop.applications if isinstance(a, ClientProxy)]
    assert {s.name for s in services} == {"orders", "inventory", "auth", "log-analytics", "notifications"}
    for service in services:
        sources = dict(service.sources)
        events = {t for group, topics in service.sources if group == service.group_id for t in topics}
        requests = set(sources.get(service.request_group_id, ()))
        emitted = {
            topic
            for handler in _handlers(service)
            for topic, _ in handler.__event_pattern__.emits  # type: ignore[attr-defined]
        }
        assert graph.consumed_by(service.name) == events, service.name
        assert graph.answered_by(service.name) == requests, service.name
        assert graph.produced_by(service.name) == emitted | {dead_letter_topic(t) for t in events | requests}
    for client in clients:
        assert graph.produced_by(client.client_id) == {t for t, _ in client.emits or ()}
        assert graph.requested_by(client.client_id) == {t for t, _ in client.sends or ()}


def test_in_the_shop_every_consumed_topic_has_a_producer_and_every_request_an_answerer() -> None:
    graph = topology(deployment())
    apps = [n.label for n in graph.nodes if n.kind in ("service", "client")]
    consumed = set().union(*(graph.consumed_by(a) for a in apps))
    produced = set().union(*(graph.produced_by(a) for a in apps))
    assert consumed - produced == set()
    requested = set().union(*(graph.requested_by(a) for a in apps))
    answered = set().union(*(graph.answered_by(a) for a in apps))
    assert requested - answered == set()
    # and the order flow is there, end to end
    assert "order.created" in graph.produced_by("gateway") & graph.consumed_by("inventory")
    assert {"inventory.updated", "order.rejected", "stock.low"} <= graph.produced_by("inventory")
    assert {"inventory.updated", "order.rejected", "stock.low"} <= graph.consumed_by("notifications")


def test_the_shops_picture_is_an_svg_naming_every_application() -> None:
    graph = topology(deployment(), dead_letters=False)
    svg = render_svg(graph.to_dot(title="shop"))
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"orders", "inventory", "auth", "log-analytics", "notifications", "gateway", "log-shipper"} <= texts
    assert {"order.created", "inventory.updated", "logs"} <= texts
    assert not {t for t in texts if t and t.endswith(".DLT")}


def test_a_request_nobody_sends_and_one_nobody_answers_stand_alone() -> None:
    class Lonely:
        @event_pattern("in", emits=["out"])
        def handle(self, payload: object) -> None: ...

    broker = InMemoryBroker()
    service = Microservice(broker, [Lonely()], name="lonely")
    client = ClientProxy(broker, client_id="asker", sends=["nobody.answers"])
    graph = topology(service, client, dead_letters=False)
    assert {(e.source, e.target, e.kind) for e in graph.edges} == {
        ("topic:in", "service:lonely", "consumes"),
        ("service:lonely", "topic:out", "produces"),
        ("client:asker", "request:nobody.answers", "requests"),
    }
    mermaid = graph.to_mermaid()
    assert mermaid.startswith("flowchart LR\n")
    assert '-. "nobody.answers" .->' in mermaid


def test_dot_failures_are_reported() -> None:
    with pytest.raises(RuntimeError, match="dot failed"):
        render_svg("digraph { this is not dot")


def _handlers(service: Microservice) -> list[object]:
    return [fn for spec, fn in service._declared if hasattr(fn, "__event_pattern__")]
