"""Consensus: how a command becomes durable and applied.

`Consensus` is the port the service layer talks to, `NodeStatus` its typed reading of a
node, `ReplicatedState` what a node needs of the state machine it is given.
`SingleNode` is a cluster of one: group commit to a local checksummed log, then apply
in log order. The Raft node implements the same port and replicates the same log
entries.
"""

from dtf_coordinator.consensus.base import Consensus, ReplicatedState
from dtf_coordinator.consensus.log_store import LogStore
from dtf_coordinator.consensus.single import SingleNode
from dtf_coordinator.consensus.snapshots import SnapshotStore
from dtf_coordinator.consensus.status import MembershipAction, MembershipChange, NodeStatus

__all__ = [
    "Consensus",
    "LogStore",
    "MembershipAction",
    "MembershipChange",
    "NodeStatus",
    "ReplicatedState",
    "SingleNode",
    "SnapshotStore",
]
