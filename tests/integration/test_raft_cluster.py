"""Three real Raft nodes in one process: gRPC over loopback with mutual TLS, real log
files. What a user of an HA cluster relies on: one leader, writes accepted on any node,
no acknowledged write lost when the leader stops, a restarted or lagging node catching
up (by snapshot when the log it needs is gone), linearizable reads refused without a
quorum, and a disabled node giving up leadership."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtf_common.errors import Unavailable
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.consensus.status import MembershipAction, MembershipChange
from dtf_coordinator.state import Submitted
from tests.integration.raft_harness import RaftCluster, submit

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RaftCluster]:
    c = RaftCluster(tmp_path)
    await c.start_all()
    try:
        yield c
    finally:
        await c.stop_all()


async def test_one_leader_is_elected_and_writes_reach_every_node(cluster: RaftCluster) -> None:
    leader = await cluster.leader()
    outcome = await leader.propose(submit("t-1", "t-2"))
    assert isinstance(outcome, Submitted) and outcome.task_ids == ["t-1", "t-2"]
    await cluster.converged()
    for node in cluster.nodes.values():
        assert set(node.state.tasks) == {"t-1", "t-2"}
        assert node.term == leader.term


async def test_a_write_on_a_follower_is_forwarded_and_answered_there(cluster: RaftCluster) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    outcome = await follower.propose(submit("via-follower"))
    assert isinstance(outcome, Submitted) and outcome.task_ids == ["via-follower"]
    # Answered only once the follower itself applied it: read-your-writes on that node.
    assert "via-follower" in follower.state.tasks
    await cluster.converged()


async def test_stopping_the_leader_loses_no_acknowledged_write(cluster: RaftCluster) -> None:
    leader = await cluster.leader()
    acked = []
    for i in range(20):
        await leader.propose(submit(f"before-{i}"))
        acked.append(f"before-{i}")
    old, old_term = leader.node_id, leader.term
    await cluster.stop(old, crash=True)
    new = await cluster.leader()
    assert new.node_id != old and new.term > old_term
    await new.propose(submit("after"))
    await cluster.start(old)
    await cluster.converged()
    for node in cluster.nodes.values():
        assert set(acked) | {"after"} <= set(node.state.tasks)


async def test_concurrent_writes_from_every_node_all_land_once(cluster: RaftCluster) -> None:
    await cluster.leader()
    nodes = list(cluster.nodes.values())
    ids = [f"task-{i}" for i in range(150)]
    outcomes = await asyncio.gather(*(nodes[i % 3].propose(submit(t)) for i, t in enumerate(ids)))
    assert all(isinstance(o, Submitted) for o in outcomes)
    await cluster.converged()
    assert sorted(nodes[0].state.tasks) == sorted(ids)


async def test_a_node_behind_a_compacted_log_catches_up_by_snapshot(cluster: RaftCluster) -> None:
    leader = await cluster.leader()
    lagging = next(n for n in cluster.ids if n != leader.node_id)
    await cluster.stop(lagging, crash=True)
    for i in range(40):
        await leader.propose(submit(f"while-away-{i}"))
    # Every running node snapshots and drops its log, so only a snapshot can catch it up.
    for node in cluster.nodes.values():
        await node.take_snapshot()
    await asyncio.sleep(0.2)
    assert leader.storage.log.base_index >= 40
    node = await cluster.start(lagging)
    await cluster.converged(wait_s=15)
    assert {f"while-away-{i}" for i in range(40)} <= set(node.state.tasks)
    assert (cluster.root / lagging / "snapshot.json").exists()
    # The node was handed the snapshot's state and what travels beside it (the results store's rows).
    [(tasks, extra)] = cluster.installed[lagging]
    assert "while-away-39" in tasks and extra["exported_by"] == leader.node_id


async def test_a_leader_without_its_majority_refuses_linearizable_reads(cluster: RaftCluster) -> None:
    leader = await cluster.leader()
    await leader.propose(submit("x"))
    assert await leader.read_barrier() >= 1
    for node_id in [n for n in cluster.ids if n != leader.node_id]:
        await cluster.stop(node_id)
    with pytest.raises(Unavailable):
        await leader.read_barrier()
    with pytest.raises(Unavailable):
        await leader.propose(submit("y"))


async def test_a_restarted_cluster_comes_back_with_everything_acknowledged(cluster: RaftCluster) -> None:
    leader = await cluster.leader()
    for i in range(10):
        await leader.propose(submit(f"persisted-{i}"))
    before = await cluster.converged()
    await cluster.stop_all()
    await cluster.start_all()
    leader = await cluster.leader()
    await leader.propose(submit("after-restart"))
    await cluster.converged()
    assert {f"persisted-{i}" for i in range(10)} <= set(leader.state.tasks)
    assert before  # the fingerprints agreed before the restart too


async def test_disabling_the_leader_moves_leadership_and_keeps_it_off(cluster: RaftCluster) -> None:
    leader = await cluster.leader()
    await leader.propose(submit("warm-up"))
    await leader.change_membership(MembershipChange(MembershipAction.DISABLE, leader.node_id))
    new = await cluster.leader(among=[n for n in cluster.ids if n != leader.node_id])
    assert new.node_id != leader.node_id
    assert leader.node_id in new.conf_state.disabled
    await new.propose(submit("after-disable"))
    await new.change_membership(MembershipChange(MembershipAction.ENABLE, leader.node_id))
    await cluster.converged()
    assert all(leader.node_id not in n.conf_state.disabled for n in cluster.nodes.values())


async def test_a_leader_that_stops_on_purpose_hands_over_without_an_election(cluster: RaftCluster) -> None:
    leader = await cluster.leader()
    await leader.propose(submit("before-handover"))
    old_term = leader.term
    await cluster.stop(leader.node_id)
    # Leadership transfer: the successor is already in place when stop() returns,
    # one term later, with no election timeout waited out.
    successor = await cluster.leader(wait_s=0.5)
    assert successor.term == old_term + 1
    await successor.propose(submit("after-handover"))


async def test_a_write_whose_index_a_newer_leader_took_is_answered_not_left_hanging(tmp_path: Path) -> None:
    # A leader of term 1 gave writes indexes 2 and 5, then lost leadership; the leader of
    # term 2 filled index 2 with its own entry and committed up to 3. Terms never decrease
    # along a committed log, so neither write can commit any more: both callers must hear so.
    node = RaftCluster(tmp_path, size=1).make("coordinator-1")
    taken = asyncio.ensure_future(node._await_applied(term=1, index=2))
    beyond = asyncio.ensure_future(node._await_applied(term=1, index=5))
    await asyncio.sleep(0)
    node._apply([commands_pb2.LogEntry(term=t, index=i) for i, t in [(1, 1), (2, 2), (3, 2)]])
    for waiter in (taken, beyond):
        with pytest.raises(Unavailable, match="replaced"):
            await asyncio.wait_for(waiter, 5)  # not answered at all would be the bug


async def test_a_node_added_at_run_time_catches_up_votes_and_can_be_removed(tmp_path: Path) -> None:
    cluster = RaftCluster(tmp_path, size=4, initial=3)
    await cluster.start_all()
    try:
        leader = await cluster.leader()
        for i in range(5):
            await leader.propose(submit(f"before-join-{i}"))
        joining = "coordinator-4"
        add = MembershipChange(MembershipAction.ADD, joining, cluster.addresses[joining])
        await leader.change_membership(add)
        for node in cluster.nodes.values():
            await node.take_snapshot()
        await cluster.start(joining)
        await cluster.converged(wait_s=15)
        assert all(sorted(n.conf_state.voters) == cluster.ids for n in cluster.nodes.values())
        # Four voters: a quorum is three, so one more node may stop and writes still commit.
        follower = next(n for n in cluster.ids[:3] if n != leader.node_id)
        await cluster.stop(follower, crash=True)
        await leader.propose(submit("with-three-of-four"))
        await cluster.start(follower)
        remove = MembershipChange(MembershipAction.REMOVE, joining)
        await leader.change_membership(remove)
        await cluster.stop(joining)
        await leader.propose(submit("after-removal"))
        await cluster.converged(wait_s=15)
        assert all(joining not in n.conf_state.voters for n in cluster.nodes.values())
    finally:
        await cluster.stop_all()
