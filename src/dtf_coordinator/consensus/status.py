"""What a consensus node says about itself, as plain typed values.

These cross from consensus to the service layer and the API: `NodeStatus` (one reading
of the node), `PeerProgress` (how far a leader's log has reached one peer),
`LeaderChange` (one change of leader this node saw) and `MembershipChange` (a change
of the voters asked of the node). They carry no protobuf, so the layers above never
see the Raft wire format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

# "pre_candidate" and "candidate" only on a Raft member; "failed" after a storage failure.
Role = Literal["leader", "follower", "pre_candidate", "candidate", "stopped", "failed"]


@dataclass(frozen=True, slots=True)
class PeerProgress:
    """A leader's record of one peer's log (etcd-io/raft's Progress, read once)."""

    match: int  # the highest index known to be in the peer's log
    next: int  # the next index the leader sends it
    state: str  # "probe", "replicate" or "snapshot"
    recent_active: bool  # heard from within the last election timeout
    inflight: int = 0  # appends sent and not yet answered


@dataclass(frozen=True, slots=True)
class LeaderChange:
    previous: str | None
    current: str | None
    term: int
    reason: str  # "elected", "leader_discovered", "leader_timeout", "leader_lost", "stepped_down"
    time_ms: int
    election_seconds: float | None = None


class MembershipAction(StrEnum):
    ADD = "add"
    REMOVE = "remove"
    DISABLE = "disable"  # still a voter, but may not lead
    ENABLE = "enable"


@dataclass(frozen=True, slots=True)
class MembershipChange:
    action: MembershipAction
    node_id: str
    address: str = ""  # the new voter's Raft host:port (ADD only)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One consistent reading of a consensus node.

    `leader_id` is the leader as this node knows it: itself while it leads, None while
    no leader is known. `progress` is filled on a leader only (itself included).
    `voters` are sorted; a disabled voter still votes, so the quorum counts it.
    """

    node_id: str
    role: Role
    term: int
    leader_id: str | None
    commit_index: int
    applied_index: int
    last_index: int
    voters: tuple[str, ...]
    disabled: frozenset[str] = frozenset()
    progress: Mapping[str, PeerProgress] = field(default_factory=dict)
    last_contact: Mapping[str, int] = field(default_factory=dict)  # peer -> wall ms of its latest message
    leader_history: tuple[LeaderChange, ...] = ()  # oldest first
    started_ms: int = 0  # 0: not started
    can_change_membership: bool = False  # False for a cluster of one
    failure: str | None = None  # why the node stopped, after a storage failure

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    @property
    def enabled_voters(self) -> list[str]:
        return [v for v in self.voters if v not in self.disabled]

    @property
    def quorum_size(self) -> int:
        """A majority of the voters: a disabled voter may not lead, but still votes."""
        return len(self.voters) // 2 + 1
