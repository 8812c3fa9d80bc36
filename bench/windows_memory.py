"""Memory of keyed event-time windows with many distinct keys: per-key watermark vs. per-partition watermark.

    python bench/windows_memory.py [--keys 200000] [--span 2000] [--window 60] [--rounds 3]

The input: ``--keys`` distinct keys with one record each, event time moving evenly over
``--span`` seconds, into tumbling windows of ``--window`` seconds keyed by the record's key. With
``watermark="key"`` (the baseline) a key's watermark moves only with its own records, so no
window of a one-record key ever closes before the input ends; with ``watermark="partition"`` the
stream's event time closes them and the keys are forgotten.

Printed per variant (median of ``--rounds`` rounds, each in a fresh operator): the windows
emitted before the input completed, the memory held once every record was fed and before the
completion (``tracemalloc`` current, MiB, and bytes per key), the peak, and the time per record
(microseconds); then the ratios partition / key. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from typing import Any

from reactivex.subject import Subject

from reactive_services.operators import tumbling_event_time_window


def one_round(keys: int, span_s: float, window_s: float, watermark: str) -> dict[str, float]:
    subject: Subject[tuple[int, float]] = Subject()
    emitted: list[int] = [0]
    op = tumbling_event_time_window(window_s, timestamp=lambda r: r[1], key=lambda r: r[0], watermark=watermark)  # type: ignore[arg-type]

    def count(_window: Any) -> None:
        emitted[0] += 1

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    subscription = subject.pipe(op).subscribe(count)
    step = span_s / keys
    started = time.perf_counter()
    for i in range(keys):
        subject.on_next((i, i * step))
    elapsed = time.perf_counter() - started
    held, peak = tracemalloc.get_traced_memory()
    emitted_before_end = emitted[0]
    subject.on_completed()
    tracemalloc.stop()
    subscription.dispose()
    return {
        "emitted_before_end": emitted_before_end,
        "held_mib": (held - before) / 2**20,
        "bytes_per_key": (held - before) / keys,
        "peak_mib": (peak - before) / 2**20,
        "us_per_record": elapsed / keys * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200_000, help="distinct keys, one record each (default 200000)")
    parser.add_argument("--span", type=float, default=2000.0, help="event time covered, seconds (default 2000)")
    parser.add_argument("--window", type=float, default=60.0, help="window size, seconds (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant; the median is printed (default 3)")
    args = parser.parse_args(argv)
    if args.keys < 1 or args.rounds < 1 or not args.span > 0 or not args.window > 0:
        parser.error("--keys and --rounds must be >= 1, --span and --window > 0")

    results: dict[str, dict[str, float]] = {}
    for watermark in ("key", "partition"):
        rounds = [one_round(args.keys, args.span, args.window, watermark) for _ in range(args.rounds)]
        results[watermark] = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}

    print(f"{args.keys} keys, one record each, {args.span:g} s of event time, {args.window:g} s windows")
    print(f"{'watermark':<10}{'emitted before end':>20}{'held MiB':>10}{'B/key':>8}{'peak MiB':>10}{'us/record':>11}")
    for watermark, r in results.items():
        print(
            f"{watermark:<10}{r['emitted_before_end']:>20.0f}{r['held_mib']:>10.1f}{r['bytes_per_key']:>8.0f}"
            f"{r['peak_mib']:>10.1f}{r['us_per_record']:>11.2f}"
        )
    key, part = results["key"], results["partition"]
    print(
        f"ratios partition/key: held {part['held_mib'] / key['held_mib']:.3f}x, "
        f"peak {part['peak_mib'] / key['peak_mib']:.3f}x, time {part['us_per_record'] / key['us_per_record']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
