"""Run the shop's fault scenarios on a real Kafka broker and print a table.

    python bench/faults.py [R1 R2 R3 R4 R7 R8 R9 R10 R11]

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` when set (R3 always starts a broker of its own, since it
stops and restarts it); otherwise each scenario starts a local broker with
reactive_services.testing.local_kafka. See :mod:`reactive_services.examples.shop.faults` for what
each scenario does and checks.
Exit code 1 when any scenario lost an order (R8, R10, R11: a record; R9: a line), ended with an
inexact stock (R8 to R11 keep no stock: "n/a"), or, for R9, counted a line more than once in the
published windows, or, for R10 (exactly-once), published an output more than once (their
"duplicates" must be 0 too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from reactive_services.examples.shop.faults import SCENARIOS, ScenarioResult, run_all

#: scenarios whose duplicates are not absorbed redeliveries but records counted twice: they must be 0
EXACTLY_ONCE = ("R9", "R10")


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
    failed = [r for r in results if r.lost or r.stock_exact is False or (r.scenario in EXACTLY_ONCE and r.duplicates)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
