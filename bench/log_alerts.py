"""The default alerts on the shipped loghub samples: counts per kind, and Linux's alerts judged
against incidents read from its raw lines (issue 14 item 4; docs/shop/log-analytics.md, "Alerts
on the shipped logs").

    python bench/log_alerts.py [--table]

Incidents of ``Linux_2k.log``, found with regular expressions on the raw lines (independently
of the templates and levels of the code under test) and grouped into episodes (same kind and
remote host, lines at most 10 minutes apart):

* ssh brute force: ``sshd(pam_unix)... authentication failure ... rhost=H``, >= 5 from one host;
* ftp connection flood: ``ftpd[...]: connection from A``, >= 10 from one address;
* klogind/Kerberos failures, >= 5; ftpd/xinetd socket errors (``getpeername``, ``can't get
  client addr``), >= 3; a reboot (``kernel:`` lines), >= 3.

An alert whose window overlaps an incident no earlier alert covered is *true*; one whose
incidents were all alerted already is a *duplicate*; one that overlaps none is *noise*.
``--table`` prints each alert as a Markdown row.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from reactive_services.examples.shop.log_sources import LINUX_DEFAULT_YEAR, SOURCES, default_files
from reactive_services.logs import analyze_file

_PATTERNS = [
    ("ssh brute force", re.compile(r"sshd\(pam_unix\)\[\d+\]: authentication failure;.*rhost=(\S+)"), 5),
    ("klogind/Kerberos failures", re.compile(r"klogind\[\d+\]: (?:Authentication failed|Kerberos authentication)"), 5),
    ("ftp connection flood", re.compile(r"ftpd\[\d+\]: connection from (\S+)"), 10),
    ("ftpd/xinetd socket errors", re.compile(r"getpeername|can't get client addr"), 3),
    ("reboot", re.compile(r" kernel: "), 3),
]


def incidents(lines: list[str]) -> list[dict[str, Any]]:
    """The incidents of the Linux sample (see the module docstring), in time order."""
    episodes: list[dict[str, Any]] = []
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        at = datetime.strptime(f"{LINUX_DEFAULT_YEAR} {line[:15]}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)
        for kind, pattern, _ in _PATTERNS:
            match = pattern.search(line)
            if match:
                key = (kind, match.group(1) if match.groups() else "")
                episode = open_.get(key)
                if episode is None or (at - episode["end"]).total_seconds() > 600:
                    episode = open_[key] = {"kind": kind, "host": key[1], "start": at, "end": at, "lines": 0}
                    episodes.append(episode)
                episode["end"], episode["lines"] = at, episode["lines"] + 1
                break
    least = {kind: n for kind, _, n in _PATTERNS}
    return [e for e in episodes if e["lines"] >= least[e["kind"]]]


def judge(alerts: list[dict[str, Any]], found: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[Any], str]]:
    alerted: set[int] = set()
    out = []
    for alert in alerts:
        start = datetime.fromtimestamp(alert["window_start_s"], UTC)
        end = datetime.fromtimestamp(alert["window_end_s"], UTC)
        hit = [i for i, e in enumerate(found) if e["start"] < end and e["end"] >= start]
        verdict = "noise" if not hit else ("true" if set(hit) - alerted else "duplicate")
        alerted.update(hit)
        out.append((alert, [found[i] for i in hit], verdict))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="print Linux's alerts as Markdown rows")
    args = parser.parse_args(argv)
    reports = {name: asyncio.run(analyze_file(path, SOURCES[name])) for name, path in default_files().items()}
    for name, report in reports.items():
        kinds = Counter(a["kind"] for a in report["alerts"])
        print(f"{name}: {len(report['windows'])} windows, {len(report['alerts'])} alerts {dict(sorted(kinds.items()))}")
    found = incidents(default_files()["Linux"].read_text(encoding="utf-8").splitlines())
    judged = judge(reports["Linux"]["alerts"], found)
    verdicts = Counter(v for _, _, v in judged)
    covered = {id(e) for _, hit, _ in judged for e in hit}
    print(f"Linux: {dict(verdicts)}; {len(covered)} of {len(found)} incidents alerted")
    if args.table:
        for alert, hit, verdict in judged:
            evidence = alert["evidence"]
            if alert["kind"] == "error_rate":
                baseline = evidence["baseline_errors"]
                what = f"{evidence['errors']} errors / {evidence['lines']} lines, baseline " + (
                    "none" if baseline is None else f"{baseline:.1f}"
                )
            else:
                top = evidence["templates"][0]
                what = f"`{top['template'][:45]}` x{top['count']}"
            shown = "; ".join(f"{e['kind']} {e['host']} ({e['lines']} lines)".replace("  ", " ") for e in hit)
            window = alert["window_start"][5:16].replace("T", " ")
            print(f"| {window} | {alert['kind']} | {what} | {shown or '-'} | {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
