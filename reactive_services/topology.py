"""The topology of a deployment: which application consumes and produces which topic, and who
answers which request, as a graph (Graphviz DOT, an SVG drawn by Graphviz's ``dot``, or Mermaid).

Computed from the same declarations as the AsyncAPI document (:mod:`reactive_services.asyncapi`):
a Microservice's ``@event_pattern`` topics (consumes), the topics its handlers declare with
``emits=`` (produces) and its ``@message_pattern`` requests (answers); a ClientProxy's
``emits=`` (produces) and ``sends=`` (requests). Nothing is started or connected.

Example::

    graph = topology(inventory_service, notifications_service, client)
    svg = render_svg(graph.to_dot())
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

from ._contract import Application, Target, applications
from .errors import ConfigError

__all__ = ["Edge", "Node", "Topology", "render_svg", "topology"]

NodeKind = Literal["service", "client", "topic", "dead_letter", "request"]
EdgeKind = Literal["consumes", "produces", "requests", "answers"]


@dataclass(frozen=True, slots=True)
class Node:
    """A box of the graph.

    Attributes:
        id: unique among the nodes: ``service:<name>``, ``client:<name>``, ``topic:<topic>``,
            ``request:<topic>``.
        label: the text shown (a name, a topic, a request pattern).
        kind: ``"service"``, ``"client"``, ``"topic"``, ``"dead_letter"`` (a ``<topic>.DLT``)
            or ``"request"`` (a request pattern nobody among the targets sends).
    """

    id: str
    label: str
    kind: NodeKind


@dataclass(frozen=True, slots=True)
class Edge:
    """An arrow: ``source`` -> ``target`` (node ids).

    Attributes:
        kind: ``"consumes"`` (topic -> application), ``"produces"`` (application -> topic),
            ``"requests"`` (requester -> the service that answers, labelled with the request
            topic) or ``"answers"`` (a request no target sends -> the service that answers).
        label: the request topic of a ``requests`` / ``answers`` edge, else ``""``.
    """

    source: str
    target: str
    kind: EdgeKind
    label: str = ""


@dataclass(frozen=True)
class Topology:
    """Nodes and edges, in a stable order (applications as given, topics by first use).

    Attributes:
        nodes: every application and topic.
        edges: every use, once.
    """

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def consumed_by(self, application: str) -> set[str]:
        """The topics the application named ``application`` consumes."""
        me = self._ids_of(application)
        return {self._label(e.source) for e in self.edges if e.kind == "consumes" and e.target in me}

    def produced_by(self, application: str) -> set[str]:
        """The topics the application named ``application`` produces (dead-letter topics included)."""
        me = self._ids_of(application)
        return {self._label(e.target) for e in self.edges if e.kind == "produces" and e.source in me}

    def answered_by(self, application: str) -> set[str]:
        """The request topics the application named ``application`` answers."""
        me = self._ids_of(application)
        return {e.label for e in self.edges if e.kind in ("requests", "answers") and e.target in me}

    def requested_by(self, application: str) -> set[str]:
        """The request topics the application named ``application`` sends."""
        me = self._ids_of(application)
        return {e.label for e in self.edges if e.kind == "requests" and e.source in me}

    def _ids_of(self, application: str) -> set[str]:
        return {n.id for n in self.nodes if n.kind in ("service", "client") and n.label == application}

    def _label(self, node_id: str) -> str:
        return next(n.label for n in self.nodes if n.id == node_id)

    def to_dot(self, *, title: str | None = None) -> str:
        """The graph in Graphviz's DOT language: applications as boxes (services filled, clients
        dashed), topics as cylinders (dead-letter topics grey), requests as dashed arrows
        labelled with the request topic, left to right."""
        lines = [
            "digraph topology {",
            '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.6'
            + (f", label={_quote(title)}, labelloc=t" if title else "")
            + "];",
            '  node [fontname="Helvetica", fontsize=10];',
            '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
        ]
        styles = {
            "service": 'shape=box, style="rounded,filled", fillcolor="#dbe9ff", color="#3a6fb0"',
            "client": 'shape=box, style="rounded,dashed", color="#3a6fb0"',
            "topic": 'shape=cylinder, style=filled, fillcolor="#fff4d6", color="#b08a3a"',
            "dead_letter": 'shape=cylinder, style=filled, fillcolor="#eeeeee", color="#999999", fontcolor="#666666"',
            "request": 'shape=plaintext, fontcolor="#666666"',
        }
        for node in self.nodes:
            lines.append(f"  {_quote(node.id)} [label={_quote(node.label)}, {styles[node.kind]}];")
        for edge in self.edges:
            attrs = ""
            if edge.kind in ("requests", "answers"):
                attrs = f' [style=dashed, color="#7a4fb0", fontcolor="#7a4fb0", label={_quote(edge.label)}]'
            elif edge.target.startswith("topic:") and self._kind(edge.target) == "dead_letter":
                attrs = ' [color="#aaaaaa"]'
            lines.append(f"  {_quote(edge.source)} -> {_quote(edge.target)}{attrs};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """The graph as a Mermaid ``flowchart LR`` (topics as cylinders, requests dashed)."""
        ids = {node.id: f"n{i}" for i, node in enumerate(self.nodes)}
        lines = ["flowchart LR"]
        for node in self.nodes:
            label = node.label.replace('"', "#quot;")
            shape = {"topic": '[("{}")]', "dead_letter": '[("{}")]', "request": '>"{}"]'}.get(node.kind, '["{}"]')
            lines.append(f"  {ids[node.id]}{shape.format(label)}")
        for edge in self.edges:
            if edge.kind in ("requests", "answers"):
                lines.append(f'  {ids[edge.source]} -. "{edge.label}" .-> {ids[edge.target]}')
            else:
                lines.append(f"  {ids[edge.source]} --> {ids[edge.target]}")
        return "\n".join(lines) + "\n"

    def _kind(self, node_id: str) -> NodeKind:
        return next(n.kind for n in self.nodes if n.id == node_id)


def topology(*targets: Target, dead_letters: bool = True) -> Topology:
    """The graph of the applications in ``targets`` (Microservices, ClientProxies, Systems).

    Args:
        targets: as :func:`reactive_services.asyncapi.asyncapi_document` takes them.
        dead_letters: include the dead-letter topics (``<topic>.DLT``) the services may write.

    Raises:
        ConfigError: as :func:`reactive_services.asyncapi.asyncapi_document`.
    """
    apps = applications(*targets)
    nodes: dict[str, Node] = {}
    edges: dict[tuple[str, str, str, str], Edge] = {}

    def add_edge(edge: Edge) -> None:
        edges.setdefault((edge.source, edge.target, edge.kind, edge.label), edge)

    for app in apps:
        nodes[_app_id(app)] = Node(_app_id(app), app.name, app.kind)
    answerers: dict[str, list[str]] = {}
    for app in apps:
        for r in app.answers:
            answerers.setdefault(r.topic, []).append(_app_id(app))
    for app in apps:
        me = _app_id(app)
        for channel in app.receives:
            nodes.setdefault("topic:" + channel.topic, Node("topic:" + channel.topic, channel.topic, "topic"))
            add_edge(Edge("topic:" + channel.topic, me, "consumes"))
        for channel in app.sends:
            if channel.dead_letter and not dead_letters:
                continue
            kind: NodeKind = "dead_letter" if channel.dead_letter else "topic"
            nodes.setdefault("topic:" + channel.topic, Node("topic:" + channel.topic, channel.topic, kind))
            add_edge(Edge(me, "topic:" + channel.topic, "produces"))
        for request in app.requests:
            if request.topic in answerers:  # each service that answers (one, unless misconfigured)
                for answerer in answerers[request.topic]:
                    add_edge(Edge(me, answerer, "requests", request.topic))
            else:  # nobody among the targets answers: the request's topic stands alone
                nodes.setdefault("request:" + request.topic, Node("request:" + request.topic, request.topic, "request"))
                add_edge(Edge(me, "request:" + request.topic, "requests", request.topic))
    sent = {r.topic for app in apps for r in app.requests}
    for app in apps:
        for request in app.answers:
            if request.topic not in sent:
                nodes.setdefault("request:" + request.topic, Node("request:" + request.topic, request.topic, "request"))
                add_edge(Edge("request:" + request.topic, _app_id(app), "answers", request.topic))
    return Topology(tuple(nodes.values()), tuple(edges.values()))


def render_svg(dot_source: str, *, timeout_s: float = 30.0) -> bytes:
    """Draw DOT source as SVG with Graphviz's ``dot`` (Debian package ``graphviz``).

    Raises:
        ConfigError: ``dot`` is not installed (key ``"graphviz"``).
        RuntimeError: ``dot`` failed (its message) or took longer than ``timeout_s`` seconds.
    """
    dot = shutil.which("dot")
    if dot is None:
        raise ConfigError("graphviz", "the 'dot' command is missing: install Graphviz (apt-get install graphviz)")
    try:
        done = subprocess.run(
            [dot, "-Tsvg"], input=dot_source.encode(), capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"dot took longer than {timeout_s} s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"dot failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _app_id(app: Application) -> str:
    return f"{app.kind}:{app.name}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
