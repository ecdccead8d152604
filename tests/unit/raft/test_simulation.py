"""Randomised, deterministic simulations of 3- and 5-node clusters (see simulation.py).

Each seed replays exactly: a failure names its seed and step. CI runs a fixed set of
seeds; DTF_RAFT_SIM_SEEDS (how many) and DTF_RAFT_SIM_STEPS (steps per seed) run more.
"""

from __future__ import annotations

import os

import pytest

from tests.unit.raft.simulation import Simulation, run

# 12 x 10,000 = 120,000 steps by default: a few seconds on a 2-core machine.
SEEDS = int(os.environ.get("DTF_RAFT_SIM_SEEDS", "12"))
STEPS = int(os.environ.get("DTF_RAFT_SIM_STEPS", "10000"))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_safety_and_liveness(seed: int) -> None:
    nodes = 3 if seed % 2 == 0 else 5
    stats = run(seed, STEPS, nodes)
    assert stats.steps == STEPS
    assert stats.elections >= 1


def test_a_seed_replays_exactly() -> None:
    assert run(7, 3000, 5) == run(7, 3000, 5)


def test_progress_without_faults() -> None:
    """On a calm network the cluster commits nearly every proposal."""
    sim = Simulation(1, 3)
    sim.params.drop = sim.params.duplicate = 0.0
    sim.params.crash = sim.params.partition = sim.params.conf_change = sim.params.transfer = 0.0
    sim.run(5000)
    sim.converge()
    assert sim.stats.max_commit >= sim.stats.proposals * 0.9
