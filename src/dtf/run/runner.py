"""`dtf run -n N`: collect once, run planned batches on a cluster, report like pytest.

The flow: collect node ids on the client; find the cluster (a remote coordinator given
by URL, a live local cluster in the data directory, or a coordinator and N workers
started for the run); ask the coordinator for recorded durations; plan batches
(longest first); submit each batch as one `pytest` task; follow the tasks and read each
finished task's results from the results store. A batch whose pytest process died
leaves some of its tests without a result: the first of them (in run order) is the one
that crashed or hung and is reported failed with the task's error; the rest are
submitted again as a new batch. At the end the tests with a result must be exactly the
collected ones (fail closed). With `reruns`, a failing test is run again, alone, on
another worker where there is one; one that then passes is reported flaky.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import httpx
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
from dtf_common.errors import DtfError, Unavailable

if TYPE_CHECKING:
    from dtf.cli.local_cluster import LocalCluster

log = logging.getLogger(__name__)

FINAL = frozenset({"completed", "failed", "cancelled"})
# A batch's time limit when the user gives none: generous against the estimate, because
# the estimate of a never-run test is a guess.
BATCH_TIMEOUT_FLOOR_S = 60.0
BATCH_TIMEOUT_FACTOR = 10.0
# How long to wait for a finished task's results to appear in the results store.
RESULTS_WAIT_S = 10.0
# How long a warm or remote cluster may take to show a live worker.
WORKERS_WAIT_S = 15.0
LIVE_WORKER = frozenset({"online", "busy"})

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
    def workers(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class RunConfig:
    workers: int
    pytest_args: list[str]
    cwd: Path
    data_dir: Path
    junitxml: Path | None = None
    timeout: float | None = None
    poll_s: float = 0.1
    keep: bool = False
    coordinator: str | None = None
    token: str | None = None
    connection: Path | None = None
    reruns: int = 0
    # Ship a snapshot of the project to the workers: None = on a remote cluster, when
    # snapshots are available; False = workers share this filesystem (batches get `cwd`).
    snapshot: bool | None = None
    # What one batch costs before its first test runs (a new pytest process: interpreter,
    # plugins, collection). Measured at about 1.4 s on a 2-core machine; planning with less
    # cuts CPU-bound suites into more batches than their start-ups repay.
    batch_startup_s: float = 1.5


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
    n_workers: int = 0
    # Failed attempts of tests that were run again, oldest first.
    attempts: dict[str, list[TestOutcome]] = field(default_factory=dict)
    # The task parameter `snapshot` ({"sha256", "subdir"}) when the project is shipped.
    snapshot: dict[str, str] | None = None
    first_leased_s: float | None = None
    first_test_s: float | None = None
    started_wall: float = field(default_factory=time.time)

    # -- submitting -----------------------------------------------------------

    def batch_timeout(self, estimate_s: float) -> float:
        if self.config.timeout is not None:
            return self.config.timeout
        return BATCH_TIMEOUT_FLOOR_S + BATCH_TIMEOUT_FACTOR * estimate_s

    def submit(
        self, batches: Sequence[Batch], *, metadata: Mapping[str, Any] | None = None, exclude: Sequence[str] = ()
    ) -> None:
        """One `pytest` task per batch, in the given order (same priority: first in, first out).
        Each batch runs its tests in collection order, so module fixtures are set up once.
        `exclude` names workers that must not run them (a rerun avoids the worker that failed)."""
        options = batch_pytest_args(self.config.pytest_args)
        ordered = [tuple(sorted(b.node_ids, key=self.order.__getitem__)) for b in batches]
        where: dict[str, Any] = {"snapshot": self.snapshot} if self.snapshot else {"cwd": str(self.config.cwd)}
        bodies: list[dict[str, Any]] = [
            {
                "type": "pytest",
                "priority": 5,
                "timeout": self.batch_timeout(b.estimate_s),
                "parameters": {"node_ids": list(ids), "args": options, **where},
                "metadata": {"dtf_run": True, "tests": len(ids), **(metadata or {})},
            }
            for b, ids in zip(batches, ordered, strict=True)
        ]
        if exclude:
            for body in bodies:
                body["requirements"] = {"exclude_workers": list(exclude)}
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
            if self.first_leased_s is None and task.get("start_time"):
                self.first_leased_s = _epoch(task["start_time"]) - self.started_wall

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
                self._note_first_test(row)
        missing = [n for n in submitted.node_ids if n not in self.outcomes]
        if missing and task["status"] != "completed":
            # (a completed task without some results is left to the fail-closed check)
            culprit, rest = missing[0], missing[1:]
            self.outcomes[culprit] = crash_outcome(culprit, task)
            log.info("%s crashed its batch (%s); resubmitting %d tests", culprit, task.get("error"), len(rest))
            if rest:
                estimate = sum(self.estimates.get(n, 0.0) for n in rest)
                self.submit([Batch(tuple(rest), estimate)])
        for node_id in submitted.node_ids:
            final = self.outcomes.get(node_id)
            if final is not None and final.failed and len(self.attempts.get(node_id, ())) < self.config.reruns:
                self._rerun(self.outcomes.pop(node_id))

    def _note_first_test(self, row: Mapping[str, Any]) -> None:
        try:
            began = _epoch(str(row["timestamp"])) - float(row.get("execution_time") or 0.0) - self.started_wall
        except (KeyError, ValueError):
            return
        if self.first_test_s is None or began < self.first_test_s:
            self.first_test_s = began

    def _rerun(self, failed: TestOutcome) -> None:
        """Run a failed test again as its own batch, away from the workers that failed it
        when another live worker exists. The task's metadata keeps the history."""
        node_id = failed.node_id
        history = self.attempts.setdefault(node_id, [])
        history.append(failed)
        failing = {o.worker_id for o in history if o.worker_id}
        exclude: list[str] = []
        if failing:
            live = set(live_workers(self.client))
            if len(live) > 1:
                exclude = sorted(failing) if live - failing else [failed.worker_id] if failed.worker_id else []
        attempt = len(history) + 1
        log.info("rerunning %s (attempt %d), excluding %s", node_id, attempt, exclude or "no worker")
        estimate = self.estimates.get(node_id, 0.0)
        self.submit([Batch((node_id,), estimate)], metadata={"rerun_of": node_id, "attempt": attempt}, exclude=exclude)

    @property
    def reruns(self) -> int:
        return sum(len(h) for h in self.attempts.values())

    def flaky(self) -> list[tuple[TestOutcome, list[TestOutcome]]]:
        """Tests that failed, then passed when run again: (final outcome, failed attempts)."""
        return [
            (self.outcomes[n], h)
            for n, h in self.attempts.items()
            if n in self.outcomes and not self.outcomes[n].failed
        ]

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
        return remaining / max(1, self.n_workers or self.config.workers)

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
    return TestOutcome(
        node_id=node_id,
        outcome="failed",
        message=message,
        details=f"{message}\n\n{tails}".rstrip(),
        worker_id=str(task.get("worker_id") or ""),
    )


def _epoch(stamp: str) -> float:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def live_workers(client: Client) -> list[str]:
    return [str(w["worker_id"]) for w in client.workers() if w.get("status") in LIVE_WORKER]


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


def live_cluster(data_dir: Path) -> dict[str, Any] | None:
    """The connection of the cluster running in `data_dir` (by `dtf up` or `dtf run --keep`),
    or None when there is none or its coordinator does not answer /health."""
    try:
        info: dict[str, Any] = json.loads((data_dir / "connection.json").read_text())
        url, token = str(info["api_url"]), str(info["admin_token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        healthy = httpx.get(f"{url.rstrip('/')}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return None
    return info if healthy and token else None


@dataclass
class Target:
    """Where a run goes. `cluster` is set when this run started the cluster."""

    api_url: str
    token: str
    kind: str  # "remote", "warm" or "started"
    cluster: LocalCluster | None = None


def find_target(config: RunConfig, console: Console) -> Target:
    """A remote coordinator (`coordinator` + `token`, or `connection`), else the live cluster
    in `data_dir`, else a coordinator and `workers` local workers started now."""
    if config.coordinator:
        if not config.token:
            raise Unavailable("--coordinator needs a token: --token or DTF_TOKEN")
        return Target(config.coordinator, config.token, "remote")
    if config.connection is not None:
        try:
            info = json.loads(config.connection.read_text())
            return Target(str(info["api_url"]), str(info["admin_token"]), "remote")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"cannot read {config.connection}: {exc}") from None
    warm = live_cluster(config.data_dir)
    if warm is not None:
        return Target(str(warm["api_url"]), str(warm["admin_token"]), "warm")

    from dtf.cli.local_cluster import LocalCluster

    cluster = LocalCluster(config.data_dir, workers=config.workers, concurrency=1, port=0, grpc_port=0)
    try:
        with console.status(f"starting a coordinator and {config.workers} workers"):
            info = cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return Target(str(info["api_url"]), str(info["admin_token"]), "started", cluster)


def project_root(cwd: Path) -> Path:
    """The git work tree holding `cwd`, else `cwd` itself: what a snapshot packs."""
    import subprocess

    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return cwd
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else cwd


def ship_snapshot(config: RunConfig, client: Any, console: Console) -> dict[str, str] | None:
    """Build (or reuse) the project's snapshot and upload it unless the coordinator has it;
    the task parameter `snapshot`. None when snapshots are not available in this install."""
    try:
        from dtf.run.snapshot import build_snapshot
    except ImportError:
        return None
    if not hasattr(client, "upload_blob"):
        return None
    cwd = config.cwd.resolve()
    root = project_root(cwd).resolve()
    with console.status("packing the project"):
        snapshot = build_snapshot(root, cache_dir=config.data_dir / "snapshots")
        sent = client.upload_blob(snapshot.sha256, snapshot.archive)
    subdir = cwd.relative_to(root).as_posix() if cwd != root else ""
    console.print(
        f"dtf run: project snapshot {snapshot.sha256[:12]} ({snapshot.files} files, {snapshot.bytes / 1e6:.1f} MB"
        + (", uploaded)" if sent else ", already on the coordinator)"),
        highlight=False,
        soft_wrap=True,
    )
    return {"sha256": snapshot.sha256, "subdir": subdir}


def _wait_for_workers(client: Client) -> int:
    """The number of live workers of a cluster this run did not start (at least one)."""
    deadline = time.monotonic() + WORKERS_WAIT_S
    while True:
        live = live_workers(client)
        if live:
            return len(live)
        if time.monotonic() > deadline:
            raise Unavailable(f"no live worker is registered with the coordinator after {WORKERS_WAIT_S:.0f}s")
        time.sleep(0.1)


def run(config: RunConfig, *, out: TextIO, console: Console) -> int:
    """The whole of `dtf run`; returns pytest's exit code."""
    from dtf.client import DtfClient

    started = time.monotonic()
    started_wall = time.time()
    try:
        collection = collect(config.pytest_args, config.cwd)
    except CollectionError as exc:
        out.write(exc.output)
        return exc.exit_code
    node_ids = list(dict.fromkeys(collection.node_ids))
    if not node_ids:
        out.write("dtf run: no tests collected\n")
        return EXIT_NO_TESTS

    target: Target | None = None
    try:
        target = find_target(config, console)
        log.info("%s cluster at %s, %.2fs after start", target.kind, target.api_url, time.monotonic() - started)
        with DtfClient(target.api_url, target.token) as client:
            n_workers = config.workers if target.kind == "started" else _wait_for_workers(client)
            shipped = config.snapshot if config.snapshot is not None else target.kind == "remote"
            snapshot = ship_snapshot(config, client, console) if shipped else None
            known = client.durations(node_ids)
            where = {"started": "", "warm": " (running cluster)", "remote": f" at {target.api_url}"}[target.kind]
            console.print(
                f"dtf run: {len(node_ids)} tests, {len(known)} with recorded durations, "
                f"{len(node_ids) - len(known)} estimated; {n_workers} workers{where}",
                highlight=False,
                soft_wrap=True,
            )
            estimates = estimate_durations(node_ids, known)
            batches = plan_batches(estimates, n_workers, startup_s=config.batch_startup_s)
            execution = Execution(
                client,
                config,
                {n: i for i, n in enumerate(node_ids)},
                estimates,
                started=started,
                started_wall=started_wall,
                n_workers=n_workers,
                snapshot=snapshot,
            )
            try:
                execution.submit(batches)
                follow(execution, len(node_ids), console)
            except BaseException:
                execution.cancel_open()  # so the workers stop promptly
                raise
            log.info(
                "first batch leased %s, first test started %s, all finished %.2fs after start",
                _seconds(execution.first_leased_s),
                _seconds(execution.first_test_s),
                time.monotonic() - started,
            )
    except KeyboardInterrupt:
        out.write("dtf run: interrupted\n")
        return EXIT_INTERRUPTED
    finally:
        if target is not None and target.cluster is not None:
            if config.keep:
                console.print(
                    f"dtf run: the cluster keeps running; stop it with `dtf down --data-dir {config.data_dir}`",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                with console.status("stopping the local cluster"):
                    target.cluster.stop()

    elapsed = time.monotonic() - started
    outcomes = [execution.outcomes[n] for n in node_ids if n in execution.outcomes]
    missing = [n for n in node_ids if n not in execution.outcomes]
    width = console.width if out.isatty() else 80
    write_report(out, outcomes, missing, elapsed, width=width, attempts=execution.attempts)
    if config.junitxml is not None:
        write_junit(config.junitxml, outcomes, missing, elapsed, attempts=execution.attempts)
    return exit_code(outcomes, missing)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
