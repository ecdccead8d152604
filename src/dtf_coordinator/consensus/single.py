"""A cluster of one: group commit to the local log, then apply in log order.

Proposals queue up while the previous batch is being fsynced; the next batch takes them
all, so many commands share one write and one fsync. A proposal's future resolves only
after its entry is durable and applied. On start, the latest snapshot is restored and
the log after it replayed, re-emitting effects (the results store upserts by id, so
replay never duplicates).

It answers the whole `Consensus` port: it leads while it runs (a leader-change history
of one election, at start), its read barrier is immediate (every acknowledged write is
already applied here), and it refuses membership changes and transfers to any other
node with `Conflict`: a coordinator without high availability has no peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from dtf_common.clock import wall_ms
from dtf_common.errors import Conflict, Unavailable
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.consensus.base import BeforeSnapshot, EffectSink, ReplicatedState
from dtf_coordinator.consensus.log_store import LogStore, fsync_dir
from dtf_coordinator.consensus.snapshots import SnapshotStore
from dtf_coordinator.consensus.status import LeaderChange, MembershipChange, NodeStatus
from dtf_coordinator.state import Outcome

log = logging.getLogger("dtf.consensus")
MAX_BATCH = 8192
HARD_STATE = "hardstate.json"
S = TypeVar("S", bound=ReplicatedState)


class SingleNode(Generic[S]):
    def __init__(
        self,
        directory: Path | str,
        state: S,
        *,
        node_id: str = "coordinator-1",
        clock: Callable[[], int] = wall_ms,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.node_id = node_id
        self.state = state  # as it starts out: a snapshot on disk replaces it
        self.log = LogStore(self.dir)
        self.snapshots = SnapshotStore(self.dir)
        self.term = 0
        self.replayed = 0
        self.started_ms = 0
        self._clock = clock
        self._last_ms = 0
        self._on_commit = on_commit
        self._queue: list[tuple[commands_pb2.Command, asyncio.Future[Outcome]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sink: EffectSink = lambda _effects: None
        self._failed: BaseException | None = None
        self._compact_to: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sink: EffectSink) -> None:
        self._sink = sink
        self.dir.mkdir(parents=True, exist_ok=True)
        snapshot = self.snapshots.load()
        if snapshot is not None:
            self.state = self.state.restored(snapshot["state"])
            self.term = int(snapshot.get("term", 0))
        entries = self.log.open()
        # Entries up to the snapshot may have been compacted away: number new ones after it.
        self.log.base_index = self.state.applied_index
        for entry in entries:
            if entry.index <= self.state.applied_index:
                continue
            command = commands_pb2.Command()
            command.ParseFromString(entry.command)
            self.state.apply(entry.index, command)
            self._last_ms = max(self._last_ms, command.time_ms)
            self.replayed += 1
        # Whatever the restored state holds goes to the store again; upserts make it idempotent.
        self._sink(self.state.drain_effects())
        # A cluster of one elects itself at once, in a new term, as Raft would.
        self.term = max(self.term, self._load_term()) + 1
        self._save_term()
        self._task = asyncio.create_task(self._commit_loop(), name="dtf-commit")
        self.started_ms = wall_ms()
        log.info(
            "node %s: term %d, applied index %d (%d entries replayed, %d bytes of torn tail dropped)",
            self.node_id,
            self.term,
            self.state.applied_index,
            self.replayed,
            self.log.truncated_bytes,
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # A commit loop that already failed re-raises its failure here; it was logged.
            with contextlib.suppress(BaseException):
                await self._task
        for _cmd, fut in self._queue:
            if not fut.done():
                fut.set_exception(Unavailable("node stopped"))
        self._queue.clear()
        self.log.close()

    def is_leader(self) -> bool:
        return self._task is not None and self._failed is None

    def leader_hint(self) -> str | None:
        return self.node_id

    def status(self) -> NodeStatus:
        leading = self.is_leader()
        applied = self.state.applied_index
        elected = LeaderChange(None, self.node_id, self.term, "elected", self.started_ms)
        return NodeStatus(
            node_id=self.node_id,
            role="leader" if leading else ("failed" if self._failed is not None else "stopped"),
            term=self.term,
            leader_id=self.node_id if leading else None,
            commit_index=applied,
            applied_index=applied,
            last_index=self.log.last_index,
            voters=(self.node_id,),
            leader_history=(elected,) if leading else (),
            started_ms=self.started_ms,
            failure=str(self._failed) if self._failed is not None else None,
        )

    async def read_barrier(self) -> int:
        """Every acknowledged write is already applied here: nothing to wait for."""
        return self.state.applied_index

    async def change_membership(self, change: MembershipChange) -> int:
        raise Conflict(
            f"a coordinator without high availability has no membership to change ({change.action} {change.node_id})",
            field="node_id",
        )

    def transfer_leadership(self, to: str) -> None:
        if to != self.node_id:
            raise Conflict(f"{self.node_id} is the only node of the cluster: it cannot hand over to {to}")

    # ------------------------------------------------------------------ proposals

    async def propose(self, command: commands_pb2.Command) -> Outcome:
        if self._failed is not None:
            raise Unavailable(f"node stopped after a storage failure: {self._failed}")
        if self._task is None or self._task.done():
            raise Unavailable("node is not running")
        # Leader-stamped time, never going backwards in log order.
        self._last_ms = max(self._last_ms, self._clock())
        command.time_ms = self._last_ms
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((command, fut))
        self._wake.set()
        return await fut

    async def _commit_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._compact_to is not None:
                    # Compaction rewrites the log file, so it runs here, between batches.
                    index, self._compact_to = self._compact_to, None
                    await asyncio.to_thread(self.log.compact, index)
                while self._queue:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    await self._commit(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # storage failure: stop rather than risk acknowledging lost entries
            self._failed = exc
            log.exception("commit loop failed; node stops accepting writes")
            for _cmd, fut in self._queue:
                if not fut.done():
                    fut.set_exception(exc)
            self._queue.clear()
            raise

    async def _commit(self, batch: list[tuple[commands_pb2.Command, asyncio.Future[Outcome]]]) -> None:
        started = time.perf_counter()
        first = self.log.last_index + 1
        entries = [
            commands_pb2.LogEntry(term=self.term, index=first + i, command=cmd.SerializeToString())
            for i, (cmd, _) in enumerate(batch)
        ]
        try:
            self.log.append(entries)
            await asyncio.to_thread(self.log.sync)
        except BaseException as exc:
            for _cmd, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        try:
            outcomes = [self.state.apply(entry.index, cmd) for entry, (cmd, _) in zip(entries, batch, strict=True)]
            self._sink(self.state.drain_effects())
        except BaseException as exc:
            # A broken invariant: answer everyone waiting on this batch, then stop the node.
            for _cmd, fut in batch:
                if not fut.done():
                    fut.set_exception(Unavailable(f"coordinator stopped: {exc}"))
            raise
        for (_cmd, fut), outcome in zip(batch, outcomes, strict=True):
            if not fut.done():
                fut.set_result(outcome)
        if self._on_commit is not None:
            self._on_commit(len(batch), time.perf_counter() - started)

    # ------------------------------------------------------------------ snapshots

    def snapshot_due(self, every: int) -> bool:
        return len(self.log.entries) >= every

    async def take_snapshot(self, before_save: BeforeSnapshot | None = None) -> int:
        """Snapshot the applied state, then drop the log it covers. Returns the index."""
        data = {"term": self.term, "state": self.state.snapshot()}
        index = self.state.applied_index
        if before_save is not None:
            # The results store must hold everything up to `index` before the log goes.
            result = before_save(index)
            if asyncio.iscoroutine(result):
                await result
        await asyncio.to_thread(self.snapshots.save, data)
        self._compact_to = index
        self._wake.set()
        return index

    # ------------------------------------------------------------------ hard state

    def _load_term(self) -> int:
        path = self.dir / HARD_STATE
        if not path.exists():
            return 0
        return int(json.loads(path.read_text()).get("term", 0))

    def _save_term(self) -> None:
        path = self.dir / HARD_STATE
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"term": self.term, "vote": self.node_id}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self.dir)
