"""Pack collected tests into batches by expected duration (pure: data in, batches out).

The plan is built for greedy list scheduling: batches are handed out in order, each to
the first worker that is free, and every batch pays a pytest start-up of `startup_s`.
Each test costs its expected duration plus `per_test_s`, what pytest spends around a test
(collection, reports), which is all that a trivial test costs.

1. **Units.** Tests are taken in collection order, a file's run of consecutive tests as
   one unit, so that a batch runs a file's tests in their order and sets its module
   fixtures up once. Atomic units are never cut: an xdist group (all its tests, wherever
   they are), under `--dist loadfile` or `loadscope` each file or class, and each test
   longer than `BIG_SHARE` of a worker's fair share.
2. **Lanes.** Atomic units are spread over `workers` lanes longest-processing-time
   first: heaviest first, each to the least-loaded lane. The runs are then dealt out in
   collection order, one stretch per lane, to the least-loaded lanes first, each filled
   to the common mean. A run is cut where its lane is full (into contiguous parts, in
   order), unless keeping it whole leaves the lane within a little of the mean, or
   within what its module fixture costs (a first test that pays well beyond its file's
   others, and would pay again in the part cut off): a cut must save more than it costs.
   So a file's tests stay on one worker unless the balance needs them apart, and
   neighbouring files (a package's) stay together too.
3. **Batches.** Each lane, heaviest units first, is cut into batches whose sizes shrink
   towards the end: the last batch holds about `startup_s` of work, the one before it
   `GROWTH` times that, and so on, and the first batch takes the rest. A lane gets only as
   many batches as its work can carry (`OVERHEAD_SHARE` of it spent on start-ups at most;
   a lane of under `SPLIT_FROM_STARTUPS` start-ups of work is one batch), and no tail
   batch larger than the lane's uncertainty: its guessed work, plus `RECORDED_ERROR` of
   its recorded work. Cuts fall between atomic units, or between the tests of others, so
   a slice stays contiguous. So start-up is amortised early, the tail is cut fine where
   the estimates are guesses, and a lane of recorded durations stays whole.
4. Batches are ordered by the time they would start in that plan. With exact estimates,
   list scheduling reproduces the plan; with rough ones, the small tail batches go to
   whichever worker is free and absorb the error.

A batch runs its tests in collection order whatever the order here (`dtf.run.execution`).
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
# A test longer than this share of a worker's fair share is placed on its own, longest
# first; the others are dealt out in collection order.
BIG_SHARE = 1 / 16
# Dealt out, a file's run of tests is cut between two lanes only when keeping it whole
# would leave a lane further from the mean than this share of it.
WHOLE_UNIT_SLACK = 0.02
# A file whose first test costs more than this many times any other of its tests pays
# that much for a module fixture, and is cut only to save more than the set-up repeated.
FIXTURE_MIN_RATIO = 3.0
# How far a recorded duration (the median of recent runs) is trusted: a lane's tail is
# cut no finer than this share of its recorded work, plus all of its guessed work.
RECORDED_ERROR = 0.01


@dataclass(frozen=True)
class Batch:
    node_ids: tuple[str, ...]
    estimate_s: float
    # False when the batch holds an atomic unit (an xdist group, a file under loadfile):
    # it must not be split, so it does not yield its remaining tests.
    splittable: bool = True


@dataclass(frozen=True)
class _Unit:
    """Tests that go to one lane, in collection order."""

    tests: tuple[tuple[str, float], ...]
    atomic: bool = False  # placed whole, longest first: a group, or a long test
    whole: bool = False  # never split across batches: a group (its batch does not yield)

    @property
    def cost(self) -> float:
        return sum(s for _, s in self.tests)


def file_of(node_id: str) -> str:
    """The file part of a node id: `tests/test_a.py::TestX::test_y[1]` -> `tests/test_a.py`."""
    return node_id.split("::", 1)[0]


def function_of(node_id: str) -> str:
    """A node id without its parametrisation: `f.py::test_y[a::b]` -> `f.py::test_y`."""
    file, sep, rest = node_id.partition("::")
    return file + sep + rest.split("[", 1)[0]


def scope_of(node_id: str) -> str:
    """pytest-xdist's `loadscope` unit: the class of a method, else the module."""
    parts = node_id.split("[", 1)[0].split("::")
    return "::".join(parts[:-1]) if len(parts) > 2 else parts[0]


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
    groups: Sequence[Sequence[str]] = (),
) -> list[Batch]:
    """Batches in the order to hand them out (see the module's docstring). `durations` is
    in collection order; every node id appears in exactly one batch. A batch's estimate is
    its tests' durations plus `per_test_s` each. `recorded` names the tests whose
    durations were measured (None treats every duration as a guess); `groups` are atomic
    units (xdist groups, or each file or scope under loadfile and loadscope)."""
    if not durations:
        return []
    workers = max(1, workers)
    startup_s = max(0.0, startup_s)
    per_test_s = max(0.0, per_test_s)
    costs = {node_id: max(0.0, s) + per_test_s for node_id, s in durations.items()}
    measured = frozenset(recorded or ())
    units = _units(costs, workers, groups)
    planned: list[tuple[float, float, int, Batch]] = []
    order = {node_id: i for i, node_id in enumerate(costs)}
    for lane_index, lane in enumerate(_spread(units, workers, order)):
        start = 0.0
        uncertain_s = sum(s * (RECORDED_ERROR if n in measured else 1.0) for u in lane for n, s in u.tests)
        for batch in _cut(lane, startup_s, uncertain_s):
            planned.append((start, -batch.estimate_s, lane_index, batch))
            start += startup_s + batch.estimate_s
    planned.sort(key=lambda p: (p[0], p[1], p[2]))
    return [batch for *_, batch in planned]


def dist_groups(node_ids: Sequence[str], mode: str, marks: Mapping[str, str] | None = None) -> list[list[str]]:
    """The atomic units of pytest-xdist's `--dist` mode, in collection order: each file
    (`loadfile`), each class or module (`loadscope`), each `xdist_group` (`loadgroup`,
    from `marks`: node id -> group name); none for `load`, `worksteal` or `no`."""
    key = {"loadfile": file_of, "loadscope": scope_of}.get(mode)
    found: dict[str, list[str]] = {}
    for node_id in node_ids:
        if key is not None:
            found.setdefault(key(node_id), []).append(node_id)
        elif mode == "loadgroup" and marks and node_id in marks:
            found.setdefault(marks[node_id], []).append(node_id)
    return list(found.values())


def _units(costs: Mapping[str, float], workers: int, groups: Sequence[Sequence[str]]) -> list[_Unit]:
    """Atomic groups; tests too long to share a lane's balance (more than `BIG_SHARE` of a
    worker's fair share), each alone; and the runs of consecutive tests of a file."""
    share = sum(costs.values()) / workers
    grouped = {n for group in groups for n in group}
    units = [_Unit(tuple((n, costs[n]) for n in group if n in costs), atomic=True, whole=True) for group in groups]
    units = [u for u in units if u.tests]
    runs: list[list[tuple[str, float]]] = []
    for node_id, seconds in costs.items():
        if node_id in grouped:
            continue
        if runs and runs[-1] and file_of(runs[-1][-1][0]) == file_of(node_id):
            runs[-1].append((node_id, seconds))
        else:
            runs.append([(node_id, seconds)])
    for run in runs:
        # A long test goes on its own, unless it is the first of its file and pays for the
        # file's module fixture: then it stays with the tests that share the fixture.
        head = 1 if _set_up_again(run) > 0 else 0
        part: list[tuple[str, float]] = run[:head]
        for test in run[head:]:
            if test[1] > BIG_SHARE * share:
                if part:
                    units.append(_Unit(tuple(part)))
                    part = []
                units.append(_Unit((test,), atomic=True))
            else:
                part.append(test)
        if part:
            units.append(_Unit(tuple(part)))
    return units


def _spread(units: list[_Unit], workers: int, order: Mapping[str, int]) -> list[list[_Unit]]:
    """Longest-processing-time first for the atomic units (groups, long tests), heaviest
    first, each to the least-loaded lane; then the runs of a file's tests, in collection
    order, to the lanes least loaded first, each lane filled to the common mean: a run
    is cut where its lane is full, unless keeping it whole leaves the lane within
    `slack` of the mean, or within what a module fixture would cost again in the part cut
    off. So a file's tests stay on one worker, in order, unless the
    balance needs them apart, and neighbouring files (a package's) stay together too."""
    target = sum(u.cost for u in units) / workers
    slack = WHOLE_UNIT_SLACK * target
    lanes: list[list[_Unit]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    heap = [(0.0, i) for i in range(workers)]
    big = sorted((u for u in units if u.atomic), key=lambda u: (-u.cost, order[u.tests[0][0]]))
    for unit in big:
        load, i = heapq.heappop(heap)
        lanes[i].append(unit)
        loads[i] = load + unit.cost
        heapq.heappush(heap, (loads[i], i))
    by_load = sorted(range(workers), key=lambda i: (loads[i], i))
    runs = sorted((u for u in units if not u.atomic), key=lambda u: order[u.tests[0][0]])
    left = sum(u.cost for u in runs)  # not dealt yet
    k = 0
    # Each lane is filled to the mean of what is left for it and the lanes after it, so
    # that how far one lane ends from the mean is made up by the next, not by the last.
    mean = (left + sum(loads)) / workers
    for unit in runs:
        tests = unit.tests
        allowed = max(slack, _set_up_again(tests))
        while tests:
            lane = by_load[k]
            room = mean - loads[lane]
            cost = sum(s for _, s in tests)
            last = k == workers - 1
            if not last and room <= 0:
                k += 1
                mean = (left + sum(loads[i] for i in by_load[k:])) / (workers - k)
                continue
            if last or cost <= room or (len(tests) > 1 and cost - room <= allowed):
                taken = tests
            elif len(tests) == 1:
                if room < cost / 2:  # nearer the mean without it: it starts the next lane
                    k += 1
                    mean = (left + sum(loads[i] for i in by_load[k:])) / (workers - k)
                    continue
                taken = tests
            else:  # cut where this lane is full: the rest starts the next lane
                filled, cut = 0.0, 0
                while cut < len(tests) - 1 and filled + tests[cut][1] / 2 <= room:
                    filled += tests[cut][1]
                    cut += 1
                if cut == 0:
                    k += 1
                    mean = (left + sum(loads[i] for i in by_load[k:])) / (workers - k)
                    continue
                taken = tests[:cut]
            lanes[lane].append(_Unit(taken))
            placed = sum(s for _, s in taken)
            loads[lane] += placed
            left -= placed
            tests = tests[len(taken) :]
    return [lane for lane in lanes if lane]


def _set_up_again(run: Sequence[tuple[str, float]]) -> float:
    """What a file's first test pays beyond the others, where it clearly stands out (it
    costs more than FIXTURE_MIN_RATIO times any other): a module fixture, which every
    part of a cut file pays again."""
    if len(run) < 2:
        return 0.0
    rest = [s for _, s in run[1:]]
    first = run[0][1]
    return first - statistics.median(rest) if first > FIXTURE_MIN_RATIO * max(rest) else 0.0


def _cut(lane: list[_Unit], startup_s: float, uncertain_s: float) -> list[Batch]:
    """One lane (heaviest units first) as batches that shrink towards `startup_s` of work,
    none of the tail batches larger than `uncertain_s`. Cuts fall between the tests of a
    unit that may be cut, else between units."""
    pieces = [piece for u in lane for piece in ([u] if u.whole else [_Unit((t,)) for t in u.tests])]
    work = sum(p.cost for p in pieces)
    if startup_s <= 0 or work < SPLIT_FROM_STARTUPS * startup_s or uncertain_s < startup_s:
        return [_batch(pieces)]
    affordable = 1 + int(min(OVERHEAD_SHARE * work / startup_s, len(pieces)))
    most = max(2, affordable)
    cuts: list[list[_Unit]] = []
    end = len(pieces)
    remaining = work
    size = startup_s
    while len(cuts) < most - 1 and end > 1 and remaining > 2 * size and size <= uncertain_s:
        start, taken = end - 1, pieces[end - 1].cost
        while start > 1 and taken + pieces[start - 1].cost <= size:
            start -= 1
            taken += pieces[start].cost
        cuts.append(pieces[start:end])
        end, remaining = start, remaining - taken
        size *= GROWTH
    cuts.append(pieces[:end])
    return [_batch(piece) for piece in reversed(cuts)]


def _batch(pieces: Sequence[_Unit]) -> Batch:
    tests = [t for p in pieces for t in p.tests]
    return Batch(tuple(node_id for node_id, _ in tests), sum(s for _, s in tests), not any(p.whole for p in pieces))


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
