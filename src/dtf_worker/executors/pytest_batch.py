"""`pytest` tasks: a batch of node ids run in one pytest process, one Result per test.

parameters: {"node_ids": [...], "args": [...], "cwd": "...", "env": {...}, "timeout": s,
             "snapshot": {"sha256": "...", "subdir": "..."}, "yield_after": s}

With `yield_after`, the batch stops at the first test boundary after that many seconds
and reports the tests it ran, with `results.yielded = true`: the task completes (unless a
test failed) and whoever submitted it runs the rest elsewhere.

Each batch runs in a child forked from a long-lived pytest process of `pytest_pool`,
which has imported pytest, its plugins and the suite's conftest files once, so a batch
starts in milliseconds; where that is not possible (no fork, `DTF_PYTEST_FORK=0`, a
server that would not start) in a fresh `python -m pytest`. Either way the batch has a
process of its own, killed with its process group on timeout or cancel.

Test ids are pytest node ids, made relative to the task's cwd (pytest's own are relative
to its rootdir) so they can be passed back as node ids. Results come from the JUnit
XML; when pytest dies before writing it (timeout, crash), from the progress lines that
`pytest_progress` wrote as tests finished.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtf_common.errors import InvalidArgument
from dtf_common.pb.dtf.v1 import types_pb2, worker_service_pb2
from dtf_worker.executors import pytest_progress
from dtf_worker.executors.base import ExecutionContext, ExecutionResult, SnapshotUnavailable
from dtf_worker.executors.junit import CaseResult, parse_junit_xml, parse_progress, progress_rootdir
from dtf_worker.executors.params import Parameters
from dtf_worker.executors.process import ProcessRun
from dtf_worker.executors.pytest_pool import BatchSpec, PytestServerPool, ServerKey, warm_paths
from dtf_worker.executors.pytest_share import batch_key, batch_options
from dtf_worker.executors.records import clip, new_record

EXIT_INTERRUPTED = 2
EXIT_MEANINGS = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}


class PytestExecutor:
    def __init__(self, pool: PytestServerPool | None = None) -> None:
        self.pool = pool if pool is not None else PytestServerPool()

    def prewarm(self, announced: str | None) -> None:
        """Start the pytest server for batches announced as `{"cwd": ..., "args": [...]}`
        (the environment variable `pytest_share.PREWARM_VARIABLE`), while the worker registers."""
        try:
            spec = json.loads(announced or "null")
            cwd, args = Path(spec["cwd"]), [str(a) for a in spec["args"]]
        except (ValueError, TypeError, KeyError):
            return
        self.pool.prewarm(batch_key(cwd, args), ["."])

    async def run(self, task: worker_service_pb2.LeasedTask, ctx: ExecutionContext) -> ExecutionResult:
        try:
            params = Parameters.of(task)
            args, node_ids = params.str_list("args"), params.str_list("node_ids")
            env, cwd = ctx.child_env(params.env()), await ctx.task_cwd(params)
            timeout = params.timeout(task.timeout_s, ctx.default_timeout)
            yield_after = params.number("yield_after", 0.0)
        except InvalidArgument as exc:
            return ExecutionResult.invalid(exc)
        except SnapshotUnavailable as exc:
            return ExecutionResult.no_snapshot(exc)

        ctx.files_dir.mkdir(parents=True, exist_ok=True)
        junit, progress = ctx.files_dir / "junit.xml", ctx.files_dir / "progress.jsonl"
        for stale in (junit, progress):
            stale.unlink(missing_ok=True)
        head, tail = batch_options(args)
        argv = [*head, f"--junitxml={junit}", *tail, *node_ids]
        env[pytest_progress.ENV_VAR] = str(progress)
        if yield_after > 0:
            env[pytest_progress.YIELD_VAR] = str(yield_after)
        run = await self.pool.run(
            ServerKey.of(cwd, [*head, *tail], env),
            BatchSpec(argv, cwd, env, ctx.files_dir),
            warm=warm_paths(node_ids),
            time_limit=timeout,
            cancel=ctx.cancel,
            kill_grace_s=ctx.kill_grace_s,
        )
        process = "forked"
        if run is None:
            process = "fresh"
            try:
                run = await ctx.run_process(
                    [sys.executable, "-m", "pytest", *argv], cwd=cwd, env=env, time_limit=timeout
                )
            except OSError as exc:
                return ExecutionResult(ok=False, error=f"cannot start pytest: {exc}")

        batch = read_cases(junit, progress, cwd)
        cases, source, yielded = batch.cases, batch.source, batch.yielded
        process_metrics = {"scope": "pytest process", **run.measurements()}
        records = [
            _at(
                batch.ended_at.get(case.node_id),
                new_record(
                    task,
                    ctx,
                    test_id=case.node_id,
                    status=case.status,
                    execution_time=case.duration,
                    metrics={"duration_s": case.duration},
                    hardware_metrics=process_metrics,
                    raw_data=_raw_data(case),
                ),
            )
            for case in cases
        ]
        counts = Counter(case.outcome for case in cases)
        results: dict[str, Any] = {
            "exit_code": run.exit_code,
            "passed": counts["passed"],
            "failed": counts["failed"],
            "skipped": counts["skipped"],
            "errors": counts["error"],
            "duration": round(run.wall_time_s, 6),
            **run.measurements(),
            "source": source,
            "process": process,
            "yielded": yielded,
            **({"collected": batch.collected} if batch.collected is not None else {}),
            "stdout_tail": run.stdout_tail,
            "stderr_tail": run.stderr_tail,
        }
        # A yielded session ends as an interrupted one does; what counts is how its tests did.
        exit_code = 0 if yielded and run.exit_code == EXIT_INTERRUPTED else run.exit_code
        if yielded and exit_code == 0 and (counts["failed"] or counts["error"]):
            exit_code = 1
        ok = exit_code == 0 and not (run.timed_out or run.cancelled)
        error = None if ok else summarize_failure(dataclasses.replace(run, exit_code=exit_code), counts, len(cases))
        return ExecutionResult(ok=ok, error=error, results=results, records=records)


@dataclass(frozen=True)
class BatchCases:
    """What a batch's pytest reported: one case per test, where that came from, whether the
    batch yielded, when each test ended (epoch seconds, where the progress lines say) and
    how many tests the session collected (where it got that far)."""

    cases: list[CaseResult]
    source: str
    yielded: bool = False
    ended_at: dict[str, float] = field(default_factory=dict)
    collected: int | None = None


def read_cases(junit: Path, progress: Path, cwd: Path) -> BatchCases:
    """The JUnit XML when pytest wrote it whole, else the progress lines, else nothing;
    node ids made relative to `cwd` when pytest's rootdir is known."""
    try:
        lines = progress.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    try:
        cases, source = parse_junit_xml(junit.read_bytes()), "junit"
    except (FileNotFoundError, ET.ParseError):
        cases, source = parse_progress(lines), "progress" if lines else "none"
    ended = _end_times(lines)
    stops = [ended.get(case.node_id) for case in cases]
    rootdir = progress_rootdir(lines)
    if rootdir is not None:
        cases = [case.rebased(rootdir, cwd) for case in cases]
    return BatchCases(
        cases,
        source,
        yielded=any('"yielded"' in line for line in lines),
        ended_at={case.node_id: stop for case, stop in zip(cases, stops, strict=True) if stop is not None},
        collected=_collected(lines),
    )


def _collected(lines: list[str]) -> int | None:
    for line in lines[:4]:  # written right after the rootdir line
        if '"collected"' in line:
            try:
                return int(json.loads(line)["collected"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def _end_times(lines: list[str]) -> dict[str, float]:
    """pytest node id -> when its teardown ended, from the progress lines that say."""
    ended: dict[str, float] = {}
    for line in lines:
        if '"teardown"' not in line:
            continue
        try:
            entry = json.loads(line)
            ended[str(entry["nodeid"])] = float(entry["stop"])
        except (ValueError, KeyError, TypeError):
            continue
    return ended


def summarize_failure(run: ProcessRun, counts: Counter[str], completed: int) -> str:
    parts = []
    if run.timed_out or run.cancelled or run.exit_code < 0:
        parts.append(f"pytest {run.failure()}; {completed} tests completed")
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed")
    if counts["error"]:
        parts.append(f"{counts['error']} error" + ("s" if counts["error"] > 1 else ""))
    if not parts:
        meaning = EXIT_MEANINGS.get(run.exit_code, "failed")
        last = [line for line in (run.stdout_tail + run.stderr_tail).splitlines() if line.strip()]
        parts.append(f"pytest exit code {run.exit_code} ({meaning})" + (f": {last[-1].strip()}" if last else ""))
    return "; ".join(parts)


def _at(ended: float | None, record: types_pb2.ResultRecord) -> types_pb2.ResultRecord:
    """The record stamped with when its test ended, where known (else when it was made)."""
    if ended is not None:
        record.timestamp_ms = int(ended * 1000)
    return record


def _raw_data(case: CaseResult) -> dict[str, Any]:
    data: dict[str, Any] = {"outcome": case.outcome, "file": case.file, "line": case.line}
    if case.outcome != "passed":
        # For a skip, `message` is the reason; for a failure, the assertion or exception line.
        data.update(message=case.message, details=clip(case.details), kind=case.kind)
    return data
