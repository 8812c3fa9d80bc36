"""The package's shape, read from the source: one import name, the layers, no cycles.

The repository keeps the folders ``reactive_services/``, ``adapters/``, ``operators/`` and
``examples/``; installed, the last three are ``reactive_services.adapters``,
``reactive_services.operators`` and ``reactive_services.examples`` (pyproject.toml's
``[tool.setuptools.package-dir]``). The layers, lowest first (docs/concepts.md draws them)::

    0 reactive_services.errors
    1 reactive_services.adapters      (brokers, websockets, Message, codecs)
    2 reactive_services.operators
    3 runtime: every other reactive_services module (services, clients, run, CLI core, metrics, ...)
    4 reactive_services.testing
    5 reactive_services.examples      (the shop: an application on the public API)

A module imports only from its own layer or lower ones; no module imports another package's
private (``_``-prefixed) module or name; the library imports nothing from the shop; the
module-level imports have no cycle; and nothing anywhere imports the bare top-level names
``adapters`` / ``operators`` / ``examples``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: repository folder -> the dotted name it is installed as
MAPPED = {
    "reactive_services": "reactive_services",
    "adapters": "reactive_services.adapters",
    "operators": "reactive_services.operators",
    "examples": "reactive_services.examples",
}
BARE = ("adapters", "operators", "examples")
LAYERS = ["errors", "adapters", "operators", "runtime", "testing", "examples"]


def layer_of(module: str) -> int:
    """The layer number of a dotted module name inside ``reactive_services``."""
    parts = module.split(".")
    assert parts[0] == "reactive_services", module
    second = parts[1] if len(parts) > 1 else ""
    if second == "errors":
        return 0
    if second in ("adapters", "operators", "testing", "examples"):
        return LAYERS.index(second)
    return LAYERS.index("runtime")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module
    name: str | None  # the name taken from it (``from target import name``), if any
    line: int
    top_level: bool  # executed when the module is imported (not in a function, not TYPE_CHECKING)
    path: Path


def package_modules() -> dict[str, Path]:
    """Every module of the installed package: dotted name -> file in the repository."""
    modules: dict[str, Path] = {}
    for folder, dotted in MAPPED.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            if any(part == "__pycache__" or part == "data" for part in rel.parts):
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "reactive_services" and parts and parts[0] in BARE:
                continue  # not expected, but never count a nested copy twice
            modules[".".join([dotted, *parts])] = path
    return modules


MODULES = package_modules()


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py"


def _resolve(source: str, level: int, module: str | None) -> str:
    package = source if _is_package(source) else source.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


def _imports_of(source: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_top = top_level
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                child_top = False
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                child_top = False
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(source, alias.name, None, child.lineno, top_level, path))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(source, child.level, child.module) if child.level else (child.module or "")
                for alias in child.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in MODULES:  # ``from package import submodule``
                        found.append(Import(source, submodule, None, child.lineno, top_level, path))
                    else:
                        found.append(Import(source, target, alias.name, child.lineno, top_level, path))
            visit(child, child_top)

    visit(tree, True)
    return found


ALL_IMPORTS = [imp for module, path in MODULES.items() for imp in _imports_of(module, path)]


def _where(imp: Import) -> str:
    return f"{imp.path.relative_to(ROOT)}:{imp.line} ({imp.source} imports {imp.target})"


def test_the_package_modules_are_found() -> None:
    # guards the scan itself: if the mapping broke, every other test here would pass on nothing
    assert "reactive_services.adapters.kafka" in MODULES
    assert "reactive_services.operators" in MODULES
    assert "reactive_services.examples.shop" in MODULES
    assert "reactive_services.errors" in MODULES
    assert len(ALL_IMPORTS) > 200


def _python_files_everywhere() -> list[Path]:
    skip = {".git", "build", "site", "node_modules", "__pycache__"}
    return [p for p in ROOT.rglob("*.py") if not (set(p.relative_to(ROOT).parts) & skip)]


def test_no_file_imports_the_bare_top_level_names() -> None:
    offenders = []
    for path in _python_files_everywhere():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in BARE:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert offenders == []


def test_importing_every_module_brings_in_no_bare_top_level_name(tmp_path: Path) -> None:
    # run outside the repository, so that its folders are not on sys.path: what a user has
    names = sorted(m for m in MODULES if not m.endswith("__main__"))
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {names!r}:
            importlib.import_module(name)
        bare = sorted(m for m in sys.modules if m.split(".")[0] in {BARE!r})
        print("BARE", bare)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "BARE []" in result.stdout, result.stdout


def test_layers_import_only_downwards() -> None:
    offenders = []
    for imp in ALL_IMPORTS:
        if not imp.target.startswith("reactive_services") or imp.source == "reactive_services":
            continue  # third-party, or the facade itself (it re-exports every layer)
        if imp.target == "reactive_services" and imp.name is not None:
            # ``from reactive_services import X`` of a name, i.e. the facade: above the runtime
            if layer_of(imp.source) < LAYERS.index("testing"):
                offenders.append(f"{_where(imp)}: a library module imports the facade; import from the defining module")
            continue
        if layer_of(imp.target) > layer_of(imp.source):
            offenders.append(
                f"{_where(imp)}: layer {LAYERS[layer_of(imp.source)]} imports layer {LAYERS[layer_of(imp.target)]}"
            )
    assert offenders == []


def _private_owner(module: str) -> str | None:
    """For ``a.b._c.d`` the package that owns the private part (``a.b``); None if all public."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def test_no_module_imports_another_packages_private_module_or_name() -> None:
    offenders = []
    for imp in ALL_IMPORTS:
        if not imp.target.startswith("reactive_services"):
            continue
        owner = _private_owner(imp.target)
        if imp.name is not None and imp.name.startswith("_") and not imp.name.startswith("__"):
            owner = imp.target if owner is None else owner
        if owner is None:
            continue
        inside = imp.source == owner or imp.source.startswith(owner + ".")
        if not inside:
            what = f"{imp.target}.{imp.name}" if imp.name else imp.target
            offenders.append(f"{_where(imp)}: {what} is private to {owner}")
    assert offenders == []


def test_the_library_imports_nothing_from_the_shop() -> None:
    offenders = [
        _where(imp)
        for imp in ALL_IMPORTS
        if imp.target.startswith("reactive_services.examples")
        and not imp.source.startswith("reactive_services.examples")
    ]
    assert offenders == []


def test_module_level_imports_have_no_cycle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in ALL_IMPORTS:
        if imp.top_level and imp.target in MODULES and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    # Tarjan's strongly connected components; any component of size > 1 is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    assert cycles == []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel .`` builds from this checkout (build isolation: the pinned setuptools)."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("reactive_services-*.whl")
    return built


def test_the_wheel_installs_exactly_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level_txt,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        declared = archive.read(top_level_txt).decode().split()
    tops = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert tops == {"reactive_services"}
    assert declared == ["reactive_services"]


def test_the_wheel_holds_every_module_and_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = set()
    for folder, dotted in MAPPED.items():
        for path in (ROOT / folder).rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            rel = path.relative_to(ROOT / folder)
            expected.add("/".join([*dotted.split("."), *rel.parts]))
    missing = sorted(expected - names)
    assert missing == []


def test_an_editable_install_maps_only_reactive_services(tmp_path: Path) -> None:
    # the checkout is installed editable by the test command; outside the repository only the
    # one name resolves, and it resolves to this checkout's folders
    code = textwrap.dedent(
        """
        import importlib.util, sys
        import reactive_services.adapters, reactive_services.operators, reactive_services.examples.shop
        print("ADAPTERS", reactive_services.adapters.__file__)
        for bare in ("adapters", "operators", "examples"):
            print("BARE", bare, importlib.util.find_spec(bare) is not None)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"ADAPTERS {ROOT / 'adapters' / '__init__.py'}" in result.stdout
    for bare in BARE:
        assert f"BARE {bare} False" in result.stdout
