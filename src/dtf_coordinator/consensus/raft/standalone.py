"""A coordinator without high availability: a Raft group of one voter.

It is the same `RaftNode`, with the same log, hard state and snapshot files, as a member
of a cluster: one on-disk format and one restart path. Two things differ. Its transport,
`NoPeers`, has no one to reach. And it refuses membership changes and leadership
transfers (`Conflict`): a voter it cannot reach would leave it without a quorum. It
elects itself when it starts, and a write commits once it is durable on its own disk.

Its files live in `<data_dir>/log`, apart from a cluster member's `<data_dir>/raft`:
turning high availability on later starts a new log, rather than one whose snapshots
say the cluster has a single voter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dtf_common.clock import wall_ms
from dtf_common.errors import Unavailable
from dtf_common.pb.dtf.v1 import raft_pb2
from dtf_coordinator.consensus.base import ReplicatedState
from dtf_coordinator.consensus.raft.node import RaftNode, RaftSettings
from dtf_coordinator.consensus.raft.transport_port import Receiver
from dtf_coordinator.consensus.status import LeaderChange

S = TypeVar("S", bound=ReplicatedState)


class NoPeers:
    """The `RaftTransport` of a node alone. A group of one voter sends no messages; were
    one sent, dropping it is what any transport may do with a message it cannot deliver."""

    async def start(self, receiver: Receiver) -> None:
        del receiver  # nothing will ever arrive

    def set_peers(self, addresses: dict[str, str]) -> None:
        del addresses  # only this node's own address: nobody to connect to

    def send(self, messages: list[raft_pb2.RaftMessage]) -> None:
        del messages

    async def forward(self, leader_id: str, command: bytes) -> tuple[int, int]:
        raise Unavailable(f"a coordinator without high availability cannot reach {leader_id}")

    async def stop(self) -> None:
        return None


def standalone_node(
    directory: Path | str,
    state: S,
    *,
    node_id: str = "coordinator-1",
    clock: Callable[[], int] = wall_ms,
    on_commit: Callable[[int, float], None] | None = None,
    on_leader_change: Callable[[LeaderChange], None] | None = None,
) -> RaftNode[S]:
    """A one-voter Raft node keeping its files in `directory` (`<data_dir>/log`)."""
    settings = RaftSettings(node_id=node_id, bind="", peers={node_id: ""}, standalone=True)
    return RaftNode(
        directory,
        state,
        settings,
        NoPeers(),
        clock=clock,
        on_commit=on_commit,
        on_leader_change=on_leader_change,
    )
