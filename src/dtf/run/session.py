"""The run's own pytest session: it collects, the cluster's workers run, it reports.

`dtf run -n N -- ARGS` is `pytest --dtf N ARGS`: a plain pytest session in which this
plugin replaces the loop that runs the tests (`pytest_runtestloop`), as pytest-xdist's
controller does. Everything before and after is pytest's own: collection (with its
errors, `-k`, `-m`, `--lf`, conftest hooks that reorder or deselect), the terminal's
reporting, the summary line, `--junitxml`, the cache, the exit status.

The loop: wait for the cluster (found, or started, while pytest collected), ask it for
the tests' recorded durations, plan batches (`dtf.run.plan`), submit each as a `pytest`
task that runs this session's arguments from this directory and selects its tests by
node id, follow the tasks, and play each test's reports into this session as they come
back (`dtf.run.replay`). A stop that pytest asks for (`-x`, `--maxfail`, Ctrl-C)
cancels the open batches at once. Every collected test ends with a report: a test whose
batch never reported it fails with the reason (`no result was recorded: ...`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from typing import TYPE_CHECKING, Any

import pytest

from dtf.local_cluster import stop_data_dir
from dtf.run.args import batch_pytest_args
from dtf.run.cluster import Target, find_target, launched_by_this_run, ship_snapshot, wait_for_workers
from dtf.run.config import RunConfig
from dtf.run.execution import Attempt, Execution
from dtf.run.history import durations_here, estimates_for, hardware_classes, recorded_durations, remember_here
from dtf.run.plan import dist_groups, plan_batches
from dtf.run.replay import RERUN, failure_report, replay, reports_of
from dtf_common.errors import DtfError

if TYPE_CHECKING:
    from dtf.client import DtfClient
    from dtf.run.local_lane import LocalLane
    from dtf.run.watch import TaskWatcher

log = logging.getLogger("dtf.run")

# With task updates pushed by the coordinator, every open task is still read this often.
FULL_POLL_S = 1.0
# How often the session plays what its own child ran, while the cluster starts.
LOCAL_POLL_S = 0.05
# With live output (`-s`), how long the run waits for its WebSocket before it submits.
LIVE_OUTPUT_CONNECT_S = 10.0
# A cluster not found by then gets a line saying the run waits for it.
SAY_WAITING_AFTER_S = 0.5


class DtfSession:
    """Registered as a plugin by `--dtf`; one per pytest session."""

    def __init__(self, config: pytest.Config, run: RunConfig) -> None:
        self.config = config
        self.run = run
        self.started = time.monotonic()
        self.items: dict[str, pytest.Item] = {}
        self.execution: Execution | None = None
        self.target: Target | None = None
        self._finding: Future[Target] | None = None
        # Tests this session ran itself, while the cluster it started was not up yet.
        self.ran_here: set[str] = set()
        self._cluster_starting = threading.Event()
        self._durations_here: dict[str, float] = {}
        if not config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(ControllerFixtures(run.run_id), "dtf-controller-fixtures")

    # -- the cluster, found while pytest collects ------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.config.option.collectonly:
            finding: Future[Target] = Future()
            # A daemon thread: a run that needs the cluster no more does not wait for its start.
            threading.Thread(
                target=_find, args=(finding, self.run, self._cluster_starting.set), name="dtf-run-cluster", daemon=True
            ).start()
            self._finding = finding

    def _target(self) -> Target:
        assert self._finding is not None
        try:
            self.target = self._finding.result(timeout=SAY_WAITING_AFTER_S)
        except FutureTimeout:
            self._say(f"waiting for the cluster in {self.run.data_dir}" if self.run.coordinator is None else "")
            self.target = self._finding.result()
        return self.target

    def _say(self, text: str) -> None:
        if not text:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"dtf: {text}")

    # -- the loop -------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            errors = session.testsfailed
            raise session.Interrupted(f"{errors} error{'s' if errors != 1 else ''} during collection")
        if session.config.option.collectonly or not session.items:
            return True
        for item in session.items:
            self.items.setdefault(item.nodeid, item)
        # The collected tests live as long as the session: the collector's full passes,
        # set off by every report the run replays, need not walk them again.
        gc.freeze()
        self.ran_here = self._run_here_while_the_cluster_starts(session)
        if len(self.ran_here) == len(self.items):
            self._say(f"all {len(self.items)} tests ran in this session while the cluster started")
        if session.shouldfail or session.shouldstop or len(self.ran_here) == len(self.items):
            return True
        from dtf.client import DtfClient
        from dtf.run.watch import TaskWatcher

        try:
            target = self._target()
        except DtfError as exc:
            raise session.Interrupted(f"dtf: {exc.message}") from None
        log.info("%s cluster at %s, %.2fs after start", target.kind, target.api_url, time.monotonic() - self.started)
        try:
            with (
                DtfClient(target.api_url, target.token) as client,
                contextlib.closing(TaskWatcher(target.api_url, target.token)) as watcher,
            ):
                self._run(session, client, watcher, target)
        except DtfError as exc:  # the cluster went away, or refused the run
            raise session.Interrupted(f"dtf: {exc.message}") from None
        return True

    def _run(self, session: pytest.Session, client: DtfClient, watcher: TaskWatcher, target: Target) -> None:
        n_workers = self.run.workers if target.kind == "started" else wait_for_workers(client)
        shipped = self.run.snapshot if self.run.snapshot is not None else target.kind == "remote"
        snapshot = ship_snapshot(self.run, client, self._say) if shipped else None
        node_ids = [n for n in self.items if n not in self.ran_here]
        known = durations_here(self.run.data_dir, node_ids)  # where the cluster has none
        known.update(recorded_durations(client, node_ids, hardware_classes(client)))
        where = {"started": "", "warm": " (running cluster)", "remote": f" at {target.api_url}"}[target.kind]
        here = f" ({len(self.ran_here)} more ran here while the cluster started)" if self.ran_here else ""
        self._say(
            f"{len(node_ids)} tests, {len(known)} with recorded durations, "
            f"{len(node_ids) - len(known)} estimated; {n_workers} workers{where}{here}"
        )
        estimates = estimates_for(node_ids, known, self._durations_here)
        batches = plan_batches(
            estimates,
            n_workers,
            startup_s=self.run.batch_startup_s,
            per_test_s=self.run.per_test_s,
            recorded=known.keys(),
            groups=dist_groups(node_ids, self.run.dist, self._xdist_groups),
        )
        where_params: dict[str, Any] = {"snapshot": snapshot} if snapshot else {"cwd": str(self.run.cwd)}
        execution = self.execution = Execution(
            client,
            self.run,
            {n: i for i, n in enumerate(node_ids)},
            estimates,
            self._on_attempt,
            parameters={
                "args": batch_pytest_args(self.run.pytest_args),
                "workerinput": self._workerinput(n_workers),
                **where_params,
                **({"live_output": True} if self._live_output() else {}),
            },
            guessed={n for n in node_ids if n not in known},
            started=self.started,
            n_workers=n_workers,
        )
        reader = ThreadPoolExecutor(4, thread_name_prefix="dtf-run-results")
        execution.reader, execution.on_read = reader, watcher.wake
        execution.stream = functools.partial(self._take_pushed, watcher, execution)
        execution.received = watcher.received
        if self._live_output() and not watcher.wait_connected(LIVE_OUTPUT_CONNECT_S):
            # What the batches print is only pushed, never stored: without the connection it is lost.
            self._say("no live output: the coordinator's WebSocket did not answer in time")
        try:
            execution.submit(batches)
            self._follow(session, execution, watcher)
        finally:
            reader.shutdown(wait=False, cancel_futures=True)
            if not execution.done:
                execution.cancel_open()  # pytest stops (-x, Ctrl-C): so do the workers
        log.info(
            "first batch leased %s, first test started %s, all finished %.2fs after start",
            _seconds(execution.first_leased_s),
            _seconds(execution.first_test_s),
            time.monotonic() - self.started,
        )
        if session.shouldfail or session.shouldstop:
            return
        for node_id, why in execution.missing().items():
            item = self.items[node_id]
            replay(item, [failure_report(item, f"dtf: no result was recorded: {why}")])

    def _run_here_while_the_cluster_starts(self, session: pytest.Session) -> set[str]:
        """Run tests from the first in a child of this session (`dtf.run.local_lane`) until
        the local cluster this run waits for has started: on a small suite the whole run,
        on a large one its first seconds. The rest goes to the cluster. Not with
        `--no-head-start`, nor where tests must run on workers (`--dist` other than
        `load`, `xdist_group`, `--dtf-reruns`) or the child could not run alone (`--pdb`,
        `--trace`, `--report-log`, which writes each report as it is made)."""
        finding = self._finding
        option = self.config.option
        if (
            finding is None
            or finding.done()
            or not self._cluster_starting.is_set()
            or not self.run.head_start
            or self.run.dist not in ("no", "load")
            or self.run.reruns
            or getattr(option, "usepdb", False)
            or getattr(option, "trace", False)
            or getattr(option, "report_log", None)
            or self._xdist_groups
        ):
            return set()
        from dtf.run.local_lane import LocalLane  # only now: the imports cost a run that has none

        # One more xdist worker id than the cluster's workers have, so none is shared.
        workerinput = {**self._workerinput(self.run.workers), "workerid": f"gw{self.run.workers}"}
        lane = LocalLane.start(session, workerinput, live_output=self._live_output())
        if lane is None:
            return set()
        try:
            while lane.running() and not finding.done():
                self._play_local(lane)
                if session.shouldfail or session.shouldstop:
                    break
                futures_wait([finding], timeout=LOCAL_POLL_S)
            lane.stop()
            self._play_local(lane)
        finally:
            lane.close()
            with contextlib.suppress(OSError):
                remember_here(self.run.data_dir, self._durations_here)
        if lane.finished:
            log.info("%d tests ran here while the cluster started", len(lane.finished))
        return lane.finished & self.items.keys()

    def _play_local(self, lane: LocalLane) -> None:
        cases, stdout, stderr = lane.take()
        self._print_output(stdout, stderr)
        for case in cases:
            item = self.items.get(case.node_id)
            if item is not None:
                raw = case.raw_data()
                replay(item, reports_of(item, raw), raw.get("warnings") or ())
                self._durations_here[case.node_id] = case.duration

    def _live_output(self) -> bool:
        """pytest's `-s`: what tests print shows as they print it."""
        return bool(getattr(self.config.option, "capture", "fd") == "no")

    def _take_pushed(self, watcher: TaskWatcher, execution: Execution) -> dict[str, list[dict[str, Any]]]:
        """The results pushed meanwhile, after printing the output of this run's batches
        that came before them."""
        output, results = watcher.take()
        for task_id, stdout, stderr in output:
            if task_id in execution.submitted:  # not another run's, on a shared cluster
                self._print_output(stdout, stderr)
        return results

    @staticmethod
    def _print_output(stdout: str, stderr: str) -> None:
        for stream, text in ((sys.stdout, stdout), (sys.stderr, stderr)):
            if text:
                stream.write(text)
                stream.flush()

    def _follow(self, session: pytest.Session, execution: Execution, watcher: TaskWatcher) -> None:
        """Until every batch has ended or pytest asks to stop: read the tasks the coordinator
        says changed, and every open task each FULL_POLL_S; without task updates, every open
        task each `poll_s`."""
        polled_all = time.monotonic()
        watched = False  # whether the last pass already had task updates (else: read every task)
        while not execution.done:
            execution.take_results()
            if session.shouldfail or session.shouldstop:
                return
            if execution.done:
                return
            if watcher.connected:
                changed = watcher.wait(self.run.poll_s)
                if time.monotonic() - polled_all >= FULL_POLL_S or not watched:
                    execution.poll_once()
                    polled_all = time.monotonic()
                elif changed:
                    execution.poll_once(only=changed)
                watched = True
            else:
                execution.poll_once()
                watched = False
                time.sleep(self.run.poll_s)

    @functools.cached_property
    def _xdist_groups(self) -> dict[str, str]:
        """Node id -> its `@pytest.mark.xdist_group` name, for `--dist loadgroup` (read once
        the session has collected: both the head start and the plan ask)."""
        groups: dict[str, str] = {}
        for node_id, item in self.items.items():
            mark = item.get_closest_marker("xdist_group")
            if mark is not None:
                name = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
                groups[node_id] = str(name)
        return groups

    def _workerinput(self, n_workers: int) -> dict[str, Any]:
        """What pytest-xdist's controller gives its workers, less the worker's own id (each
        batch's worker adds `gwN`); plugins that seed per run read their seed from it."""
        workerinput: dict[str, Any] = {
            "workercount": n_workers,
            "testrunuid": self.run.run_id,
            "mainargv": list(self.config.invocation_params.args),
        }
        seed = getattr(self.config.option, "randomly_seed", None)
        if isinstance(seed, int):  # pytest-randomly: every batch reseeds as this session does
            workerinput["randomly_seed"] = seed
        return workerinput

    def _on_attempt(self, attempt: Attempt) -> None:
        item = self.items[attempt.node_id]
        if attempt.row is not None:
            raw = attempt.row.get("raw_data") or {}
            replay(item, reports_of(item, raw, rerun=not attempt.final), raw.get("warnings") or ())
            return
        report = failure_report(item, attempt.crash, attempt.details)
        if not attempt.final:
            report.outcome = RERUN  # type: ignore[assignment]
        replay(item, [report])

    # -- reporting ------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> Any:
        if report.outcome == RERUN:
            return RERUN, "R", ("RERUN", {"yellow": True})
        return None

    def _leaves_cluster(self) -> bool:
        """Whether the cluster this run started stays up after it (kept, or until idle)."""
        return self.run.keep or (self.run.idle_timeout > 0 and (self.execution is not None or bool(self.ran_here)))

    def _started_here(self) -> bool:
        """Whether this run started the cluster, as far as is known without waiting for it."""
        finding = self._finding
        if self.target is None and finding is not None and finding.done() and finding.exception() is None:
            self.target = finding.result()
        if self.target is not None:
            return self.target.started_here
        return launched_by_this_run(self.run.data_dir) is not None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._started_here() and self._leaves_cluster():
            how_long = "" if self.run.keep else f" for {_duration(self.run.idle_timeout)} once idle"
            terminalreporter.write_line(
                f"dtf: the cluster in {self.run.data_dir} keeps running{how_long}, for the next run; "
                f"stop it with `dtf down --data-dir {self.run.data_dir}`"
            )
        if self.execution is None:
            return
        flaky = self.execution.flaky()
        if not flaky:
            return
        terminalreporter.write_sep("=", "flaky tests (passed when run again)", yellow=True)
        for final, history in flaky:
            first = history[0]
            why = first.crash or str((first.row or {}).get("raw_data", {}).get("message") or first.outcome)
            terminalreporter.write_line(
                f"FLAKY {final.node_id} - passed on attempt {len(history) + 1} after {len(history)} failed: {why}"
            )

    # -- the end --------------------------------------------------------------------

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # Nothing the session holds needs the collector now: the interpreter's last
        # collection at exit would walk every item and report (0.2-0.5 s on 2,000 tests).
        gc.freeze()
        if self._leaves_cluster():
            return
        finding = self._finding
        target: Target | None = self.target
        if finding is not None and target is None:
            with contextlib.suppress(BaseException):
                target = finding.result()
        if target is None or not target.started_here:
            return
        stop_data_dir(self.run.data_dir)
        if self.execution is None and target.fresh_data_dir:
            shutil.rmtree(self.run.data_dir, ignore_errors=True)  # nothing ran: leave nothing behind


def _find(finding: Future[Target], run: RunConfig, starting: Callable[[], None]) -> None:
    try:
        finding.set_result(find_target(run, starting))
    except BaseException as exc:
        finding.set_exception(exc)


class ControllerFixtures:
    """pytest-xdist's `worker_id` and `testrun_uid` fixtures where it is not installed, for
    the tests the session's own child runs (`local_lane`): the child's worker id, as a
    batch's worker would give it (`master`, xdist's controller's, outside one)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    @pytest.fixture(scope="session")
    def worker_id(self, request: pytest.FixtureRequest) -> str:
        workerinput = getattr(request.config, "workerinput", None)  # the session's own child's
        return str(workerinput["workerid"]) if isinstance(workerinput, dict) else "master"

    @pytest.fixture(scope="session")
    def testrun_uid(self) -> str:
        return self.run_id


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
