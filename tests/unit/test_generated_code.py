"""The committed protobuf code matches proto/: `make proto` is its only writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_protobuf_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_generated_modules_import_as_one_package() -> None:
    from dtf_common.pb.dtf.v1 import commands_pb2, worker_service_pb2, worker_service_pb2_grpc

    assert commands_pb2.Command.DESCRIPTOR.fields_by_name["submit_tasks"].message_type.name == "SubmitTasks"
    assert "LeaseTasks" in worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].methods_by_name
    assert hasattr(worker_service_pb2_grpc, "WorkerServiceStub")
