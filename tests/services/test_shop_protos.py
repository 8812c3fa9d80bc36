"""The shop's generated Protocol Buffers code is what scripts/gen_protos.py makes of the .proto
today (grpcio-tools regenerates it into a temporary folder; the bytes must be equal)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gen_protos():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("rs_gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_generated_code_is_current(tmp_path: Path) -> None:
    written = _gen_protos().generate(tmp_path)
    assert sorted(p.name for p in written) == ["inventory_pb2.py", "inventory_pb2.pyi", "inventory_pb2_grpc.py"]
    for path in written:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run python scripts/gen_protos.py"


def test_the_check_command_names_a_stale_file(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # a copy of the repository's script and proto with one more field: the committed code is stale
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    (copy / "examples" / "shop" / "proto").mkdir(parents=True)
    (copy / "scripts" / "gen_protos.py").write_bytes((ROOT / "scripts" / "gen_protos.py").read_bytes())
    proto = (ROOT / "examples" / "shop" / "proto" / "inventory.proto").read_text()
    (copy / "examples" / "shop" / "proto" / "inventory.proto").write_text(
        proto.replace("repeated string product_ids = 1;\n}", "repeated string product_ids = 1;\n  bool all = 2;\n}", 1)
    )
    for name in ("inventory_pb2.py", "inventory_pb2.pyi", "inventory_pb2_grpc.py"):
        source = ROOT / "examples" / "shop" / "proto" / name
        (copy / "examples" / "shop" / "proto" / name).write_bytes(source.read_bytes())
    stale = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=copy, capture_output=True, text=True
    )
    assert stale.returncode == 1
    assert "examples/shop/proto/inventory_pb2.py" in stale.stderr and "gen_protos.py" in stale.stderr
