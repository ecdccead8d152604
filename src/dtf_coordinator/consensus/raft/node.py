"""The asyncio shell around the pure Raft core: one loop owns the core.

Each turn of the loop feeds the core what arrived since the last turn (messages, ticks,
proposals, read requests), takes one `Ready`, and carries it out: messages a leader
may send early go out at once (followers persist in parallel with the leader's own
fsync; the core counts the leader only for entries it has persisted), then entries and
hard state are made durable off the event loop, committed entries are applied to the
state machine, and the remaining messages (answers that promise durability) are sent.
Whatever arrives during the fsync waits for the next turn, so busy periods batch
themselves: many proposals share one write and one fsync.

A write on a follower is forwarded to the leader, which stamps its time and appends
it; the follower answers its caller when it applies that index itself and finds the
term the leader gave. A different term there means the entry was overwritten by a
newer leader and never applied: the caller gets `Unavailable` and may retry safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from dtf_common.clock import wall_ms
from dtf_common.errors import Conflict, InvalidArgument, NotLeader, Unavailable
from dtf_common.pb.dtf.v1 import commands_pb2, raft_pb2
from dtf_coordinator.consensus.base import BeforeSnapshot, EffectSink, ReplicatedState
from dtf_coordinator.consensus.raft.core import RaftConfig, RaftCore, Ready
from dtf_coordinator.consensus.raft.errors import NotLeader as CoreNotLeader
from dtf_coordinator.consensus.raft.errors import Refusal
from dtf_coordinator.consensus.raft.storage import RaftStorage, decode_snapshot, encode_snapshot
from dtf_coordinator.consensus.raft.transport_port import RaftTransport, Receiver
from dtf_coordinator.consensus.status import LeaderChange, MembershipAction, MembershipChange, NodeStatus, Role
from dtf_coordinator.state import Outcome

log = logging.getLogger("dtf.raft")

# A leader's messages that promise nothing about its own disk may leave before its fsync.
EARLY_TYPES = frozenset({raft_pb2.MSG_APP, raft_pb2.MSG_HEARTBEAT, raft_pb2.MSG_SNAP, raft_pb2.MSG_TIMEOUT_NOW})


S = TypeVar("S", bound=ReplicatedState)

_CONF_CHANGE_TYPES = {
    MembershipAction.ADD: raft_pb2.ConfChange.ADD_NODE,
    MembershipAction.REMOVE: raft_pb2.ConfChange.REMOVE_NODE,
    MembershipAction.DISABLE: raft_pb2.ConfChange.DISABLE_NODE,
    MembershipAction.ENABLE: raft_pb2.ConfChange.ENABLE_NODE,
}


def conf_change(change: MembershipChange) -> raft_pb2.ConfChange:
    """A membership change as the Raft log carries it."""
    return raft_pb2.ConfChange(type=_CONF_CHANGE_TYPES[change.action], node_id=change.node_id, address=change.address)


def _replaced() -> Unavailable:
    return Unavailable("a new leader replaced this write before it committed; it was not applied, retry")


@dataclass(frozen=True)
class RaftSettings:
    node_id: str
    bind: str  # host:port of this node's Raft service (for the gRPC transport)
    peers: dict[str, str]  # every voter's Raft address, this node's included
    tick_ms: int = 10
    election_ticks_min: int = 15
    election_ticks_max: int = 30
    heartbeat_ticks: int = 5
    write_wait_s: float = 10.0  # how long a write waits for a leader before Unavailable
    # A coordinator without high availability: one voter that can reach no one (see
    # `standalone`). It needs no clock ticks, and it refuses to change its membership.
    standalone: bool = False


Appended = asyncio.Future[tuple[int, int]]  # resolves to (term, index) once the leader appended


@dataclass
class _Waiter:
    term: int
    future: asyncio.Future[Outcome | None]  # None: an entry without a command (membership)


@dataclass
class _Inbox:
    messages: list[raft_pb2.RaftMessage] = field(default_factory=list)
    ticks: int = 0
    proposals: list[tuple[commands_pb2.Command, asyncio.Future[tuple[int, int]]]] = field(default_factory=list)
    conf_changes: list[tuple[raft_pb2.ConfChange, asyncio.Future[tuple[int, int]]]] = field(default_factory=list)
    reads: list[tuple[bytes, asyncio.Future[int]]] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)
    snapshot_reports: list[tuple[str, bool]] = field(default_factory=list)
    campaign: bool = False


class RaftNode(Generic[S]):
    """Implements the `Consensus` port with Raft among the configured coordinators.

    The caller gives it the state machine to drive (`state`, as it starts out: a
    snapshot on disk replaces it with `state.restored(...)`) and the transport to its
    peers (gRPC between processes, or `InmemTransport` in one process for tests).
    """

    def __init__(
        self,
        directory: Path | str,
        state: S,
        settings: RaftSettings,
        transport: RaftTransport,
        *,
        clock: Callable[[], int] = wall_ms,
        on_commit: Callable[[int, float], None] | None = None,
        on_leader_change: Callable[[LeaderChange], None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.settings = settings
        self.node_id = settings.node_id
        self.state = state
        self.storage = RaftStorage(self.dir)
        self.transport = transport
        self.core: RaftCore | None = None
        self.leader_history: list[LeaderChange] = []
        self.last_contact: dict[str, int] = {}  # peer -> wall ms of its latest message
        # Hooks for what a snapshot carries beside the state (the results store's rows).
        self.export_extra: Callable[[], dict[str, Any]] | None = None
        self.on_snapshot_installed: Callable[[S, dict[str, Any]], None] | None = None
        self.started_ms = 0
        self._seed = seed
        self._clock = clock
        self._last_ms = 0
        self._on_commit = on_commit
        self._on_leader_change = on_leader_change
        self._sink: EffectSink = lambda _effects: None
        self._inbox = _Inbox()
        self._wake = asyncio.Event()
        self._leader_known = asyncio.Event()
        self._stepped_down = asyncio.Event()
        self._max_ticks_per_turn = max(1, settings.election_ticks_min // 3)
        self._waiters: dict[int, _Waiter] = {}
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._read_seq = 0
        self._catch_up: list[tuple[int, asyncio.Future[None]]] = []
        self._applied_term = 0
        self._pending_snapshots: dict[int, bytes] = {}
        self._leader: str | None = None
        self._role: Role = "follower"
        self._election_started: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._failed: BaseException | None = None
        self._compact_to: tuple[int, int, bytes] | None = None
        self._persisted_term = 0
        self._persisted_vote = ""

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sink: EffectSink) -> None:
        self._sink = sink
        loaded = await asyncio.to_thread(self.storage.load)
        self._persisted_term, self._persisted_vote = loaded.hard_state.term, loaded.hard_state.vote
        bootstrap = raft_pb2.ConfState(voters=sorted(self.settings.peers), addresses=self.settings.peers)
        if loaded.snapshot is not None and loaded.state is not None:
            if not loaded.snapshot.conf.voters:
                # Written before a single coordinator ran Raft: the membership is the configured one.
                loaded.snapshot.conf.CopyFrom(bootstrap)
            self.state = self.state.restored(loaded.state)
            self._applied_term = loaded.snapshot.term
            self._sink(self.state.drain_effects())
        self.core = RaftCore(
            self.node_id,
            RaftConfig(
                election_ticks_min=self.settings.election_ticks_min,
                election_ticks_max=self.settings.election_ticks_max,
                heartbeat_ticks=self.settings.heartbeat_ticks,
            ),
            random.Random(self._seed),
            hard_state=loaded.hard_state,
            snapshot=loaded.snapshot,
            entries=loaded.entries,
            bootstrap=bootstrap,
        )
        self.transport.set_peers(self._peer_addresses(self.core.conf_state))
        await self.transport.start(
            Receiver(
                deliver=self._deliver,
                snapshot_arrived=self._snapshot_arrived,
                forwarded=self._forwarded,
                unreachable=self._peer_unreachable,
                snapshot_sent=self._snapshot_sent,
                snapshot_source=lambda: self.storage.snapshot_bytes,
            )
        )
        self.started_ms = wall_ms()
        if len(self.core.conf_state.voters) == 1 and self.core.conf_state.voters[0] == self.node_id:
            self._inbox.campaign = True  # a cluster of one need not wait out an election timeout
        self._tasks = [asyncio.create_task(self._loop(), name="raft-loop")]
        if not self.settings.standalone:
            # Alone, a node has no heartbeats to send and no election to time out.
            self._tasks.append(asyncio.create_task(self._ticker(), name="raft-ticker"))
        self._wake.set()
        log.info(
            "raft node %s: term %d, snapshot at %d, %d log entries (%d bytes of torn tail dropped)",
            self.node_id,
            loaded.hard_state.term,
            loaded.snapshot.index if loaded.snapshot else 0,
            len(loaded.entries),
            loaded.truncated_bytes,
        )
        if self.settings.standalone:
            await self._caught_up_alone()

    async def _caught_up_alone(self) -> None:
        """Alone, the node leads as soon as its vote is durable: return once it does and
        has applied its whole log, as a caller of a single coordinator expects. A read
        barrier gives up after two election timeouts, which a long log or a slow disk can
        outlast; alone, nothing but a storage failure stops the node getting there."""
        while True:
            try:
                await self.read_barrier()
                return
            except Unavailable:
                if self._failed is not None or not self._tasks or self._tasks[0].done():
                    raise

    async def stop(self, *, hand_over: bool = True) -> None:
        if hand_over:
            await self._hand_over()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        await self.transport.stop()
        self._fail_all(Unavailable("coordinator stopping"))
        self.storage.close()

    async def _hand_over(self) -> None:
        """A leader that stops on purpose first hands leadership to its most up-to-date
        enabled peer (leadership transfer, thesis §3.10), so the cluster does not wait out
        an election timeout."""
        if self.core is None or not self.is_leader() or not self._tasks:
            return
        progress = self.core.status().progress
        disabled = set(self.core.conf_state.disabled)
        peers = [p for p in progress if p != self.node_id and p not in disabled]
        if not peers:
            return
        target = max(peers, key=lambda p: progress[p].match)
        self._stepped_down.clear()
        self.transfer_leadership(target)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._stepped_down.wait(), 2 * self.settings.election_ticks_max * self.settings.tick_ms / 1000
            )
        log.info("node %s handed leadership to %s before stopping", self.node_id, self._leader)

    def _fail_all(self, error: Exception) -> None:
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.set_exception(error)
        self._waiters.clear()
        for fut in self._reads.values():
            if not fut.done():
                fut.set_exception(error)
        self._reads.clear()
        inbox = self._inbox
        for _, pfut in [*inbox.proposals, *inbox.conf_changes]:
            if not pfut.done():
                pfut.set_exception(error)
        for _, rfut in inbox.reads:
            if not rfut.done():
                rfut.set_exception(error)
        self._inbox = _Inbox()

    # ------------------------------------------------------------------ the Consensus port

    def is_leader(self) -> bool:
        return self._role == "leader" and self._failed is None

    def leader_hint(self) -> str | None:
        return self._leader

    @property
    def term(self) -> int:
        return self.core.term if self.core is not None else 0

    @property
    def role(self) -> Role:
        return self._role

    async def propose(self, command: commands_pb2.Command) -> Outcome:
        self._check_running()
        deadline = time.monotonic() + self.settings.write_wait_s
        while True:
            leader = await self._await_leader(deadline)
            try:
                if leader == self.node_id:
                    fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
                    self._inbox.proposals.append((command, fut))
                    self._wake.set()
                    term, index = await fut
                else:
                    term, index = await self.transport.forward(leader, command.SerializeToString())
            except NotLeader as exc:
                # Leadership moved between our look and the append: look again, within the deadline.
                self._note_hint(exc.context.get("leader_hint"))
                if time.monotonic() > deadline:
                    raise Unavailable("no leader accepted the write in time; try again") from None
                await asyncio.sleep(self.settings.tick_ms / 1000)
                continue
            try:
                outcome = await asyncio.wait_for(self._await_applied(term, index), self.settings.write_wait_s)
            except TimeoutError:
                self._waiters.pop(index, None)
                raise Unavailable(
                    f"the write was appended at index {index} but not committed within "
                    f"{self.settings.write_wait_s:g} s (is a quorum reachable?); it may still be applied later"
                ) from None
            if outcome is None:
                raise Unavailable(f"log entry {index} holds no command; the write was not applied, retry")
            return outcome

    async def _forwarded(self, command_bytes: bytes) -> tuple[int, int]:
        """A follower's write, as the leader receives it."""
        self._check_running()
        if self._role != "leader":
            raise NotLeader("not the leader", leader_hint=self._leader)
        command = commands_pb2.Command()
        command.ParseFromString(command_bytes)
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._inbox.proposals.append((command, fut))
        self._wake.set()
        return await fut

    async def _await_applied(self, term: int, index: int) -> Outcome | None:
        if index <= self.state.applied_index:
            raise Unavailable("the write's index was covered by a snapshot before it could be read back; retry")
        fut: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        older = self._waiters.get(index)
        if older is not None and not older.future.done():
            # Another leader's entry took this index before ours committed: that write is gone.
            older.future.set_exception(_replaced())
        self._waiters[index] = _Waiter(term, fut)
        return await fut

    async def _await_leader(self, deadline: float) -> str:
        while self._leader is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable("the cluster has no leader (an election is in progress or a quorum is lost)")
            self._leader_known.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._leader_known.wait(), remaining)
            self._check_running()
        return self._leader

    async def read_barrier(self) -> int:
        """Wait until this node's state reflects every write acknowledged before the call
        (ReadIndex): a stale leader cut off from its majority never gets past this."""
        self._check_running()
        self._read_seq += 1
        ctx = f"{self.node_id}:{self._read_seq}".encode()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inbox.reads.append((ctx, fut))
        self._wake.set()
        wait = 2 * self.settings.election_ticks_max * self.settings.tick_ms / 1000
        try:
            index = await asyncio.wait_for(fut, wait)
        except TimeoutError:
            self._reads.pop(ctx, None)
            raise Unavailable("no quorum confirmed this node's view in time (linearizable read refused)") from None
        if self.state.applied_index < index:
            caught_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._catch_up.append((index, caught_up))
            await caught_up
        return index

    async def change_membership(self, change: MembershipChange) -> int:
        """Propose a membership change on the leader; returns once it is applied here."""
        self._check_running()
        if self.settings.standalone:
            wanted = f"{change.action} {change.node_id}"
            raise Conflict(
                f"a coordinator without high availability has no membership to change ({wanted})", field="node_id"
            )
        if not change.node_id:
            # Checked here, in the caller's task: inside the Raft loop it would be a bug
            # that stops the node for everyone.
            raise InvalidArgument("a membership change must name a node", field="node_id")
        if self._role != "leader":
            raise NotLeader("membership changes go to the leader", leader_hint=self._leader)
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._inbox.conf_changes.append((conf_change(change), fut))
        self._wake.set()
        term, index = await fut
        await self._await_applied(term, index)
        return index

    def transfer_leadership(self, to: str) -> None:
        if self.settings.standalone and to != self.node_id:
            raise Conflict(f"{self.node_id} is the only node of the cluster: it cannot hand over to {to}")
        self._inbox.transfers.append(to)
        self._wake.set()

    def status(self) -> NodeStatus:
        core = self.core
        if core is None:
            applied = self.state.applied_index
            return NodeStatus(self.node_id, "stopped", 0, None, applied, applied, applied, (self.node_id,))
        raw = core.status()
        conf = core.conf_state
        if self.is_leader():
            leader: str | None = self.node_id
        else:
            leader = self._leader if self._leader != self.node_id else None
        return NodeStatus(
            node_id=self.node_id,
            role=self._role,
            term=core.term,
            leader_id=leader,
            commit_index=raw.commit,
            applied_index=raw.applied,
            last_index=raw.last_index,
            voters=tuple(sorted(conf.voters)),
            disabled=frozenset(conf.disabled),
            progress=raw.progress,
            last_contact=dict(self.last_contact),
            leader_history=tuple(self.leader_history),
            started_ms=self.started_ms,
            can_change_membership=not self.settings.standalone,
            failure=str(self._failed) if self._failed is not None else None,
        )

    @property
    def conf_state(self) -> raft_pb2.ConfState:
        assert self.core is not None
        return self.core.conf_state

    def _check_running(self) -> None:
        if self._failed is not None:
            raise Unavailable(f"node stopped after a storage failure: {self._failed}")
        if not self._tasks or self._tasks[0].done():
            raise Unavailable("node is not running")

    def _note_hint(self, hint: object) -> None:
        if isinstance(hint, str) and hint and self._leader is None:
            self._leader = hint
            self._leader_known.set()

    # ------------------------------------------------------------------ inputs from the transport

    def _peer_addresses(self, conf: raft_pb2.ConfState) -> dict[str, str]:
        """Where to reach each voter: this node's own configuration wins (the replicated
        addresses are what the proposing node saw, e.g. its own 127.0.0.1 bind address);
        the log's addresses serve only nodes added at run time."""
        voters = set(conf.voters)
        addresses = {k: v for k, v in conf.addresses.items() if k in voters}
        addresses.update({k: v for k, v in self.settings.peers.items() if k in voters})
        return addresses

    def _deliver(self, msg: raft_pb2.RaftMessage) -> None:
        self.last_contact[getattr(msg, "from")] = wall_ms()
        self._inbox.messages.append(msg)
        self._wake.set()

    def _snapshot_arrived(self, msg: raft_pb2.RaftMessage, data: bytes) -> None:
        meta, _state, _extra = decode_snapshot(data)
        msg.snapshot.CopyFrom(meta)  # what the bytes hold is what gets installed
        self._pending_snapshots = {meta.index: data}
        self._deliver(msg)

    def _peer_unreachable(self, peer: str) -> None:
        self._inbox.unreachable.add(peer)
        self._wake.set()

    def _snapshot_sent(self, peer: str, ok: bool) -> None:
        self._inbox.snapshot_reports.append((peer, ok))
        self._wake.set()

    async def _ticker(self) -> None:
        interval = self.settings.tick_ms / 1000
        next_at = time.monotonic()
        while True:
            # Ticks missed while the event loop was busy are dropped, not replayed in a
            # burst: a burst would expire election timers before the heartbeats that
            # queued up meanwhile are read.
            next_at = max(next_at + interval, time.monotonic())
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self._inbox.ticks += 1
            self._wake.set()

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        assert self.core is not None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._feed(self.core)
                while self.core.has_ready():
                    await self._handle(self.core, self.core.ready())
                    self._feed(self.core)
                if self._compact_to is not None:
                    index, term, data = self._compact_to
                    self._compact_to = None
                    await asyncio.to_thread(self.storage.save_snapshot, data, index)
                    self.core.compact(index, term)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # storage failure or broken invariant: stop, never guess
            self._failed = exc
            self._role = "failed"
            log.exception("raft loop failed; node %s stops", self.node_id)
            self._fail_all(Unavailable(f"coordinator stopped: {exc}"))
            raise

    def _feed(self, core: RaftCore) -> None:
        inbox, self._inbox = self._inbox, _Inbox()
        for peer in inbox.unreachable:
            core.report_unreachable(peer)
        for peer, ok in inbox.snapshot_reports:
            core.report_snapshot(peer, ok)
        for msg in inbox.messages:
            core.step(msg)
        # A slow turn (a long fsync, a busy machine) must not become a burst of ticks: a
        # burst can span two CheckQuorum rounds and depose a healthy leader. Time simply
        # runs slower for Raft while the loop is late, as with Go's time.Ticker.
        for _ in range(min(inbox.ticks, self._max_ticks_per_turn)):
            core.tick()
        if inbox.campaign:
            core.campaign()
        if inbox.proposals:
            self._propose(core, inbox.proposals)
        for change, cfut in inbox.conf_changes:
            try:
                cfut.set_result(core.propose_conf_change(change))
            except Refusal as exc:
                # Expected (not the leader, a change in flight): already the dtf error the
                # caller sees. A ValueError here is a malformed change, a bug: not caught.
                cfut.set_exception(exc)
        for ctx, rfut in inbox.reads:
            self._reads[ctx] = rfut
            core.read_index(ctx)
        for to in inbox.transfers:
            with contextlib.suppress(CoreNotLeader):
                core.transfer_leadership(to)

    def _propose(
        self, core: RaftCore, proposals: list[tuple[commands_pb2.Command, asyncio.Future[tuple[int, int]]]]
    ) -> None:
        live = [(cmd, fut) for cmd, fut in proposals if not fut.done()]
        if not live:
            return  # every caller gave up (a cancelled request) before its turn: nothing to append
        # Leader-stamped time, never going backwards in log order.
        self._last_ms = max(self._last_ms, self._clock())
        for cmd, _ in live:
            cmd.time_ms = self._last_ms
        try:
            term, last = core.propose([cmd.SerializeToString() for cmd, _ in live])
        except CoreNotLeader as exc:
            for _, fut in live:
                fut.set_exception(NotLeader("not the leader", leader_hint=exc.leader_id))
            return
        first = last - len(live) + 1
        for n, (_, fut) in enumerate(live):
            fut.set_result((term, first + n))

    async def _handle(self, core: RaftCore, rd: Ready) -> None:
        started = time.perf_counter()
        if rd.soft_state is not None:
            self._role_changed(rd.soft_state.leader_id, rd.soft_state.role, core.term)
        durable_unchanged = rd.hard_state is None or (
            rd.hard_state.term == self._persisted_term and rd.hard_state.vote == self._persisted_vote
        )
        early: list[raft_pb2.RaftMessage] = []
        late: list[raft_pb2.RaftMessage] = []
        for msg in rd.messages:
            (early if durable_unchanged and msg.type in EARLY_TYPES else late).append(msg)
        if early:
            self.transport.send(early)
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        if rd.entries or (rd.hard_state is not None and not durable_unchanged):
            await asyncio.to_thread(self.storage.persist, rd.hard_state, rd.entries)
        elif rd.hard_state is not None:
            self.storage.persist(rd.hard_state, [])  # commit index only: nothing to sync
        if rd.hard_state is not None:
            self._persisted_term, self._persisted_vote = rd.hard_state.term, rd.hard_state.vote
        if rd.committed:
            self._apply(rd.committed)
        for read in rd.read_states:
            fut = self._reads.pop(read.context, None)
            if fut is not None and not fut.done():
                fut.set_result(read.index)
        if rd.conf_state is not None:
            self.transport.set_peers(self._peer_addresses(rd.conf_state))
        core.advance(rd)
        if late:
            self.transport.send(late)
        if rd.committed and self._on_commit is not None:
            self._on_commit(len(rd.committed), time.perf_counter() - started)

    def _install(self, meta: raft_pb2.SnapshotMeta) -> None:
        data = self._pending_snapshots.pop(meta.index, None)
        if data is None:
            raise RuntimeError(f"core asked to install snapshot {meta.index}, which never arrived")
        _meta, state, extra = decode_snapshot(data)
        self.storage.install_snapshot(data, meta.index)
        self.state = self.state.restored(state)
        self._applied_term = meta.term
        self._sink(self.state.drain_effects())
        if self.on_snapshot_installed is not None:
            # The results store takes the snapshot's rows; its upserts make that idempotent.
            self.on_snapshot_installed(self.state, extra)
        for index in [i for i in self._waiters if i <= meta.index]:
            waiter = self._waiters.pop(index)
            if not waiter.future.done():
                waiter.future.set_exception(Unavailable("outcome unknown: replaced by a snapshot; read it back"))
        log.info("node %s installed a snapshot at index %d (term %d)", self.node_id, meta.index, meta.term)

    def _apply(self, entries: list[commands_pb2.LogEntry]) -> None:
        for entry in entries:
            if entry.index <= self.state.applied_index:
                continue  # covered by an installed snapshot
            outcome: Outcome | None = None
            if entry.type == commands_pb2.ENTRY_NORMAL and entry.command:
                command = commands_pb2.Command()
                command.ParseFromString(entry.command)
                self._last_ms = max(self._last_ms, command.time_ms)
                outcome = self.state.apply(entry.index, command)
            else:
                self.state.skip_to(entry.index)  # a leader's no-op, or membership handled by the core
            if entry.term > self._applied_term and self._waiters:
                self._fail_superseded(entry.index, entry.term)
            self._applied_term = entry.term
            waiter = self._waiters.pop(entry.index, None)
            if waiter is not None and not waiter.future.done():
                if waiter.term != entry.term:
                    waiter.future.set_exception(_replaced())
                else:
                    waiter.future.set_result(outcome)
        self._sink(self.state.drain_effects())
        if self._catch_up:
            applied, waiting = self.state.applied_index, self._catch_up
            self._catch_up = [(i, f) for i, f in waiting if i > applied]
            for i, f in waiting:
                if i <= applied and not f.done():
                    f.set_result(None)

    def _fail_superseded(self, index: int, term: int) -> None:
        """Terms never decrease along a committed log: once an entry of `term` is applied
        at `index`, a write waiting at a later index under an older term can never commit."""
        for at in [i for i, w in self._waiters.items() if i > index and w.term < term]:
            waiter = self._waiters.pop(at)
            if not waiter.future.done():
                waiter.future.set_exception(_replaced())

    def _role_changed(self, leader: str | None, role: str, term: int) -> None:
        previous_leader, previous_role = self._leader, self._role
        self._role = cast(Role, role)  # the core's roles are a subset of the port's
        if previous_role == "leader" and role != "leader":
            self._stepped_down.set()
        if (role in ("pre_candidate", "candidate") or leader is None) and self._election_started is None:
            self._election_started = time.monotonic()
        if leader != previous_leader:
            self._leader = leader
            took: float | None = None
            if leader is not None:
                self._leader_known.set()
                if self._election_started is not None:
                    took = time.monotonic() - self._election_started
                self._election_started = None
            reason = self._reason(previous_leader, leader, previous_role, role)
            change = LeaderChange(previous_leader, leader, term, reason, wall_ms(), took)
            if leader is not None or previous_leader is not None:
                self.leader_history.append(change)
                del self.leader_history[:-100]
                if self._on_leader_change is not None:
                    self._on_leader_change(change)

    @staticmethod
    def _reason(previous: str | None, current: str | None, previous_role: str, role: str) -> str:
        if current is None:
            return "leader_lost" if previous_role != "leader" else "stepped_down"
        if previous is None:
            return "elected" if role == "leader" else "leader_discovered"
        return "leader_timeout"

    # ------------------------------------------------------------------ snapshots

    def snapshot_due(self, every: int) -> bool:
        return len(self.storage.log.entries) >= every and self.state.applied_index > self.storage.log.base_index

    async def take_snapshot(self, before_save: BeforeSnapshot | None = None) -> int:
        """Snapshot the applied state (with `export_extra()` beside it, once `before_save`
        has run); the loop then writes it and compacts the log."""
        assert self.core is not None
        index, term = self.state.applied_index, self._applied_term
        # The membership as of the snapshot's index: the current one may already be ahead.
        meta = raft_pb2.SnapshotMeta(index=index, term=term, conf=self.core.conf_state_at(index))
        state = self.state.snapshot()
        if before_save is not None:
            result = before_save(index)
            if asyncio.iscoroutine(result):
                await result
        extra = await asyncio.to_thread(self.export_extra) if self.export_extra is not None else None
        data = await asyncio.to_thread(encode_snapshot, meta, state, extra)
        self._compact_to = (index, term, data)
        self._wake.set()
        return index
