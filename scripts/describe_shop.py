"""Write the shop's AsyncAPI document and topology picture into the docs.

    python3 scripts/describe_shop.py        # docs/shop/asyncapi.yaml, docs/shop/topology.svg

tests/describe/test_shop_description.py checks that the committed files are what this writes
(run it after changing a handler, a payload model or an ``emits=``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from reactive_services.asyncapi import asyncapi_document, dumps
from reactive_services.examples.shop.system import deployment
from reactive_services.topology import render_svg, topology

DOCS = Path(__file__).resolve().parent.parent / "docs" / "shop"


def asyncapi_yaml() -> bytes:
    return dumps(asyncapi_document(deployment()), "yaml")


def topology_dot() -> str:
    return topology(deployment(), dead_letters=False).to_dot(title="The shop: services, topics and requests")


def main() -> int:
    (DOCS / "asyncapi.yaml").write_bytes(asyncapi_yaml())
    (DOCS / "topology.svg").write_bytes(render_svg(topology_dot()))
    print(f"wrote {DOCS / 'asyncapi.yaml'} and {DOCS / 'topology.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
