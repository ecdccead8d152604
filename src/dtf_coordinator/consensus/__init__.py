"""Consensus: how a command becomes durable and applied.

`Consensus` is the port the service layer talks to, `NodeStatus` its typed reading of a
node, `ReplicatedState` what a node needs of the state machine it is given. There is one
implementation, `RaftNode`: a coordinator without high availability runs it as a group
of one voter (`standalone_node`), with the same log, hard state and snapshots as a
member of a cluster.
"""

from dtf_coordinator.consensus.base import Consensus, ReplicatedState
from dtf_coordinator.consensus.log_store import LogStore
from dtf_coordinator.consensus.raft.node import RaftNode, RaftSettings
from dtf_coordinator.consensus.raft.standalone import standalone_node
from dtf_coordinator.consensus.status import MembershipAction, MembershipChange, NodeStatus

__all__ = [
    "Consensus",
    "LogStore",
    "MembershipAction",
    "MembershipChange",
    "NodeStatus",
    "RaftNode",
    "RaftSettings",
    "ReplicatedState",
    "standalone_node",
]
