"""Raft as a pure state machine, after etcd-io/raft: messages in; entries to persist,
messages to send and entries to apply out. No sockets, files, clocks or threads:
time is `tick()`, randomness a `random.Random` the caller seeds.

Section numbers refer to the Raft paper (Ongaro and Ousterhout, 2014: §5) and to
Ongaro's thesis (2014: §3.10 leadership transfer, §4.1 single-server membership
changes, §6.4 ReadIndex, §9.6 PreVote, §10.2.1 the leader's parallel disk write).

The shell drives a loop (see `consensus/raft/node.py`):

    core.step(msg) / core.tick() / core.propose(...) ...
    while core.has_ready():
        rd = core.ready()
        persist rd.snapshot (it replaces the whole log), then rd.entries (writing at
            rd.entries[0].index, dropping stored entries from there on), then rd.hard_state
        send rd.messages               # only after the persisting above
        apply rd.committed in order    # ConfChange entries are already in conf_state
        core.advance(rd)

Readies are handed out in order and must be carried out in that order. Messages that
promise nothing about this node's disk (a leader's MSG_APP, MSG_HEARTBEAT, MSG_SNAP,
MSG_TIMEOUT_NOW) may leave before the fsync when the term and vote are already durable:
the leader counts itself towards a commit only for entries `advance` reported persisted.
Every other message (votes, append answers) must wait for the fsync.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from dtf_common.pb.dtf.v1 import commands_pb2, raft_pb2
from dtf_coordinator.consensus.raft.errors import ChangeInProgress, LastVoter, NotLeader, TermNotCommitted
from dtf_coordinator.consensus.raft.log import RaftLog
from dtf_coordinator.consensus.raft.progress import PROBE, REPLICATE, SNAPSHOT, Progress
from dtf_coordinator.consensus.status import PeerProgress

FOLLOWER = "follower"
PRE_CANDIDATE = "pre_candidate"
CANDIDATE = "candidate"
LEADER = "leader"

# The context of a vote started by MSG_TIMEOUT_NOW: voters drop their leader stickiness.
TRANSFER_CONTEXT = b"transfer"

MSG_PRE_VOTE = raft_pb2.MSG_PRE_VOTE
MSG_PRE_VOTE_RESP = raft_pb2.MSG_PRE_VOTE_RESP
MSG_VOTE = raft_pb2.MSG_VOTE
MSG_VOTE_RESP = raft_pb2.MSG_VOTE_RESP
MSG_APP = raft_pb2.MSG_APP
MSG_APP_RESP = raft_pb2.MSG_APP_RESP
MSG_HEARTBEAT = raft_pb2.MSG_HEARTBEAT
MSG_HEARTBEAT_RESP = raft_pb2.MSG_HEARTBEAT_RESP
MSG_SNAP = raft_pb2.MSG_SNAP
MSG_TIMEOUT_NOW = raft_pb2.MSG_TIMEOUT_NOW
MSG_READ_INDEX = raft_pb2.MSG_READ_INDEX
MSG_READ_INDEX_RESP = raft_pb2.MSG_READ_INDEX_RESP

ENTRY_NORMAL = commands_pb2.ENTRY_NORMAL
ENTRY_CONF_CHANGE = commands_pb2.ENTRY_CONF_CHANGE

# Only a leader sends these: receiving one at a newer term names the new leader.
_FROM_LEADER = frozenset({MSG_APP, MSG_HEARTBEAT, MSG_SNAP})

# How many maximum election timeouts a disabled voter waits, beyond its own, before it
# campaigns as a last resort.
_LAST_RESORT_TIMEOUTS = 3


@dataclass(frozen=True)
class RaftConfig:
    election_ticks_min: int = 15  # randomised election timeout in [min, max] ticks, re-drawn on each reset
    election_ticks_max: int = 30
    heartbeat_ticks: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 1024
    max_bytes_per_msg: int = 4 * 1024 * 1024
    max_inflight_msgs: int = 256  # appends in flight per follower in replicate state

    def __post_init__(self) -> None:
        if not 1 <= self.heartbeat_ticks < self.election_ticks_min <= self.election_ticks_max:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks_min <= election_ticks_max")
        if self.max_entries_per_msg < 1 or self.max_bytes_per_msg < 1 or self.max_inflight_msgs < 1:
            raise ValueError("message and inflight limits must be positive")


@dataclass
class SoftState:
    leader_id: str | None
    role: str  # "follower" | "pre_candidate" | "candidate" | "leader"


@dataclass(frozen=True, slots=True)
class CoreStatus:
    """One reading of the core: its role, log positions and membership; `progress` (each
    peer's replication, this node's included) and `transferee` on a leader only."""

    node_id: str
    role: str
    term: int
    vote: str
    leader_id: str | None
    commit: int
    applied: int
    persisted: int
    first_index: int
    last_index: int
    snapshot_index: int
    voters: tuple[str, ...]
    disabled: tuple[str, ...]
    progress: dict[str, PeerProgress] = field(default_factory=dict)
    transferee: str | None = None


@dataclass
class ReadState:
    """A linearizable read may be served once this node has applied `index`."""

    index: int
    context: bytes


@dataclass
class Ready:
    soft_state: SoftState | None = None  # leader or role changed since the last Ready
    hard_state: raft_pb2.HardState | None = None  # term/vote/commit changed: persist before sending
    entries: list[commands_pb2.LogEntry] = field(default_factory=list)
    snapshot: raft_pb2.SnapshotMeta | None = None  # install (its data came with MSG_SNAP) before applying
    committed: list[commands_pb2.LogEntry] = field(default_factory=list)
    messages: list[raft_pb2.RaftMessage] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    conf_state: raft_pb2.ConfState | None = None  # membership changed


@dataclass
class _ReadRequest:
    index: int  # the leader's commit index when the read arrived
    requester: str
    acks: set[str]


def apply_conf_change(conf: raft_pb2.ConfState, change: raft_pb2.ConfChange) -> raft_pb2.ConfState | None:
    """The membership after `change`, or None if it changes nothing."""
    voters = list(conf.voters)
    disabled = list(conf.disabled)
    addresses = dict(conf.addresses)
    node = change.node_id
    if change.type == raft_pb2.ConfChange.ADD_NODE:
        if node not in voters:
            voters.append(node)
        if change.address:
            addresses[node] = change.address
    elif change.type == raft_pb2.ConfChange.REMOVE_NODE:
        voters = [v for v in voters if v != node]
        disabled = [v for v in disabled if v != node]
        addresses.pop(node, None)
    elif change.type == raft_pb2.ConfChange.DISABLE_NODE:
        if node in voters and node not in disabled:
            disabled.append(node)
    elif change.type == raft_pb2.ConfChange.ENABLE_NODE:
        disabled = [v for v in disabled if v != node]
    updated = raft_pb2.ConfState(voters=sorted(voters), disabled=sorted(disabled), addresses=addresses)
    return None if updated == conf else updated


def _copy_conf(conf: raft_pb2.ConfState) -> raft_pb2.ConfState:
    copy = raft_pb2.ConfState()
    copy.CopyFrom(conf)
    return copy


class RaftCore:
    """One Raft peer. Not thread-safe: one owner calls everything.

    Built from what the node has on disk: `hard_state`, the last `snapshot` (index, term
    and membership; None if there is none) and the `entries` after it. The membership is
    the snapshot's, or `bootstrap` when there is no snapshot, with every ConfChange entry
    up to the durable commit index applied on top. The state machine restarts from the
    snapshot: entries up to the commit index come out again in Ready.committed.

    Roles are "follower", "pre_candidate", "candidate" and "leader". A voter listed as
    disabled replicates and votes but does not lead: its election timer starts no
    campaign, it refuses MSG_TIMEOUT_NOW, and as leader it hands over to an enabled
    voter. One exception keeps the cluster live: a disabled voter that has heard from no
    leader for several election timeouts campaigns, since it may hold the only copy of
    entries every enabled voter needs, and then hands over at once.
    """

    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: raft_pb2.HardState | None = None,
        snapshot: raft_pb2.SnapshotMeta | None = None,
        entries: Sequence[commands_pb2.LogEntry] = (),
        bootstrap: raft_pb2.ConfState | None = None,
    ) -> None:
        if not node_id:
            raise ValueError("a Raft node needs an id")
        self.node_id = node_id
        self._cfg = config
        self._rng = rng
        self._from: dict[str, Any] = {"from": node_id}  # `from` is a Python keyword: passed as **kwargs
        hs = hard_state if hard_state is not None else raft_pb2.HardState()
        snap_index = int(snapshot.index) if snapshot is not None else 0
        snap_term = int(snapshot.term) if snapshot is not None else 0
        for k, e in enumerate(entries):
            if e.index != snap_index + 1 + k:
                raise ValueError(f"entry {k} has index {e.index}, expected {snap_index + 1 + k}")
        self._log = RaftLog(snap_index, snap_term, entries, durable=True)

        base = snapshot.conf if snapshot is not None else bootstrap
        conf = _copy_conf(base) if base is not None else raft_pb2.ConfState()
        # The compaction point a lagging follower gets as MSG_SNAP, with the membership there.
        self._snapshot = raft_pb2.SnapshotMeta(index=snap_index, term=snap_term, conf=conf)
        self._conf_history: list[tuple[int, raft_pb2.ConfState]] = [(snap_index, conf)]
        self._set_conf(conf)
        self._conf_changed = True
        self._pending_conf_index = 0

        self._term = int(hs.term)
        self._vote = str(hs.vote)
        self._role = FOLLOWER
        self._leader_id: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._leaderless_ticks = 0  # since this node last heard from (or was) a leader
        self._timeout = config.election_ticks_min
        self._votes: dict[str, bool] = {}
        self._prs: dict[str, Progress] = {}
        self._transferee: str | None = None
        self._msgs: list[raft_pb2.RaftMessage] = []
        self._read_states: list[ReadState] = []
        self._pending_reads: dict[bytes, _ReadRequest] = {}
        self._reads_waiting: list[tuple[bytes, str]] = []  # until the leader commits in its term
        self._bcast_pending = False
        self._pending_snapshot: raft_pb2.SnapshotMeta | None = None
        self._reset(self._term)

        # Restart: replay up to the durable commit (the shell re-applies from the snapshot).
        self._commit_to(max(snap_index, min(int(hs.commit), self._log.last_index)))
        self._prev_hard = (int(hs.term), str(hs.vote), int(hs.commit))
        self._prev_soft: tuple[str | None, str] = (None, FOLLOWER)

    # ------------------------------------------------------------------ read-only views

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> str:
        return self._vote

    @property
    def commit(self) -> int:
        return self._log.commit

    @property
    def applied(self) -> int:
        return self._log.applied

    @property
    def role(self) -> str:
        return self._role

    @property
    def leader_id(self) -> str | None:
        return self._leader_id

    @property
    def conf_state(self) -> raft_pb2.ConfState:
        return _copy_conf(self._conf)

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def first_index(self) -> int:
        return self._log.first_index

    @property
    def snapshot_meta(self) -> raft_pb2.SnapshotMeta:
        meta = raft_pb2.SnapshotMeta()
        meta.CopyFrom(self._snapshot)
        return meta

    def conf_state_at(self, index: int) -> raft_pb2.ConfState:
        """The membership as of `index` (between the compaction point and the commit
        index): what a snapshot of the state machine at applied `index` must carry."""
        if not self._log.snapshot_index <= index <= self._log.commit:
            raise ValueError(f"membership at {index} is not known here")
        return self._conf_at(index)

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or not in the log."""
        return self._log.term(index)

    def status(self) -> CoreStatus:
        log = self._log
        leading = self._role == LEADER
        return CoreStatus(
            node_id=self.node_id,
            role=self._role,
            term=self._term,
            vote=self._vote,
            leader_id=self._leader_id,
            commit=log.commit,
            applied=log.applied,
            persisted=log.persisted,
            first_index=log.first_index,
            last_index=log.last_index,
            snapshot_index=log.snapshot_index,
            voters=tuple(self._voters),
            disabled=tuple(sorted(self._disabled)),
            progress={
                peer: PeerProgress(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    recent_active=pr.recent_active or peer == self.node_id,
                    inflight=len(pr.inflights),
                )
                for peer, pr in self._prs.items()
            }
            if leading
            else {},
            transferee=self._transferee if leading else None,
        )

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        if self._role == LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (a pre-vote first when enabled); no-op for a leader or a
        node that may not lead (not a voter, or disabled)."""
        if self._role != LEADER:
            self._campaign(transfer=False)

    def propose(self, commands: Sequence[bytes]) -> tuple[int, int]:
        """Append NORMAL entries; returns (term, index of the last one)."""
        self._check_accepting()
        if not commands:
            raise ValueError("nothing to propose")
        term, index = self._term, self._log.last_index
        entries = []
        for command in commands:
            index += 1
            entries.append(commands_pb2.LogEntry(term=term, index=index, command=command))
        self._append_own(entries)
        return term, index

    def propose_conf_change(self, change: raft_pb2.ConfChange) -> tuple[int, int]:
        """Append one membership change (§4.1: one server at a time, the next only after
        this one commits; and only once the leader has committed in its own term, so that
        a change left uncommitted by an earlier leader cannot overlap this one)."""
        self._check_accepting()
        log = self._log
        if not change.node_id:
            raise ValueError("a membership change must name a node")
        if self._pending_conf_index > log.commit:
            raise ChangeInProgress()
        if log.term(log.commit) != self._term:
            raise TermNotCommitted()
        if change.type == raft_pb2.ConfChange.REMOVE_NODE and self._voters == [change.node_id]:
            raise LastVoter(change.node_id)
        index = log.last_index + 1
        entry = commands_pb2.LogEntry(
            term=self._term, index=index, command=change.SerializeToString(), type=ENTRY_CONF_CHANGE
        )
        self._append_own([entry])
        self._pending_conf_index = index
        return self._term, index

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read (§6.4); the answer is a ReadState carrying `context`
        in a later Ready. Without a known leader the request is dropped."""
        if not context:
            raise ValueError("a read needs a non-empty context to be answered by")
        if self._role == LEADER:
            self._leader_read(context, self.node_id)
        elif self._leader_id is not None:
            self._send(MSG_READ_INDEX, self._leader_id, context=context)

    def transfer_leadership(self, to: str) -> None:
        """§3.10: stop taking proposals, bring `to` up to date, then tell it to campaign at
        once. A transfer not done within an election timeout is abandoned. Targets that
        may not lead (unknown, disabled, this node) are ignored."""
        if self._role != LEADER:
            raise NotLeader(self._leader_id)
        pr = self._prs.get(to)
        if to == self.node_id or pr is None or to in self._disabled or to not in self._voter_set:
            return
        if self._transferee == to:
            return
        self._transferee = to
        self._election_elapsed = 0
        if pr.match == self._log.last_index:
            self._send(MSG_TIMEOUT_NOW, to)
        else:
            self._send_append(to)

    def report_unreachable(self, peer: str) -> None:
        pr = self._prs.get(peer) if self._role == LEADER else None
        if pr is not None and pr.state == REPLICATE:
            pr.become_probe()  # whatever was in flight is probably lost

    def report_snapshot(self, peer: str, ok: bool) -> None:
        pr = self._prs.get(peer) if self._role == LEADER else None
        if pr is None or pr.state != SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.paused = True  # probe again on the next heartbeat answer

    def compact(self, index: int, term: int) -> None:
        """The shell durably snapshotted the state machine at applied `index`."""
        log = self._log
        if index <= log.snapshot_index:
            return
        if index > log.applied:
            raise ValueError(f"cannot compact to {index}: only {log.applied} is applied")
        if log.term(index) != term:
            raise ValueError(f"entry {index} has term {log.term(index)}, not {term}")
        conf = self._conf_at(index)
        log.compact(index, term)
        self._snapshot = raft_pb2.SnapshotMeta(index=index, term=term, conf=conf)
        keep = 0
        for k, (at, _) in enumerate(self._conf_history):
            if at <= index:
                keep = k
        del self._conf_history[:keep]

    # ------------------------------------------------------------------ Ready / advance

    def has_ready(self) -> bool:
        log = self._log
        return bool(
            self._msgs
            or self._bcast_pending
            or self._read_states
            or self._conf_changed
            or self._pending_snapshot is not None
            or log.has_unstable()
            or log.has_committed()
            or (self._leader_id, self._role) != self._prev_soft
            or (self._term, self._vote, log.commit) != self._prev_hard
        )

    def ready(self) -> Ready:
        if self._bcast_pending:
            self._flush_appends()
        log = self._log
        rd = Ready()
        soft = (self._leader_id, self._role)
        if soft != self._prev_soft:
            rd.soft_state = SoftState(*soft)
            self._prev_soft = soft
        hard = (self._term, self._vote, log.commit)
        if hard != self._prev_hard:
            rd.hard_state = raft_pb2.HardState(term=hard[0], vote=hard[1], commit=hard[2])
            self._prev_hard = hard
        if log.has_unstable():
            rd.entries = log.take_unstable()
        rd.snapshot, self._pending_snapshot = self._pending_snapshot, None
        if log.has_committed():
            rd.committed = log.take_committed()
        rd.messages, self._msgs = self._msgs, []
        rd.read_states, self._read_states = self._read_states, []
        if self._conf_changed:
            rd.conf_state = _copy_conf(self._conf)
            self._conf_changed = False
        return rd

    def advance(self, ready: Ready) -> None:
        """The shell persisted ready.hard_state/entries/snapshot and applied ready.committed."""
        log = self._log
        if ready.snapshot is not None:
            index = int(ready.snapshot.index)
            log.persisted = max(log.persisted, index)
            log.applied = max(log.applied, index)
            if self._role == FOLLOWER and self._leader_id is not None:
                self._send(MSG_APP_RESP, self._leader_id, index=index)  # installed: resume appends after it
        if ready.entries:
            log.stable_to(ready.entries)
        if ready.committed:
            log.applied = max(log.applied, int(ready.committed[-1].index))
        if self._role == LEADER:
            pr = self._prs.get(self.node_id)
            if pr is not None and log.persisted > pr.match:
                pr.match = log.persisted
                if self._maybe_commit():
                    self._on_leader_commit()

    # ------------------------------------------------------------------ step

    def step(self, m: raft_pb2.RaftMessage) -> None:
        """Handle one message. Messages for another node or without a sender are dropped;
        malformed or stale ones are ignored, never raised on."""
        sender: str = getattr(m, "from")
        t = m.type
        if m.to != self.node_id or not sender or sender == self.node_id or not MSG_PRE_VOTE <= t <= MSG_READ_INDEX_RESP:
            return
        if m.term > self._term:
            if t in (MSG_VOTE, MSG_PRE_VOTE) and m.context != TRANSFER_CONTEXT and self._in_lease(t):
                return  # leader stickiness: we heard from a live leader recently (§9.6)
            if t == MSG_PRE_VOTE or (t == MSG_PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes terms (§9.6)
            else:
                self._become_follower(int(m.term), sender if t in _FROM_LEADER else None)
        elif m.term < self._term:
            if t in _FROM_LEADER and (self._cfg.check_quorum or self._cfg.pre_vote):
                # A stale leader (or one cut off and now back) learns the newer term and steps
                # down; without this, a node whose term ran ahead could never rejoin.
                self._send(MSG_APP_RESP, sender)
            elif t == MSG_PRE_VOTE:
                self._send(MSG_PRE_VOTE_RESP, sender, reject=True)
            return
        if t in (MSG_VOTE, MSG_PRE_VOTE):
            self._handle_vote(m, sender)
        elif self._role == LEADER:
            self._step_leader(m, sender)
        elif self._role == FOLLOWER:
            self._step_follower(m, sender)
        else:
            self._step_candidate(m, sender)

    def _in_lease(self, t: raft_pb2.RaftMessageType) -> bool:
        """Heard from a leader within the minimum election timeout. PreVote always honours
        this (§9.6); a real vote only with CheckQuorum, as in etcd."""
        if self._leader_id is None or self._election_elapsed >= self._cfg.election_ticks_min:
            return False
        return t == MSG_PRE_VOTE or self._cfg.check_quorum

    def _handle_vote(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        """§5.2: one vote per term, first come first served; §5.4.1: only for a log at
        least as up to date as ours. A pre-vote is a vote at m.term that binds nobody."""
        pre = m.type == MSG_PRE_VOTE
        resp = MSG_PRE_VOTE_RESP if pre else MSG_VOTE_RESP
        can_vote = self._vote == sender or (not self._vote and self._leader_id is None) or (pre and m.term > self._term)
        if can_vote and self._log.is_up_to_date(int(m.index), int(m.log_term)):
            self._send(resp, sender, term=int(m.term))
            if not pre:
                self._election_elapsed = 0
                self._vote = sender
        else:
            self._send(resp, sender, reject=True)

    def _step_follower(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        t = m.type
        if t in _FROM_LEADER:
            self._election_elapsed = 0
            self._leaderless_ticks = 0
            self._leader_id = sender
            if t == MSG_APP:
                self._handle_append(m, sender)
            elif t == MSG_HEARTBEAT:
                self._handle_heartbeat(m, sender)
            else:
                self._handle_snapshot(m, sender)
        elif t == MSG_TIMEOUT_NOW:
            self._campaign(transfer=True)  # a disabled node refuses: it is not promotable
        elif t == MSG_READ_INDEX_RESP:
            self._read_states.append(ReadState(int(m.index), bytes(m.context)))

    def _step_candidate(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        t = m.type
        if t in _FROM_LEADER:
            # Someone won this term (§5.2): follow it.
            self._become_follower(self._term, sender)
            self._step_follower(m, sender)
            return
        if self._role == PRE_CANDIDATE:
            # A grant answers our pre-vote at term+1; a rejection comes at our own term.
            if t != MSG_PRE_VOTE_RESP or (not m.reject and m.term != self._term + 1):
                return
        elif t != MSG_VOTE_RESP:
            return
        if sender in self._voter_set:
            self._votes.setdefault(sender, not m.reject)
        granted, rejected = self._tally()
        if granted >= self._quorum:
            if self._role == PRE_CANDIDATE:
                self._elect(transfer=False)
            else:
                self._become_leader()
        elif rejected > len(self._voters) - self._quorum:
            self._become_follower(self._term, None)

    def _step_leader(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        t = m.type
        if t == MSG_APP_RESP:
            self._handle_append_response(m, sender)
        elif t == MSG_HEARTBEAT_RESP:
            self._handle_heartbeat_response(m, sender)
        elif t == MSG_READ_INDEX:
            self._leader_read(bytes(m.context), sender)

    # ------------------------------------------------------------------ follower side

    def _handle_append(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        """§5.3: accept entries only where the logs match at (index, log_term); overwrite
        a conflicting suffix, never a committed entry."""
        log = self._log
        index, log_term = int(m.index), int(m.log_term)
        entries: Sequence[commands_pb2.LogEntry] = m.entries
        n = len(entries)
        if n and (entries[0].index != index + 1 or entries[-1].index != index + n):
            return  # not a contiguous run after `index`: malformed
        commit = log.commit
        if index < commit:
            if n == 0 or entries[-1].index <= commit:
                self._send(MSG_APP_RESP, sender, index=commit)
                return
            # The committed prefix matches any current leader's log (§5.4.3): skip it.
            entries = entries[commit - index :]
            index, log_term = commit, int(log.term(commit) or 0)
        if log.term(index) != log_term:
            hint, hint_term = log.find_conflict_by_term(int(m.index), int(m.log_term))
            self._send(MSG_APP_RESP, sender, index=int(m.index), reject=True, reject_hint=hint, log_term=hint_term)
            return
        if entries:
            conflict = log.find_conflict(entries)
            if conflict:
                if conflict <= commit:
                    return  # would overwrite a committed entry: no correct leader sends this
                log.append(entries[conflict - index - 1 :])
        last_new = index + len(entries)
        self._commit_to(min(int(m.commit), last_new))
        self._send(MSG_APP_RESP, sender, index=last_new)

    def _handle_heartbeat(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        # The leader sends min(match, commit): never past what matches its log here.
        self._commit_to(min(int(m.commit), self._log.last_index))
        self._send(MSG_HEARTBEAT_RESP, sender, context=m.context)

    def _handle_snapshot(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        snap = m.snapshot
        log = self._log
        index, term = int(snap.index), int(snap.term)
        if index <= log.commit:
            self._send(MSG_APP_RESP, sender, index=log.commit)
            return
        if log.term(index) == term:
            # We hold the snapshot's last entry, so the log up to it matches: just commit.
            self._commit_to(index)
            self._send(MSG_APP_RESP, sender, index=log.commit)
            return
        log.restore(index, term)
        conf = _copy_conf(snap.conf)
        self._snapshot = raft_pb2.SnapshotMeta(index=index, term=term, conf=conf)
        self._pending_snapshot = raft_pb2.SnapshotMeta(index=index, term=term, conf=conf)
        self._conf_history = [(index, conf)]
        self._set_conf(conf)
        self._conf_changed = True
        # The answer (MSG_APP_RESP at `index`) goes out from advance(), once installed.

    # ------------------------------------------------------------------ leader side

    def _handle_append_response(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        pr = self._prs.get(sender)
        log = self._log
        if pr is None or m.index > log.last_index:
            return
        pr.recent_active = True
        if m.reject:
            # Fast backup: the follower names the last index where our logs may match.
            hint = int(m.reject_hint)
            if m.log_term > 0:
                hint, _ = log.find_conflict_by_term(hint, int(m.log_term))
            if pr.maybe_decrease_to(int(m.index), hint):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._send_append(sender)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(int(m.index)) and not (pr.state == PROBE and pr.match == m.index):
            return  # stale or duplicated
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT:
            if pr.match >= log.snapshot_index:
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(int(m.index))
        if self._maybe_commit():
            self._on_leader_commit()
            if self._role != LEADER:
                return
        elif was_paused:
            self._send_append(sender)
        while self._send_append(sender, send_empty=False):
            pass
        if sender == self._transferee and pr.match == log.last_index:
            self._send(MSG_TIMEOUT_NOW, sender)  # §3.10: caught up, take over now

    def _handle_heartbeat_response(self, m: raft_pb2.RaftMessage, sender: str) -> None:
        pr = self._prs.get(sender)
        if pr is None:
            return
        pr.recent_active = True
        pr.paused = False
        if pr.state == REPLICATE and pr.inflights.full():
            pr.inflights.free_first()  # a lost append must not block the window for good
        if pr.match < self._log.last_index or pr.state == PROBE:
            self._send_append(sender)
        if m.context:
            self._ack_read(bytes(m.context), sender)

    def _send_append(self, to: str, send_empty: bool = True) -> bool:
        """Send `to` the next batch after pr.next - 1, or a snapshot if that is compacted.
        False if nothing was sent (paused, or nothing new and `send_empty` is False)."""
        pr = self._prs.get(to)
        if pr is None or pr.is_paused():
            return False
        log = self._log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        cfg = self._cfg
        entries = log.entries_from(pr.next, cfg.max_entries_per_msg, cfg.max_bytes_per_msg)
        if not entries and not send_empty:
            return False
        m = raft_pb2.RaftMessage(
            type=MSG_APP, to=to, term=self._term, index=prev, log_term=prev_term, commit=log.commit, **self._from
        )
        if entries:
            m.entries.extend(entries)
            pr.sent_entries(len(entries), int(entries[-1].index))
        else:
            pr.sent_entries(0, prev)
        self._msgs.append(m)
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        if not pr.recent_active or self._snapshot.index == 0:
            return False  # don't stream a snapshot at a peer that is not answering
        self._msgs.append(
            raft_pb2.RaftMessage(type=MSG_SNAP, to=to, term=self._term, snapshot=self._snapshot, **self._from)
        )
        pr.become_snapshot(int(self._snapshot.index))
        return True

    def _flush_appends(self) -> None:
        """Send what proposals appended since the last Ready: one batch per follower per
        Ready however many propose() calls there were, up to the inflight window."""
        self._bcast_pending = False
        if self._role != LEADER:
            return
        for peer in self._prs:
            if peer != self.node_id:
                while self._send_append(peer, send_empty=False):
                    pass

    def _bcast_append(self) -> None:
        for peer in self._prs:
            if peer != self.node_id:
                self._send_append(peer)

    def _bcast_heartbeat(self, context: bytes) -> None:
        commit = self._log.commit
        for peer, pr in self._prs.items():
            if peer != self.node_id:
                self._msgs.append(
                    raft_pb2.RaftMessage(
                        type=MSG_HEARTBEAT,
                        to=peer,
                        term=self._term,
                        commit=min(pr.match, commit),
                        context=context,
                        **self._from,
                    )
                )

    def _maybe_commit(self) -> bool:
        """§5.3/§5.4.2: commit the highest index a majority of voters has persisted, but
        only by counting replicas of an entry of the current term."""
        log = self._log
        advanced = False
        while self._role == LEADER:
            matches = sorted((self._prs[v].match for v in self._voters if v in self._prs), reverse=True)
            if len(matches) < self._quorum:
                break
            index = matches[self._quorum - 1]
            if index <= log.commit or log.term(index) != self._term:
                break
            self._commit_to(index)  # may change the voters (and so the quorum): look again
            advanced = True
        return advanced

    def _on_leader_commit(self) -> None:
        self._bcast_append()  # followers learn the new commit index
        if self._log.term(self._log.commit) == self._term and self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            for context, requester in waiting:
                self._leader_read(context, requester)
        if self.node_id not in self._voter_set:
            self._become_follower(self._term, None)  # removed: step down once that commits (§4.2.2)
        else:
            self._hand_off_if_disabled()

    def _hand_off_if_disabled(self) -> None:
        """A disabled leader hands over to the most up-to-date enabled voter, preferring
        one that answered recently."""
        if self._role != LEADER or self.node_id not in self._disabled or self._transferee is not None:
            return
        best: str | None = None
        best_key = (False, -1)
        for peer in self._voters:
            pr = self._prs.get(peer)
            if peer == self.node_id or peer in self._disabled or pr is None:
                continue
            key = (pr.recent_active, pr.match)
            if key > best_key:
                best, best_key = peer, key
        if best is not None:
            self.transfer_leadership(best)

    def _leader_read(self, context: bytes, requester: str) -> None:
        """§6.4 ReadIndex: record the commit index, then confirm leadership with a round of
        heartbeats carrying `context`; a majority of answers releases the read."""
        if not context:
            return
        log = self._log
        if log.term(log.commit) != self._term:
            # Until then the commit index may lag what earlier leaders committed (§6.4 step 1).
            self._reads_waiting.append((context, requester))
            return
        if self._quorum == 1:
            self._answer_read(context, log.commit, requester)
            return
        if context in self._pending_reads:
            return
        self._pending_reads[context] = _ReadRequest(log.commit, requester, {self.node_id})
        self._bcast_heartbeat(context)

    def _ack_read(self, context: bytes, sender: str) -> None:
        request = self._pending_reads.get(context)
        if request is None:
            return
        request.acks.add(sender)
        if sum(1 for v in self._voters if v in request.acks) < self._quorum:
            return
        # Leadership confirmed now also confirms every earlier request.
        while self._pending_reads:
            key = next(iter(self._pending_reads))
            earlier = self._pending_reads.pop(key)
            self._answer_read(key, earlier.index, earlier.requester)
            if key == context:
                break

    def _answer_read(self, context: bytes, index: int, requester: str) -> None:
        if requester == self.node_id:
            self._read_states.append(ReadState(index, context))
        else:
            self._send(MSG_READ_INDEX_RESP, requester, index=index, context=context)

    # ------------------------------------------------------------------ elections

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        self._leaderless_ticks += 1
        if self._election_elapsed < self._timeout or self.node_id not in self._voter_set:
            return
        if self.node_id in self._disabled:
            # A disabled voter campaigns only as a last resort: when it alone holds entries
            # every enabled voter lacks, no enabled voter can win (§5.4.1) until it leads
            # and hands over. Enabled voters get several election timeouts first; votes
            # and new terms do not restart that wait, only a leader does.
            if self._leaderless_ticks < self._timeout + _LAST_RESORT_TIMEOUTS * self._cfg.election_ticks_max:
                return
            self._election_elapsed = 0
            self._campaign(transfer=False, last_resort=True)
            return
        self._election_elapsed = 0
        self._campaign(transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._cfg.election_ticks_min:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_active():
                self._become_follower(self._term, None)  # cut off from a majority: stop leading
                return
            self._transferee = None  # a transfer that took an election timeout has failed
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat(b"")
            self._hand_off_if_disabled()

    def _quorum_active(self) -> bool:
        active = 0
        for v in self._voters:
            pr = self._prs.get(v)
            if v == self.node_id or (pr is not None and pr.recent_active):
                active += 1
        for peer, pr in self._prs.items():
            if peer != self.node_id:
                pr.recent_active = False
        return active >= self._quorum

    def _promotable(self) -> bool:
        return self.node_id in self._voter_set and self.node_id not in self._disabled

    def _campaign(self, transfer: bool, *, last_resort: bool = False) -> None:
        if not (self._promotable() or (last_resort and self.node_id in self._voter_set)):
            return
        if self._cfg.pre_vote and not transfer:
            self._pre_campaign()
        else:
            self._elect(transfer)

    def _pre_campaign(self) -> None:
        """§9.6: ask whether we could win at term+1 without bumping our own term, so a node
        that was cut off cannot disrupt the cluster when it returns."""
        self._become_pre_candidate()
        if self._tally()[0] >= self._quorum:
            self._elect(transfer=False)
            return
        self._request_votes(MSG_PRE_VOTE, self._term + 1, b"")

    def _elect(self, transfer: bool) -> None:
        """§5.2: increment the term, vote for ourselves, ask every other voter."""
        self._become_candidate()
        if self._tally()[0] >= self._quorum:
            self._become_leader()
            return
        self._request_votes(MSG_VOTE, self._term, TRANSFER_CONTEXT if transfer else b"")

    def _request_votes(self, kind: raft_pb2.RaftMessageType, term: int, context: bytes) -> None:
        log = self._log
        last_index, last_term = log.last_index, log.last_term
        for v in self._voters:
            if v != self.node_id:
                self._send(kind, v, term=term, index=last_index, log_term=last_term, context=context)

    def _tally(self) -> tuple[int, int]:
        granted = rejected = 0
        for v in self._voters:
            vote = self._votes.get(v)
            if vote is True:
                granted += 1
            elif vote is False:
                rejected += 1
        return granted, rejected

    # ------------------------------------------------------------------ role changes

    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = ""
        self._leader_id = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # §5.2: a fresh random timeout each time, so split votes rarely repeat.
        self._timeout = self._rng.randint(self._cfg.election_ticks_min, self._cfg.election_ticks_max)
        self._transferee = None
        self._votes = {}
        self._prs = {}
        self._pending_reads = {}
        self._reads_waiting = []
        self._bcast_pending = False

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self._role = FOLLOWER
        self._leader_id = leader

    def _become_pre_candidate(self) -> None:
        self._reset(self._term)
        self._role = PRE_CANDIDATE
        self._votes = {self.node_id: True}

    def _become_candidate(self) -> None:
        self._reset(self._term + 1)
        self._role = CANDIDATE
        self._vote = self.node_id
        self._votes = {self.node_id: True}

    def _become_leader(self) -> None:
        self._reset(self._term)
        self._role = LEADER
        self._leader_id = self.node_id
        self._leaderless_ticks = 0
        log = self._log
        cap = self._cfg.max_inflight_msgs
        for v in self._voters:
            self._prs[v] = Progress(log.last_index + 1, cap)
        own = self._prs[self.node_id]
        own.match = log.persisted
        own.become_replicate()
        # §5.4.2/§8: an empty entry of the new term lets earlier entries commit with it.
        self._append_own([commands_pb2.LogEntry(term=self._term, index=log.last_index + 1)])

    def _append_own(self, entries: list[commands_pb2.LogEntry]) -> None:
        self._log.append(entries)
        self._bcast_pending = True  # sent in the next ready(), batched with later proposals

    def _check_accepting(self) -> None:
        if self._role != LEADER:
            raise NotLeader(self._leader_id)
        if self._transferee is not None:
            raise NotLeader(None)

    # ------------------------------------------------------------------ commit and membership

    def _commit_to(self, index: int) -> None:
        """Advance the commit index; membership changes take effect as they commit."""
        log = self._log
        old = log.commit
        if index <= old:
            return
        log.commit = index
        for entry in log.slice(old + 1, index + 1):
            if entry.type == ENTRY_CONF_CHANGE:
                self._apply_conf_entry(entry)

    def _apply_conf_entry(self, entry: commands_pb2.LogEntry) -> None:
        change = raft_pb2.ConfChange()
        try:
            change.ParseFromString(entry.command)
        except DecodeError:
            return
        conf = apply_conf_change(self._conf, change)
        if conf is None:
            return
        self._conf_history.append((int(entry.index), conf))
        self._set_conf(conf)
        self._conf_changed = True
        if self._role == LEADER:
            self._sync_progress()

    def _set_conf(self, conf: raft_pb2.ConfState) -> None:
        self._conf = conf
        self._voters = sorted(conf.voters)
        self._voter_set = frozenset(self._voters)
        self._disabled = frozenset(conf.disabled)
        self._quorum = len(self._voters) // 2 + 1

    def _sync_progress(self) -> None:
        last = self._log.last_index
        for v in self._voters:
            if v not in self._prs:
                self._prs[v] = Progress(last + 1, self._cfg.max_inflight_msgs, recent_active=True)
        for peer in [p for p in self._prs if p not in self._voter_set and p != self.node_id]:
            del self._prs[peer]
            if self._transferee == peer:
                self._transferee = None

    def _conf_at(self, index: int) -> raft_pb2.ConfState:
        conf = self._conf_history[0][1]
        for at, c in self._conf_history:
            if at > index:
                break
            conf = c
        return _copy_conf(conf)

    # ------------------------------------------------------------------ sending

    def _send(self, kind: raft_pb2.RaftMessageType, to: str, *, term: int | None = None, **fields: Any) -> None:
        self._msgs.append(
            raft_pb2.RaftMessage(type=kind, to=to, term=self._term if term is None else term, **fields, **self._from)
        )
