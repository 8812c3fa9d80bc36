"""A consume-transform-produce service as a process of its own (the fault scenario R10 kills and restarts it).

    python -m reactive_services.examples.shop.transform_process --bootstrap-servers HOST:PORT \
        --topic TOPIC --output OUTPUT --group GROUP [--guarantee exactly_once] [--via sink] [--work-s 0.002]

It consumes ``TOPIC`` in consumer group ``GROUP`` and, for each record ``{"id": N, "qty", "price"}``,
works ``--work-s`` seconds and publishes ``{"id": N, "amount": qty * price}`` to ``OUTPUT`` (key
``N``): with ``--via sink`` (the default) a pipeline handler ending in ``broker.sink(OUTPUT)``,
with ``--via emit`` an ``async def`` payload handler awaiting ``broker.emit``. With
``--guarantee exactly_once`` (the default) the service runs
``Microservice(..., processing_guarantee="exactly_once")``: the outputs and the input offsets
commit in one Kafka transaction, so a ``read_committed`` reader of ``OUTPUT`` sees each input's
output once, however often the process is killed; with ``at_least_once`` the outputs are
published as they are made and the offsets committed after them, so a kill repeats the outputs
of the records handled since the last commit.

It prints ``ready`` on stdout once the group assigned it partitions, runs until SIGTERM / SIGINT,
then shuts down gracefully. Exit codes: 0 after a graceful shutdown; 1 a failure while running;
2 a bad argument or a broker that cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import reactivex.operators as ops
from reactivex import Observable

from reactive_services import Controller, KafkaBroker, Message, Microservice, Running, System, event_pattern, serve
from reactive_services.cli import run_command
from reactive_services.readiness import readiness, ready

__all__ = ["main", "run", "transform_controller"]

PROG = "python -m reactive_services.examples.shop.transform_process"


def transform_controller(broker: KafkaBroker, topic: str, output: str, work_s: float, via: str = "sink") -> Controller:
    """A controller that publishes each record's transform ``{"id", "amount"}`` to ``output``.

    ``via="sink"``: a pipeline handler, ``messages.pipe(map(work + transform), do(broker.sink(output)))``
    (the sink holds each record's commit until its publish is acknowledged); ``via="emit"``: an
    ``async def`` payload handler awaiting ``broker.emit``. ``work_s``: seconds of (blocking) work
    per record.
    """
    sink = broker.sink(output, key=lambda out: str(out["id"]))

    def transform(message: Message) -> dict[str, Any]:
        if work_s:
            time.sleep(work_s)
        value = message.value
        return {"id": value["id"], "amount": value["qty"] * value["price"]}

    class ViaSink(Controller):
        @event_pattern(topic, pipeline=True)
        def records(self, messages: Observable[Message]) -> Observable[dict[str, Any]]:
            return messages.pipe(ops.map(transform), ops.do(sink))

    class ViaEmit(Controller):
        @event_pattern(topic)
        async def record(self, value: dict[str, Any], message: Message) -> None:
            await broker.emit(output, transform(message), key=message.key)

    return ViaSink() if via == "sink" else ViaEmit()


async def run(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM / SIGINT (:func:`reactive_services.serve`); returns the exit code."""
    announcing: list[asyncio.Task[None]] = []

    async def system() -> System:
        broker = KafkaBroker(args.bootstrap_servers, request_timeout_s=30.0, commit_interval_s=args.commit_interval_s)
        await broker.start()
        service = Microservice(
            broker,
            [transform_controller(broker, args.topic, args.output, args.work_s, args.via)],
            name="transform",
            group_id=args.group,
            processing_guarantee=args.guarantee,
        )

        def stop_announcing() -> None:
            for task in announcing:
                task.cancel()

        return System([service], on_stopped=[stop_announcing, broker.stop])

    def on_ready(running: Running) -> None:
        announcing.append(asyncio.ensure_future(_announce_when_assigned(running)))

    return await serve(system, on_ready=on_ready, shutdown_timeout_s=30.0)


async def _announce_when_assigned(running: Running) -> None:
    """Print ``ready`` once the service's source was assigned partitions."""
    check = readiness(running.services[0].broker, running.services)
    while not ready(await check()):
        await asyncio.sleep(0.05)
    print("ready", flush=True)


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run; returns the exit code (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--guarantee", choices=["exactly_once", "at_least_once"], default="exactly_once")
    parser.add_argument("--via", choices=["sink", "emit"], default="sink", help="how outputs are published")
    parser.add_argument("--work-s", type=_seconds, default=0.002, help="seconds of work per record (default 0.002)")
    parser.add_argument("--commit-interval-s", type=_seconds, default=0.5, help="seconds between commits (default 0.5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    code, result = run_command(lambda: run(args))
    return result if code == 0 and result is not None else code


if __name__ == "__main__":
    sys.exit(main())
