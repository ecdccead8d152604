"""The port between a `RaftNode` and the network that carries its messages.

A transport sends one way and never blocks the node: `send` queues messages and
returns; Raft tolerates lost, duplicated and reordered messages, so a transport may
drop what it cannot deliver, telling the node through `Receiver.unreachable` (the core
then probes that peer again). What arrives goes to the node's `Receiver`. `forward`
carries a follower's write to the leader and returns the (term, index) it was appended
at, raising `NotLeader` (with the hint the asked node gave) or `Unavailable`.

Two implementations: `transport.Transport` (gRPC with mutual TLS between processes) and
`inmem.InmemTransport` (nodes of one process, with partitions, for tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dtf_common.pb.dtf.v1 import raft_pb2

Deliver = Callable[[raft_pb2.RaftMessage], None]
SnapshotReceived = Callable[[raft_pb2.RaftMessage, bytes], None]
ForwardHandler = Callable[[bytes], Awaitable[tuple[int, int]]]
SnapshotSource = Callable[[], bytes | None]


@dataclass(frozen=True)
class Receiver:
    """The node's side of a transport: what the transport calls."""

    deliver: Deliver  # a message for this node arrived
    snapshot_arrived: SnapshotReceived  # a MSG_SNAP arrived with the whole snapshot
    forwarded: ForwardHandler  # a follower's serialized write arrived (on the leader)
    unreachable: Callable[[str], None]  # messages to this peer were lost
    snapshot_sent: Callable[[str, bool], None]  # a snapshot to this peer got through, or not
    snapshot_source: SnapshotSource  # the bytes of this node's latest snapshot


class RaftTransport(Protocol):
    async def start(self, receiver: Receiver) -> None: ...

    def set_peers(self, addresses: dict[str, str]) -> None:
        """Follow membership: every voter's address (this node's own is ignored)."""
        ...

    def send(self, messages: list[raft_pb2.RaftMessage]) -> None: ...

    async def forward(self, leader_id: str, command: bytes) -> tuple[int, int]: ...

    async def stop(self) -> None: ...
