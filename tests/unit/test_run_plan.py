"""Packing a collected suite into batches: coverage, order within files, atomic groups,
and makespan under simulated greedy list scheduling with a per-batch start-up."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtf.run.plan import (
    BIG_SHARE,
    DEFAULT_ESTIMATE_S,
    Batch,
    dist_groups,
    estimate_durations,
    eta_seconds,
    file_of,
    function_of,
    makespan_lower_bound,
    plan_batches,
    scope_of,
    simulate_makespan,
)

STARTUP = 0.5

durations_st = st.dictionaries(
    st.text("abcdef/_", min_size=1, max_size=6).map(lambda s: f"tests/{s}.py::test"),
    st.floats(min_value=0, max_value=30, allow_nan=False),
    max_size=120,
).map(lambda d: {f"{k}_{i}": v for i, (k, v) in enumerate(d.items())})


def suite_a() -> dict[str, float]:
    """2,000 trivial tests in 20 files."""
    return {f"tests/test_{i % 20:02}.py::test_{i}": 0.001 for i in range(2000)}


def suite_b(seed: int = 0) -> dict[str, float]:
    """200 tests, 28 s in all: eight of 1.5-3 s in the last two files, the rest ~50 ms."""
    rng = random.Random(seed)
    slow = {f"tests/test_z{j // 4}.py::test_slow_{j}": rng.uniform(1.5, 3.0) for j in range(8)}
    fast = {f"tests/test_{i % 10:02}.py::test_{i}": rng.expovariate(1 / 0.05) for i in range(192)}
    scale = (28.0 - sum(slow.values())) / sum(fast.values())
    return {**{k: v * scale for k, v in fast.items()}, **slow}


def work_bound(durations: dict[str, float], workers: int) -> float:
    return max(sum(durations.values()) / workers, max(durations.values()))


# --- coverage and bookkeeping ---------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(durations_st, st.integers(1, 16), st.floats(0, 2))
def test_every_node_id_is_in_exactly_one_batch(durations: dict[str, float], workers: int, startup: float) -> None:
    batches = plan_batches(durations, workers, startup_s=startup)
    placed = Counter(node_id for b in batches for node_id in b.node_ids)
    assert placed == Counter(durations.keys())
    assert all(b.node_ids for b in batches)
    for b in batches:
        assert b.estimate_s == pytest.approx(sum(durations[n] for n in b.node_ids))


@settings(max_examples=200, deadline=None)
@given(durations_st, st.integers(1, 16), st.floats(0, 2))
def test_the_longest_test_starts_in_the_first_round(durations: dict[str, float], workers: int, startup: float) -> None:
    if not durations:
        return
    share = sum(durations.values()) / workers
    top = max(durations.values())
    batches = plan_batches(durations, workers, startup_s=startup)
    if top > BIG_SHARE * share:
        # With ties, a longest test (the plan takes the first in collection order).
        first = min(i for i, b in enumerate(batches) if any(durations[n] == top for n in b.node_ids))
        assert first < workers


@settings(max_examples=200, deadline=None)
@given(durations_st, st.integers(1, 16), st.floats(0, 2))
def test_a_batch_holds_each_files_tests_as_one_contiguous_run(
    durations: dict[str, float], workers: int, startup: float
) -> None:
    """Among the tests short enough to be dealt out, in collection order: a batch never
    holds two tests of a file without the ones between them."""
    share = sum(durations.values()) / workers
    by_file: dict[str, list[str]] = {}
    for n, seconds in durations.items():
        if seconds <= BIG_SHARE * share:
            by_file.setdefault(file_of(n), []).append(n)
    for batch in plan_batches(durations, workers, startup_s=startup):
        held = set(batch.node_ids)
        for tests in by_file.values():
            places = [i for i, n in enumerate(tests) if n in held]
            assert places == list(range(places[0], places[0] + len(places))) if places else True


@settings(max_examples=200, deadline=None)
@given(durations_st, st.integers(2, 16), st.floats(0, 2))
def test_a_test_longer_than_a_fair_share_runs_alone_first(
    durations: dict[str, float], workers: int, startup: float
) -> None:
    share = sum(durations.values()) / workers
    batches = plan_batches(durations, workers, startup_s=startup)
    for node_id, seconds in durations.items():
        if seconds > share:
            (batch,) = [b for b in batches if node_id in b.node_ids]
            assert batch.node_ids == (node_id,)
            assert batches.index(batch) < workers


@settings(max_examples=200, deadline=None)
@given(durations_st, st.integers(1, 16), st.floats(0, 2))
def test_simulated_makespan_within_graham_bound(durations: dict[str, float], workers: int, startup: float) -> None:
    """List scheduling never leaves a worker idle while a batch waits, so the last batch
    starts no later than the average of all the others' cost."""
    batches = plan_batches(durations, workers, startup_s=startup)
    makespan = simulate_makespan(batches, workers, startup)
    costs = [startup + b.estimate_s for b in batches]
    assert makespan <= sum(costs) / workers + max(costs, default=0) * (1 - 1 / workers) + 1e-6
    if durations:
        assert makespan >= makespan_lower_bound(durations, workers, startup) - 1e-6


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.001, STARTUP / 2), min_size=1, max_size=400),
    st.integers(1, 16),
)
def test_the_tail_is_cut_to_about_one_startup(seconds: list[float], workers: int) -> None:
    durations = {f"tests/test_{i % 7}.py::test_{i}": s for i, s in enumerate(seconds)}
    batches = plan_batches(durations, workers, startup_s=STARTUP)
    if sum(seconds) / workers < 4 * STARTUP:
        assert len(batches) <= workers  # too little work to pay for a second start-up
        return
    for b in batches[-workers:]:
        assert b.estimate_s <= STARTUP + 1e-9 or len(b.node_ids) == 1
    assert batches[0].estimate_s >= batches[-1].estimate_s


def test_empty_suite_has_no_batches() -> None:
    assert plan_batches({}, 4) == []
    assert simulate_makespan([], 4, STARTUP) == 0.0
    assert makespan_lower_bound({}, 4, STARTUP) == 0.0


def test_plan_is_deterministic() -> None:
    durations = suite_b(3)
    assert plan_batches(durations, 4) == plan_batches(dict(durations.items()), 4)


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_small_tests_stay_with_their_neighbours(workers: int) -> None:
    """Trivial tests go to each worker as one run in collection order, so a file's tests
    share a batch (and its module fixtures) wherever the balance allows."""
    collected = sorted(suite_a(), key=lambda n: (file_of(n), int(n.rsplit("_", 1)[1])))
    durations = {n: 0.0002 for n in collected}
    position = {n: i for i, n in enumerate(collected)}

    batches = plan_batches(durations, workers, startup_s=0.15, per_test_s=0.001, recorded=collected)

    assert len(batches) == workers
    for b in batches:
        places = sorted(position[n] for n in b.node_ids)
        assert places == list(range(places[0], places[0] + len(places)))


# --- makespan on realistic suites ------------------------------------------------------


def test_suite_b_on_two_workers_is_within_two_percent_of_the_bound() -> None:
    durations = suite_b()
    assert work_bound(durations, 2) == pytest.approx(14.0)
    batches = plan_batches(durations, 2, startup_s=STARTUP)
    assert simulate_makespan(batches, 2, STARTUP) <= 1.02 * 14.0 + 2 * STARTUP


@pytest.mark.parametrize("workers", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("seed", range(5))
def test_suite_b_shapes_stay_near_the_bound(seed: int, workers: int) -> None:
    """Within 3%: the short tests are dealt out in collection order (files stay whole
    and in order), so a lane ends up to half a short test from the mean."""
    durations = suite_b(seed)
    batches = plan_batches(durations, workers, startup_s=STARTUP)
    makespan = simulate_makespan(batches, workers, STARTUP)
    assert makespan <= 1.03 * work_bound(durations, workers) + 2 * STARTUP


@pytest.mark.parametrize("workers", [1, 2, 4, 8, 16])
def test_suite_a_of_trivial_tests_needs_few_batches(workers: int) -> None:
    durations = suite_a()
    batches = plan_batches(durations, workers, startup_s=STARTUP)
    assert workers <= len(batches) <= 2 * workers
    makespan = simulate_makespan(batches, workers, STARTUP)
    assert makespan <= makespan_lower_bound(durations, workers, STARTUP) + STARTUP


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_files_stay_whole_when_cutting_one_saves_little(workers: int) -> None:
    durations = {f"tests/test_{f:02}.py::test_{i}": 0.002 for f in range(20) for i in range(100)}
    batches = plan_batches(durations, workers, startup_s=STARTUP, recorded=durations.keys())

    holders = {
        f: {i for i, b in enumerate(batches) if any(file_of(n) == f for n in b.node_ids)}
        for f in map(file_of, durations)
    }
    assert len([f for f, held in holders.items() if len(held) > 1]) <= workers - 1  # where a lane fills up
    bound = makespan_lower_bound(durations, workers, STARTUP)
    assert simulate_makespan(batches, workers, STARTUP) <= bound * 1.03


def test_a_file_whose_module_fixture_is_expensive_is_not_cut_to_save_a_little() -> None:
    """The first test of tests/test_db.py pays 2 s for a module fixture; cutting the file
    would pay that again, to save less."""
    durations = {"tests/test_db.py::test_0": 2.0} | {f"tests/test_db.py::test_{i}": 0.05 for i in range(1, 60)}
    durations |= {f"tests/test_other.py::test_{i}": 0.05 for i in range(40)}

    batches = plan_batches(durations, 2, startup_s=0.1, recorded=durations.keys())

    [holder] = [b for b in batches if "tests/test_db.py::test_0" in b.node_ids]
    assert all(n in holder.node_ids for n in durations if file_of(n) == "tests/test_db.py")


def test_an_xdist_group_runs_whole_in_one_batch_that_does_not_yield() -> None:
    durations = {f"tests/test_{f}.py::test_{i}": 0.05 for f in "abcd" for i in range(20)}
    group = [f"tests/test_{f}.py::test_{i}" for f in "ad" for i in range(0, 20, 5)]

    batches = plan_batches(durations, 2, startup_s=0.05, groups=[group])

    [holder] = [b for b in batches if group[0] in b.node_ids]
    assert set(group) <= set(holder.node_ids) and not holder.splittable
    assert all(b.splittable for b in batches if b is not holder)


def test_dist_modes_name_their_atomic_units() -> None:
    ids = ["t/a.py::test_x", "t/a.py::TestK::test_y[1]", "t/a.py::TestK::test_y[2]", "t/b.py::test_z"]
    assert dist_groups(ids, "loadfile") == [ids[:3], ids[3:]]
    assert dist_groups(ids, "loadscope") == [[ids[0]], ids[1:3], [ids[3]]]
    assert dist_groups(ids, "loadgroup", {ids[0]: "db", ids[3]: "db"}) == [[ids[0], ids[3]]]
    assert dist_groups(ids, "load") == [] == dist_groups(ids, "worksteal")
    assert scope_of("t/a.py::TestK::test_y[a::b]") == "t/a.py::TestK"


def test_a_long_suite_gets_more_batches_but_little_start_up() -> None:
    rng = random.Random(1)
    durations = {f"tests/test_{i % 50}.py::test_{i}": rng.expovariate(1 / 1.5) for i in range(5000)}
    batches = plan_batches(durations, 8, startup_s=STARTUP)
    assert 2 * 8 < len(batches) < 20 * 8
    makespan = simulate_makespan(batches, 8, STARTUP)
    assert makespan <= 1.01 * work_bound(durations, 8) + 2 * STARTUP
    assert all(b.estimate_s <= STARTUP or len(b.node_ids) == 1 for b in batches[-8:])  # as fine as tests allow


def test_one_long_test_takes_a_worker_while_the_others_share_the_rest() -> None:
    durations = {"tests/test_big.py::test_long": 30.0} | {f"tests/test_s.py::test_{i}": 0.1 for i in range(100)}
    batches = plan_batches(durations, 2, startup_s=STARTUP)
    assert batches[0] == Batch(("tests/test_big.py::test_long",), 30.0)
    assert simulate_makespan(batches, 2, STARTUP) == pytest.approx(30.5)


# --- simulation and ETA ----------------------------------------------------------------


def test_simulate_hands_each_batch_to_the_first_free_worker() -> None:
    batches = [Batch(("a",), 4.0), Batch(("b",), 1.0), Batch(("c",), 1.0), Batch(("d",), 1.0)]
    # w0: a (0..5); w1: b (0..2), c (2..4), d (4..6)
    assert simulate_makespan(batches, 2, 1.0) == pytest.approx(6.0)
    assert simulate_makespan(batches, 1, 1.0) == pytest.approx(11.0)
    assert simulate_makespan(batches, 8, 0.0) == pytest.approx(4.0)


def test_simulate_starts_busy_workers_late() -> None:
    batches = [Batch(("a",), 1.0)]
    assert simulate_makespan(batches, 2, 0.5, busy_s=[3.0, 2.0]) == pytest.approx(3.5)
    assert simulate_makespan(batches, 2, 0.5, busy_s=[3.0]) == pytest.approx(3.0)


def test_eta_counts_running_and_waiting_work() -> None:
    assert eta_seconds([], 4, STARTUP) == 0.0
    assert eta_seconds([], 4, STARTUP, busy_s=[2.0]) == pytest.approx(2.0)
    remaining = plan_batches(suite_b(), 2, startup_s=STARTUP)
    assert eta_seconds(remaining, 2, STARTUP) == simulate_makespan(remaining, 2, STARTUP)
    assert eta_seconds(remaining, 2, STARTUP, busy_s=[1.0, 1.0]) > eta_seconds(remaining, 2, STARTUP)


# --- estimates for tests never run -----------------------------------------------------


def test_node_id_parts() -> None:
    node_id = "tests/test_a.py::TestX::test_y[a::b c]"
    assert file_of(node_id) == "tests/test_a.py"
    assert function_of(node_id) == "tests/test_a.py::TestX::test_y"


def test_recorded_durations_are_used_as_they_are() -> None:
    known = {"t/a.py::x": 2.0, "t/a.py::y": 9.0}
    assert estimate_durations(["t/a.py::x"], known) == {"t/a.py::x": 2.0}


def test_a_new_parametrisation_takes_its_siblings_median() -> None:
    known = {"t/a.py::f[1]": 1.0, "t/a.py::f[2]": 3.0, "t/a.py::g": 100.0, "t/a.py::h": 100.0}
    assert estimate_durations(["t/a.py::f[3]"], known) == {"t/a.py::f[3]": 2.0}


def test_a_new_test_takes_its_files_median() -> None:
    known = {"t/a.py::x": 1.0, "t/a.py::y": 2.0, "t/a.py::z": 6.0, "t/b.py::x": 50.0}
    assert estimate_durations(["t/a.py::new"], known) == {"t/a.py::new": 2.0}


def test_a_new_file_takes_the_suites_median() -> None:
    known = {"t/a.py::x": 1.0, "t/b.py::y": 3.0, "t/c.py::z": 8.0}
    assert estimate_durations(["t/new.py::x"], known) == {"t/new.py::x": 3.0}


def test_with_nothing_recorded_every_test_gets_the_default() -> None:
    assert estimate_durations(["t/a.py::x", "t/b.py::y"], {}) == {
        "t/a.py::x": DEFAULT_ESTIMATE_S,
        "t/b.py::y": DEFAULT_ESTIMATE_S,
    }
    assert math.isclose(DEFAULT_ESTIMATE_S, 0.05)


# --- what pytest spends around each test, and how far estimates are trusted ------------


def test_per_test_overhead_spreads_trivial_tests_by_their_count() -> None:
    """Suite A once recorded: three tests that happened to take 50 ms, the rest ~0.1 ms.
    Without the overhead one worker would get the three and the other the 1,997."""
    durations = {f"tests/test_{i % 20:02}.py::test_{i}": 0.0001 for i in range(2000)}
    durations |= {"tests/test_00.py::test_0": 0.05, "tests/test_01.py::test_1": 0.05, "tests/test_02.py::test_2": 0.05}

    batches = plan_batches(durations, 2, startup_s=0.15, per_test_s=0.001, recorded=durations.keys())

    sizes = sorted(len(b.node_ids) for b in batches)
    assert len(batches) == 2 and sizes[0] > 0.4 * 2000
    assert abs(batches[0].estimate_s - batches[1].estimate_s) <= 0.05
    assert sum(b.estimate_s for b in batches) == pytest.approx(sum(durations.values()) + 2000 * 0.001)


def test_recorded_lanes_stay_whole_and_guessed_lanes_are_cut_fine() -> None:
    durations = suite_b()

    recorded = plan_batches(durations, 2, startup_s=0.15, recorded=durations.keys())
    guessed = plan_batches(durations, 2, startup_s=0.15)

    assert len(recorded) <= 4
    assert len(guessed) > len(recorded)
    assert simulate_makespan(recorded, 2, 0.15) <= 14.0 * 1.02 + 0.3
