"""One run's batches on a coordinator: submitting them, following them, taking in results.

A batch whose pytest process died leaves some of its tests without a result: the first of
them (in run order) is the one that crashed or hung and is reported failed with the task's
error; the rest are submitted again as a new batch. With `reruns`, a failing test is run
again, alone, on another worker where there is one; one that then passes is flaky.

A batch of several tests that holds a test never run before (its duration a guess)
carries `yield_after`: the seconds after which it stops at the next test boundary, well
past its estimate. A batch whose estimate was wrong so yields; its remaining tests are
split over the workers and submitted ahead of the queue, so whichever workers are free
share them: work stealing at the tail, decided where the estimates are, with no message
to a running worker. The pieces do not yield again. Batches of recorded tests never
yield: when they run long, every worker is slow alike, and splitting would only add
start-ups.

A run may start from a *prediction* (the last collection of the same command, kept while
nothing pytest's discovery reads has changed). When every batch names whole files, the
workers' pytest confirms it: each batch reports how many tests its session collected, and
a batch that ran them all has seen its files as the run's own collection would (see
`_confirm`). Otherwise, or when a batch cannot confirm (a crash, a yield, a file that
holds other tests than predicted), pytest collects on the client and `verify` compares.
When the two agree, nothing changes; when they differ, the batches still open are
cancelled, results of tests that are no longer collected are dropped, and the tests
without a result are planned again. Until the prediction is confirmed a batch that failed
is not judged: a test the prediction named may no longer exist.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from dtf.run.args import batch_pytest_args, selects_within_files
from dtf.run.cluster import live_workers
from dtf.run.config import RunConfig
from dtf.run.plan import Batch, file_of
from dtf.run.report import TestOutcome, outcome_from_result
from dtf_common.errors import DtfError

log = logging.getLogger("dtf.run.runner")

FINAL = frozenset({"completed", "failed", "cancelled"})
# A batch's time limit when the user gives none: generous against the estimate, because
# the estimate of a never-run test is a guess.
BATCH_TIMEOUT_FLOOR_S = 60.0
BATCH_TIMEOUT_FACTOR = 10.0
# How long to wait for a finished task's results to appear in the results store.
RESULTS_WAIT_S = 10.0


class Client(Protocol):
    """The part of DtfClient the runner uses."""

    def submit(self, tasks: list[dict[str, Any]] | dict[str, Any]) -> list[str]: ...
    def task(self, task_id: str) -> dict[str, Any]: ...
    def all_results(self, **filters: Any) -> list[dict[str, Any]]: ...
    def durations(self, test_ids: list[str], *, hardware_id: str | None = None) -> dict[str, float]: ...
    def cancel(self, task_id: str) -> dict[str, Any]: ...
    def workers(self) -> list[dict[str, Any]]: ...


# A batch yields after YIELD_FACTOR times its estimate plus YIELD_SLACK_S; one of fewer
# than YIELD_MIN_TESTS tests does not (what it would hand on is not worth a start-up).
YIELD_FACTOR = 2.0
YIELD_SLACK_S = 1.0
YIELD_MIN_TESTS = 4
# pytest's exit codes for a session that ran nothing: a usage error (no such test), no tests.
NOTHING_RAN = frozenset({4, 5})
COUNTED = ("passed", "failed", "skipped", "errors")
# Remainders of yielded batches go ahead of the planned batches.
PRIORITY = 5
PRIORITY_REMAINDER = 6


@dataclass
class Submitted:
    node_ids: tuple[str, ...]
    estimate_s: float
    # The files the batch names whole (every test of each is in the batch), by node id path.
    whole_files: frozenset[str] = frozenset()


@dataclass
class _Parked:
    """A failed batch of a prediction, judged once the collection is known."""

    submitted: Submitted
    task: Mapping[str, Any]


@dataclass
class Execution:
    """The state of one run against a coordinator: what is submitted, what came back."""

    client: Client
    config: RunConfig
    # The node ids the run must account for, in collection order.
    order: dict[str, int]
    estimates: dict[str, float]
    # Node id -> the argument that names it to pytest from the run's directory, where they differ.
    arguments: dict[str, str] = field(default_factory=dict)
    # False while `order` is a prediction the run's own collection has not confirmed yet.
    verified: bool = True
    # Tests whose estimate is a guess (no recorded duration).
    guessed: set[str] = field(default_factory=set)
    outcomes: dict[str, TestOutcome] = field(default_factory=dict)
    open: dict[str, Submitted] = field(default_factory=dict)
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
    parked: list[_Parked] = field(default_factory=list)
    # Why a collected test has no result, where a batch said (pytest found none of them).
    why_missing: dict[str, str] = field(default_factory=dict)
    # How many collected tests each file holds (for naming whole files), once needed.
    _file_sizes: Counter[str] | None = None
    # A prediction whose batches name whole files is confirmed by the workers' pytest
    # (see `_confirm`); the run needs its own collection only when they cannot confirm it.
    confirming: bool = False
    needs_collection: bool = False
    _confirmed: dict[str, set[str]] = field(default_factory=dict)
    _predicted: dict[str, set[str]] | None = None  # the prediction's tests by file, once needed
    # With `reader`, a finished task's results are read in the background, so that batches
    # ending close together are read together; `on_read` is called as each read ends.
    reader: ThreadPoolExecutor | None = None
    on_read: Callable[[], None] | None = None
    _reading: dict[str, tuple[Mapping[str, Any], Future[list[dict[str, Any]]]]] = field(default_factory=dict)

    # -- submitting -----------------------------------------------------------

    def batch_timeout(self, estimate_s: float) -> float:
        if self.config.timeout is not None:
            return self.config.timeout
        return BATCH_TIMEOUT_FLOOR_S + BATCH_TIMEOUT_FACTOR * estimate_s

    def yield_after(self, estimate_s: float) -> float:
        return YIELD_FACTOR * estimate_s + max(YIELD_SLACK_S, 4 * self.config.batch_startup_s)

    def submit(
        self,
        batches: Sequence[Batch],
        *,
        metadata: Mapping[str, Any] | None = None,
        exclude: Sequence[str] = (),
        priority: int = PRIORITY,
        may_yield: bool = True,
    ) -> list[str]:
        """One `pytest` task per batch, in the given order (same priority: first in, first out).
        Each batch runs its tests in collection order, so module fixtures are set up once.
        `exclude` names workers that must not run them (a rerun avoids the worker that failed)."""
        options = batch_pytest_args(self.config.pytest_args)
        last = len(self.order)
        ordered = [tuple(sorted(b.node_ids, key=lambda n: self.order.get(n, last))) for b in batches]
        where: dict[str, Any] = {"snapshot": self.snapshot} if self.snapshot else {"cwd": str(self.config.cwd)}
        named = [self._pytest_arguments(ids) for ids in ordered]
        bodies: list[dict[str, Any]] = [
            {
                "type": "pytest",
                "priority": priority,
                "timeout": self.batch_timeout(b.estimate_s),
                "parameters": {"node_ids": arguments, "args": options, **where},
                "metadata": {"dtf_run": True, "tests": len(ids), **(metadata or {})},
            }
            for b, ids, (arguments, _) in zip(batches, ordered, named, strict=True)
        ]
        for body, ids, b in zip(bodies, ordered, batches, strict=True):
            if may_yield and len(ids) >= YIELD_MIN_TESTS and not self.guessed.isdisjoint(ids):
                body["parameters"]["yield_after"] = round(self.yield_after(b.estimate_s), 3)
        if exclude:
            for body in bodies:
                body["requirements"] = {"exclude_workers": list(exclude)}
        if not bodies:
            return []
        task_ids = self.client.submit(bodies)
        for task_id, b, ids, (_, whole) in zip(task_ids, batches, ordered, named, strict=True):
            self.open[task_id] = Submitted(ids, b.estimate_s, whole)
        return task_ids

    def _pytest_arguments(self, node_ids: Sequence[str]) -> tuple[list[str], frozenset[str]]:
        """What names `node_ids` to pytest, and the files it names whole: each test's id (or
        the argument that names it from the run's directory), except that a file whose every
        collected test is there is named as the file, which pytest collects faster than a
        list of its tests. Not when the user's arguments select tests within files (-k, -m,
        node ids)."""
        named = [self.arguments.get(n, n) for n in node_ids]
        if selects_within_files(self.config.pytest_args):
            return named, frozenset()
        if self._file_sizes is None:
            self._file_sizes = Counter(file_of(n) for n in self.order)
        here = Counter(file_of(n) for n in node_ids)
        whole = frozenset(f for f, count in here.items() if count == self._file_sizes.get(f))
        out: list[str] = []
        for node_id, argument in zip(node_ids, named, strict=True):
            if file_of(node_id) not in whole:
                out.append(argument)
            elif (path := file_of(argument)) not in out:
                out.append(path)
        return out, whole

    # -- following ------------------------------------------------------------

    def poll_once(self, only: Collection[str] | None = None) -> None:
        """Read the open tasks that can have moved (the running ones, and as many of the
        queued ones as there are workers: the queue is first in, first out), or those in
        `only`; take in the results of each one that finished."""
        self.take_results()
        if only is None:
            queued = [t for t in self.open if t not in self.running][: max(1, self.n_workers or self.config.workers)]
            polled = [t for t in (*self.running, *queued) if t not in self._reading]
        else:
            polled = [t for t in only if t in self.open and t not in self._reading]
        finished: list[tuple[str, dict[str, Any]]] = []
        for task_id in polled:
            task = self.client.task(task_id)
            if task["status"] in FINAL:
                finished.append((task_id, task))
            elif task["status"] == "running":
                self.running.add(task_id)
            if self.first_leased_s is None and task.get("start_time"):
                self.first_leased_s = _epoch(task["start_time"]) - self.started_wall
        if self.reader is None:  # no background reads: read each one here
            for task_id, task in finished:
                if task_id in self.open:  # not settled by an earlier finish in this pass
                    self._finish(task_id, task, self._results_of(task_id, task))
            return
        for task_id, task in finished:
            reading = self.reader.submit(self._results_of, task_id, task)
            reading.add_done_callback(self._read_done)
            self._reading[task_id] = (task, reading)
        self.take_results()

    def _read_done(self, _reading: Future[list[dict[str, Any]]]) -> None:
        if self.on_read is not None:
            self.on_read()

    def take_results(self) -> None:
        """Take in the results that background reads have finished reading."""
        for task_id, (task, reading) in list(self._reading.items()):
            if reading.done():
                del self._reading[task_id]
                if task_id in self.open:
                    self._finish(task_id, task, reading.result())

    def _results_of(self, task_id: str, task: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The task's results, once the store holds as many as the worker reported."""
        summary = task.get("results") or {}
        expected = sum(int(summary.get(k) or 0) for k in COUNTED)
        deadline = time.monotonic() + RESULTS_WAIT_S
        rows = self.client.all_results(task_id=task_id)
        while len(rows) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = self.client.all_results(task_id=task_id)
        return rows

    def _finish(self, task_id: str, task: Mapping[str, Any], rows: list[dict[str, Any]]) -> None:
        submitted = self.open.pop(task_id)
        self.running.discard(task_id)
        wanted = set(submitted.node_ids)
        node_of = {arg: n for n, arg in self.arguments.items()}
        if not self.verified and self.confirming:
            self._confirm(submitted, task, {node_of.get(str(r["test_id"]), str(r["test_id"])) for r in rows})
        for row in rows:
            outcome = outcome_from_result(row)
            node_id = node_of.get(outcome.node_id, outcome.node_id)
            if node_id in wanted and node_id not in self.outcomes:
                self.outcomes[node_id] = replace(outcome, node_id=node_id)
                self.estimates[node_id] = outcome.duration  # measured now, for what is resubmitted
                self.guessed.discard(node_id)
                self._note_first_test(row)
        missing = [n for n in submitted.node_ids if n not in self.outcomes]
        if missing and (task.get("results") or {}).get("yielded"):
            self._share(missing)
        elif missing and task["status"] != "completed":
            # (a completed task without some results is left to the fail-closed check)
            if not self.verified:
                self.parked.append(_Parked(submitted, task))
                return
            self._settle_crash(missing, task)
        for node_id in submitted.node_ids:
            final = self.outcomes.get(node_id)
            if final is not None and final.failed and len(self.attempts.get(node_id, ())) < self.config.reruns:
                self._rerun(self.outcomes.pop(node_id))

    def _settle_crash(self, missing: Sequence[str], task: Mapping[str, Any]) -> None:
        """The first test without a result crashed its batch; the others run again. A batch
        whose pytest ran none of its tests (no such test, a usage error) crashed nothing:
        its tests stay without a result, and the run fails closed naming them."""
        still = [n for n in missing if n not in self.outcomes and n in self.order]
        if not still:
            return
        summary = task.get("results") or {}
        if summary.get("exit_code") in NOTHING_RAN and not any(summary.get(k) for k in COUNTED):
            why = f"its batch ran none of its tests ({task.get('error') or 'pytest ran nothing'})"
            self.why_missing.update(dict.fromkeys(still, why))
            return
        culprit, rest = still[0], still[1:]
        self.outcomes[culprit] = crash_outcome(culprit, task)
        log.info("%s crashed its batch (%s); resubmitting %d tests", culprit, task.get("error"), len(rest))
        if rest:
            estimate = sum(self.estimates.get(n, 0.0) for n in rest)
            self.submit([Batch(tuple(rest), estimate)])

    def _share(self, rest: Sequence[str]) -> None:
        """The tests a yielded batch did not reach, split over the workers, ahead of the queue."""
        costs = {n: self.estimates.get(n, 0.0) + self.config.per_test_s for n in rest}
        pieces = split_evenly([n for n in rest if n in self.order], costs, self.n_workers or 1)
        log.info("a batch yielded; %d tests resubmitted as %d batches", len(rest), len(pieces))
        self.submit(pieces, priority=PRIORITY_REMAINDER, may_yield=False)

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

    # -- a predicted run meets its collection ---------------------------------

    def names_whole_files(self, batches: Sequence[Batch]) -> bool:
        """Whether every batch names only whole files, so that the workers' pytest can
        confirm what each file holds."""
        return all(self._pytest_arguments(b.node_ids)[1] == {file_of(n) for n in b.node_ids} for b in batches)

    def _confirm(self, submitted: Submitted, task: Mapping[str, Any], reported: set[str]) -> None:
        """Take a finished batch's word for what its files hold. A batch that names only
        whole files and ran every test its pytest collected (no crash, no yield) has seen
        those files as the run's own collection would; once every file of the prediction is
        so seen, and holds exactly the predicted tests, the prediction is confirmed. A batch
        that should confirm and cannot sends the run to its own collection."""
        files = {file_of(n) for n in submitted.node_ids}
        if submitted.whole_files != files:
            return  # names single tests (a rerun, a remainder): says nothing of whole files
        summary = task.get("results") or {}
        if (
            summary.get("exit_code") not in (0, 1)
            or summary.get("yielded")
            or summary.get("collected") != len(reported)
            or any(file_of(n) not in files for n in reported)
        ):
            self.needs_collection = True
            return
        for file in files:
            self._confirmed[file] = {n for n in reported if file_of(n) == file}
        if self._predicted is None:  # `order` changes only once the prediction is settled
            self._predicted = {}
            for node_id in self.order:
                self._predicted.setdefault(file_of(node_id), set()).add(node_id)
        predicted = self._predicted
        if any(self._confirmed[f] != predicted.get(f, set()) for f in files):
            self.needs_collection = True
        elif predicted.keys() <= self._confirmed.keys():
            log.info("the workers' pytest confirmed the prediction; no collection needed")
            self.verified = True
            self._settle_parked()

    def _settle_parked(self) -> None:
        parked, self.parked = self.parked, []
        for p in parked:
            self._settle_crash([n for n in p.submitted.node_ids if n not in self.outcomes], p.task)

    def verify(self, node_ids: Sequence[str], arguments: Mapping[str, str]) -> list[str]:
        """Take the run's own collection. Returns the collected tests that must now be
        planned and submitted: none when it matches the prediction."""
        collected = list(dict.fromkeys(node_ids))
        same = set(collected) == set(self.order)
        self.order = {n: i for i, n in enumerate(collected)}
        self._file_sizes = None
        self.arguments = dict(arguments)
        self.verified = True
        if same:
            self._settle_parked()
            return []
        self.parked = []
        log.info("the collection differs from the prediction; re-planning")
        self.cancel_open()
        self.open.clear()
        self.running.clear()
        self.outcomes = {n: o for n, o in self.outcomes.items() if n in self.order}
        self.attempts = {n: h for n, h in self.attempts.items() if n in self.order}
        return [n for n in collected if n not in self.outcomes]

    # -- the tail ---------------------------------------------------------------

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

    def _cancel(self, task_id: str) -> None:
        try:
            self.client.cancel(task_id)
        except DtfError as exc:
            log.debug("cannot cancel %s: %s", task_id, exc)

    def cancel_open(self) -> None:
        """Cancel every unfinished batch, best effort (used when the run is abandoned)."""
        for task_id in list(self.open):
            self._cancel(task_id)

    @property
    def done(self) -> bool:
        return not self.open and not self.parked

    def eta_s(self) -> float:
        remaining = sum(s.estimate_s for s in self.open.values())
        return remaining / max(1, self.n_workers or self.config.workers)

    def running_tests(self) -> int:
        return sum(len(self.open[t].node_ids) for t in self.running if t in self.open)


def split_evenly(node_ids: Sequence[str], estimates: Mapping[str, float], pieces: int) -> list[Batch]:
    """`node_ids`, in order, as up to `pieces` consecutive batches of about equal estimated time."""
    pieces = max(1, min(pieces, len(node_ids)))
    total = sum(estimates.get(n, 0.0) for n in node_ids)
    out: list[Batch] = []
    current: list[str] = []
    taken = 0.0
    for i, node_id in enumerate(node_ids):
        current.append(node_id)
        taken += estimates.get(node_id, 0.0)
        left = len(node_ids) - i - 1
        due = total * (len(out) + 1) / pieces
        if len(out) < pieces - 1 and left and (taken >= due or left <= pieces - 1 - len(out)):
            out.append(Batch(tuple(current), sum(estimates.get(n, 0.0) for n in current)))
            current = []
    if current:
        out.append(Batch(tuple(current), sum(estimates.get(n, 0.0) for n in current)))
    return out


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
