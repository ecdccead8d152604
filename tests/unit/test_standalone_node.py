"""A coordinator without high availability (a Raft group of one voter) on real files:
group commit, restart, snapshots, kill -9 durability, and a refusal to change membership.

Each term starts with its leader's empty entry, so a node's log holds one entry more
per start than the commands proposed to it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from dtf_common.errors import Conflict, Unavailable
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.consensus import LogStore, MembershipAction, MembershipChange, RaftNode, standalone_node
from dtf_coordinator.consensus.log_store import LOG_NAME
from dtf_coordinator.state import Effect, StateMachine, Submitted, TaskTransition
from tests.unit.commands import assign, completed, register, spec, submit


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def ticking(start: int = 1_000) -> Callable[[], int]:
    now = [start]

    def clock() -> int:
        now[0] += 1
        return now[0]

    return clock


async def started_node(
    directory: Path, *, sink: Callable[[list[Effect]], None] = lambda _effects: None, **kw: Any
) -> RaftNode[StateMachine]:
    node = standalone_node(directory, StateMachine(), clock=kw.pop("clock", ticking()), **kw)
    await node.start(sink)
    return node


async def reopened(directory: Path) -> RaftNode[StateMachine]:
    """A node started on `directory`'s files and stopped: what a restart recovers."""
    node = await started_node(directory)
    await node.stop()
    return node


def commands_in(entries: list[commands_pb2.LogEntry]) -> list[commands_pb2.LogEntry]:
    """The entries that carry a command (not a new term's empty entry)."""
    return [e for e in entries if e.command]


def content(state: StateMachine) -> dict[str, Any]:
    """The state apart from its applied index, which a restart moves on by its empty entry."""
    return {k: v for k, v in state.snapshot().items() if k != "applied_index"}


async def propose_tasks(node: RaftNode[StateMachine], first: int, count: int) -> list[Any]:
    return list(await asyncio.gather(*(node.propose(submit(spec(f"t{i}"))) for i in range(first, first + count))))


async def guarded(awaitable: Coroutine[Any, Any, Any]) -> Any:
    """Await a proposal, failing instead of hanging if the node never answers."""
    return await asyncio.wait_for(awaitable, 60)


def test_concurrent_proposals_share_fsyncs_and_all_resolve(tmp_path: Path) -> None:
    batches: list[int] = []

    async def scenario() -> RaftNode[StateMachine]:
        node = await started_node(tmp_path, on_commit=lambda n, _seconds: batches.append(n))
        outcomes = await propose_tasks(node, 0, 1_000)
        assert outcomes == [Submitted([f"t{i}"]) for i in range(1_000)]
        await node.stop()
        return node

    node = run(scenario())
    assert sum(batches) == node.state.applied_index == 1_001  # the term's empty entry, then 1,000
    assert len(batches) < 1_000  # group commit: many commands per fsync
    assert len(node.state.tasks) == 1_000
    # Log order is proposal order.
    entries = commands_in(node.storage.log.entries)
    assert [e.index for e in entries] == list(range(2, 1_002))
    tasks = []
    for entry in entries:
        command = commands_pb2.Command()
        command.ParseFromString(entry.command)
        tasks.append(command.submit_tasks.tasks[0].task_id)
    assert sorted(tasks, key=lambda t: int(t[1:])) == [f"t{i}" for i in range(1_000)]


def test_outcomes_reach_each_proposer_and_effects_reach_the_sink(tmp_path: Path) -> None:
    effects: list[Effect] = []

    async def scenario() -> None:
        node = await started_node(tmp_path, sink=effects.extend)
        assert await node.propose(register("w")) is not None
        await node.propose(submit(spec("a")))
        granted = await node.propose(assign(("a", "w", "L")))
        assert granted.granted == [("a", "w", "L")]
        acks = await node.propose(completed("a", "L"))
        assert acks.acks == [("a", "L", True, "")]
        refused = await node.propose(completed("a", "L"))
        assert refused.acks[0][2] is False
        await node.stop()

    run(scenario())
    transitions = [(e.task_id, e.status.value) for e in effects if isinstance(e, TaskTransition)]
    assert transitions == [("a", "pending"), ("a", "assigned"), ("a", "completed")]


def test_the_node_stamps_time_that_never_goes_back(tmp_path: Path) -> None:
    readings = iter([5_000, 4_000, 6_000, 1])

    async def scenario() -> list[int]:
        node = await started_node(tmp_path, clock=lambda: next(readings))
        for i in range(4):
            command = submit(spec(f"t{i}"), at=123)
            await node.propose(command)
        await node.stop()
        return [node.state.tasks[f"t{i}"].create_ms for i in range(4)]

    assert run(scenario()) == [5_000, 5_000, 6_000, 6_000]


def test_restart_replays_the_log_to_the_same_state(tmp_path: Path) -> None:
    async def first_life() -> tuple[dict[str, Any], int]:
        node = await started_node(tmp_path)
        await node.propose(register("w", slots=2))
        await propose_tasks(node, 0, 50)
        await node.propose(assign(("t0", "w", "L0"), ("t1", "w", "L1")))
        await node.propose(completed("t0", "L0"))
        before, term = content(node.state), node.term
        await node.stop()
        return before, term

    before, term = run(first_life())
    node = run(reopened(tmp_path))
    assert content(node.state) == before
    assert len(node.state.tasks) == 50 and node.state.tasks["t0"].status.value == "completed"
    assert node.term == term + 1
    assert json.loads((tmp_path / "hardstate.json").read_text())["term"] == term + 1


def test_restart_continues_the_log_where_it_stopped(tmp_path: Path) -> None:
    async def life(first: int) -> int:
        node = await started_node(tmp_path)
        await propose_tasks(node, first, 10)
        await node.stop()
        return node.state.applied_index

    assert run(life(0)) == 11
    assert run(life(10)) == 22
    store = LogStore(tmp_path)
    entries = store.open()
    store.close()
    assert [e.index for e in entries] == list(range(1, 23))
    assert [e.term for e in entries] == [1] * 11 + [2] * 11


def test_a_torn_tail_is_dropped_on_restart_and_the_log_goes_on(tmp_path: Path) -> None:
    async def life(first: int, count: int) -> RaftNode[StateMachine]:
        node = await started_node(tmp_path)
        await propose_tasks(node, first, count)
        await node.stop()
        return node

    run(life(0, 5))
    with open(tmp_path / LOG_NAME, "r+b") as f:
        f.truncate((tmp_path / LOG_NAME).stat().st_size - 3)
    node = run(life(100, 1))
    assert node.storage.log.truncated_bytes > 0
    assert sorted(node.state.tasks) == ["t0", "t1", "t100", "t2", "t3"]
    assert node.state.applied_index == 7  # 1 + 3 surviving, then 1 + 1


def test_restart_restores_the_snapshot_then_replays_the_tail(tmp_path: Path) -> None:
    async def first_life() -> tuple[dict[str, Any], int]:
        node = await started_node(tmp_path)
        await node.propose(register("w"))
        await propose_tasks(node, 0, 30)

        async def commit_more(_index: int) -> None:
            # Committed while the snapshot is being taken: the tail the log keeps.
            await guarded(propose_tasks(node, 30, 5))

        index = await node.take_snapshot(before_save=commit_more)
        assert index == 32
        await guarded(propose_tasks(node, 35, 2))  # after the compaction
        before = content(node.state)
        await node.stop()
        return before, index

    before, index = run(first_life())
    store = LogStore(tmp_path)
    assert [e.index for e in store.open()] == list(range(index + 1, index + 8))
    store.close()
    node = run(reopened(tmp_path))
    assert content(node.state) == before
    assert len(node.state.tasks) == 37


def test_before_save_may_be_a_coroutine(tmp_path: Path) -> None:
    seen: list[int] = []

    async def flush(index: int) -> None:
        await asyncio.sleep(0)
        seen.append(index)

    async def scenario() -> int:
        node = await started_node(tmp_path)
        await propose_tasks(node, 0, 3)
        index = await node.take_snapshot(before_save=flush)
        await node.stop()
        return index

    assert run(scenario()) == 4
    assert seen == [4]


def test_a_snapshot_covering_the_whole_log_keeps_the_node_writable(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await started_node(tmp_path)
        await propose_tasks(node, 0, 3)
        index = await node.take_snapshot()
        for _ in range(1_000):  # let the loop compact the log the snapshot covers
            if not node.storage.log.entries:
                break
            await asyncio.sleep(0.01)
        await node.stop()
        node = await started_node(tmp_path)
        try:
            assert node.storage.log.base_index == index
            assert await guarded(node.propose(submit(spec("after")))) == Submitted(["after"])
            # The entries after it follow the snapshot, not restart at 1.
            assert [e.index for e in node.storage.log.entries] == [index + 1, index + 2]
            assert len(node.state.tasks) == 4
        finally:
            await node.stop()

    run(scenario())


def test_a_stopped_node_refuses_proposals(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await started_node(tmp_path)
        await node.stop()
        with pytest.raises(Unavailable):
            await guarded(node.propose(submit(spec("late"))))

    run(scenario())


def test_proposals_racing_a_stop_are_answered_and_the_answered_ones_kept(tmp_path: Path) -> None:
    async def scenario() -> list[Any]:
        node = await started_node(tmp_path)
        racing = [asyncio.ensure_future(node.propose(submit(spec(f"t{i}")))) for i in range(200)]
        await asyncio.sleep(0)
        await node.stop()
        return list(await guarded(asyncio.gather(*racing, return_exceptions=True)))

    results = run(scenario())
    acknowledged = {f"t{i}" for i, r in enumerate(results) if isinstance(r, Submitted)}
    assert all(isinstance(r, Submitted | BaseException) for r in results)

    assert acknowledged <= set(run(reopened(tmp_path)).state.tasks)


# ---------------------------------------------------------------------- kill -9

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
    from dtf_coordinator.consensus import standalone_node
    from dtf_coordinator.state import StateMachine

    async def proposer(node, worker):
        i = 0
        while True:
            task_id = f"w{worker}-{i}"
            spec = types_pb2.TaskSpec(task_id=task_id, type="command")
            command = commands_pb2.Command(submit_tasks=commands_pb2.SubmitTasks(tasks=[spec]))
            await node.propose(command)
            # Acknowledged: durable and applied. Report it with the index it is covered by.
            print(task_id, node.state.applied_index, flush=True)
            i += 1

    async def main():
        node = standalone_node(sys.argv[1], StateMachine())
        await node.start(lambda effects: None)
        print("ready", flush=True)
        await asyncio.gather(*(proposer(node, w) for w in range(8)))

    asyncio.run(main())
    """
)


def test_every_acknowledged_entry_survives_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    data = tmp_path / "node"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    acked: dict[str, int] = {}
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
        while len(acked) < 2_000:
            line = child.stdout.readline()
            assert line, "the child stopped early"
            task_id, index = line.split()
            acked[task_id] = int(index)
        os.kill(child.pid, signal.SIGKILL)
        # Whatever it printed before dying was acknowledged too.
        for line in child.stdout:
            if line.strip():
                task_id, index = line.split()
                acked[task_id] = int(index)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    node = run(reopened(data))
    missing = sorted(set(acked) - set(node.state.tasks))
    assert not missing, f"{len(missing)} acknowledged entries lost, e.g. {missing[:5]}"
    assert node.state.applied_index >= max(acked.values())
    # The log it reopened is whole: consecutive indexes from 1.
    assert [e.index for e in node.storage.log.entries] == list(range(1, node.state.applied_index + 1))


def test_log_entries_decode_to_the_proposed_commands(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await started_node(tmp_path)
        await node.propose(submit(spec("a", priority=7)))
        await node.stop()

    run(scenario())
    store = LogStore(tmp_path)
    [entry] = commands_in(store.open())
    store.close()
    command = commands_pb2.Command()
    command.ParseFromString(entry.command)
    assert command.submit_tasks.tasks[0].priority == 7
    assert command.time_ms > 0
    assert entry.term == 1


# ---------------------------------------------------------------------- alone on purpose


def test_it_leads_at_once_and_refuses_to_change_its_membership(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await started_node(tmp_path, node_id="solo")
        try:
            status = node.status()
            assert (status.role, status.leader_id, status.voters) == ("leader", "solo", ("solo",))
            assert not status.can_change_membership
            assert [c.reason for c in status.leader_history] == ["elected"]
            # A voter it cannot reach would cost it its quorum: refused, nothing appended.
            last = node.storage.log.last_index
            with pytest.raises(Conflict, match="no membership to change"):
                await node.change_membership(MembershipChange(MembershipAction.ADD, "other", "127.0.0.1:1"))
            with pytest.raises(Conflict, match="only node"):
                node.transfer_leadership("other")
            assert node.storage.log.last_index == last
            assert await guarded(node.propose(submit(spec("still")))) == Submitted(["still"])
        finally:
            await node.stop()

    run(scenario())


def test_files_of_a_single_coordinator_before_it_ran_raft_are_read_whole(tmp_path: Path) -> None:
    """A data directory from an earlier dtf: a `{term, state}` snapshot at index 20, the
    log after it, and a hard state without a commit index."""
    old = StateMachine()
    commands = [register("w"), *(submit(spec(f"t{i}")) for i in range(29))]
    for index, command in enumerate(commands[:20], start=1):
        old.apply(index, command)
    (tmp_path / "snapshot.json").write_text(json.dumps({"term": 3, "state": old.snapshot()}))
    (tmp_path / "hardstate.json").write_text(json.dumps({"term": 4, "vote": "coordinator-1"}))
    store = LogStore(tmp_path)
    store.open()
    store.base_index = 20
    store.append(
        [commands_pb2.LogEntry(term=4, index=i, command=c.SerializeToString()) for i, c in enumerate(commands, 1)][20:]
    )
    store.sync()
    store.close()

    async def scenario() -> RaftNode[StateMachine]:
        node = await started_node(tmp_path)
        try:
            assert await guarded(node.propose(submit(spec("new")))) == Submitted(["new"])
            assert node.status().voters == ("coordinator-1",)
        finally:
            await node.stop()
        return node

    node = run(scenario())
    assert sorted(node.state.tasks) == sorted([f"t{i}" for i in range(29)] + ["new"])
    assert "w" in node.state.workers
    assert node.term == 5


def test_a_slow_disk_at_start_delays_the_start_instead_of_failing_it(tmp_path: Path) -> None:
    """Electing itself takes an fsync (its vote and the new term's entry); on a disk that
    takes 0.8 s, that outlasts a read barrier's wait (two election timeouts, 0.6 s)."""
    node = standalone_node(tmp_path, StateMachine(), clock=ticking())
    real_persist = node.storage.persist

    def slow_persist(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.8)  # a loaded disk's fsync
        real_persist(*args, **kwargs)

    node.storage.persist = slow_persist  # type: ignore[method-assign]

    async def scenario() -> None:
        await asyncio.wait_for(node.start(lambda _effects: None), 30)
        try:
            assert node.status().role == "leader"
            assert await guarded(node.propose(submit(spec("after")))) == Submitted(["after"])
        finally:
            await node.stop()

    run(scenario())
