"""A seeded, deterministic simulation of a Raft cluster of `RaftCore`s.

Each step takes one random action (deliver a message, tick, fsync a node's pending
Ready, propose, read, compact, crash, restart, partition, heal, change membership,
transfer leadership), then checks the safety properties of Figure 3 of the Raft paper
over the whole history:

- election safety: at most one leader per term;
- leader append-only: a leader never overwrites or deletes its entries;
- log matching: an (index, term) names one entry with one predecessor term, everywhere;
- leader completeness: a committed entry is in the log of every leader of a later term,
  and no node ever overwrites a committed entry;
- state machine safety: every node applies the same entry at each index.

ReadIndex answers are checked to be linearizable: a read returns an index at least as
high as any commit index known anywhere when it was asked.

Storage is modelled: a Ready's entries and hard state become durable only when the
harness fsyncs that node (several Readies may wait); a crash loses whatever was not
fsynced. A leader's appends and heartbeats may leave before its fsync, as the shell
allows. The network drops, delays, reorders and duplicates messages and obeys
partitions (symmetric, minority/majority, one-way). `run(seed, steps, nodes)` replays
exactly for the same arguments; a failure names the seed and step.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dtf_common.pb.dtf.v1 import commands_pb2, raft_pb2
from dtf_coordinator.consensus.raft import (
    CANDIDATE,
    LEADER,
    PRE_CANDIDATE,
    NotLeader,
    RaftConfig,
    RaftCore,
    Ready,
    Refusal,
)

MAX_NODES = 7


class SafetyViolation(AssertionError):
    pass


@dataclass
class SimParams:
    drop: float = 0.03
    duplicate: float = 0.02
    reorder: float = 0.25
    max_delay: int = 6  # steps
    early_send: float = 0.5  # a leader's appends leave before its fsync
    # Relative weights of the actions a step may take.
    deliver: float = 50.0
    sync: float = 22.0
    tick: float = 12.0
    propose: float = 6.0
    read: float = 1.0
    compact: float = 0.6
    crash: float = 0.25
    restart: float = 1.5
    partition: float = 0.35
    heal: float = 0.8
    conf_change: float = 0.3
    transfer: float = 0.15

    @classmethod
    def draw(cls, rng: random.Random) -> SimParams:
        """A profile for one seed: some seeds lose many messages, some crash often, some
        never let a leader send before its fsync."""
        return cls(
            drop=rng.choice([0.0, 0.03, 0.15]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            reorder=rng.choice([0.0, 0.25, 0.8]),
            max_delay=rng.choice([0, 6, 20]),
            early_send=rng.choice([0.0, 0.5, 1.0]),
            crash=rng.choice([0.1, 0.25, 0.5]),
            partition=rng.choice([0.1, 0.35, 1.0]),
        )


def draw_config(rng: random.Random) -> RaftConfig:
    return RaftConfig(
        election_ticks_min=10,
        election_ticks_max=20,
        heartbeat_ticks=3,
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        max_entries_per_msg=rng.choice([1, 4, 16]),
        max_bytes_per_msg=rng.choice([64, 4096]),
        max_inflight_msgs=rng.choice([1, 4, 64]),
    )


@dataclass
class Stats:
    steps: int = 0
    elections: int = 0
    max_commit: int = 0
    delivered: int = 0
    dropped: int = 0
    proposals: int = 0
    crashes: int = 0
    snapshots_installed: int = 0
    conf_changes: int = 0
    reads_answered: int = 0
    transfers: int = 0
    convergence_rounds: int = 0


@dataclass(frozen=True)
class MachineState:
    """The state machine, as far as safety cares: how far it applied, and a hash chain
    over every applied entry."""

    index: int = 0
    digest: int = 0


@dataclass
class Packet:
    at: int  # deliverable from this step on
    msg: raft_pb2.RaftMessage
    data: MachineState | None = None  # a snapshot's state travels with MSG_SNAP


@dataclass
class Durable:
    hard_state: raft_pb2.HardState = field(default_factory=raft_pb2.HardState)
    snapshot: raft_pb2.SnapshotMeta | None = None
    snapshot_state: MachineState = field(default_factory=MachineState)
    snapshot_commands: list[bytes] = field(default_factory=list)  # the unit-test network's state machine
    entries: list[commands_pb2.LogEntry] = field(default_factory=list)


@dataclass
class Node:
    id: str
    core: RaftCore | None = None  # None while crashed
    durable: Durable = field(default_factory=Durable)
    machine: MachineState = field(default_factory=MachineState)
    # Readies taken but not yet fsynced, each with the messages still to send.
    pending: list[tuple[Ready, list[raft_pb2.RaftMessage]]] = field(default_factory=list)
    received: dict[int, MachineState] = field(default_factory=dict)  # snapshots that arrived
    seen_commit: int = 0
    leading: tuple[int, int, commands_pb2.LogEntry | None] | None = None  # term, last index, last entry


class Simulation:
    def __init__(
        self, seed: int, nodes: int = 3, params: SimParams | None = None, *, conf_changes: bool = True
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.params = params or SimParams.draw(self.rng)
        self.config = draw_config(self.rng)
        self.conf_changes = conf_changes
        self.stats = Stats()
        self.now = 0
        ids = [f"n{k}" for k in range(1, nodes + 1)]
        self.bootstrap = raft_pb2.ConfState(voters=ids, addresses={i: f"{i}:7000" for i in ids})
        self.nodes: dict[str, Node] = {}
        for node_id in ids:
            self._add_node(node_id)
        self.next_id = nodes + 1
        self.packets: list[Packet] = []
        self.blocked: set[tuple[str, str]] = set()
        # History, for the safety checks.
        self.leaders: dict[int, str] = {}
        self.entries: dict[tuple[int, int], tuple[int | None, int, bytes]] = {}
        self.committed: dict[int, int] = {}
        self.applied: dict[int, tuple[int, int, bytes, int]] = {}
        self.reads: dict[bytes, int] = {}
        self.counter = 0
        self.max_commit = 0
        self._actions: list[tuple[float, Callable[[], object]]] = [
            (self.params.deliver, self.deliver_one),
            (self.params.sync, self.sync_one),
            (self.params.tick, self.tick),
            (self.params.propose, self.propose),
            (self.params.read, self.read),
            (self.params.compact, self.compact),
            (self.params.crash, self.crash),
            (self.params.restart, self.restart),
            (self.params.partition, self.partition),
            (self.params.heal, self.heal_partitions),
            (self.params.conf_change if conf_changes else 0.0, self.change_membership),
            (self.params.transfer, self.transfer),
        ]
        self._weights = [w for w, _ in self._actions]

    # ------------------------------------------------------------------ driving

    def fail(self, what: str) -> SafetyViolation:
        return SafetyViolation(f"seed={self.seed} step={self.stats.steps}: {what}")

    def run(self, steps: int) -> Stats:
        for _ in range(steps):
            try:
                self.step()
            except SafetyViolation:
                raise
            except Exception as exc:
                exc.add_note(f"replay: seed={self.seed} step={self.stats.steps}")
                raise
        return self.stats

    def step(self) -> None:
        self.stats.steps += 1
        self.now += 1
        (_, action) = self.rng.choices(self._actions, self._weights)[0]
        action()
        self.check()

    def alive(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.core is not None]

    def _core(self, node: Node) -> RaftCore:
        assert node.core is not None
        return node.core

    def _add_node(self, node_id: str) -> Node:
        node = Node(node_id)
        self.nodes[node_id] = node
        self._boot(node)
        return node

    def _boot(self, node: Node) -> None:
        d = node.durable
        hard = raft_pb2.HardState()
        hard.CopyFrom(d.hard_state)
        node.core = RaftCore(
            node.id,
            self.config,
            random.Random(self.rng.getrandbits(32)),
            hard_state=hard,
            snapshot=d.snapshot,
            entries=list(d.entries),
            bootstrap=self.bootstrap,
        )
        node.machine = d.snapshot_state
        node.pending = []
        node.received = {}
        node.seen_commit = node.core.commit
        node.leading = None

    # ------------------------------------------------------------------ actions

    def deliver_one(self, *, ignore_delay: bool = False) -> bool:
        eligible = [k for k, p in enumerate(self.packets[:32]) if ignore_delay or p.at <= self.now]
        if not eligible:
            return False
        k = self.rng.choice(eligible) if self.rng.random() < self.params.reorder else eligible[0]
        packet = self.packets.pop(k)
        self._deliver(packet)
        return True

    def _deliver(self, packet: Packet) -> None:
        msg = packet.msg
        sender_id, to = getattr(msg, "from"), msg.to
        dest = self.nodes.get(to)
        sender = self.nodes.get(sender_id)
        lost = (
            dest is None or dest.core is None or (sender_id, to) in self.blocked or self.rng.random() < self.params.drop
        )
        if lost:
            self.stats.dropped += 1
            if msg.type == raft_pb2.MSG_SNAP and sender is not None and sender.core is not None:
                sender.core.report_snapshot(to, False)
            return
        assert dest is not None and dest.core is not None
        if self.rng.random() < self.params.duplicate:
            self.packets.append(Packet(self.now + self.rng.randint(0, self.params.max_delay), msg, packet.data))
        if msg.type == raft_pb2.MSG_SNAP:
            assert packet.data is not None
            dest.received[msg.snapshot.index] = packet.data
            if sender is not None and sender.core is not None:
                sender.core.report_snapshot(to, True)
        self.stats.delivered += 1
        dest.core.step(msg)

    def _send(self, node: Node, msg: raft_pb2.RaftMessage) -> None:
        data: MachineState | None = None
        if msg.type == raft_pb2.MSG_SNAP:
            snap = node.durable.snapshot
            if snap is None or snap.index != msg.snapshot.index:
                # Compacted again since: the transport finds no such snapshot to stream.
                self._core(node).report_snapshot(msg.to, False)
                return
            data = node.durable.snapshot_state
        self.packets.append(Packet(self.now + self.rng.randint(0, self.params.max_delay), msg, data))

    def sync_one(self) -> None:
        waiting = [n for n in self.alive() if n.pending]
        if waiting:
            node = self.rng.choice(waiting)
            # One fsync covers everything written so far (group commit), most of the time.
            count = len(node.pending) if self.rng.random() < 0.8 else 1
            for _ in range(count):
                self.sync(node)

    def sync(self, node: Node) -> None:
        """Fsync the node's oldest pending Ready, then send, apply and advance."""
        core = self._core(node)
        rd, to_send = node.pending.pop(0)
        d = node.durable
        if rd.snapshot is not None:
            state = node.received.get(rd.snapshot.index)
            if state is None:
                raise self.fail(f"{node.id} must install snapshot {rd.snapshot.index}, which never arrived")
            self._check_snapshot(node, state)
            d.snapshot = rd.snapshot
            d.snapshot_state = state
            d.entries = []
            node.machine = state
            self.stats.snapshots_installed += 1
        if rd.entries:
            first = rd.entries[0].index
            base = d.snapshot.index if d.snapshot is not None else 0
            del d.entries[max(0, first - base - 1) :]
            if first != base + len(d.entries) + 1:
                raise self.fail(f"{node.id} was asked to write at {first} after {base + len(d.entries)}: a gap")
            d.entries.extend(rd.entries)
        if rd.hard_state is not None:
            d.hard_state = rd.hard_state
        for msg in to_send:
            self._send(node, msg)
        for entry in rd.committed:
            self._apply(node, entry)
        for rs in rd.read_states:
            self._check_read(node, rs.index, rs.context)
        core.advance(rd)

    def tick(self) -> None:
        if self.rng.random() < 0.1:  # one clock runs ahead now and then
            nodes = self.alive()
            if nodes:
                self._core(self.rng.choice(nodes)).tick()
            return
        for node in self.alive():
            self._core(node).tick()

    def propose(self) -> None:
        leaders = [n for n in self.alive() if self._core(n).role == LEADER]
        if not leaders:
            return
        core = self._core(self.rng.choice(leaders))
        commands = []
        for _ in range(self.rng.randint(1, 3)):
            self.counter += 1
            commands.append(f"{self.seed}:{self.counter}".encode())
        try:
            core.propose(commands)
            self.stats.proposals += len(commands)
        except NotLeader:
            pass

    def read(self) -> None:
        nodes = self.alive()
        if not nodes:
            return
        self.counter += 1
        context = f"read-{self.counter}".encode()
        self.reads[context] = self.max_commit
        self._core(self.rng.choice(nodes)).read_index(context)

    def compact(self) -> None:
        candidates = [n for n in self.alive() if self._core(n).applied > self._core(n).first_index + 4]
        if not candidates:
            return
        node = self.rng.choice(candidates)
        core = self._core(node)
        index = node.machine.index
        if index != core.applied:
            raise self.fail(f"{node.id} applied {node.machine.index}, core says {core.applied}")
        term = core.term_at(index)
        assert term is not None
        core.compact(index, term)
        d = node.durable
        base = d.snapshot.index if d.snapshot is not None else 0
        del d.entries[: index - base]
        d.snapshot = core.snapshot_meta
        d.snapshot_state = node.machine

    def crash(self) -> None:
        nodes = self.alive()
        leaders = [n for n in nodes if self._core(n).role == LEADER]
        if leaders and self.rng.random() < 0.5:
            nodes = leaders  # losing leaders mid-replication is where the trouble lies (Figure 8)
        if nodes:
            node = self.rng.choice(nodes)
            node.core = None
            node.pending = []  # never fsynced: lost
            self.stats.crashes += 1

    def restart(self) -> None:
        down = [n for n in self.nodes.values() if n.core is None]
        if down:
            self._boot(self.rng.choice(down))

    def partition(self) -> None:
        ids = list(self.nodes)
        kind = self.rng.randrange(4)
        if kind == 0:  # symmetric split into two sides
            side = set(self.rng.sample(ids, self.rng.randint(1, len(ids) - 1)))
            self._cut(side, set(ids) - side, both=True)
        elif kind == 1:  # the leader alone in a minority
            leaders = [n.id for n in self.alive() if self._core(n).role == LEADER]
            if leaders:
                leader = self.rng.choice(leaders)
                others = [i for i in ids if i != leader]
                side = {leader, *self.rng.sample(others, (len(ids) - 1) // 2 - 1 if len(ids) > 3 else 0)}
                self._cut(side, set(ids) - side, both=True)
        elif kind == 2:  # one way: a node can send but not hear, or the reverse
            node = self.rng.choice(ids)
            rest = set(ids) - {node}
            if self.rng.random() < 0.5:
                self._cut({node}, rest, both=False)
            else:
                self._cut(rest, {node}, both=False)
        else:  # a single link, one way
            a, b = self.rng.sample(ids, 2)
            self.blocked.add((a, b))

    def _cut(self, a: set[str], b: set[str], *, both: bool) -> None:
        for x in sorted(a):
            for y in sorted(b):
                self.blocked.add((x, y))
                if both:
                    self.blocked.add((y, x))

    def heal_partitions(self) -> None:
        self.blocked.clear()

    def change_membership(self) -> None:
        leaders = [n for n in self.alive() if self._core(n).role == LEADER]
        if not leaders:
            return
        core = self._core(self.rng.choice(leaders))
        conf = core.conf_state
        voters = list(conf.voters)
        choice = self.rng.randrange(3)
        change = raft_pb2.ConfChange()
        if choice == 0 and len(voters) > 3:
            change.type = raft_pb2.ConfChange.REMOVE_NODE
            change.node_id = self.rng.choice(voters)
        elif choice == 0 and len(self.nodes) < MAX_NODES:
            node_id = f"n{self.next_id}"
            change.type = raft_pb2.ConfChange.ADD_NODE
            change.node_id = node_id
            change.address = f"{node_id}:7000"
        elif conf.disabled:
            change.type = raft_pb2.ConfChange.ENABLE_NODE
            change.node_id = conf.disabled[0]
        else:
            change.type = raft_pb2.ConfChange.DISABLE_NODE
            change.node_id = self.rng.choice(voters)
        if not change.node_id:
            return
        try:
            core.propose_conf_change(change)
        except Refusal:  # not the leader, a change in flight, the last voter
            return
        self.stats.conf_changes += 1
        if change.type == raft_pb2.ConfChange.ADD_NODE:
            self.next_id += 1
            self._add_node(change.node_id)  # started as its operator would: empty, waiting to hear

    def transfer(self) -> None:
        leaders = [n for n in self.alive() if self._core(n).role == LEADER]
        if not leaders:
            return
        core = self._core(self.rng.choice(leaders))
        others = [v for v in core.conf_state.voters if v != core.node_id]
        if others:
            core.transfer_leadership(self.rng.choice(others))
            self.stats.transfers += 1

    # ------------------------------------------------------------------ checks

    def check(self) -> None:
        for node in self.alive():
            core = self._core(node)
            if core.has_ready():
                self._take_ready(node, core)
            if core.role == LEADER:
                self._check_leader(node, core)
            else:
                node.leading = None
            if core.commit > node.seen_commit:
                self._record_commit(node, core)

    def _take_ready(self, node: Node, core: RaftCore) -> None:
        rd = core.ready()
        self._check_entries(node, core, rd.entries)
        later = rd.messages
        durable = node.durable.hard_state
        if (
            core.role == LEADER
            and core.term == durable.term
            and core.vote == durable.vote
            and self.rng.random() < self.params.early_send
        ):
            early = {raft_pb2.MSG_APP, raft_pb2.MSG_HEARTBEAT, raft_pb2.MSG_SNAP, raft_pb2.MSG_TIMEOUT_NOW}
            later = []
            for msg in rd.messages:
                if msg.type in early:
                    self._send(node, msg)
                else:
                    later.append(msg)
        node.pending.append((rd, later))

    def _check_entries(self, node: Node, core: RaftCore, entries: list[commands_pb2.LogEntry]) -> None:
        """Log matching, checked as entries enter a log (every entry enters through a
        Ready): one (index, term) names one entry with one predecessor term."""
        prev_term = core.term_at(entries[0].index - 1) if entries else None
        for e in entries:
            value = (prev_term, e.type, e.command)
            seen = self.entries.setdefault((e.index, e.term), value)
            if seen != value:
                raise self.fail(f"log matching: {node.id} holds a different entry at ({e.index}, {e.term})")
            prev_term = e.term
        # A node never rewrites its log at or below its own commit index. (A node that
        # never held a committed entry, such as a stale leader, may hold another there.)
        if entries and entries[0].index <= node.seen_commit:
            raise self.fail(f"{node.id} rewrites its log from {entries[0].index}, below its commit {node.seen_commit}")

    def _check_leader(self, node: Node, core: RaftCore) -> None:
        term = core.term
        holder = self.leaders.setdefault(term, node.id)
        if holder != node.id:
            raise self.fail(f"election safety: {holder} and {node.id} both lead term {term}")
        last = core.last_index
        if node.leading is None or node.leading[0] != term:
            self.stats.elections += 1
            self._check_completeness(node, core)
        else:
            _, was_last, was_entry = node.leading
            entry = core._log.entry(was_last)
            if last < was_last or (was_entry is not None and entry is not None and entry is not was_entry):
                raise self.fail(f"leader append-only: {node.id} changed its log at or before {was_last}")
        node.leading = (term, last, core._log.entry(last))

    def _check_completeness(self, node: Node, core: RaftCore) -> None:
        """Every entry committed so far is in a new leader's log (§5.4)."""
        for index, term in self.committed.items():
            if index > core.commit and index >= core.first_index:
                have = core.term_at(index)
                if have != term:
                    raise self.fail(
                        f"leader completeness: new leader {node.id} (term {core.term}) has term {have} "
                        f"at committed index {index} (term {term})"
                    )

    def _record_commit(self, node: Node, core: RaftCore) -> None:
        for index in range(max(node.seen_commit + 1, core.first_index), core.commit + 1):
            term = core.term_at(index)
            assert term is not None
            seen = self.committed.setdefault(index, term)
            if seen != term:
                raise self.fail(f"{node.id} committed term {term} at {index}, others term {seen}")
            self._check_later_leaders(index, term)
        node.seen_commit = core.commit
        if core.commit > self.max_commit:
            self.max_commit = core.commit
            self.stats.max_commit = core.commit

    def _check_later_leaders(self, index: int, term: int) -> None:
        for other in self.alive():
            core = self._core(other)
            later = core.role == LEADER and core.term > term and index >= core.first_index
            if later and core.term_at(index) != term:
                raise self.fail(f"leader completeness: leader {other.id} (term {core.term}) lacks committed {index}")

    def _apply(self, node: Node, entry: commands_pb2.LogEntry) -> None:
        """State machine safety: the same entry at each index on every node."""
        machine = node.machine
        if entry.index <= machine.index:
            return  # covered by an installed snapshot
        if entry.index != machine.index + 1:
            raise self.fail(f"{node.id} applies {entry.index} after {machine.index}")
        digest = zlib.crc32(entry.command, zlib.crc32(entry.index.to_bytes(8, "little"), machine.digest))
        value = (entry.term, entry.type, entry.command, digest)
        seen = self.applied.setdefault(entry.index, value)
        if seen != value:
            raise self.fail(f"state machine safety: {node.id} applied a different entry or history at {entry.index}")
        node.machine = MachineState(entry.index, digest)

    def _check_snapshot(self, node: Node, state: MachineState) -> None:
        seen = self.applied.get(state.index)
        if seen is not None and seen[3] != state.digest:
            raise self.fail(f"{node.id} installs a snapshot at {state.index} that differs from what others applied")

    def _check_read(self, node: Node, index: int, context: bytes) -> None:
        floor = self.reads.get(context)
        if floor is None:
            raise self.fail(f"{node.id} answered read {context!r}, which was never asked")
        if index < floor:
            raise self.fail(f"linearizability: read {context!r} got index {index}, {floor} was already committed")
        self.stats.reads_answered += 1

    # ------------------------------------------------------------------ liveness

    def converge(self, max_rounds: int = 300) -> int:
        """Heal everything, then let time pass on a reliable network until a leader
        leads every voter and all agree on the commit index and the applied state."""
        self.blocked.clear()
        for node in self.nodes.values():
            if node.core is None:
                self._boot(node)
        self.params = SimParams(drop=0.0, duplicate=0.0, reorder=0.0)
        for rounds in range(1, max_rounds + 1):
            self._stop_removed()
            for node in self.alive():
                self._core(node).tick()
            self.check()
            for _ in range(100):
                busy = False
                while self.deliver_one(ignore_delay=True):
                    busy = True
                    self.check()
                for node in self.alive():
                    while node.pending:
                        busy = True
                        self.sync(node)
                        self.check()
                if not busy:
                    break
            if self._converged():
                self.stats.convergence_rounds = rounds
                return rounds
        raise self.fail(f"liveness: no convergence after {max_rounds} rounds on a healed network: {self._describe()}")

    def _stop_removed(self) -> None:
        """Like an operator, stop nodes the latest committed membership removed but which
        still count themselves voters: never told of their removal, they may campaign for
        ever (§4.2.3 of the thesis), and without PreVote or CheckQuorum they disrupt."""
        ahead = max(self.alive(), key=lambda n: self._core(n).commit)
        members = set(self._core(ahead).conf_state.voters)
        for node in self.alive():
            if node.id not in members and node.id in self._core(node).conf_state.voters:
                node.core = None
                node.pending = []

    def _converged(self) -> bool:
        leaders = [n for n in self.alive() if self._core(n).role == LEADER]
        if not leaders:
            return False
        leader = self._core(max(leaders, key=lambda n: self._core(n).term))
        if leader.term_at(leader.commit) != leader.term or leader.commit != leader.last_index:
            return False
        for voter in leader.conf_state.voters:
            node = self.nodes[voter]
            core = self._core(node)
            if core.leader_id != leader.node_id or core.commit != leader.commit or core.applied != core.commit:
                return False
            if node.machine != self.nodes[leader.node_id].machine:
                return False
        return True

    def _describe(self) -> str:
        return "; ".join(f"{n.id}: {n.core.status() if n.core is not None else 'down'}" for n in self.nodes.values())


def run(seed: int, steps: int, nodes: int = 3, *, conf_changes: bool = True) -> Stats:
    """Simulate `steps` random steps of a cluster, then heal it and check it converges."""
    sim = Simulation(seed, nodes, conf_changes=conf_changes)
    sim.run(steps)
    sim.converge()
    return sim.stats


# ---------------------------------------------------------------------- unit-test harness


def message(kind: int, frm: str, to: str, term: int, **fields: object) -> raft_pb2.RaftMessage:
    """A RaftMessage; `from` is a Python keyword, hence `frm`."""
    return raft_pb2.RaftMessage(type=kind, to=to, term=term, **fields, **{"from": frm})  # type: ignore[arg-type]


def entries(*terms: int, start: int = 1) -> list[commands_pb2.LogEntry]:
    """Entries with the given terms at consecutive indexes from `start`."""
    return [
        commands_pb2.LogEntry(term=t, index=start + k, command=f"{start + k}@{t}".encode()) for k, t in enumerate(terms)
    ]


# Raft as the paper describes it: no PreVote, no CheckQuorum, a heartbeat every tick.
CLASSIC = RaftConfig(
    election_ticks_min=10, election_ticks_max=20, heartbeat_ticks=1, pre_vote=False, check_quorum=False
)
VOTERS = ("a", "b", "c")


def node(
    node_id: str = "a",
    voters: Sequence[str] = VOTERS,
    *,
    log: Sequence[int] = (),
    term: int = 0,
    vote: str = "",
    commit: int = 0,
    config: RaftConfig = CLASSIC,
    seed: int = 0,
) -> RaftCore:
    """A core whose durable log holds entries of the given terms from index 1."""
    return RaftCore(
        node_id,
        config,
        random.Random(seed),
        hard_state=raft_pb2.HardState(term=term, vote=vote, commit=commit),
        entries=entries(*log),
        bootstrap=raft_pb2.ConfState(voters=list(voters)),
    )


def make_candidate(core: RaftCore) -> list[raft_pb2.RaftMessage]:
    core.campaign()
    assert core.role == CANDIDATE
    return take(core)


def make_leader(core: RaftCore) -> list[raft_pb2.RaftMessage]:
    """Win an election with every other voter's vote; returns what the new leader sent."""
    core.campaign()  # a single voter wins at once
    others = [v for v in core.conf_state.voters if v != core.node_id]
    for voter in others:
        if core.role == PRE_CANDIDATE:
            core.step(message(raft_pb2.MSG_PRE_VOTE_RESP, voter, core.node_id, core.term + 1))
    for voter in others:
        if core.role == CANDIDATE:
            core.step(message(raft_pb2.MSG_VOTE_RESP, voter, core.node_id, core.term))
    assert core.role == LEADER
    return take(core)


def ack_all(core: RaftCore, index: int) -> list[raft_pb2.RaftMessage]:
    for voter in core.conf_state.voters:
        if voter != core.node_id:
            core.step(message(raft_pb2.MSG_APP_RESP, voter, core.node_id, core.term, index=index))
    return take(core)


def take(core: RaftCore) -> list[raft_pb2.RaftMessage]:
    """Carry out every Ready as a shell would (everything persisted and applied at once)
    and return the messages it sent."""
    out: list[raft_pb2.RaftMessage] = []
    while core.has_ready():
        rd = core.ready()
        out.extend(rd.messages)
        core.advance(rd)
    return out


@dataclass
class Peer:
    core: RaftCore
    durable: Durable
    applied: list[commands_pb2.LogEntry] = field(default_factory=list)
    read_states: list[tuple[int, bytes]] = field(default_factory=list)
    snapshot_commands: list[bytes] = field(default_factory=list)  # what a snapshot holds
    received: dict[int, list[bytes]] = field(default_factory=dict)

    @property
    def commands(self) -> list[bytes]:
        """The state machine: every applied NORMAL command, the empty no-ops left out."""
        return self.snapshot_commands + [e.command for e in self.applied if e.type == 0 and e.command]


class Network:
    """etcd-io/raft's test `network`: cores wired by a synchronous, lossless queue that a
    test can cut, isolate, filter and recover. Every Ready is persisted and applied at
    once; `crash` keeps only what was persisted."""

    def __init__(
        self, *ids: str, config: RaftConfig | None = None, seed: int = 0, durable: dict[str, Durable] | None = None
    ) -> None:
        self.config = config or RaftConfig()
        self.seed = seed
        self.bootstrap = raft_pb2.ConfState(voters=list(ids), addresses={i: f"{i}:7000" for i in ids})
        self.peers: dict[str, Peer] = {}
        self.down: dict[str, Durable] = dict(durable or {})  # a node starts from what is here
        self.cut_links: set[tuple[str, str]] = set()
        self.drop_types: set[int] = set()
        self.sent: list[raft_pb2.RaftMessage] = []
        for node_id in ids:
            self.start(node_id)

    def start(self, node_id: str, *, bootstrap: raft_pb2.ConfState | None = None) -> RaftCore:
        durable = self.down.pop(node_id, None) or Durable()
        core = RaftCore(
            node_id,
            self.config,
            random.Random(f"{self.seed}:{node_id}"),
            hard_state=durable.hard_state,
            snapshot=durable.snapshot,
            entries=list(durable.entries),
            bootstrap=bootstrap if bootstrap is not None else self.bootstrap,
        )
        self.peers[node_id] = Peer(core, durable, snapshot_commands=list(durable.snapshot_commands))
        return core

    def crash(self, node_id: str) -> None:
        self.down[node_id] = self.peers.pop(node_id).durable

    def core(self, node_id: str) -> RaftCore:
        return self.peers[node_id].core

    def leader(self) -> str | None:
        leaders = [i for i, p in self.peers.items() if p.core.role == LEADER]
        return max(leaders, key=lambda i: self.peers[i].core.term) if leaders else None

    # -------------------------------------------------------------- faults

    def cut(self, a: str, b: str) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, node_id: str) -> None:
        for other in [*self.peers, *self.down]:
            if other != node_id:
                self.cut(node_id, other)

    def recover(self) -> None:
        self.cut_links.clear()
        self.drop_types.clear()

    # -------------------------------------------------------------- driving

    def flush(self, node_id: str) -> list[raft_pb2.RaftMessage]:
        """Carry out the node's Readies; returns the messages to send."""
        peer = self.peers[node_id]
        core, d = peer.core, peer.durable
        out: list[raft_pb2.RaftMessage] = []
        while core.has_ready():
            rd = core.ready()
            if rd.snapshot is not None:
                d.snapshot, d.entries, peer.applied = rd.snapshot, [], []
                peer.snapshot_commands = peer.received[rd.snapshot.index]
                d.snapshot_commands = list(peer.snapshot_commands)
            if rd.entries:
                base = d.snapshot.index if d.snapshot is not None else 0
                del d.entries[rd.entries[0].index - base - 1 :]
                d.entries.extend(rd.entries)
            if rd.hard_state is not None:
                d.hard_state = rd.hard_state
            for entry in rd.committed:
                if entry.index > len(peer.applied) + self._base(peer):
                    peer.applied.append(entry)
            peer.read_states.extend((rs.index, rs.context) for rs in rd.read_states)
            out.extend(rd.messages)
            core.advance(rd)
        return out

    @staticmethod
    def _base(peer: Peer) -> int:
        snap = peer.durable.snapshot
        return snap.index if snap is not None else 0

    def send(self, *msgs: raft_pb2.RaftMessage) -> None:
        """Deliver messages, and every message they cause, until the network is quiet."""
        queue = list(msgs)
        for node_id in list(self.peers):
            queue.extend(self.flush(node_id))
        while queue:
            m = queue.pop(0)
            self.sent.append(m)
            frm = getattr(m, "from")
            if (frm, m.to) in self.cut_links or m.type in self.drop_types or m.to not in self.peers:
                if m.type == raft_pb2.MSG_SNAP and frm in self.peers:
                    self.peers[frm].core.report_snapshot(m.to, False)
                    queue.extend(self.flush(frm))
                continue
            if m.type == raft_pb2.MSG_SNAP:
                sender = self.peers[frm]
                self.peers[m.to].received[m.snapshot.index] = list(sender.snapshot_commands)
                sender.core.report_snapshot(m.to, True)
            self.peers[m.to].core.step(m)
            queue.extend(self.flush(m.to))
            if frm in self.peers:
                queue.extend(self.flush(frm))  # report_snapshot may have made it send

    def stabilize(self) -> None:
        self.send()

    def tick(self, times: int = 1, *, only: str | None = None) -> None:
        for _ in range(times):
            for node_id, peer in self.peers.items():
                if only is None or node_id == only:
                    peer.core.tick()
            self.stabilize()

    def elect(self, node_id: str) -> None:
        self.core(node_id).campaign()
        self.stabilize()
        assert self.core(node_id).role == LEADER, self.core(node_id).status()

    def propose(self, node_id: str, *commands: bytes) -> tuple[int, int]:
        result = self.core(node_id).propose(list(commands))
        self.stabilize()
        return result

    def compact(self, node_id: str) -> int:
        """Snapshot `node_id` at its applied index, as the shell does."""
        peer = self.peers[node_id]
        core = peer.core
        index = core.applied
        term = core.term_at(index)
        assert term is not None
        core.compact(index, term)
        peer.snapshot_commands = peer.commands
        base = self._base(peer)
        peer.applied = []
        d = peer.durable
        del d.entries[: index - base]
        d.snapshot = core.snapshot_meta
        d.snapshot_commands = list(peer.snapshot_commands)
        return index
