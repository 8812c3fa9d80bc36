"""Graphviz for the tests: DOT source rendered to SVG by ``dot``, and the SVG read back.

``scripts/test`` installs Debian's ``graphviz`` (``scripts/install_tools.sh``) when ``dot`` is
missing.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

SVG_NS = "{http://www.w3.org/2000/svg}"
INSTALL = "run scripts/test, which installs Debian's graphviz (or scripts/install_tools.sh alone)"


class GraphvizMissing(RuntimeError):
    """``dot`` is not installed."""


def dot_command() -> str:
    """The path of ``dot``; raises :class:`GraphvizMissing` naming the install command when absent."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizMissing(f"dot (Graphviz) is not installed: {INSTALL}")
    return dot


def render_svg(dot_source: str) -> str:
    """``dot -Tsvg`` of ``dot_source``: the SVG text. A DOT syntax error fails with dot's message."""
    result = subprocess.run([dot_command(), "-Tsvg"], input=dot_source, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"dot -Tsvg failed ({result.returncode}): {result.stderr.strip()}"
    return result.stdout


def parse_svg(svg: str) -> ET.Element:
    """The SVG's root element, after checking that it is one (an ``<svg>`` in the SVG namespace)."""
    root = ET.fromstring(svg.encode())  # bytes: the text starts with an XML declaration naming its encoding
    assert root.tag == f"{SVG_NS}svg", root.tag
    return root


def svg_titles(svg: str) -> dict[str, list[str]]:
    """What ``dot`` drew, by kind: ``{"node": [names], "edge": ["a->b", ...], "graph": [name]}``.

    Graphviz writes every node, edge and graph as a ``<g class="node|edge|graph">`` whose
    ``<title>`` is the node's name, the edge's ``tail->head`` (``tail--head`` undirected) or the
    graph's name.
    """
    out: dict[str, list[str]] = {}
    for g in parse_svg(svg).iter(f"{SVG_NS}g"):
        title = g.find(f"{SVG_NS}title")
        kind = g.get("class")
        if kind and title is not None and title.text is not None:
            out.setdefault(kind, []).append(title.text)
    return out


def svg_texts(svg: str) -> list[str]:
    """The labels drawn in the SVG (every ``<text>``), in document order."""
    return [t.text for t in parse_svg(svg).iter(f"{SVG_NS}text") if t.text is not None]
