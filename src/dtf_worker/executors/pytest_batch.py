"""`pytest` tasks: one pytest process runs a batch of tests, one Result per test.

parameters: {"args": [...], "node_ids": [...], "select": [...], "cwd": "...", "env": {...},
             "timeout": s, "snapshot": {"sha256": "...", "subdir": "..."},
             "yield_after": s, "workerinput": {...}, "live_output": bool}

`args` are pytest's arguments and `node_ids` more positional ones after them. With
`select` (node ids as pytest names them when run with these arguments from this
directory), the batch runs exactly those tests, in that order, out of what the arguments
collect (`dtf_pytest.reports`): the way `dtf run` hands a worker part of the suite its own
pytest session collected, with nothing translated on the way. With `workerinput`, the
batch's pytest plays an xdist worker (`gwN`, N this worker's slot; see
`dtf_pytest.reports`). With `yield_after`, the batch stops at the first test boundary after
that many seconds and reports the tests it ran, with `results.yielded = true`: the task
completes (unless a test failed) and whoever submitted it runs the rest elsewhere.
With `live_output` (pytest's `-s` in `dtf run`), what the tests print goes to whoever
follows the task as it is printed, and the batch's own pytest prints nothing of its own.

Each batch runs in a child forked from a long-lived pytest process of `pytest_pool`,
which has imported pytest, its plugins and the suite's conftest files once, so a batch
starts in milliseconds; where that is not possible (no fork, `DTF_PYTEST_FORK=0`, a
server that would not start) in a fresh `python -m pytest`. Either way the batch has a
process of its own, killed with its process group on timeout or cancel.

Results come from the lines `dtf_pytest.reports` writes as each test ends, so a batch that
dies or is killed still reports every test it finished. While the batch runs, the tests
it finished are sent every STREAM_EVERY_S as PROGRESS outcomes (`ReportStreamer`), so
whoever follows the task sees them as they end; the final outcome brings the rest. Each
Result's `raw_data` holds pytest's outcome word and its serialised reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dtf_common.errors import InvalidArgument
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_pytest import reports as pytest_reports
from dtf_pytest.cases import BatchReport, Case, ReportTail, read_lines
from dtf_pytest.output import OutputTail
from dtf_worker.executors.base import ExecutionContext, ExecutionResult, ProgressSink, SnapshotUnavailable
from dtf_worker.executors.params import Parameters
from dtf_worker.executors.process import ProcessRun
from dtf_worker.executors.pytest_pool import BatchSpec, PytestServerPool, ServerKey
from dtf_worker.executors.pytest_share import batch_key, batch_options
from dtf_worker.executors.records import new_record
from dtf_worker.lease import Lease

EXIT_INTERRUPTED = 2
# How often a running batch sends the results of the tests it finished meanwhile.
STREAM_EVERY_S = 0.25
EXIT_MEANINGS = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}


class PytestExecutor:
    def __init__(self, pool: PytestServerPool | None = None) -> None:
        self.pool = pool if pool is not None else PytestServerPool()

    def prewarm(self, announced: str | None) -> None:
        """Start the pytest server for batches announced as `{"cwd": ..., "args": [...],
        "xdist": bool}` (the environment variable `dtf_common.worker_env.PREWARM_VARIABLE`), while
        the worker registers."""
        try:
            spec = json.loads(announced or "null")
            cwd, args = Path(spec["cwd"]), [str(a) for a in spec["args"]]
        except (ValueError, TypeError, KeyError):
            return
        self.pool.prewarm(batch_key(cwd, args, xdist=bool(spec.get("xdist", True))))

    async def run(self, lease: Lease, ctx: ExecutionContext) -> ExecutionResult:
        try:
            params = Parameters.of(lease)
            args, node_ids = params.str_list("args"), params.str_list("node_ids")
            select = params.str_list("select") if params.data.get("select") is not None else None
            workerinput = params.mapping("workerinput") if params.data.get("workerinput") is not None else None
            env, cwd = ctx.child_env(params.env()), await ctx.task_cwd(params)
            timeout = params.timeout(lease.timeout_s, ctx.default_timeout)
            yield_after = params.number("yield_after", 0.0)
            live = params.flag("live_output")
        except InvalidArgument as exc:
            return ExecutionResult.invalid(exc)
        except SnapshotUnavailable as exc:
            return ExecutionResult.no_snapshot(exc)

        ctx.files_dir.mkdir(parents=True, exist_ok=True)
        batch_file, reports = ctx.files_dir / "batch.json", ctx.files_dir / "reports.jsonl"
        reports.unlink(missing_ok=True)
        batch: dict[str, Any] = {"yield_after": yield_after or None}
        if select is not None:
            batch["select"] = select
        if workerinput is not None:
            batch["workerinput"] = {**workerinput, "workerid": f"gw{ctx.slot_index}"}
        if live:
            batch["live_output"] = True
        batch_file.write_text(json.dumps(batch), encoding="utf-8")
        options = batch_options(args, xdist=workerinput is not None)
        argv = [*options, *node_ids]
        env[pytest_reports.BATCH_VAR] = str(batch_file)
        env[pytest_reports.REPORTS_VAR] = str(reports)
        streamer = ReportStreamer(
            reports,
            lambda cases: [_record(lease, ctx, case, {}) for case in cases],
            OutputTail(ctx.files_dir) if live and ctx.report_progress is not None else None,
        )
        streaming = (
            asyncio.create_task(streamer.stream(ctx.report_progress)) if ctx.report_progress is not None else None
        )
        try:
            run = await self.pool.run(
                ServerKey.of(cwd, options, env, xdist=workerinput is not None),
                # A selection with no further arguments picks from what the server's own session
                # collected: its child runs them without collecting again.
                BatchSpec(argv, cwd, env, ctx.files_dir, resume=select is not None and not node_ids),
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
        finally:
            if streaming is not None:
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):  # unsent: the end brings them
                    await streaming
                with contextlib.suppress(Exception):  # output the batch printed last, ahead of its end
                    streamer.send_output(ctx.report_progress)

        report = read_report(reports)
        if report.resumed:
            process = "resumed"
        process_metrics = {"scope": "pytest process", **run.measurements()}
        # What the batch sent while it ran is not sent again.
        records = [_record(lease, ctx, case, process_metrics) for case in report.cases[streamer.sent :]]
        counts = Counter(case.outcome for case in report.cases)
        results: dict[str, Any] = {
            "exit_code": run.exit_code,
            "passed": counts["passed"] + counts["xpassed"],
            "failed": counts["failed"],
            "skipped": counts["skipped"] + counts["xfailed"],
            "errors": counts["error"],
            "duration": round(run.wall_time_s, 6),
            **run.measurements(),
            "process": process,
            "yielded": report.yielded,
            **({"stopped": report.stopped} if report.stopped else {}),
            **({"collected": report.collected} if report.collected is not None else {}),
            **({"missing": report.missing} if report.missing else {}),
            **({"collect_errors": report.collect_errors} if report.collect_errors else {}),
            **({"warnings": report.warnings} if report.warnings else {}),
            "stdout_tail": run.stdout_tail,
            "stderr_tail": run.stderr_tail,
        }
        # A yielded session ends as an interrupted one does; what counts is how its tests did.
        exit_code = 0 if report.yielded and run.exit_code == EXIT_INTERRUPTED else run.exit_code
        if report.yielded and exit_code == 0 and (counts["failed"] or counts["error"]):
            exit_code = 1
        ok = exit_code == 0 and not (run.timed_out or run.cancelled)
        error = None if ok else summarize_failure(_with_exit_code(run, exit_code), counts, len(report.cases))
        return ExecutionResult(ok=ok, error=error, results=results, records=records)


class ReportStreamer:
    """Sends each test's result while its batch runs: every STREAM_EVERY_S, the tests whose
    lines the plugin has written since, as records (`make_records`), to
    `ExecutionContext.report_progress`, after what the batch printed meanwhile when it
    runs with live `output`. `sent` counts the tests sent, in file order."""

    def __init__(
        self,
        path: Path,
        make_records: Callable[[list[Case]], list[types_pb2.ResultRecord]],
        output: OutputTail | None = None,
    ) -> None:
        self.reports = ReportTail(path)
        self.make_records = make_records
        self.output = output
        self.sent = 0

    async def stream(self, send: ProgressSink) -> None:
        while True:
            await asyncio.sleep(STREAM_EVERY_S)
            stdout, stderr = self.output.read() if self.output is not None else ("", "")
            cases = self.reports.new_cases()
            if cases or stdout or stderr:
                send(self.make_records(cases), stdout, stderr)  # raises (a full disk): the rest goes with the end
                self.sent += len(cases)

    def send_output(self, send: ProgressSink | None) -> None:
        """The live output not sent yet, in chunks (the batch has ended)."""
        while send is not None and self.output is not None and self.output.pending():
            stdout, stderr = self.output.read()
            send([], stdout, stderr)


def read_report(path: Path) -> BatchReport:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return BatchReport()
    return read_lines(text.splitlines())


def _record(lease: Lease, ctx: ExecutionContext, case: Case, process_metrics: dict[str, Any]) -> types_pb2.ResultRecord:
    record = new_record(
        lease,
        ctx,
        test_id=case.node_id,
        status=case.status,
        execution_time=case.duration,
        metrics={"duration_s": case.duration},
        hardware_metrics=process_metrics,
        raw_data=case.raw_data(),
    )
    ended = case.ended_at
    if ended is not None:  # stamped with when its test ended, where known
        record.timestamp_ms = int(ended * 1000)
    return record


def _with_exit_code(run: ProcessRun, exit_code: int) -> ProcessRun:
    return dataclasses.replace(run, exit_code=exit_code)


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
