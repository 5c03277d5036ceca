"""The committed gRPC stubs must be what protos/ generates today."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("pipeline_pb2.py", "pipeline_pb2.pyi", "pipeline_pb2_grpc.py", "pipeline_pb2_grpc.pyi")
BIN = Path(sys.executable).parent  # the venv's: mypy-protobuf's protoc plugins


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iservices/common/rpc=protos",
         f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}", f"--mypy_out={tmp_path}",
         f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}", f"--mypy_grpc_out={tmp_path}",
         "protos/pipeline.proto"],
        cwd=REPO, check=True)
    for name in GENERATED:
        fresh = (tmp_path / "services/common/rpc" / name).read_text()
        committed = (REPO / "services/common/rpc" / name).read_text()
        assert fresh == committed, f"{name} is stale: run `make stubs`"
