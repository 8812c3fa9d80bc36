"""The project's own streaming template miner: :class:`LogMiner`, configured by :class:`MinerSettings`.

One set of general settings for every log format (no per-dataset depth or similarity). The
algorithm takes from the literature, written anew here:

* token classes before grouping, as in the preprocessing of Brain (Yu et al., "Brain: Log
  Parsing With Bidirectional Parallel Tree", IEEE TSC 2023) and of the loghub benchmark (Zhu
  et al., "Tools and Benchmarks for Automated Log Parsing", ICSE-SEIP 2019): a run of
  characters holding a number that does not follow a letter (``4096``, ``blk_-1608``,
  ``10.0.0.1``, ``node-12``, not ``ssh2`` / ``ee0``), or a ``/`` (paths, URLs), is a variable;
  so are the matches of :data:`DEFAULT_MINER_MASKING` (dates, quantities with a unit, paths);
  the value of ``key=value`` is a token of its own; a token holding a variable is a variable;
  consecutive variables are one; a leader of dots (``instruction......0x0``) separates tokens;
* Brain's observation that the values of a variable position are many while the words of a
  constant position are few: a position is made a variable once ``merge_values`` groups that
  are alike everywhere else (the *siblings*) have shown different words there (lines of at most
  128 tokens; at least two other words, and half the others, must be words); and a new
  template with a variable where older ones have words takes them in;
* the fixed-length grouping of Drain (He et al., "Drain: An Online Log Parsing Approach with
  Fixed Depth Tree", ICWS 2017): a line only joins a template of its own token count, except
  through the *skeleton* below;
* the constant-token sequence of Spell (Du and Li, ICDM 2016), used only for equality: two
  lines whose constant tokens are the same sequence (at least two of them) are one event,
  whatever variables lie between (``bytes sent`` / ``bytes (1.2 KB) sent``).

Streaming: one line at a time; a line gets the id of its group as it stands, and later lines can
*merge* groups (a sibling merge, or a new template with a variable where older ones had words).
A merged id is never reused: it becomes an alias of the surviving id (:meth:`LogMiner.resolve`,
:attr:`LogMiner.merges`), and :meth:`LogMiner.template` of either gives the current template.
So a line's ``template_id`` is "the group it joined when it arrived"; its final group is
``resolve(template_id)``. No lookback buffer: every decision uses the miner's state only, which
:meth:`LogMiner.state` snapshots (JSON) and :meth:`LogMiner.restore` continues from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_MINER_MASKING", "MINER_STATE_VERSION", "LogMiner", "MinerSettings"]

#: The version of :meth:`LogMiner.state` (``restore`` refuses others).
MINER_STATE_VERSION = 1

WILDCARD = "<*>"

#: Masks applied before the token rules (each match becomes one variable): a ``ctime`` date
#: (``Sat Jun 18 02:08:10 2005``), a quantity with its unit (``1.16 KB``, ``<1 sec``,
#: ``2.5 seconds``), a path from its first ``/`` to the next space or quote.
DEFAULT_MINER_MASKING: tuple[tuple[str, str], ...] = (
    (
        r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
        r"\s+\d+\s+\d+:\d+:\d+(?:\s+\d+)?",
        "DATE",
    ),
    (r"(?<![\d.])\d+(?:\.\d+)?\s?(?:[KMGT]i?B|B|bytes|sec|secs|seconds|ms)\b", "QTY"),
    (r"""(?<![\w.])\.?/[^\s"']*""", "PATH"),
)

# substrings one of which each default mask's matches hold: lines without any skip the mask
_HINTS: tuple[tuple[str, ...], ...] = (
    ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    ("KB", "MB", "GB", "TB", "iB", " B", "bytes", "sec", "ms"),
    ("/",),
)
_HAS_VARIABLE = re.compile(r"\d|/")
# a run of characters between delimiters holding a digit that does not follow a letter, or a "/"
_RUN_CHAR = r"""[^\s=,:;()\[\]{}"']"""
_VARIABLE_RUN = re.compile(rf"(?<!{_RUN_CHAR}){_RUN_CHAR}*(?:(?<![A-Za-z])\d|/){_RUN_CHAR}*")
# the key of a split ``key=value`` token ends with this mark, so it is rendered joined to its value
_KEY_END = "=\x1f"


def _covers(template: tuple[str, ...], tokens: list[str]) -> bool:
    """``template`` (same length) has ``tokens``' token or a variable at every position."""
    for t, o in zip(template, tokens, strict=True):  # a plain loop: most differ early
        if t != o and t != WILDCARD:
            return False
    return True


def _render(tokens: list[str]) -> str:
    """A template's text: its tokens joined by spaces, a split ``key=`` joined to its value."""
    text = " ".join(tokens)
    return text.replace("\x1f ", "") if "\x1f" in text else text


#: the most masked lines remembered by :meth:`LogMiner.add` (a cache: results do not depend on
#: it), and the longest line (characters) it keeps
_LINE_CACHE_SIZE = 100_000
_LINE_CACHE_CHARS = 2_000
#: the most messages whose result :meth:`LogMiner.add` remembers while the templates do not
#: change (a cache: emptied when full; a message seen again costs one dict lookup)
_RESULT_CACHE_SIZE = 20_000
#: the longest constant token (characters) the token cache keeps
_TOKEN_CACHE_CHARS = 200
#: lines of more tokens take no part in sibling merges (a line of n tokens has n sibling keys of
#: n - 1 tokens each: bounded memory for very long lines; loghub's longest line has 90 tokens)
_MAX_SIBLING_TOKENS = 128
# the line cache's key: runs of ASCII digits not following a letter or digit read as "0". A
# refinement of the token rules' digit runs (a run after another script's digit is a variable
# there too), and ASCII classes match faster than \d. Written digit first: the runs of
# ``(?<![A-Za-z0-9])[0-9]+`` with the lookbehind after the first digit, so re skips to digits
_NUMBER = re.compile(r"[0-9](?<![A-Za-z0-9][0-9])[0-9]*")
_DIGITS = frozenset("0123456789")
_DELIMITER = re.compile(r"""[=,:;()\[\]{}"']""")
_DOTS = re.compile(r"\.{2,}")
#: the most constant tokens remembered (they need no masking when seen again)
_TOKEN_CACHE_SIZE = 50_000


@dataclass(frozen=True, slots=True)
class MinerSettings:
    """Settings of :class:`LogMiner`: general, the same for every format.

    Raises ValueError at construction for a value out of range (the message starts with the field).

    Attributes:
        merge_values: how many sibling groups (alike but for one position) make that position a
            variable (>= 2).
        masking: the user's ``(regex, mask name)`` pairs, applied in order before the defaults;
            a match becomes ``<NAME>`` (a word every line of the template has there, shown in
            the template), or a variable ``<*>`` for the name ``*``.
        default_masks: also apply :data:`DEFAULT_MINER_MASKING`.
        max_shapes: the most distinct masked lines remembered for the exact-match fast path
            (>= 0; beyond it new shapes are matched by scanning the templates).
    """

    merge_values: int = 5
    masking: tuple[tuple[str, str], ...] = ()
    default_masks: bool = True
    max_shapes: int = 100_000

    def __post_init__(self) -> None:
        """Raises ValueError naming the field: merge_values < 2, max_shapes < 0."""
        if self.merge_values < 2:
            raise ValueError(f"merge_values must be >= 2, got {self.merge_values}")
        if self.max_shapes < 0:
            raise ValueError(f"max_shapes must be >= 0, got {self.max_shapes}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"merge_values", "masking": [[regex, name], ...], "default_masks", "max_shapes"}``."""
        return {
            "merge_values": self.merge_values,
            "masking": [list(pair) for pair in self.masking],
            "default_masks": self.default_masks,
            "max_shapes": self.max_shapes,
        }


class LogMiner:
    """Streaming template miner (see the module docstring for the algorithm and the papers).

    Example:
        >>> miner = LogMiner()
        >>> miner.add("Accepted password for alice from 10.0.0.1 port 22 ssh2")
        (1, 'Accepted password for alice from <*> port <*> ssh2')
        >>> miner.add("Accepted password for bob from 10.0.0.2 port 2200 ssh2")[0]
        2
        >>> for user in ("carol", "dave", "erin"):
        ...     _ = miner.add(f"Accepted password for {user} from 10.0.0.3 port 22 ssh2")
        >>> miner.resolve(2), miner.template(2)  # 5 users: the position is a variable
        (1, 'Accepted password for <*> from <*> port <*> ssh2')
    """

    def __init__(self, settings: MinerSettings | None = None) -> None:
        settings = settings or MinerSettings()
        self.settings = settings
        # (compiled mask, substrings one of which every match holds; ("",) when none is known)
        self._masks: list[tuple[re.Pattern[str], tuple[str, ...], str]] = [
            (re.compile(pattern), ("",), f"<{name}>") for pattern, name in settings.masking
        ]
        if settings.default_masks:
            self._masks += [
                (re.compile(pattern), hint, WILDCARD)
                for (pattern, _), hint in zip(DEFAULT_MINER_MASKING, _HINTS, strict=True)
            ]
        self._token_cache: dict[str, str] = {}
        # masked lines by their text with numbers as "0": exact for the default masks, which do
        # not depend on how many digits a number has (a user's mask might: no cache then)
        self._line_cache: dict[str, tuple[str, ...]] | None = None if settings.masking else {}
        # message -> (version, id, text) of its last add: valid while the version is the same
        self._results: dict[str, tuple[int, int, str]] = {}
        self._texts: dict[int, str] = {}  # live id -> rendered template, for the current version
        self._texts_version = 0
        self._next_id = 1
        self._templates: dict[int, list[str]] = {}  # live ids only
        self._by_length: dict[int, list[int]] = {}  # token count -> live ids, oldest first
        self._parent: dict[int, int] = {}  # merged id -> the id it was merged into
        self._shapes: dict[tuple[str, ...], int] = {}  # masked line -> id (may be an alias)
        self._skeletons: dict[tuple[str, ...], int] = {}  # constant tokens -> id (may be an alias)
        self._siblings: dict[tuple[int, int, tuple[str, ...]], list[int]] = {}

    # -- tokens ----------------------------------------------------------------------------
    def tokens(self, content: str) -> tuple[str, ...]:
        """The masked tokens of one message: variables are ``<*>``; a ``key=value`` token gives
        two, the key (ending ``"=\\x1f"``, rendered joined to its value) and the value."""
        for mask, hints, replacement in self._masks:
            for hint in hints:
                if hint in content:
                    content = mask.sub(replacement, content)
                    break
        if ".." in content:  # a leader of dots ("instruction......0x0") separates like a space
            content = _DOTS.sub(" ... ", content)
        out: list[str] = []
        append = out.append
        cache = self._token_cache
        previous_wild = False
        for token in content.split():
            known = cache.get(token)
            if known is not None:  # a constant token seen before
                append(known)
                previous_wild = False
                continue
            if token[0] in _DIGITS and "=" not in token:  # fast path: its first run is a variable
                if _DELIMITER.search(token) is None:  # one run: exactly a variable
                    if not previous_wild:
                        append(WILDCARD)
                    previous_wild = True
                else:  # holds a variable: is one
                    append(WILDCARD)
                    previous_wild = False
                continue
            masked = _VARIABLE_RUN.sub(WILDCARD, token) if _HAS_VARIABLE.search(token) else token
            if masked == WILDCARD:
                if not previous_wild:  # consecutive variables are one
                    append(WILDCARD)
                previous_wild = True
                continue
            previous_wild = False
            if "=" in masked:
                key, _, value = masked.partition("=")
                if key and value:
                    append(key + _KEY_END)
                    append(WILDCARD if WILDCARD in value else value)
                    continue
            if WILDCARD in masked:
                append(WILDCARD)
            else:
                append(masked)
                if len(cache) < _TOKEN_CACHE_SIZE and len(token) <= _TOKEN_CACHE_CHARS:
                    cache[token] = masked
        return tuple(out)

    # -- ids -------------------------------------------------------------------------------
    def resolve(self, template_id: int) -> int:
        """The id a (possibly merged) id stands for now; unknown ids are returned unchanged."""
        parent = self._parent
        root = template_id
        while root in parent:
            root = parent[root]
        while template_id in parent and parent[template_id] != root:  # path compression
            parent[template_id], template_id = root, parent[template_id]
        return root

    @property
    def merges(self) -> dict[int, int]:
        """``{merged id: the live id it stands for now}`` for every id merged so far."""
        return {merged: self.resolve(merged) for merged in self._parent}

    @property
    def merge_count(self) -> int:
        """How many ids were merged so far: :attr:`merges` changes exactly when this does."""
        return len(self._parent)

    def template(self, template_id: int) -> str | None:
        """The current template of an id (merged ids give their survivor's), or None if unknown."""
        tokens = self._templates.get(self.resolve(template_id))
        return None if tokens is None else _render(tokens)

    @property
    def version(self) -> int:
        """A number that changes whenever the templates do (a new group, a merge): compare two
        readings to know whether :meth:`state` changed in between."""
        return self._next_id

    @property
    def cluster_count(self) -> int:
        """How many templates there are now (merged ones not counted)."""
        return len(self._templates)

    # -- mining ----------------------------------------------------------------------------
    def add(self, content: str) -> tuple[int, str]:
        """Add one message; returns ``(template_id, template)`` as they stand after it.

        ``template_id`` is the live id of the line's group now; later merges may make it an
        alias (see :meth:`resolve`, :attr:`merges`). Never raises for any string.
        """
        results = self._results
        hit = results.get(content)
        version = self._next_id
        if hit is not None and hit[0] == version:  # no template changed since: the same answer
            return hit[1], hit[2]
        lines = self._line_cache
        if lines is None:
            tokens = self.tokens(content)
        else:  # lines that differ only in numbers not following a letter have the same tokens
            key = _NUMBER.sub("0", content)
            cached = lines.get(key)
            if cached is None:
                cached = self.tokens(content)
                if len(lines) < _LINE_CACHE_SIZE and len(key) <= _LINE_CACHE_CHARS:
                    lines[key] = cached
            tokens = cached
        known = self._shapes.get(tokens)
        if known is not None:
            found = self.resolve(known)
        else:
            matched = self._match(tokens)
            found = self._create(tokens) if matched is None else matched
            if len(self._shapes) < self.settings.max_shapes:
                self._shapes[tokens] = found
            version = self._next_id
        texts = self._texts
        if self._texts_version != version:  # a template changed: render again
            texts.clear()
            self._texts_version = version
        text = texts.get(found)
        if text is None:
            text = texts[found] = _render(self._templates[found])
        if len(content) <= _LINE_CACHE_CHARS:
            if len(results) >= _RESULT_CACHE_SIZE:
                results.clear()
            results[content] = (version, found, text)
        return found, text

    def _match(self, tokens: tuple[str, ...]) -> int | None:
        skeleton = tuple(t for t in tokens if t != WILDCARD)
        if len(skeleton) >= 2:
            known = self._skeletons.get(skeleton)
            if known is not None:
                return self.resolve(known)
        templates = self._templates
        for candidate in self._by_length.get(len(tokens), ()):
            template = templates[candidate]
            for t, w in zip(template, tokens, strict=True):  # a plain loop: most differ early
                if t != w and t != WILDCARD:
                    break
            else:
                if template.count(WILDCARD) < len(template):  # variables only: takes only its own shape
                    return candidate
        return None

    def _merge(self, length: int, ids: list[int]) -> int:
        target = min(ids)
        peers = self._by_length[length]
        for other in ids:
            if other != target:
                self._parent[other] = target
                del self._templates[other]
                peers.remove(other)
        return target

    def _create(self, tokens: tuple[str, ...]) -> int:
        new = self._next_id
        self._next_id += 1
        length = len(tokens)
        self._templates[new] = list(tokens)
        peers = self._by_length.setdefault(length, [])
        peers.append(new)
        skeleton = tuple(t for t in tokens if t != WILDCARD)
        if len(skeleton) >= 2:
            self._skeletons[skeleton] = new
        # a template with a variable where older ones have words takes them in
        if skeleton and len(skeleton) < length:
            covered = [other for other in peers if other != new and _covers(tokens, self._templates[other])]
            if covered:
                new = self._merge(length, [*covered, new])
                self._templates[new] = list(tokens)
        # siblings: alike everywhere but at one position (lines of at most _MAX_SIBLING_TOKENS)
        if length > _MAX_SIBLING_TOKENS:
            return new
        if len(skeleton) - 1 < max(2, (length - 1) / 2):  # too few words elsewhere to be siblings
            return new
        siblings, parent, merge_values = self._siblings, self._parent, self.settings.merge_values
        for position in range(length):
            if tokens[position] == WILDCARD:
                continue
            group = siblings.setdefault((length, position, tokens[:position] + tokens[position + 1 :]), [])
            group.append(new)
            live = sorted({member if member not in parent else self.resolve(member) for member in group})
            if len(live) >= merge_values:
                new = self._merge(length, live)
                self._templates[new][position] = WILDCARD
                group[:] = [new]
                break
            group[:] = live
        return new

    # -- persistence -----------------------------------------------------------------------
    def state(self, *, shapes: bool = True) -> dict[str, Any]:
        """A JSON-able snapshot: ``{"version": MINER_STATE_VERSION, "kind": "logminer",
        "settings": {...}, "next_id", "templates": [[id, [token, ...]], ...], "merges": [[id,
        into], ...], "shapes": [[[token, ...], id], ...], "skeletons": [...], "siblings":
        [[length, position, [token, ...], [id, ...]], ...]}`` (ids in arrival order).

        ``shapes=False`` leaves out the lookup of lines seen before (``"shapes": []``, up to
        ``max_shapes`` entries, the larger part on a big log): a miner restored from it finds
        the same groups for them by matching, only slower on their first return.
        """
        return {
            "version": MINER_STATE_VERSION,
            "kind": "logminer",
            "settings": self.settings.to_dict(),
            "next_id": self._next_id,
            "templates": [[tid, list(tokens)] for tid, tokens in self._templates.items()],
            "order": {str(length): list(ids) for length, ids in self._by_length.items()},
            "merges": [[tid, into] for tid, into in self._parent.items()],
            "shapes": [[list(tokens), tid] for tokens, tid in self._shapes.items()] if shapes else [],
            "skeletons": [[list(tokens), tid] for tokens, tid in self._skeletons.items()],
            "siblings": [[length, pos, list(rest), list(ids)] for (length, pos, rest), ids in self._siblings.items()],
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> LogMiner:
        """A miner continuing from :meth:`state` (its settings included).

        Raises:
            ValueError: not a LogMiner state, or of another version.
        """
        if state.get("kind") != "logminer" or state.get("version") != MINER_STATE_VERSION:
            raise ValueError(
                f"not a LogMiner state of version {MINER_STATE_VERSION}: "
                f"kind={state.get('kind')!r} version={state.get('version')!r}"
            )
        raw = state["settings"]
        settings = MinerSettings(
            merge_values=int(raw["merge_values"]),
            masking=tuple((str(p), str(n)) for p, n in raw["masking"]),
            default_masks=bool(raw["default_masks"]),
            max_shapes=int(raw["max_shapes"]),
        )
        miner = cls(settings)
        miner._next_id = int(state["next_id"])
        miner._templates = {int(tid): [str(t) for t in tokens] for tid, tokens in state["templates"]}
        miner._by_length = {int(length): [int(i) for i in ids] for length, ids in state["order"].items()}
        miner._parent = {int(tid): int(into) for tid, into in state["merges"]}
        miner._shapes = {tuple(tokens): int(tid) for tokens, tid in state["shapes"]}
        miner._skeletons = {tuple(tokens): int(tid) for tokens, tid in state["skeletons"]}
        miner._siblings = {
            (int(length), int(pos), tuple(rest)): [int(i) for i in ids] for length, pos, rest, ids in state["siblings"]
        }
        return miner
