"""A griffe extension for the docs build: Sphinx cross-reference roles in docstrings become links.

The code's docstrings are Google style but name other objects with Sphinx roles
(``:class:`Message```, ``:func:`~reactive_services.adapters.track```, ``:meth:`start```), which
Markdown would show as raw text. Once griffe has loaded the whole package (``on_object``),
this extension rewrites each role in a docstring into an *optional* autorefs reference: the
name, as inline code, linked to its API entry when the site renders that object, plain inline
code otherwise (a private helper, an object of another library). The target is resolved
like Python would from where the docstring is (the object's scope, then its parents' and
the module's imports); ``~`` shows the last component only, as in Sphinx.

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
        if obj.is_alias or obj.docstring is None or ":" not in obj.docstring.value:
            return
        obj.docstring.value = _rewrite(obj, obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        # on_object does not visit the root package itself
        if pkg.docstring is not None and ROLE.search(pkg.docstring.value):
            pkg.docstring.value = _rewrite(pkg, pkg.docstring.value)
