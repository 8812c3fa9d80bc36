"""LogFormat's fast pattern (possessive leading fields) gives exactly the regex's fields: on the
loghub formats with their own lines, and on lines made to trip it (runs of spaces, empty
fields, brackets, colons, missing parts)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from reactive_services.examples.shop.log_sources import DATA_DIR
from reactive_services.logs import LogFormat, read_lines

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "data" / "loghub"


def _formats() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("bench_log_accuracy", ROOT / "bench" / "log_accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    formats: dict[str, str] = module.LOGHUB_FORMATS
    return formats


def _regex_only(log_format: LogFormat, line: str) -> dict[str, str | None] | None:
    """What LogFormat.parse gave before the fast pattern: the regex alone."""
    match = log_format.regex.match(line.strip())
    if match is None and line[-1:].isspace():
        match = log_format.regex.match(line.lstrip())
    return None if match is None else match.groupdict()


def _tricky_lines(rng: random.Random, real: list[str], n: int) -> list[str]:
    pieces = ["a", "b1", "[x]", "x:", ":", "-", "  ", " ", "\t", "[", "]", "(y)", "|", ",", "INFO", "sshd[12]:"]
    lines = []
    for _ in range(n):
        if real and rng.random() < 0.5:  # a real line with spaces doubled, dropped or added
            words = rng.choice(real).split(" ")
            cut = rng.randrange(len(words) + 1)
            words[cut:cut] = [rng.choice(["", " ", "x y", ":", "[1]"])]
            lines.append(" ".join(words) + rng.choice(["", " ", "  "]))
        else:
            lines.append(rng.choice(["", " "]) + "".join(rng.choice(pieces) for _ in range(rng.randrange(12))))
    return lines


def test_the_fast_pattern_gives_the_regexs_fields() -> None:
    rng = random.Random(7)
    checked = fast_formats = 0
    for name, fmt in _formats().items():
        log_format = LogFormat.from_loghub(fmt)
        fast_formats += log_format.fast is not None
        path = DATA_DIR / f"{name}_2k.log"
        if not path.is_file():
            path = SAMPLES / f"{name}_300.log"
        real = read_lines(path)[:300]
        for line in real + _tricky_lines(rng, real, 1500):
            assert log_format.parse(line) == _regex_only(log_format, line), (name, line)
            checked += 1
    assert fast_formats >= 10 and checked > 20_000  # most loghub formats start with spaced fields


def test_a_format_that_does_not_start_with_spaced_fields_has_no_fast_pattern() -> None:
    assert LogFormat.from_loghub(r"\[<Time>\] \[<Level>\] <Content>").fast is None
    assert LogFormat.from_loghub(r"<Time>\|<Component>\|<Content>").fast is None
    assert LogFormat.from_loghub("<Content>").fast is None
    spaced = LogFormat.from_loghub("<Date> <Time>  <Level>: <Content>")
    assert spaced.fast is not None
    assert spaced.fast.pattern == r"^(?P<Date>\S*+)\s++(?P<Time>\S*+)\s++(?P<Level>.*?):\s+(?P<Content>.*)$"
