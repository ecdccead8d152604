"""The ports of consensus: what the service layer asks of a node (`Consensus`), and what
a node asks of the state machine it drives (`ReplicatedState`).

`RaftNode` implements `Consensus`, in a cluster or alone (`standalone_node`); a test may
put anything else that answers the port in its place. The caller builds the state
machine and hands it to the node, so a test can give a node any machine and a node
never decides what it replicates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, Self

from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.consensus.status import (
    LeaderChange,
    MembershipAction,
    MembershipChange,
    NodeStatus,
    PeerProgress,
    Role,
)
from dtf_coordinator.state import Effect, Outcome, StateMachine

EffectSink = Callable[[list[Effect]], None]
# Called with the index a snapshot covers, before it is saved (the results store flushes).
BeforeSnapshot = Callable[[int], Awaitable[object] | object]

__all__ = [
    "BeforeSnapshot",
    "Consensus",
    "EffectSink",
    "LeaderChange",
    "MembershipAction",
    "MembershipChange",
    "NodeStatus",
    "PeerProgress",
    "ReplicatedState",
    "Role",
]


class ReplicatedState(Protocol):
    """The state machine a node drives, as hashicorp/raft's FSM: deterministic (`apply`
    reads no clock, random source or disk, so every replica reaches the same state),
    and called from the node's one loop only, in log order.

    `apply` and `skip_to` (an entry without a command) advance `applied_index`; effects
    of applied commands queue up until `drain_effects`. `snapshot` returns plain data
    sharing nothing with the live state; `restored` builds a machine configured like
    this one from such data.
    """

    @property
    def applied_index(self) -> int: ...

    def apply(self, index: int, command: commands_pb2.Command) -> Outcome: ...

    def skip_to(self, index: int) -> None: ...

    def drain_effects(self) -> list[Effect]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restored(self, data: dict[str, Any]) -> Self: ...


class Consensus(Protocol):
    """Turns proposed commands into applied, durable outcomes.

    `propose` stamps the leader's time into the command, makes it durable (fsynced on a
    majority; on the one node when alone), applies it and returns the outcome. Effects
    of every applied batch go to the sink given to `start`, in log order.

    `read_barrier` waits until this node's state holds every write acknowledged before
    the call and returns that index. `status` is one typed reading of the node. A
    cluster of one answers every call: it is its own leader while it runs, and refuses
    membership changes and transfers to another node with `Conflict`.
    """

    state: StateMachine

    @property
    def node_id(self) -> str: ...

    async def start(self, sink: EffectSink) -> None: ...

    async def stop(self) -> None: ...

    async def propose(self, command: commands_pb2.Command) -> Outcome: ...

    async def read_barrier(self) -> int: ...

    def is_leader(self) -> bool: ...

    def leader_hint(self) -> str | None: ...

    def status(self) -> NodeStatus: ...

    async def change_membership(self, change: MembershipChange) -> int:
        """Propose `change` on the leader; its log index once applied here. `NotLeader`
        on a follower."""
        ...

    def transfer_leadership(self, to: str) -> None:
        """Ask the leader to hand over to `to` (thesis §3.10); returns at once."""
        ...

    def snapshot_due(self, every: int) -> bool: ...

    async def take_snapshot(self, before_save: BeforeSnapshot | None = None) -> int:
        """Snapshot the applied state and compact the log it covers; the index."""
        ...
