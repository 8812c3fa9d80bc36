"""Run the shop's fault scenarios on a real Kafka broker and print a table.

    python bench/faults.py [R1 R2 R3 R4 R7 R8 R9 R10 R11 R1-rmq R3-rmq R4-rmq]
    python bench/faults.py --rabbitmq          # the RabbitMQ rows: R1-rmq R3-rmq R4-rmq

Uses ``$KAFKA_BOOTSTRAP_SERVERS`` when set (R3 always starts a broker of its own, since it
stops and restarts it); otherwise each scenario starts a local broker with
reactive_services.testing.local_kafka. See :mod:`reactive_services.examples.shop.faults` for what
each scenario does and checks. The ``-rmq`` rows run on RabbitMQ: ``$RABBITMQ_URL`` when set
(R3-rmq always starts a server of its own), else a local one per scenario
(reactive_services.testing.local_rabbitmq).
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

from reactive_services.examples.shop.faults import RABBITMQ_SCENARIOS, SCENARIOS, ScenarioResult, run_all

#: scenarios whose duplicates are not absorbed redeliveries but records counted twice: they must be 0
EXACTLY_ONCE = ("R9", "R10")


def _stock(exact: bool | None) -> str:
    return "n/a" if exact is None else "yes" if exact else "NO"


def main() -> int:
    args = sys.argv[1:]
    if "--rabbitmq" in args:
        args = [a for a in args if a != "--rabbitmq"] or RABBITMQ_SCENARIOS
    names = args or [name for name in SCENARIOS if name not in RABBITMQ_SCENARIOS]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios {unknown}: choose among {' '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("aiokafka", "aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    header = (
        f"{'scenario':<10}{'records sent':>13}{'processed':>11}{'duplicates absorbed':>21}{'lost':>6}"
        f"{'dead-lettered':>15}  stock exact  notes"
    )
    print(header)

    def row(r: ScenarioResult) -> None:
        print(
            f"{r.scenario:<10}{r.sent:>13}{r.processed:>11}{r.duplicates:>21}{r.lost:>6}{r.dead_lettered:>15}  "
            f"{_stock(r.stock_exact):<11}  {'; '.join(r.notes)}",
            flush=True,
        )

    results = asyncio.run(
        run_all(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), names, row, rabbitmq_url=os.environ.get("RABBITMQ_URL"))
    )
    failed = [r for r in results if r.lost or r.stock_exact is False or (r.scenario in EXACTLY_ONCE and r.duplicates)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
