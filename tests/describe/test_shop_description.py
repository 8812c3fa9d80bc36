"""The shop's AsyncAPI document and topology picture in the docs are the ones its code describes
today (``python3 scripts/describe_shop.py`` rewrites them)."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def describe_shop():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("describe_shop", ROOT / "scripts" / "describe_shop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_asyncapi_document_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "shop" / "asyncapi.yaml").read_bytes()
    assert committed == describe_shop().asyncapi_yaml(), "run: python3 scripts/describe_shop.py"


def test_the_committed_topology_picture_is_up_to_date() -> None:
    # compared by what it shows (Graphviz versions lay the same graph out differently)
    script = describe_shop()
    committed = ET.parse(ROOT / "docs" / "shop" / "topology.svg").getroot()
    fresh = ET.fromstring(script.render_svg(script.topology_dot()))

    def shown(root: ET.Element) -> tuple[list[str], list[str]]:
        titles = sorted(t.text or "" for t in root.iter(SVG + "title"))
        texts = sorted(t.text or "" for t in root.iter(SVG + "text"))
        return titles, texts

    assert shown(committed) == shown(fresh), "run: python3 scripts/describe_shop.py"
    assert "order.created" in shown(committed)[1]
