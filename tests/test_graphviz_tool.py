"""Graphviz's ``dot`` (Debian's graphviz, installed by scripts/test) turns DOT into SVG, and the
helper of tests/graphviz_check.py reads what it drew."""

from __future__ import annotations

from pathlib import Path

import graphviz_check
import pytest
from graphviz_check import GraphvizMissing, parse_svg, render_svg, svg_texts, svg_titles


def test_dot_renders_a_tiny_digraph_as_svg() -> None:
    svg = render_svg('digraph topology { orders -> "order.created" [label="publish"]; "order.created" -> inventory }')
    assert parse_svg(svg).get("viewBox")
    assert svg_titles(svg) == {
        "graph": ["topology"],
        "node": ["orders", "order.created", "inventory"],
        "edge": ["orders->order.created", "order.created->inventory"],
    }
    assert svg_texts(svg) == ["orders", "order.created", "publish", "inventory"]


def test_a_dot_syntax_error_fails_with_dots_message() -> None:
    with pytest.raises(AssertionError, match=r"dot -Tsvg failed \(1\): .*syntax error"):
        render_svg("digraph { a -> }")


def test_missing_dot_raises_naming_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GraphvizMissing, match=r"dot \(Graphviz\) is not installed: run scripts/test"):
        graphviz_check.render_svg("digraph { a }")
