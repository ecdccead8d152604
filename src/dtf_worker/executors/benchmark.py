"""`benchmark` tasks: time an entry point or a command with warm-up and repetitions.

parameters: {"entry": "module:function" | "command": [...] or "shell line",
             "args": {...} (keyword arguments for the entry), "warmup": 3, "repetitions": 20,
             "functions": ["latency", "throughput", "memory"], "pythonpath": [...],
             "cwd": "...", "env": {...}, "timeout": s, "test_id": "..."}

The measuring happens in `bench_runner`, in a subprocess, so the benchmarked code gets
a clean interpreter and is killed with its whole process group on timeout or cancel.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from dtf_common.errors import InvalidArgument
from dtf_common.schemas import ResultStatus
from dtf_worker.executors import bench_runner
from dtf_worker.executors.base import ExecutionContext, ExecutionResult
from dtf_worker.executors.command import command_text
from dtf_worker.executors.params import Parameters
from dtf_worker.executors.records import new_record
from dtf_worker.lease import Lease


def runner_spec(params: Parameters) -> dict[str, Any]:
    """The runner's spec from the task parameters (raises InvalidArgument naming the field)."""
    entry, command = params.text("entry"), params.optional_command("command")
    if (entry is None) == (command is None):
        raise InvalidArgument(
            "parameters need exactly one of parameters.entry or parameters.command", field="parameters.entry"
        )
    if entry is not None and (":" not in entry or entry.startswith(":") or entry.endswith(":")):
        raise InvalidArgument("parameters.entry must look like 'package.module:function'", field="parameters.entry")
    functions = params.str_list("functions") or list(bench_runner.ALL_FUNCTIONS)
    unknown = sorted(set(functions) - set(bench_runner.ALL_FUNCTIONS))
    if unknown:
        raise InvalidArgument(
            f"parameters.functions has unknown {unknown}; choose from {list(bench_runner.ALL_FUNCTIONS)}",
            field="parameters.functions",
        )
    return {
        "entry": entry,
        "command": command,
        "args": params.mapping("args"),
        "warmup": params.integer("warmup", 3),
        "repetitions": params.integer("repetitions", 20, minimum=1),
        "functions": functions,
    }


class BenchmarkExecutor:
    async def run(self, lease: Lease, ctx: ExecutionContext) -> ExecutionResult:
        try:
            params = Parameters.of(lease)
            spec = runner_spec(params)
            env, cwd = ctx.child_env(params.env()), params.cwd(ctx.working_dir)
            timeout = params.timeout(lease.timeout_s, ctx.default_timeout)
            pythonpath = params.str_list("pythonpath")
            test_id = params.text("test_id") or spec["entry"] or command_text(spec["command"])
        except InvalidArgument as exc:
            return ExecutionResult.invalid(exc)

        if pythonpath:
            inherited = env.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join([*pythonpath, inherited] if inherited else pythonpath)
        ctx.files_dir.mkdir(parents=True, exist_ok=True)
        spec_path, output = ctx.files_dir / "bench_spec.json", ctx.files_dir / "bench_result.json"
        output.unlink(missing_ok=True)
        spec_path.write_text(json.dumps({**spec, "output": str(output)}), encoding="utf-8")
        try:
            run = await ctx.run_process(
                [sys.executable, "-m", bench_runner.__name__, str(spec_path)], cwd=cwd, env=env, time_limit=timeout
            )
        except OSError as exc:
            return ExecutionResult(ok=False, error=f"cannot start benchmark: {exc}")

        metrics = _read_output(output)
        runner_ok, runner_error = metrics.pop("ok", False), metrics.pop("error", None)
        trace = metrics.pop("traceback", None)
        if run.timed_out or run.cancelled or run.exit_code < 0:
            error = run.failure()
        elif runner_error:
            error = str(runner_error)
        elif not runner_ok:
            error = run.failure() or "benchmark runner wrote no result"
        else:
            error = None
        record = new_record(
            lease,
            ctx,
            test_id=test_id,
            status=(ResultStatus.SUCCESS if error is None else ResultStatus.FAILURE).value,
            execution_time=run.wall_time_s,
            metrics=metrics,
            hardware_metrics=run.measurements(),
            raw_data={
                "entry": spec["entry"],
                "command": spec["command"],
                "args": spec["args"],
                "stdout_tail": run.stdout_tail,
                "stderr_tail": run.stderr_tail,
                **({"traceback": trace} if trace else {}),
            },
        )
        results = {"exit_code": run.exit_code, **metrics, "process": run.measurements()}
        return ExecutionResult(ok=error is None, error=error, results=results, records=[record])


def _read_output(path: os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.loads(f.readline())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
