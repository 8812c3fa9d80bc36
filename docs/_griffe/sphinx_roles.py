"""A griffe extension for the docs build: reStructuredText bits of the docstrings as Markdown.

The code's docstrings are Google style but name other objects with Sphinx roles
(``:class:`Message```, ``:func:`~reactive_services.adapters.track```, ``:meth:`start```), which
Markdown would show as raw text. Once griffe has loaded the whole package (``on_object``),
this extension rewrites each role in a docstring into an *optional* autorefs reference: the
name, as inline code, linked to its API entry when the site renders that object, plain inline
code otherwise (a private helper, an object of another library). The target is resolved
like Python would from where the docstring is (the object's scope, then its parents' and
the module's imports); ``~`` shows the last component only, as in Sphinx.

reStructuredText *simple tables* (columns under ``=====  =====`` borders, a row continued on
the next line when its first column is blank) become Markdown tables.

Nothing in the code is changed; it runs only inside ``mkdocs build`` (configured under the
python handler's ``extensions`` in mkdocs.yml).
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`")
FENCE = re.compile(r"^\s*(```|~~~)")
BORDER = re.compile(r"^(?P<indent> *)=+(?: +=+)+ *$")


def _rows(lines: list[str], starts: list[int]) -> list[list[str]]:
    """The rows of a simple table's lines; a line whose first column is blank continues a row."""
    rows: list[list[str]] = []
    for line in lines:
        if not line.strip():
            continue
        bounds = [*starts[1:], max(len(line), starts[-1])]
        cells = [line[a:b].strip() for a, b in zip(starts, bounds, strict=True)]
        if rows and not cells[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return rows


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _simple_tables(text: str) -> str:
    """``text`` with its reStructuredText simple tables as Markdown tables."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if BORDER.match(lines[i]) is None:
            out.append(lines[i])
            i += 1
            continue
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        borders = [i]
        j = i + 1
        while j < len(lines) and lines[j].strip() and len(borders) < 3:
            if BORDER.match(lines[j]):
                borders.append(j)
            j += 1
        if len(borders) < 2:
            out.append(lines[i])
            i += 1
            continue
        if len(borders) == 3:
            head = _rows(lines[borders[0] + 1 : borders[1]], starts)
            heading, body = (head[0] if head else [""] * len(starts)), lines[borders[1] + 1 : borders[2]]
        else:
            heading, body = [""] * len(starts), lines[borders[0] + 1 : borders[1]]
        out.extend(["", _markdown_row(heading), "|" + "---|" * len(starts)])
        out.extend(_markdown_row(row) for row in _rows(body, starts))
        out.append("")
        i = borders[-1] + 1
    return "\n".join(out)


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path ``target`` names from ``obj``'s scope, or None when griffe cannot tell."""
    if target.startswith("reactive_services"):
        return target
    head, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, griffe.AliasResolutionError, KeyError, ValueError):
            scope = scope.parent
            continue
        return f"{path}.{rest}" if rest else path
    return None


def _replace(obj: griffe.Object, match: re.Match[str]) -> str:
    target = match["target"].strip().removesuffix("()")
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    path = _resolve(obj, target)
    if path is None or not path.startswith("reactive_services"):
        return f"`{shown}`"
    return f'<autoref identifier="{html.escape(path)}" optional><code>{html.escape(shown)}</code></autoref>'


def _rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` with its roles replaced, literal blocks left alone.

    Literal blocks: fenced ones, and the indented block after a line ending in ``::``
    (reStructuredText literal blocks, which the docstrings use for examples and diagrams).
    """
    out: list[str] = []
    in_fence = False
    literal_base: int | None = None  # the indent of the "::" line while in its block
    for line in text.split("\n"):
        indent = len(line) - len(line.lstrip())
        if FENCE.match(line):
            in_fence = not in_fence
        elif literal_base is not None and line.strip() and indent <= literal_base:
            literal_base = None
        if in_fence or FENCE.match(line) or (literal_base is not None and (not line.strip() or indent > literal_base)):
            out.append(line)
            continue
        line = ROLE.sub(lambda m: _replace(obj, m), line)
        if line.rstrip().endswith("::"):
            literal_base = indent
            # as reStructuredText shows it: "Example::" reads "Example:", a lone "::" nothing
            line = line.rstrip()[:-1] if line.strip() != "::" else ""
        out.append(line)
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.is_alias or obj.docstring is None:
            return
        obj.docstring.value = _rewrite(obj, _simple_tables(obj.docstring.value))

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        # on_object does not visit the root package itself
        if pkg.docstring is not None and ROLE.search(pkg.docstring.value):
            pkg.docstring.value = _rewrite(pkg, _simple_tables(pkg.docstring.value))
