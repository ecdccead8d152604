"""The planner: which waiting worker gets which ready task, under each load-balancing strategy."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from dtf_coordinator.scheduling import Placement, Planner
from dtf_coordinator.scheduling.planner import STRATEGIES
from tests.unit.commands import Driver, assign, completed, heartbeat, offline, register, spec, started, submit


def cluster(slots: dict[str, int], tasks: int, **task_kw: object) -> Driver:
    d = Driver()
    for worker_id, n in slots.items():
        d.apply(register(worker_id, slots=n))
    if tasks:
        d.apply(submit(*[spec(f"t{i:02}", **task_kw) for i in range(tasks)]))  # type: ignore[arg-type]
    return d


def spread(plan: list[Placement]) -> dict[str, int]:
    return dict(sorted(Counter(p.worker_id for p in plan).items()))


def run_one(d: Driver, worker_id: str, start_ms: int, seconds: float, lease: str) -> None:
    """A task that ran `seconds` on the worker, to give it a mean task time."""
    task_id = f"warmup-{lease}"
    d.apply(submit(spec(task_id, priority=100), at=start_ms))
    assert d.apply(assign((task_id, worker_id, lease), at=start_ms)).granted
    d.apply(started(task_id, lease, at=start_ms))
    d.apply(completed(task_id, lease, at=start_ms + int(seconds * 1000)))


# ---------------------------------------------------------------------- strategies


def test_fair_share_spreads_in_proportion_to_slots() -> None:
    d = cluster({"w1": 2, "w2": 4, "w3": 6}, tasks=6)
    plan = Planner("fair_share").plan(d.sm, {"w1": 2, "w2": 4, "w3": 6}, now_ms=0)
    assert spread(plan) == {"w1": 1, "w2": 2, "w3": 3}
    # Tasks go out in ready order.
    assert [p.task_id for p in plan] == [f"t{i:02}" for i in range(6)]


def test_fair_share_counts_leases_already_held() -> None:
    d = cluster({"w1": 4, "w2": 4, "w3": 4}, tasks=8)
    d.apply(assign(("t00", "w1", "L0"), ("t01", "w1", "L1"), ("t02", "w1", "L2"), ("t03", "w2", "L3")))
    plan = Planner("fair_share").plan(d.sm, {"w1": 4, "w2": 4, "w3": 4}, now_ms=0)
    # Held 3, 1, 0 of 4 each: the four new tasks even it out to 3, 3, 2.
    assert spread(plan) == {"w2": 2, "w3": 2}


def test_round_robin_rotates_over_workers_across_passes() -> None:
    d = cluster({"w1": 1, "w2": 2, "w3": 3}, tasks=6)
    planner = Planner("round_robin")
    plan = planner.plan(d.sm, {"w1": 1, "w2": 2, "w3": 3}, now_ms=0)
    assert [p.worker_id for p in plan] == ["w1", "w2", "w3", "w2", "w3", "w3"]

    # Two tasks a pass: the next pass starts where the last one stopped.
    d = cluster({"w1": 3, "w2": 3, "w3": 3}, tasks=0)
    planner = Planner("round_robin")
    passes = []
    for i in range(3):
        d.apply(submit(spec(f"p{i}a"), spec(f"p{i}b")))
        plan = planner.plan(d.sm, {"w1": 1, "w2": 1, "w3": 1}, now_ms=0)
        for j, p in enumerate(plan):
            d.apply(assign((p.task_id, p.worker_id, f"L{i}{j}")))
            d.apply(completed(p.task_id, f"L{i}{j}"))
        passes.append([p.worker_id for p in plan])
    assert passes == [["w1", "w2"], ["w3", "w1"], ["w2", "w3"]]


def test_least_loaded_prefers_free_capacity_then_low_cpu() -> None:
    d = cluster({"w1": 2, "w2": 2, "w3": 2}, tasks=6)
    d.apply(heartbeat("w1", health_json=json.dumps({"cpu_percent": 90.0})))
    d.apply(heartbeat("w2", health_json=json.dumps({"cpu_percent": 10.0})))
    d.apply(heartbeat("w3", health_json=json.dumps({"cpu_percent": 50.0})))
    planner = Planner("least_loaded")
    assert [p.worker_id for p in planner.plan(d.sm, {"w1": 2, "w2": 2, "w3": 2}, now_ms=0)] == [
        "w2",
        "w3",
        "w1",
        "w2",
        "w3",
        "w1",
    ]
    d.apply(assign(("t00", "w2", "L0")))
    plan = planner.plan(d.sm, {"w1": 1, "w2": 1, "w3": 1}, now_ms=0)
    assert [p.worker_id for p in plan] == ["w3", "w1", "w2"]


def test_performance_weighted_gives_faster_workers_more_work() -> None:
    d = cluster({"w1": 8, "w2": 8, "w3": 8}, tasks=7)
    run_one(d, "w1", 0, 1.0, "a")
    run_one(d, "w2", 0, 2.0, "b")
    run_one(d, "w3", 0, 4.0, "c")
    plan = Planner("performance_weighted").plan(d.sm, {"w1": 8, "w2": 8, "w3": 8}, now_ms=10_000)
    # Work in inverse proportion to mean task time: 1 s, 2 s, 4 s -> 4 : 2 : 1.
    assert spread(plan) == {"w1": 4, "w2": 2, "w3": 1}


def test_performance_weighted_treats_an_unmeasured_worker_as_average() -> None:
    plans = []
    for measure_new in (False, True):
        d = cluster({"fast": 8, "slow": 8, "new": 8}, tasks=6)
        run_one(d, "fast", 0, 1.0, "a")
        run_one(d, "slow", 0, 3.0, "b")
        if measure_new:
            run_one(d, "new", 0, 2.0, "c")
        plans.append(Planner("performance_weighted").plan(d.sm, {"fast": 8, "slow": 8, "new": 8}, now_ms=10_000))
    # Unmeasured, it is planned exactly like a worker with the mean of the others (2 s).
    assert spread(plans[0]) == spread(plans[1]) == {"fast": 4, "new": 1, "slow": 1}


def test_performance_weighted_counts_a_zero_mean_as_fastest() -> None:
    # Tasks finished within the millisecond give a mean of 0 s: the fastest, not "unknown".
    d = cluster({"a-slow": 8, "z-instant": 2}, tasks=4)
    run_one(d, "a-slow", 0, 1.0, "a")
    run_one(d, "z-instant", 0, 0.0, "b")
    plan = Planner("performance_weighted").plan(d.sm, {"a-slow": 8, "z-instant": 2}, now_ms=10_000)
    assert [p.worker_id for p in plan] == ["z-instant", "z-instant", "a-slow", "a-slow"]


# ---------------------------------------------------------------------- limits


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_plan_never_exceeds_free_or_asked_slots(strategy: str) -> None:
    d = cluster({"w1": 2, "w2": 3, "w3": 1}, tasks=20)
    d.apply(assign(("t00", "w1", "L0"), ("t01", "w3", "L1")))
    plan = Planner(strategy).plan(d.sm, {"w1": 5, "w2": 2, "w3": 4}, now_ms=0)  # type: ignore[arg-type]
    assert spread(plan) == {"w1": 1, "w2": 2}
    assert len({p.task_id for p in plan}) == len(plan)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_worker_cap_limits_how_many_workers_hold_work(strategy: str) -> None:
    d = cluster({"w1": 4, "w2": 4, "w3": 4}, tasks=12)
    d.apply(assign(("t00", "w3", "L0")))
    plan = Planner(strategy, worker_cap=2).plan(d.sm, {"w1": 4, "w2": 4, "w3": 4}, now_ms=0)  # type: ignore[arg-type]
    # w3 already holds work, so one more worker may join: the first by name.
    assert set(spread(plan)) == {"w1", "w3"}
    assert spread(plan) == {"w1": 4, "w3": 3}


def test_worker_cap_reached_admits_no_new_worker() -> None:
    d = cluster({"w1": 4, "w2": 4}, tasks=4)
    d.apply(assign(("t00", "w1", "L0")))
    assert Planner(worker_cap=1).plan(d.sm, {"w2": 4}, now_ms=0) == []
    assert spread(Planner(worker_cap=1).plan(d.sm, {"w1": 4, "w2": 4}, now_ms=0)) == {"w1": 3}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_task_cap_per_worker_limits_tasks_held_by_each(strategy: str) -> None:
    d = cluster({"w1": 4, "w2": 4, "w3": 4}, tasks=12)
    d.apply(assign(("t00", "w1", "L0")))
    plan = Planner(strategy, task_cap_per_worker=2).plan(d.sm, {"w1": 4, "w2": 4, "w3": 4}, now_ms=0)  # type: ignore[arg-type]
    assert spread(plan) == {"w1": 1, "w2": 2, "w3": 2}


def test_unknown_and_offline_workers_get_nothing() -> None:
    d = cluster({"w1": 2, "w2": 2}, tasks=4)
    d.apply(offline("w2"))
    assert spread(Planner().plan(d.sm, {"w1": 1, "w2": 2, "ghost": 3}, now_ms=0)) == {"w1": 1}


def test_nothing_to_place_gives_an_empty_plan() -> None:
    d = Driver()
    d.apply(register("w1", slots=2))
    assert Planner().plan(d.sm, {"w1": 2}, now_ms=0) == []
    assert Planner().plan(d.sm, {}, now_ms=0) == []


# ---------------------------------------------------------------------- matching and order


def test_each_task_goes_only_to_a_worker_that_meets_its_requirements() -> None:
    d = Driver()
    d.apply(register("cpu", slots=4, memory_mb=8_000))
    d.apply(register("gpu", slots=4, hardware=["cpu", "cuda"], gpus=2, memory_mb=64_000, labels={"zone": "lab"}))
    d.apply(
        submit(
            spec("needs-cuda", hardware="cuda"),
            spec("needs-4-gpus", hardware="cuda", min_gpus=4),
            spec("needs-memory", min_memory_mb=32_000),
            spec("needs-lab", labels={"zone": "lab"}),
            spec("anything"),
        )
    )
    for strategy in STRATEGIES:
        plan = Planner(strategy).plan(d.sm, {"cpu": 4, "gpu": 4}, now_ms=0)
        placed = {p.task_id: p.worker_id for p in plan}
        assert placed.pop("anything") in {"cpu", "gpu"}
        assert placed == {"needs-cuda": "gpu", "needs-memory": "gpu", "needs-lab": "gpu"}


def test_a_task_no_worker_fits_does_not_block_the_queue() -> None:
    d = Driver()
    d.apply(register("w", slots=1))
    d.apply(submit(spec("gpu-job", priority=9, hardware="cuda"), spec("cpu-job")))
    assert Planner().plan(d.sm, {"w": 1}, now_ms=0) == [Placement("cpu-job", "w")]


def test_the_plan_follows_priority_order() -> None:
    d = Driver()
    d.apply(register("w", slots=2))
    d.apply(submit(spec("low", priority=1), spec("high", priority=5), spec("mid", priority=3)))
    assert [p.task_id for p in Planner().plan(d.sm, {"w": 2}, now_ms=0)] == ["high", "mid"]


def test_scan_limit_bounds_the_tasks_examined() -> None:
    d = Driver()
    d.apply(register("w", slots=4))
    d.apply(submit(spec("gpu1", hardware="cuda"), spec("gpu2", hardware="cuda"), spec("cpu")))
    assert Planner(scan_limit=2).plan(d.sm, {"w": 4}, now_ms=0) == []
    assert Planner(scan_limit=3).plan(d.sm, {"w": 4}, now_ms=0) == [Placement("cpu", "w")]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_placement_is_granted_when_proposed_at_once(strategy: str) -> None:
    d = cluster({"w1": 2, "w2": 3, "w3": 1}, tasks=10)
    plan = Planner(strategy).plan(d.sm, {"w1": 2, "w2": 3, "w3": 1}, now_ms=0)  # type: ignore[arg-type]
    out = d.apply(assign(*[(p.task_id, p.worker_id, f"L{i}") for i, p in enumerate(plan)]))
    assert len(out.granted) == len(plan) == 6
    assert Planner(strategy).plan(d.sm, {"w1": 2, "w2": 3, "w3": 1}, now_ms=0) == []  # type: ignore[arg-type]


def test_a_worker_reporting_critical_health_gets_no_new_work_until_it_recovers() -> None:
    d = cluster({"sick": 4, "well": 1}, tasks=3)
    d.apply(heartbeat("sick", health_json=json.dumps({"status": "critical", "memory_percent": 99})))
    assert spread(Planner().plan(d.sm, {"sick": 4, "well": 1}, now_ms=0)) == {"well": 1}
    d.apply(heartbeat("sick", health_json=json.dumps({"status": "healthy"})))
    assert spread(Planner().plan(d.sm, {"sick": 4, "well": 1}, now_ms=0)) == {"sick": 2, "well": 1}


def test_excluded_workers_never_get_the_task() -> None:
    d = Driver()
    d.apply(register("w1", slots=4))
    d.apply(register("w2", slots=4))
    d.apply(submit(spec("rerun", exclude_workers=("w1",))))
    assert spread(Planner().plan(d.sm, {"w1": 4}, now_ms=0)) == {}
    assert spread(Planner().plan(d.sm, {"w1": 4, "w2": 4}, now_ms=0)) == {"w2": 1}
    # The state machine refuses the assignment too, whatever a plan says.
    assert d.apply(assign(("rerun", "w1", "L1"))).granted == []
