"""A cluster of one on real files: group commit, restart, snapshots and kill -9 durability."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from dtf_common.errors import Unavailable
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.consensus import LogStore, SingleNode
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
) -> SingleNode:
    node = SingleNode(directory, StateMachine(), clock=kw.pop("clock", ticking()), **kw)
    await node.start(sink)
    return node


async def propose_tasks(node: SingleNode, first: int, count: int) -> list[Any]:
    return list(await asyncio.gather(*(node.propose(submit(spec(f"t{i}"))) for i in range(first, first + count))))


async def guarded(awaitable: Coroutine[Any, Any, Any]) -> Any:
    """Await a proposal, failing instead of hanging if the node never answers."""
    return await asyncio.wait_for(awaitable, 60)


def test_concurrent_proposals_share_fsyncs_and_all_resolve(tmp_path: Path) -> None:
    batches: list[int] = []

    async def scenario() -> SingleNode:
        node = await started_node(tmp_path, on_commit=lambda n, _seconds: batches.append(n))
        outcomes = await propose_tasks(node, 0, 1_000)
        assert outcomes == [Submitted([f"t{i}"]) for i in range(1_000)]
        await node.stop()
        return node

    node = run(scenario())
    assert sum(batches) == 1_000
    assert len(batches) < 1_000  # group commit: many commands per fsync
    assert node.state.applied_index == 1_000
    assert len(node.state.tasks) == 1_000
    # Log order is proposal order.
    assert [e.index for e in node.log.entries] == list(range(1, 1_001))


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
    async def first_life() -> tuple[str, int]:
        node = await started_node(tmp_path)
        await node.propose(register("w", slots=2))
        await propose_tasks(node, 0, 50)
        await node.propose(assign(("t0", "w", "L0"), ("t1", "w", "L1")))
        await node.propose(completed("t0", "L0"))
        fingerprint, term = node.state.fingerprint(), node.term
        await node.stop()
        return fingerprint, term

    async def second_life() -> SingleNode:
        node = await started_node(tmp_path)
        await node.stop()
        return node

    fingerprint, term = run(first_life())
    node = run(second_life())
    assert node.state.fingerprint() == fingerprint
    assert node.replayed == 53
    assert node.term == term + 1
    assert json.loads((tmp_path / "hardstate.json").read_text())["term"] == term + 1


def test_restart_continues_the_log_where_it_stopped(tmp_path: Path) -> None:
    async def life(first: int) -> int:
        node = await started_node(tmp_path)
        await propose_tasks(node, first, 10)
        await node.stop()
        return node.state.applied_index

    assert run(life(0)) == 10
    assert run(life(10)) == 20
    store = LogStore(tmp_path)
    assert [e.index for e in store.open()] == list(range(1, 21))
    store.close()


def test_a_torn_tail_is_dropped_on_restart_and_the_log_goes_on(tmp_path: Path) -> None:
    async def life(first: int, count: int) -> SingleNode:
        node = await started_node(tmp_path)
        await propose_tasks(node, first, count)
        await node.stop()
        return node

    run(life(0, 5))
    with open(tmp_path / LOG_NAME, "r+b") as f:
        f.truncate((tmp_path / LOG_NAME).stat().st_size - 3)
    node = run(life(100, 1))
    assert node.log.truncated_bytes > 0
    assert sorted(node.state.tasks) == ["t0", "t1", "t100", "t2", "t3"]
    assert node.state.applied_index == 5


def test_restart_restores_the_snapshot_then_replays_the_tail(tmp_path: Path) -> None:
    async def first_life() -> tuple[str, int]:
        node = await started_node(tmp_path)
        await node.propose(register("w"))
        await propose_tasks(node, 0, 30)

        async def commit_more(_index: int) -> None:
            # Committed while the snapshot is being taken: the tail the log keeps.
            await guarded(propose_tasks(node, 30, 5))

        index = await node.take_snapshot(before_save=commit_more)
        assert index == 31
        await guarded(propose_tasks(node, 35, 2))  # after the compaction
        fingerprint = node.state.fingerprint()
        await node.stop()
        return fingerprint, index

    async def second_life() -> SingleNode:
        node = await started_node(tmp_path)
        await node.stop()
        return node

    fingerprint, index = run(first_life())
    store = LogStore(tmp_path)
    assert [e.index for e in store.open()] == list(range(index + 1, index + 8))
    store.close()
    node = run(second_life())
    assert node.state.fingerprint() == fingerprint
    assert node.replayed == 7
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

    assert run(scenario()) == 3
    assert seen == [3]


def test_a_snapshot_covering_the_whole_log_keeps_the_node_writable(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await started_node(tmp_path)
        await propose_tasks(node, 0, 3)
        index = await node.take_snapshot()
        for _ in range(1_000):  # let the commit loop compact the log the snapshot covers
            if not node.log.entries:
                break
            await asyncio.sleep(0.01)
        await node.stop()
        node = await started_node(tmp_path)
        try:
            assert node.state.applied_index == index
            # The next entry must follow the snapshot, not restart at 1.
            assert node.log.last_index == index
            assert await guarded(node.propose(submit(spec("after")))) == Submitted(["after"])
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

    async def reopen() -> SingleNode:
        node = await started_node(tmp_path)
        await node.stop()
        return node

    assert acknowledged <= set(run(reopen()).state.tasks)


# ---------------------------------------------------------------------- kill -9

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
    from dtf_coordinator.consensus import SingleNode
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
        node = SingleNode(sys.argv[1], StateMachine())
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

    async def reopen() -> SingleNode:
        node = await started_node(data)
        await node.stop()
        return node

    node = run(reopen())
    missing = sorted(set(acked) - set(node.state.tasks))
    assert not missing, f"{len(missing)} acknowledged entries lost, e.g. {missing[:5]}"
    assert node.state.applied_index >= max(acked.values())
    # The log it reopened is whole: consecutive indexes from 1.
    assert [e.index for e in node.log.entries] == list(range(1, node.state.applied_index + 1))


def test_log_entries_decode_to_the_proposed_commands(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await started_node(tmp_path)
        await node.propose(submit(spec("a", priority=7)))
        await node.stop()

    run(scenario())
    store = LogStore(tmp_path)
    [entry] = store.open()
    store.close()
    command = commands_pb2.Command()
    command.ParseFromString(entry.command)
    assert command.submit_tasks.tasks[0].priority == 7
    assert command.time_ms > 0
    assert entry.term == 1
