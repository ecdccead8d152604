"""`noop` tasks: finish at once without a subprocess, so throughput benchmarks measure the
coordinator and the wire rather than process start-up."""

from __future__ import annotations

from dtf_common.pb.dtf.v1 import worker_service_pb2
from dtf_worker.executors.base import ExecutionContext, ExecutionResult


class NoopExecutor:
    async def run(self, task: worker_service_pb2.LeasedTask, ctx: ExecutionContext) -> ExecutionResult:
        return ExecutionResult(ok=True, results={"noop": True})
