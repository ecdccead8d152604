"""`dtf run -n N`: collect once, start a local cluster, run planned batches, report like pytest.

The flow: collect node ids on the client; start a coordinator and N workers in a
persistent data directory; ask the coordinator for recorded durations; plan batches
(longest first); submit each batch as one `pytest` task; follow the tasks and read each
finished task's results from the results store. A batch whose pytest process died
leaves some of its tests without a result: the first of them (in run order) is the one
that crashed or hung and is reported failed with the task's error; the rest are
submitted again as a new batch. At the end the tests with a result must be exactly the
collected ones (fail closed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dtf.run.collect import CollectionError, collect
from dtf.run.plan import Batch, estimate_durations, plan_batches
from dtf.run.report import (
    EXIT_INTERRUPTED,
    EXIT_NO_TESTS,
    TestOutcome,
    counts,
    exit_code,
    outcome_from_result,
    write_junit,
    write_report,
)
from dtf_common.errors import DtfError

log = logging.getLogger(__name__)

FINAL = frozenset({"completed", "failed", "cancelled"})
# A batch's time limit when the user gives none: generous against the estimate, because
# the estimate of a never-run test is a guess.
BATCH_TIMEOUT_FLOOR_S = 60.0
BATCH_TIMEOUT_FACTOR = 10.0
# How long to wait for a finished task's results to appear in the results store.
RESULTS_WAIT_S = 10.0

# pytest options that take a value as the next argument. Needed to tell an option's
# value from a positional path when splitting the user's arguments.
_VALUE_OPTIONS = frozenset(
    {
        "-p", "-o", "-c", "-W", "-k", "-m", "-r",
        "--override-ini", "--config-file", "--rootdir", "--tb", "--import-mode", "--pythonwarnings",
        "--deselect", "--ignore", "--ignore-glob", "--confcutdir", "--basetemp", "--maxfail",
        "--junitxml", "--junit-xml", "--junit-prefix", "--durations", "--durations-min", "--capture",
        "--log-level", "--log-format", "--log-date-format", "--log-cli-level", "--log-file",
        "--log-file-level", "--log-file-format", "--log-file-date-format", "--show-capture",
        "--color", "--code-highlight", "--debug", "--cov", "--cov-report", "--timeout",
        "--dist", "--numprocesses", "-n", "--report-log", "--html",
    }
)  # fmt: skip
# Options that select or stop tests: node ids already encode the selection, and stopping
# one batch early would leave tests without a result.
_DROPPED = frozenset(
    {
        "-k", "-m", "--deselect", "--ignore", "--ignore-glob", "--pyargs", "-x", "--exitfirst",
        "--maxfail", "--lf", "--last-failed", "--ff", "--failed-first", "--sw", "--stepwise",
        "--stepwise-skip", "--nf", "--new-first", "--co", "--collect-only", "--collectonly",
        "--junitxml", "--junit-xml", "-n", "--numprocesses", "--dist",
    }
)  # fmt: skip


def batch_pytest_args(args: Sequence[str]) -> list[str]:
    """The user's pytest options to pass to every batch: everything but positional paths
    and the options in `_DROPPED` (with their values). `--opt=value`, `-kEXPR` and
    `-- ` are understood; an unknown option is taken to be a flag."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break  # everything after is positional
        if not arg.startswith("-") or arg == "-":
            continue  # a path or node id
        name, equals, _ = arg.partition("=")
        has_value = bool(equals)
        if not has_value and len(arg) > 2 and arg[1] != "-" and arg[:2] in _VALUE_OPTIONS:
            name, has_value = arg[:2], True  # "-kexpr", "-pno:cacheprovider"
        takes_next = not has_value and name in _VALUE_OPTIONS
        words = [arg, args[i]] if takes_next and i < len(args) else [arg]
        if takes_next:
            i += 1
        if name not in _DROPPED:
            out.extend(words)
    return out


class Client(Protocol):
    """The part of DtfClient the runner uses."""

    def submit(self, tasks: list[dict[str, Any]] | dict[str, Any]) -> list[str]: ...
    def task(self, task_id: str) -> dict[str, Any]: ...
    def all_results(self, **filters: Any) -> list[dict[str, Any]]: ...
    def durations(self, test_ids: list[str], *, hardware_id: str | None = None) -> dict[str, float]: ...
    def cancel(self, task_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunConfig:
    workers: int
    pytest_args: list[str]
    cwd: Path
    data_dir: Path
    junitxml: Path | None = None
    timeout: float | None = None
    poll_s: float = 0.1


@dataclass
class _Submitted:
    node_ids: tuple[str, ...]
    estimate_s: float


@dataclass
class Execution:
    """The state of one run against a coordinator: what is submitted, what came back."""

    client: Client
    config: RunConfig
    order: dict[str, int]
    estimates: dict[str, float]
    outcomes: dict[str, TestOutcome] = field(default_factory=dict)
    open: dict[str, _Submitted] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    # -- submitting -----------------------------------------------------------

    def batch_timeout(self, estimate_s: float) -> float:
        if self.config.timeout is not None:
            return self.config.timeout
        return BATCH_TIMEOUT_FLOOR_S + BATCH_TIMEOUT_FACTOR * estimate_s

    def submit(self, batches: Sequence[Batch]) -> None:
        """One `pytest` task per batch, in the given order (same priority: first in, first out).
        Each batch runs its tests in collection order, so module fixtures are set up once."""
        options = batch_pytest_args(self.config.pytest_args)
        ordered = [tuple(sorted(b.node_ids, key=self.order.__getitem__)) for b in batches]
        bodies = [
            {
                "type": "pytest",
                "priority": 5,
                "timeout": self.batch_timeout(b.estimate_s),
                "parameters": {"node_ids": list(ids), "args": options, "cwd": str(self.config.cwd)},
                "metadata": {"dtf_run": True, "tests": len(ids)},
            }
            for b, ids in zip(batches, ordered, strict=True)
        ]
        if not bodies:
            return
        for task_id, b, ids in zip(self.client.submit(bodies), batches, ordered, strict=True):
            self.open[task_id] = _Submitted(ids, b.estimate_s)

    # -- following ------------------------------------------------------------

    def poll_once(self) -> None:
        """Read the open tasks; take in the results of each one that finished."""
        for task_id in list(self.open):
            task = self.client.task(task_id)
            if task["status"] in FINAL:
                self._finish(task_id, task)
            elif task["status"] == "running":
                self.running.add(task_id)

    def _results_of(self, task_id: str, task: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The task's results, once the store holds as many as the worker reported."""
        summary = task.get("results") or {}
        expected = sum(int(summary.get(k) or 0) for k in ("passed", "failed", "skipped", "errors"))
        deadline = time.monotonic() + RESULTS_WAIT_S
        rows = self.client.all_results(task_id=task_id)
        while len(rows) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = self.client.all_results(task_id=task_id)
        return rows

    def _finish(self, task_id: str, task: Mapping[str, Any]) -> None:
        submitted = self.open.pop(task_id)
        self.running.discard(task_id)
        wanted = set(submitted.node_ids)
        for row in self._results_of(task_id, task):
            outcome = outcome_from_result(row)
            if outcome.node_id in wanted:
                self.outcomes[outcome.node_id] = outcome
        missing = [n for n in submitted.node_ids if n not in self.outcomes]
        if not missing or task["status"] == "completed":
            return  # a completed task without some results: left to the fail-closed check
        culprit, rest = missing[0], missing[1:]
        self.outcomes[culprit] = crash_outcome(culprit, task)
        log.info("%s crashed its batch (%s); resubmitting %d tests", culprit, task.get("error"), len(rest))
        if rest:
            estimate = sum(self.estimates.get(n, 0.0) for n in rest)
            self.submit([Batch(tuple(rest), estimate)])

    def cancel_open(self) -> None:
        """Cancel every unfinished batch, best effort (used when the run is abandoned)."""
        for task_id in list(self.open):
            try:
                self.client.cancel(task_id)
            except DtfError as exc:
                log.debug("cannot cancel %s: %s", task_id, exc)

    @property
    def done(self) -> bool:
        return not self.open

    def eta_s(self) -> float:
        remaining = sum(s.estimate_s for s in self.open.values())
        return remaining / max(1, self.config.workers)

    def running_tests(self) -> int:
        return sum(len(self.open[t].node_ids) for t in self.running if t in self.open)


def crash_outcome(node_id: str, task: Mapping[str, Any]) -> TestOutcome:
    """The test that was running when its batch's pytest process died or timed out."""
    error = str(task.get("error") or "")
    summary = task.get("results") or {}
    # The executor's error starts with "pytest timed out after 5s" / "pytest killed by SIGSEGV"
    # when the process was stopped; a process that exited by itself has only its exit code.
    stopped = (p for p in error.split("; ") if p.startswith("pytest ") and not p.startswith("pytest exit code"))
    reason = next(stopped, "")
    if not reason:
        code = summary.get("exit_code")
        reason = f"pytest exited with code {code}" if code is not None else error or f"task {task.get('status')}"
    message = f"crashed: {reason} while this test was running"
    tails = "\n".join(t for t in (summary.get("stdout_tail"), summary.get("stderr_tail")) if t)
    return TestOutcome(node_id=node_id, outcome="failed", message=message, details=f"{message}\n\n{tails}".rstrip())


def _progress_text(execution: Execution, total: int) -> str:
    tally = counts(execution.outcomes.values())
    failed = tally["failed"] + tally["error"]
    return (
        f"[green]{tally['passed']} passed[/] [red]{failed} failed[/] [yellow]{tally['skipped']} skipped[/] "
        f"{execution.running_tests()} running  ETA {execution.eta_s():.0f}s"
    )


def follow(execution: Execution, total: int, console: Console) -> None:
    columns = (
        TextColumn("[bold]dtf run"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("tests", total=total, counts="")
        while not execution.done:
            execution.poll_once()
            progress.update(bar, completed=len(execution.outcomes), counts=_progress_text(execution, total))
            if not execution.done:
                time.sleep(execution.config.poll_s)


def run(config: RunConfig, *, out: TextIO, console: Console) -> int:
    """The whole of `dtf run -n N`; returns pytest's exit code."""
    from dtf.cli.local_cluster import LocalCluster
    from dtf.client import DtfClient

    started = time.monotonic()
    try:
        collection = collect(config.pytest_args, config.cwd)
    except CollectionError as exc:
        out.write(exc.output)
        return exc.exit_code
    node_ids = list(dict.fromkeys(collection.node_ids))
    if not node_ids:
        out.write("dtf run: no tests collected\n")
        return EXIT_NO_TESTS

    cluster = LocalCluster(config.data_dir, workers=config.workers, concurrency=1, port=0, grpc_port=0)
    try:
        with console.status(f"starting a coordinator and {config.workers} workers"):
            info = cluster.start()
        log.info("cluster up %.2fs after start", time.monotonic() - started)
        with DtfClient(info["api_url"], info["admin_token"]) as client:
            known = client.durations(node_ids)
            console.print(
                f"dtf run: {len(node_ids)} tests, {len(known)} with recorded durations, "
                f"{len(node_ids) - len(known)} estimated; {config.workers} workers",
                highlight=False,
            )
            estimates = estimate_durations(node_ids, known)
            batches = plan_batches(estimates, config.workers)
            execution = Execution(client, config, {n: i for i, n in enumerate(node_ids)}, estimates)
            try:
                execution.submit(batches)
                follow(execution, len(node_ids), console)
            except BaseException:
                execution.cancel_open()  # so the workers stop promptly
                raise
            log.info("all batches finished %.2fs after start", time.monotonic() - started)
    except KeyboardInterrupt:
        out.write("dtf run: interrupted\n")
        return EXIT_INTERRUPTED
    finally:
        with console.status("stopping the local cluster"):
            cluster.stop()

    elapsed = time.monotonic() - started
    outcomes = [execution.outcomes[n] for n in node_ids if n in execution.outcomes]
    missing = [n for n in node_ids if n not in execution.outcomes]
    write_report(out, outcomes, missing, elapsed, width=console.width if out.isatty() else 80)
    if config.junitxml is not None:
        write_junit(config.junitxml, outcomes, missing, elapsed)
    return exit_code(outcomes, missing)
