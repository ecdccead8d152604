"""Pack collected tests into batches by expected duration (pure: data in, batches out).

The plan is built for greedy list scheduling: batches are handed out in order, each to
the first worker that is free, and every batch pays a pytest start-up of `startup_s`.
Each test costs its expected duration plus `per_test_s`, what pytest spends around a test
(collection, reports), which is all that a trivial test costs.

1. Tests are spread over `workers` lanes longest-processing-time first: heaviest test
   first, each to the least-loaded lane. The longest tests open their lanes, so they
   start at time 0; a test longer than a lane's fair share ends up alone in its lane.
   Recorded tests too small to matter to the balance (no more than a start-up, nor than
   `SMALL_SHARE` of a lane) are dealt out last, in collection order, so that neighbours
   stay in one batch.
2. Each lane, heaviest tests first, is cut into batches whose sizes shrink towards the
   end: the last batch holds about `startup_s` of work, the one before it `GROWTH`
   times that, and so on, and the first batch takes the rest. A lane gets only as many
   batches as its work can carry (`OVERHEAD_SHARE` of it spent on start-ups at most;
   a lane of under `SPLIT_FROM_STARTUPS` start-ups of work is one batch), and no tail
   batch larger than the lane's uncertainty: its guessed work, plus `RECORDED_ERROR` of
   its recorded work. So start-up is amortised early, the tail is cut fine where the
   estimates are guesses, and a lane of recorded durations stays whole.
3. Batches are ordered by the time they would start in that plan. With exact estimates,
   list scheduling reproduces the plan; with rough ones, the small tail batches go to
   whichever worker is free and absorb the error.

When every duration is recorded, `plan` also plans whole files (each file a unit, packed
as above) and takes that plan when it ends no later than `WHOLE_FILES_SLACK` after the
best one: a batch that names whole files collects faster on its worker, and lets the
workers confirm a predicted collection (`dtf.run.execution`).

Tests never run get an estimate from their parametrised siblings, else their file, else
the whole suite's recorded tests, else a default.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_ESTIMATE_S = 0.05
# Each batch before the last in a lane is this many times larger than the one after it.
GROWTH = 2.0
# Extra start-ups a lane may pay, as a share of its work: 28 s of work at 0.5 s start-up
# affords one extra batch, an hour affords as many as the geometric cut asks for.
OVERHEAD_SHARE = 0.05
# A lane with less work than this many start-ups runs as one batch: cutting off a tail
# would cost a start-up to save less than one.
SPLIT_FROM_STARTUPS = 4.0
# Tests costing no more than a start-up, nor than this share of a worker's fair share, are
# dealt out in collection order, a run of them to each lane, so that a file's (a module's,
# a class's) tests stay together and set their fixtures up once; only the larger ones are
# packed longest first.
SMALL_SHARE = 0.01
# How far a recorded duration (the median of recent runs) is trusted: a lane's tail is
# cut no finer than this share of its recorded work, plus all of its guessed work.
RECORDED_ERROR = 0.01


# A plan of whole files is taken when it ends no later than this share of the best plan's
# makespan (or WHOLE_FILES_SLACK_MIN_S) after it.
WHOLE_FILES_SLACK = 0.01
WHOLE_FILES_SLACK_MIN_S = 0.1


@dataclass(frozen=True)
class Batch:
    node_ids: tuple[str, ...]
    estimate_s: float


def file_of(node_id: str) -> str:
    """The file part of a node id: `tests/test_a.py::TestX::test_y[1]` -> `tests/test_a.py`."""
    return node_id.split("::", 1)[0]


def function_of(node_id: str) -> str:
    """A node id without its parametrisation: `f.py::test_y[a::b]` -> `f.py::test_y`."""
    file, sep, rest = node_id.partition("::")
    return file + sep + rest.split("[", 1)[0]


def estimate_durations(node_ids: Sequence[str], known: Mapping[str, float]) -> dict[str, float]:
    """Every node id's expected seconds.

    Recorded, else the median of its parametrised siblings, else of its file's recorded
    tests, else of the whole suite's, else `DEFAULT_ESTIMATE_S`.
    """
    by_function: dict[str, list[float]] = {}
    by_file: dict[str, list[float]] = {}
    for node_id, seconds in known.items():
        by_function.setdefault(function_of(node_id), []).append(seconds)
        by_file.setdefault(file_of(node_id), []).append(seconds)
    suite = statistics.median(known.values()) if known else DEFAULT_ESTIMATE_S
    out: dict[str, float] = {}
    for node_id in node_ids:
        if node_id in known:
            out[node_id] = known[node_id]
            continue
        siblings = by_function.get(function_of(node_id)) or by_file.get(file_of(node_id))
        out[node_id] = statistics.median(siblings) if siblings else suite
    return out


def plan_batches(
    durations: Mapping[str, float],
    workers: int,
    *,
    startup_s: float = 0.5,
    per_test_s: float = 0.0,
    recorded: Collection[str] | None = None,
) -> list[Batch]:
    """Batches in the order to hand them out: the longest tests and big batches first,
    small batches of about `startup_s` of work at the tail. Every node id appears in
    exactly one batch; within a batch, tests are heaviest first. A batch's estimate is
    its tests' durations plus `per_test_s` each. `recorded` names the tests whose
    durations were measured; None treats every duration as a guess."""
    if not durations:
        return []
    workers = max(1, workers)
    startup_s = max(0.0, startup_s)
    per_test_s = max(0.0, per_test_s)
    costs = {node_id: max(0.0, s) + per_test_s for node_id, s in durations.items()}
    measured = frozenset(recorded or ())
    lanes = _spread(costs, workers, startup_s, measured)
    planned: list[tuple[float, float, int, Batch]] = []
    for lane_index, lane in enumerate(lanes):
        start = 0.0
        uncertain_s = sum(s * (RECORDED_ERROR if node_id in measured else 1.0) for node_id, s in lane)
        for batch in _cut(lane, startup_s, uncertain_s):
            planned.append((start, -batch.estimate_s, lane_index, batch))
            start += startup_s + batch.estimate_s
    planned.sort(key=lambda p: (p[0], p[1], p[2]))
    return [batch for *_, batch in planned]


def plan(
    durations: Mapping[str, float],
    workers: int,
    *,
    startup_s: float = 0.5,
    per_test_s: float = 0.0,
    recorded: Collection[str] | None = None,
) -> list[Batch]:
    """`plan_batches`, or the plan of whole files (`plan_whole_files`) when that ends
    within `WHOLE_FILES_SLACK` of it. `durations` is in collection order. Only when every
    duration is recorded: a plan built on guesses needs its tail cut fine, files or not."""
    best = plan_batches(durations, workers, startup_s=startup_s, per_test_s=per_test_s, recorded=recorded)
    if recorded is None or not set(durations) <= set(recorded):
        return best
    whole = plan_whole_files(durations, workers, startup_s=startup_s, per_test_s=per_test_s, recorded=recorded)
    makespan = simulate_makespan(best, workers, startup_s)
    slack = max(WHOLE_FILES_SLACK_MIN_S, WHOLE_FILES_SLACK * makespan)
    return whole if simulate_makespan(whole, workers, startup_s) <= makespan + slack else best


def plan_whole_files(
    durations: Mapping[str, float],
    workers: int,
    *,
    startup_s: float = 0.5,
    per_test_s: float = 0.0,
    recorded: Collection[str] | None = None,
) -> list[Batch]:
    """`plan_batches` with each file as one unit: no file is split between batches."""
    files: dict[str, list[str]] = {}
    for node_id in durations:
        files.setdefault(file_of(node_id), []).append(node_id)
    measured = frozenset(recorded or ())
    costs = {f: sum(max(0.0, durations[n]) + per_test_s for n in ids) for f, ids in files.items()}
    known = [f for f, ids in files.items() if all(n in measured for n in ids)] if recorded is not None else None
    units = plan_batches(costs, workers, startup_s=startup_s, recorded=known)
    return [Batch(tuple(n for f in unit.node_ids for n in files[f]), unit.estimate_s) for unit in units]


def _spread(
    durations: Mapping[str, float], workers: int, startup_s: float, measured: Collection[str]
) -> list[list[tuple[str, float]]]:
    """Longest-processing-time first over `workers` lanes for all but the small tests (whose
    recorded cost is no larger than a start-up, nor than `SMALL_SHARE` of a worker's fair
    share), heaviest first in each lane; then the small tests, in their given (collection)
    order, in one run per lane, to the lanes least loaded first, each filled to the common
    mean. A lane's tail is then small tests, which `_cut` can cut fine. Guessed tests are
    never small: a file of unknown slow tests must not land on one worker whole."""
    tests = [(node_id, max(0.0, s)) for node_id, s in durations.items()]
    total = sum(s for _, s in tests)
    small_below = min(startup_s, SMALL_SHARE * total / workers)
    small = {node_id for node_id, s in tests if s <= small_below and node_id in measured}
    big = sorted((t for t in tests if t[0] not in small), key=lambda kv: (-kv[1], kv[0]))
    lanes: list[list[tuple[str, float]]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    heap = [(0.0, i) for i in range(workers)]
    for node_id, seconds in big:
        load, i = heapq.heappop(heap)
        lanes[i].append((node_id, seconds))
        loads[i] = load + seconds
        heapq.heappush(heap, (loads[i], i))
    target = total / workers
    order = sorted(range(workers), key=lambda i: (loads[i], i))
    k = 0
    for node_id, seconds in (t for t in tests if t[0] in small):
        while k < workers - 1 and lanes[order[k]] and loads[order[k]] >= target:
            k += 1
        lane = order[k]
        lanes[lane].append((node_id, seconds))
        loads[lane] += seconds
    return [lane for lane in lanes if lane]


def _cut(lane: list[tuple[str, float]], startup_s: float, uncertain_s: float) -> list[Batch]:
    """One lane (heaviest first) as batches that shrink towards `startup_s` of work, none
    of the tail batches larger than `uncertain_s`."""
    work = sum(s for _, s in lane)
    if startup_s <= 0 or work < SPLIT_FROM_STARTUPS * startup_s or uncertain_s < startup_s:
        return [_batch(lane)]
    affordable = 1 + int(min(OVERHEAD_SHARE * work / startup_s, len(lane)))
    most = max(2, affordable)
    pieces: list[list[tuple[str, float]]] = []
    end = len(lane)
    remaining = work
    size = startup_s
    while len(pieces) < most - 1 and end > 1 and remaining > 2 * size and size <= uncertain_s:
        start, taken = end - 1, lane[end - 1][1]
        while start > 1 and taken + lane[start - 1][1] <= size:
            start -= 1
            taken += lane[start][1]
        pieces.append(lane[start:end])
        end, remaining = start, remaining - taken
        size *= GROWTH
    pieces.append(lane[:end])
    return [_batch(piece) for piece in reversed(pieces)]


def _batch(tests: Sequence[tuple[str, float]]) -> Batch:
    return Batch(tuple(node_id for node_id, _ in tests), sum(s for _, s in tests))


def simulate_makespan(
    batches: Sequence[Batch], workers: int, startup_s: float, *, busy_s: Sequence[float] = ()
) -> float:
    """Seconds until the last batch ends when `batches` are handed out in order, each to
    the first free of `workers` workers, each paying `startup_s` before its tests.

    `busy_s` gives, for workers still running something, the seconds until they are free;
    the rest are free at once. Pure: the estimates are taken as exact.
    """
    workers = max(1, workers)
    free = sorted([max(0.0, b) for b in busy_s[:workers]] + [0.0] * (workers - min(len(busy_s), workers)))
    heapq.heapify(free)
    end = max(free, default=0.0)
    for batch in batches:
        done = heapq.heappop(free) + startup_s + batch.estimate_s
        end = max(end, done)
        heapq.heappush(free, done)
    return end


def eta_seconds(
    remaining_batches: Sequence[Batch], workers: int, startup_s: float, *, busy_s: Sequence[float] = ()
) -> float:
    """Estimated seconds until the run ends: the batches not yet started, handed out to
    `workers` workers of which those in `busy_s` finish their current batch first."""
    if not remaining_batches and not busy_s:
        return 0.0
    return simulate_makespan(remaining_batches, workers, startup_s, busy_s=busy_s)


def makespan_lower_bound(durations: Mapping[str, float], workers: int, startup_s: float) -> float:
    """No plan ends sooner: the fair share of the work, or the longest test, plus one start-up."""
    if not durations:
        return 0.0
    seconds = [max(0.0, s) for s in durations.values()]
    return max(sum(seconds) / max(1, workers), max(seconds)) + startup_s
