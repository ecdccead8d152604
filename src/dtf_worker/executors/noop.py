"""`noop` tasks: finish at once without a subprocess, so throughput benchmarks measure the
coordinator and the wire rather than process start-up."""

from __future__ import annotations

from dtf_worker.executors.base import ExecutionContext, ExecutionResult
from dtf_worker.lease import Lease


class NoopExecutor:
    async def run(self, lease: Lease, ctx: ExecutionContext) -> ExecutionResult:
        return ExecutionResult(ok=True, results={"noop": True})
