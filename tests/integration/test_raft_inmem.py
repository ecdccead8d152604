"""Three real `RaftNode` shells on the in-memory transport: real log files, no sockets,
a network the test cuts and heals (hashicorp/raft's InmemTransport). What HA relies on
through a partition: a cut-off leader is replaced, the new leader commits, and once
the network heals the old leader steps down and catches up, with nothing committed
lost and a write it took while cut off applied exactly when it was acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dtf_common.errors import Unavailable
from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
from dtf_coordinator.consensus.raft.inmem import InmemNetwork
from dtf_coordinator.consensus.raft.node import RaftNode, RaftSettings
from dtf_coordinator.state import StateMachine

pytestmark = pytest.mark.anyio

IDS = ["n1", "n2", "n3"]
Node = RaftNode[StateMachine]


def submit(*task_ids: str) -> commands_pb2.Command:
    specs = [types_pb2.TaskSpec(task_id=t, type="command") for t in task_ids]
    return commands_pb2.Command(submit_tasks=commands_pb2.SubmitTasks(tasks=specs))


async def until(check: Callable[[], bool], what: str, wait_s: float = 10.0) -> None:
    deadline = time.monotonic() + wait_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {wait_s}s: {what}")
        await asyncio.sleep(0.01)


def sole_leader(nodes: list[Node]) -> Node | None:
    leaders = [n for n in nodes if n.is_leader()]
    if len(leaders) == 1 and all(n.leader_hint() == leaders[0].node_id for n in nodes):
        return leaders[0]
    return None


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[InmemNetwork, dict[str, Node]]]:
    network = InmemNetwork()
    nodes: dict[str, Node] = {}
    for seed, node_id in enumerate(IDS):
        settings = RaftSettings(node_id=node_id, bind="", peers={n: n for n in IDS}, write_wait_s=5.0)
        nodes[node_id] = RaftNode(tmp_path / node_id, StateMachine(), settings, network.transport(node_id), seed=seed)
    for node in nodes.values():
        await node.start(lambda _effects: None)
    try:
        yield network, nodes
    finally:
        for node in nodes.values():
            await node.stop(hand_over=False)


async def test_a_partitioned_leader_is_replaced_then_steps_down_and_catches_up(
    cluster: tuple[InmemNetwork, dict[str, Node]],
) -> None:
    network, nodes = cluster
    everyone = list(nodes.values())
    await until(lambda: sole_leader(everyone) is not None, "a leader every node agrees on")
    old = sole_leader(everyone)
    assert old is not None
    for n in range(5):
        await old.propose(submit(f"before-{n}"))

    network.isolate(old.node_id)
    rest = [n for n in everyone if n is not old]
    await until(lambda: sole_leader(rest) is not None, "a new leader among the connected majority")
    new = sole_leader(rest)
    assert new is not None and new is not old and new.term > old.term
    stale = asyncio.create_task(old.propose(submit("stale")))  # no majority can commit it now
    await new.propose(submit("after"))
    assert not stale.done()

    network.heal()
    acknowledged = False
    with contextlib.suppress(Unavailable):
        await asyncio.wait_for(stale, 10)
        acknowledged = True
    await until(lambda: sole_leader(everyone) is new, "the old leader following the new one")
    assert old.role == "follower" and old.status().leader_id == new.node_id
    await until(
        lambda: (
            len({n.state.fingerprint() for n in everyone}) == 1 and len({n.state.applied_index for n in everyone}) == 1
        ),
        "every node applying the same log",
    )
    expected = {f"before-{n}" for n in range(5)} | {"after"}
    for node in everyone:
        tasks = set(node.state.tasks)
        assert expected <= tasks, node.node_id
        # A write is applied exactly when it was acknowledged: never lost, never a ghost.
        assert ("stale" in tasks) is acknowledged, node.node_id
    assert network.dropped > 0
