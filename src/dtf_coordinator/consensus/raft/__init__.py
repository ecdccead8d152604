"""Raft among coordinators: the pure core (`core`), and the asyncio shell around it.

`RaftCore` is Raft as a state machine in the style of etcd-io/raft: the caller ticks it,
steps messages into it, and carries out each `Ready` (persist, send, apply) before
calling `advance`. It does no I/O of its own, so tests drive it on a simulated network.
"""

from dtf_coordinator.consensus.raft.core import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    TRANSFER_CONTEXT,
    CoreStatus,
    RaftConfig,
    RaftCore,
    ReadState,
    Ready,
    SoftState,
    apply_conf_change,
)
from dtf_coordinator.consensus.raft.errors import NotLeader, Refusal

__all__ = [
    "CANDIDATE",
    "FOLLOWER",
    "LEADER",
    "PRE_CANDIDATE",
    "TRANSFER_CONTEXT",
    "CoreStatus",
    "NotLeader",
    "RaftConfig",
    "RaftCore",
    "ReadState",
    "Ready",
    "Refusal",
    "SoftState",
    "apply_conf_change",
]
