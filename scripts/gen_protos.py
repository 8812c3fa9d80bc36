"""Generate the Python code of the repository's ``.proto`` files with grpcio-tools.

    python scripts/gen_protos.py            # regenerate next to each .proto
    python scripts/gen_protos.py --check    # exit 1 (naming the files) when a committed file differs

For each ``.proto`` in :data:`PROTOS` it writes ``<name>_pb2.py`` (messages), ``<name>_pb2.pyi``
(their types, for mypy) and ``<name>_pb2_grpc.py`` (the servicer base class, the stub and
``add_<Service>Servicer_to_server``) next to it. The ``.proto`` is compiled as if it lay at its
installed path (``reactive_services/examples/shop/proto/inventory.proto``): the generated
imports are then absolute imports of the package, and the descriptor's file name is that path.

Deterministic: the same ``.proto`` and the same grpcio-tools give the same bytes (the version is
pinned in the ``test`` extra; the generated code says which protobuf and grpcio it needs). A test
(tests/services/test_shop_protos.py) regenerates into a temporary folder and compares.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The .proto files: repository path -> the package folder it is compiled as.
PROTOS: dict[str, str] = {"examples/shop/proto/inventory.proto": "reactive_services/examples/shop/proto"}
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Compile every proto; write the generated files under ``out`` (at their repository paths).
    Returns the files written.

    Raises:
        RuntimeError: protoc failed (its exit code).
    """
    from grpc_tools import protoc

    written: list[Path] = []
    with tempfile.TemporaryDirectory() as work:
        source, target = Path(work) / "src", Path(work) / "out"
        target.mkdir()
        for repo_path, package in PROTOS.items():
            proto = ROOT / repo_path
            placed = source / package / proto.name
            placed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(proto, placed)
            args = [
                "protoc",
                f"-I{source}",
                f"--python_out={target}",
                f"--pyi_out={target}",
                f"--grpc_python_out={target}",
                str(placed.relative_to(source)),
            ]
            code = protoc.main(args)
            if code != 0:
                raise RuntimeError(f"protoc failed on {repo_path} (exit code {code})")
            for suffix in SUFFIXES:
                made = target / package / (proto.stem + suffix)
                destination = out / Path(repo_path).parent / made.name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(made, destination)
                written.append(destination)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    if not args.check:
        for path in generate(ROOT):
            print(path.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [
            str(path.relative_to(tmp))
            for path in generate(Path(tmp))
            if not (ROOT / path.relative_to(tmp)).is_file()
            or (ROOT / path.relative_to(tmp)).read_bytes() != path.read_bytes()
        ]
    if stale:
        print("not current (run python scripts/gen_protos.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
