"""AsyncAPI documents checked by the AsyncAPI project's own parser, for the tests.

``scripts/asyncapi/validate.mjs`` runs ``@asyncapi/parser`` (the version pinned in
``scripts/asyncapi/package-lock.json``) under node; ``scripts/test`` installs node and the parser
(``scripts/install_tools.sh``). A diagnostic is the parser's (Spectral's) as a dict:
``severity`` (0 error, 1 warning, 2 information, 3 hint), ``code`` (the rule, e.g. ``invalid-ref``),
``message``, ``path`` (the JSON path of the node, a list of keys and indexes) and ``range``
(zero-based lines and characters in the text given to the parser). A document is valid when no
diagnostic is an error; warnings and the rest are reported but do not fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR_DIR = ROOT / "scripts" / "asyncapi"
ERROR, WARNING, INFORMATION, HINT = 0, 1, 2, 3
SEVERITY_NAMES = {ERROR: "error", WARNING: "warning", INFORMATION: "information", HINT: "hint"}
INSTALL = "run scripts/test, which installs it (or scripts/install_tools.sh alone)"


class AsyncAPIToolMissing(RuntimeError):
    """node or the validator's npm packages are not installed."""


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise AsyncAPIToolMissing(f"node is not installed, the AsyncAPI validator needs it: {INSTALL}")
    parser = VALIDATOR_DIR / "node_modules" / "@asyncapi" / "parser" / "package.json"
    if not parser.is_file():
        raise AsyncAPIToolMissing(
            f"@asyncapi/parser is not installed in {VALIDATOR_DIR}/node_modules: {INSTALL} "
            f"or `npm ci` in {VALIDATOR_DIR}"
        )
    return node


def asyncapi_diagnostics(document: dict[str, Any] | str | Path) -> list[dict[str, Any]]:
    """The parser's diagnostics for ``document``, every severity, in the parser's order.

    ``document`` is the document as a dict (written as JSON), its text (JSON or YAML), or the
    ``Path`` of a file (relative ``$ref`` values to other files resolve from its folder).

    Raises:
        AsyncAPIToolMissing: node or the parser is not installed (the message names the command).
        RuntimeError: the validator could not run (its stderr is the message).
    """
    node = _node()
    with tempfile.TemporaryDirectory(prefix="asyncapi-") as tmp:
        if isinstance(document, Path):
            path = document
        elif isinstance(document, str):
            path = Path(tmp) / "asyncapi.yaml"  # the YAML parser reads JSON too
            path.write_text(document, encoding="utf-8")
        else:
            path = Path(tmp) / "asyncapi.json"
            path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        result = subprocess.run(
            [node, str(VALIDATOR_DIR / "validate.mjs"), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"validate.mjs exited with {result.returncode}: {result.stderr.strip()}")
    diagnostics: list[dict[str, Any]] = json.loads(result.stdout)
    has_error = any(d["severity"] == ERROR for d in diagnostics)
    assert result.returncode == int(has_error), (result.returncode, diagnostics)
    return diagnostics


def errors(diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The diagnostics of error severity."""
    return [d for d in diagnostics if d["severity"] == ERROR]


def describe(diagnostic: dict[str, Any]) -> str:
    """One line: ``error invalid-ref at operations.onOrderCreated.channel.$ref (line 24): message``."""
    severity = SEVERITY_NAMES.get(diagnostic["severity"], str(diagnostic["severity"]))
    where = ".".join(str(p) for p in diagnostic["path"]) or "the document"
    line = (diagnostic.get("range") or {}).get("start", {}).get("line")
    at = f"{where} (line {line + 1})" if line is not None else where
    return f"{severity} {diagnostic['code']} at {at}: {diagnostic['message']}"


def assert_valid_asyncapi(document: dict[str, Any] | str | Path) -> list[dict[str, Any]]:
    """Fail, listing the errors one per line, unless the parser finds no error in ``document``.

    Returns every diagnostic (warnings, information, hints), for a test to look at further.
    The line numbers are those of the text validated (for a dict: ``json.dumps(document, indent=2)``).
    """
    diagnostics = asyncapi_diagnostics(document)
    found = errors(diagnostics)
    assert not found, f"{len(found)} AsyncAPI error(s):\n" + "\n".join(describe(d) for d in found)
    return diagnostics
