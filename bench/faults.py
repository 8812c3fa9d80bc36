"""Run the shop's fault scenarios on a real Kafka broker and print a table.

    python bench/faults.py [R1 R2 R3 R4 R7 R8]

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` when set (R3 always starts a broker of its own, since it
stops and restarts it); otherwise each scenario starts a local broker with
reactive_services.testing.local_kafka. See :mod:`reactive_services.examples.shop.faults` for what
each scenario does and checks.
Exit code 1 when any scenario lost an order (R8: a record) or ended with an inexact stock
(R8 keeps no stock: "n/a").
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from reactive_services.examples.shop.faults import SCENARIOS, ScenarioResult, run_all


def _stock(exact: bool | None) -> str:
    return "n/a" if exact is None else "yes" if exact else "NO"


def main() -> int:
    names = sys.argv[1:] or list(SCENARIOS)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    header = (
        f"{'scenario':<9}{'records sent':>13}{'processed':>11}{'duplicates absorbed':>21}{'lost':>6}"
        f"{'dead-lettered':>15}  stock exact  notes"
    )
    print(header)

    def row(r: ScenarioResult) -> None:
        print(
            f"{r.scenario:<9}{r.sent:>13}{r.processed:>11}{r.duplicates:>21}{r.lost:>6}{r.dead_lettered:>15}  "
            f"{_stock(r.stock_exact):<11}  {'; '.join(r.notes)}",
            flush=True,
        )

    results = asyncio.run(run_all(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), names, row))
    return 0 if all(r.lost == 0 and r.stock_exact is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
