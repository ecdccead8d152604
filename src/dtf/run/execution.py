"""One run's batches on a coordinator: submitting them, following them, taking in results.

Every batch is a `pytest` task that runs the run's own pytest arguments from the run's
directory and selects its tests by the node ids the run's session collected
(`parameters.select`), so every result comes back under the id it was asked for.

Each test's end is handed to `on_attempt` as an `Attempt`, in the order the batch ran
its tests:

- a batch whose pytest process died leaves some of its tests without a result: the first
  of them (in run order) is the one that crashed or hung, and its attempt says why; the
  rest are submitted again as a new batch;
- a selected test the batch's pytest did not collect, or a batch that ran none of its
  tests, leaves the test without a result; the run reports it missing (`why_missing`);
- with `reruns`, a failing test is run again, alone, on another worker where there is
  one; its failed attempts are handed on with `final=False`.

A batch of several tests that holds a test never run before (its duration a guess)
carries `yield_after`: the seconds after which it stops at the next test boundary, well
past its estimate. A batch whose estimate was wrong so yields; its remaining tests are
split over the workers and submitted ahead of the queue, so whichever workers are free
share them: work stealing at the tail, decided where the estimates are, with no message
to a running worker. The pieces do not yield again. Batches of recorded tests never
yield: when they run long, every worker is slow alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from dtf.run.cluster import live_workers
from dtf.run.config import RunConfig
from dtf.run.plan import Batch
from dtf_common.errors import DtfError

log = logging.getLogger("dtf.run")

FINAL = frozenset({"completed", "failed", "cancelled"})
# A batch's time limit when the user gives none: generous against the estimate, because
# the estimate of a never-run test is a guess.
BATCH_TIMEOUT_FLOOR_S = 60.0
BATCH_TIMEOUT_FACTOR = 10.0
# How long to wait for a finished task's results to appear in the results store.
RESULTS_WAIT_S = 10.0
# How long a finished task's last pushed results may lag its status, before they are read.
PUSH_WAIT_S = 0.5
# A batch yields after YIELD_FACTOR times its estimate plus YIELD_SLACK_S; one of fewer
# than YIELD_MIN_TESTS tests does not (what it would hand on is not worth a start-up).
YIELD_FACTOR = 2.0
YIELD_SLACK_S = 1.0
YIELD_MIN_TESTS = 4
# pytest's exit codes for a session that ran nothing: a usage error, no tests.
NOTHING_RAN = frozenset({4, 5})
COUNTED = ("passed", "failed", "skipped", "errors")
FAILED = frozenset({"failed", "error"})
# Remainders of yielded batches go ahead of the planned batches.
PRIORITY = 5
PRIORITY_REMAINDER = 6


class Client(Protocol):
    """The part of DtfClient the run uses."""

    def submit(self, tasks: list[dict[str, Any]] | dict[str, Any]) -> list[str]: ...
    def task(self, task_id: str) -> dict[str, Any]: ...
    def all_results(self, **filters: Any) -> list[dict[str, Any]]: ...
    def durations(self, test_ids: list[str], *, hardware_id: str | None = None) -> dict[str, float]: ...
    def cancel(self, task_id: str) -> dict[str, Any]: ...
    def workers(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Attempt:
    """One run of one test. `row` is its stored result (whose `raw_data` holds pytest's
    reports); a test whose process died has none, and `crash` says what happened, with
    the process's output in `details`. `final` is False for a failure that runs again."""

    node_id: str
    outcome: str
    worker_id: str = ""
    row: Mapping[str, Any] | None = None
    crash: str = ""
    details: str = ""
    final: bool = True

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED


@dataclass
class Submitted:
    node_ids: tuple[str, ...]
    estimate_s: float


@dataclass
class Execution:
    """The state of one run against a coordinator: what is submitted, what came back."""

    client: Client
    config: RunConfig
    # The node ids the run must account for, in collection order.
    order: dict[str, int]
    estimates: dict[str, float]
    on_attempt: Callable[[Attempt], None]
    # The task parameters every batch shares: pytest's arguments, where to run, xdist's.
    parameters: dict[str, Any] = field(default_factory=dict)
    # Tests whose estimate is a guess (no recorded duration).
    guessed: set[str] = field(default_factory=set)
    # The last attempt of each test that has ended, and the failed ones before it.
    outcomes: dict[str, Attempt] = field(default_factory=dict)
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    open: dict[str, Submitted] = field(default_factory=dict)
    # Every task this run submitted, open or not.
    submitted: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    n_workers: int = 0
    first_leased_s: float | None = None
    first_test_s: float | None = None
    # Why a collected test has no result, where a batch said.
    why_missing: dict[str, str] = field(default_factory=dict)
    # With `reader`, a finished task's results are read in the background, so that batches
    # ending close together are read together; `on_read` is called as each read ends.
    reader: ThreadPoolExecutor | None = None
    on_read: Callable[[], None] | None = None
    _reading: dict[str, tuple[Mapping[str, Any], Future[list[dict[str, Any]]]]] = field(default_factory=dict)
    # Results pushed as they are committed, while their batch runs (`TaskWatcher`): drained
    # by `stream`, counted by `received` (a task's, so far; -1 while nothing is pushed).
    stream: Callable[[], Mapping[str, list[dict[str, Any]]]] | None = None
    received: Callable[[str], int] | None = None
    # The tests of each open task whose result has been taken in.
    _taken: dict[str, set[str]] = field(default_factory=dict)

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
        """One `pytest` task per batch, in the given order (same priority: first in, first
        out). Each batch runs its tests in collection order, so module fixtures are set up
        once. `exclude` names workers that must not run them (a rerun avoids the worker
        that failed)."""
        last = len(self.order)
        ordered = [tuple(sorted(b.node_ids, key=lambda n: self.order.get(n, last))) for b in batches]
        bodies: list[dict[str, Any]] = []
        for b, ids in zip(batches, ordered, strict=True):
            parameters: dict[str, Any] = {**self.parameters, "select": list(ids)}
            if may_yield and b.splittable and len(ids) >= YIELD_MIN_TESTS and not self.guessed.isdisjoint(ids):
                parameters["yield_after"] = round(self.yield_after(b.estimate_s), 3)
            body: dict[str, Any] = {
                "type": "pytest",
                "priority": priority,
                "timeout": self.batch_timeout(b.estimate_s),
                "parameters": parameters,
                "metadata": {"dtf_run": True, "tests": len(ids), **(metadata or {})},
            }
            if exclude:
                body["requirements"] = {"exclude_workers": list(exclude)}
            bodies.append(body)
        if not bodies:
            return []
        task_ids = self.client.submit(bodies)
        for task_id, b, ids in zip(task_ids, batches, ordered, strict=True):
            self.open[task_id] = Submitted(ids, b.estimate_s)
        self.submitted.update(task_ids)
        return task_ids

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
                if task_id in self.open:
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
        """Take in the results pushed meanwhile, then those that background reads of
        finished tasks have read."""
        if self.stream is not None:
            for task_id, rows in self.stream().items():
                self.feed(task_id, rows)
        for task_id, (task, reading) in list(self._reading.items()):
            if reading.done():
                del self._reading[task_id]
                if task_id in self.open:
                    self._finish(task_id, task, reading.result())

    def feed(self, task_id: str, rows: list[dict[str, Any]]) -> None:
        """Results of an open task, pushed as they were committed (while it ran): each test
        ends as its result comes in, so its reports are played at once."""
        submitted = self.open.get(task_id)
        if submitted is None:
            return
        wanted = set(submitted.node_ids)
        for row in rows:
            node_id = str(row["test_id"])
            if node_id in wanted:
                self._take(task_id, node_id, row)

    def _take(self, task_id: str, node_id: str, row: Mapping[str, Any]) -> None:
        taken = self._taken.setdefault(task_id, set())
        if node_id in taken or node_id in self.outcomes:
            return
        taken.add(node_id)
        raw = row.get("raw_data") or {}
        self._ended(Attempt(node_id, str(raw.get("outcome") or "failed"), str(row.get("worker_id") or ""), row))
        self.estimates[node_id] = float(row.get("execution_time") or 0.0)  # for what is resubmitted
        self.guessed.discard(node_id)
        self._note_first_test(row)

    def _results_of(self, task_id: str, task: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The task's results, once the store holds as many as the worker reported; none
        when they were all pushed already (`feed` took them in)."""
        summary = task.get("results") or {}
        expected = sum(int(summary.get(k) or 0) for k in COUNTED)
        if self.received is not None and self.received(task_id) >= 0:
            pushed_by = time.monotonic() + PUSH_WAIT_S
            while 0 <= self.received(task_id) < expected and time.monotonic() < pushed_by:
                time.sleep(0.01)
            if self.received(task_id) >= expected:
                return []
        deadline = time.monotonic() + RESULTS_WAIT_S
        rows = self.client.all_results(task_id=task_id)
        while len(rows) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = self.client.all_results(task_id=task_id)
        return rows

    def _finish(self, task_id: str, task: Mapping[str, Any], rows: list[dict[str, Any]]) -> None:
        submitted = self.open[task_id]
        wanted = set(submitted.node_ids)
        by_id: dict[str, dict[str, Any]] = {}
        for row in rows:
            node_id = str(row["test_id"])
            if node_id in wanted:
                by_id.setdefault(node_id, row)
        for node_id in submitted.node_ids:  # the order the batch ran them in
            found = by_id.get(node_id)
            if found is not None:
                self._take(task_id, node_id, found)
        del self.open[task_id]
        self._taken.pop(task_id, None)
        self.running.discard(task_id)
        summary = task.get("results") or {}
        missing = [n for n in submitted.node_ids if n not in self.outcomes and n not in self._rerunning]
        not_collected = set(summary.get("missing") or ())
        if not_collected:
            why = _not_collected_reason(summary)
            self.why_missing.update({n: why for n in missing if n in not_collected})
            missing = [n for n in missing if n not in not_collected]
        if missing and summary.get("stopped"):  # -x, --maxfail: the run stops too
            self.why_missing.update(dict.fromkeys(missing, f"its batch stopped: {summary['stopped']}"))
        elif missing and summary.get("yielded"):
            self._share(missing)
        elif missing and task["status"] != "completed":
            self._settle_crash(missing, task)
        elif missing:
            self.why_missing.update(
                dict.fromkeys(missing, "its batch completed without reporting it"),
            )

    @property
    def _rerunning(self) -> set[str]:
        return {n for n in self.attempts if n not in self.outcomes}

    def _ended(self, attempt: Attempt) -> None:
        """A test's attempt ended: final, or (a failure with reruns left) run again."""
        history = self.attempts.get(attempt.node_id, [])
        if attempt.failed and len(history) < self.config.reruns:
            attempt = replace(attempt, final=False)
            self.attempts.setdefault(attempt.node_id, []).append(attempt)
            self.on_attempt(attempt)
            self._rerun(attempt)
            return
        self.outcomes[attempt.node_id] = attempt
        self.on_attempt(attempt)

    def _settle_crash(self, missing: Sequence[str], task: Mapping[str, Any]) -> None:
        """The first test without a result crashed its batch; the others run again. A batch
        whose pytest ran none of its tests (no such test, a usage error) crashed nothing:
        its tests stay without a result, and the run reports them missing."""
        still = [n for n in missing if n not in self.outcomes and n in self.order]
        if not still:
            return
        summary = task.get("results") or {}
        if summary.get("exit_code") in NOTHING_RAN and not any(summary.get(k) for k in COUNTED):
            why = f"its batch ran none of its tests ({task.get('error') or 'pytest ran nothing'})"
            self.why_missing.update(dict.fromkeys(still, why))
            return
        if task["status"] == "cancelled":
            self.why_missing.update(dict.fromkeys(still, "its batch was cancelled"))
            return
        culprit, rest = still[0], still[1:]
        reason, details = crash_reason(task)
        log.info("%s crashed its batch (%s); resubmitting %d tests", culprit, task.get("error"), len(rest))
        self._ended(Attempt(culprit, "failed", str(task.get("worker_id") or ""), crash=reason, details=details))
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

    def _rerun(self, failed: Attempt) -> None:
        """Run a failed test again as its own batch, away from the workers that failed it
        when another live worker exists. The task's metadata keeps the history."""
        node_id = failed.node_id
        history = self.attempts[node_id]
        failing = {a.worker_id for a in history if a.worker_id}
        exclude: list[str] = []
        if failing:
            live = set(live_workers(self.client))
            if len(live) > 1:
                exclude = sorted(failing) if live - failing else [failed.worker_id] if failed.worker_id else []
        attempt = len(history) + 1
        log.info("rerunning %s (attempt %d), excluding %s", node_id, attempt, exclude or "no worker")
        estimate = self.estimates.get(node_id, 0.0)
        self.submit([Batch((node_id,), estimate)], metadata={"rerun_of": node_id, "attempt": attempt}, exclude=exclude)

    # -- the tail ---------------------------------------------------------------

    def flaky(self) -> list[tuple[Attempt, list[Attempt]]]:
        """Tests that failed, then passed when run again: (final attempt, failed attempts)."""
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
        """Cancel every unfinished batch, best effort (the run stops, or is abandoned)."""
        for task_id in list(self.open):
            self._cancel(task_id)

    @property
    def done(self) -> bool:
        return not self.open

    def missing(self) -> dict[str, str]:
        """Collected tests without a final result, with why where known."""
        return {n: self.why_missing.get(n, "no result was recorded") for n in self.order if n not in self.outcomes}

    def eta_s(self) -> float:
        remaining = sum(s.estimate_s for s in self.open.values())
        return remaining / max(1, self.n_workers or self.config.workers)


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


def crash_reason(task: Mapping[str, Any]) -> tuple[str, str]:
    """Why the test that was running when its batch's pytest died or timed out failed
    (`crashed: pytest killed by SIGSEGV while this test was running`), and the process's
    output tails."""
    error = str(task.get("error") or "")
    summary = task.get("results") or {}
    # The executor's error starts with "pytest timed out after 5s" / "pytest killed by SIGSEGV"
    # when the process was stopped; a process that exited by itself has only its exit code.
    stopped = (p for p in error.split("; ") if p.startswith("pytest ") and not p.startswith("pytest exit code"))
    reason = next(stopped, "")
    if not reason:
        code = summary.get("exit_code")
        reason = f"pytest exited with code {code}" if code is not None else error or f"task {task.get('status')}"
    tails = "\n".join(t for t in (summary.get("stdout_tail"), summary.get("stderr_tail")) if t)
    return f"crashed: {reason} while this test was running", tails


def _not_collected_reason(summary: Mapping[str, Any]) -> str:
    errors = summary.get("collect_errors") or []
    texts = []
    for report in errors:
        longrepr = report.get("longrepr") if isinstance(report, dict) else None
        if isinstance(longrepr, str) and longrepr.strip():
            texts.append(longrepr.strip().splitlines()[-1])
    detail = f": {texts[0]}" if texts else ""
    return f"the worker's pytest did not collect it{detail}"


def _epoch(stamp: str) -> float:
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
