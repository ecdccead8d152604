"""Raft nodes of one process talking through memory, as hashicorp/raft's InmemTransport:
the `RaftTransport` port without sockets, so tests can run real `RaftNode` shells and
cut the network between them.

`InmemNetwork` is the registry: `transport(node_id)` gives each node its end. Messages
are copied through their wire encoding and delivered on a later turn of the event loop,
in order per pair of nodes. `isolate`, `partition` and `heal` decide who reaches whom;
a message between nodes that cannot reach each other is dropped (checked when sent and
again when delivered) and the sender is told the peer is unreachable, as the gRPC
transport does when a stream breaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dtf_common import errors
from dtf_common.pb.dtf.v1 import raft_pb2
from dtf_coordinator.consensus.raft.transport_port import Receiver


class InmemNetwork:
    def __init__(self) -> None:
        self._receivers: dict[str, Receiver] = {}
        self._groups: list[frozenset[str]] | None = None  # None: everyone reaches everyone
        self.dropped = 0

    def transport(self, node_id: str) -> InmemTransport:
        return InmemTransport(self, node_id)

    # ------------------------------------------------------------------ faults

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes in the same group reach each other; a node in no group reaches no one."""
        self._groups = [frozenset(g) for g in groups]

    def isolate(self, node_id: str) -> None:
        others = [n for n in self._receivers if n != node_id]
        self.partition([node_id], others)

    def heal(self) -> None:
        self._groups = None

    def reachable(self, a: str, b: str) -> bool:
        if self._groups is None:
            return True
        return any(a in g and b in g for g in self._groups)

    # ------------------------------------------------------------------ delivery

    def _register(self, node_id: str, receiver: Receiver) -> None:
        self._receivers[node_id] = receiver

    def _unregister(self, node_id: str) -> None:
        self._receivers.pop(node_id, None)

    def _receiver(self, sender: str, to: str) -> Receiver | None:
        receiver = self._receivers.get(to)
        if receiver is None or not self.reachable(sender, to):
            return None
        return receiver

    def _deliver(self, sender: str, data: bytes, snapshot: bytes | None) -> None:
        msg = raft_pb2.RaftMessage.FromString(data)
        receiver = self._receiver(sender, msg.to)
        if receiver is None:
            self.dropped += 1
            return
        if snapshot is not None:
            receiver.snapshot_arrived(msg, snapshot)
        else:
            receiver.deliver(msg)


class InmemTransport:
    """One node's end of an `InmemNetwork`."""

    def __init__(self, network: InmemNetwork, node_id: str) -> None:
        self.network = network
        self.node_id = node_id
        self._receiver: Receiver | None = None
        self._peers: set[str] = set()

    async def start(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self.network._register(self.node_id, receiver)

    def set_peers(self, addresses: dict[str, str]) -> None:
        self._peers = {n for n in addresses if n != self.node_id}

    def send(self, messages: list[raft_pb2.RaftMessage]) -> None:
        receiver = self._receiver
        if receiver is None:
            return
        loop = asyncio.get_running_loop()
        for msg in messages:
            if msg.to not in self._peers:
                continue
            if self.network._receiver(self.node_id, msg.to) is None:
                self.network.dropped += 1
                if msg.type == raft_pb2.MSG_SNAP:
                    receiver.snapshot_sent(msg.to, False)
                else:
                    receiver.unreachable(msg.to)
                continue
            snapshot: bytes | None = None
            if msg.type == raft_pb2.MSG_SNAP:
                snapshot = receiver.snapshot_source()
                if snapshot is None:
                    receiver.snapshot_sent(msg.to, False)
                    continue
                loop.call_soon(receiver.snapshot_sent, msg.to, True)
            loop.call_soon(self.network._deliver, self.node_id, msg.SerializeToString(), snapshot)

    async def forward(self, leader_id: str, command: bytes) -> tuple[int, int]:
        receiver = self.network._receiver(self.node_id, leader_id)
        if receiver is None:
            raise errors.Unavailable(f"no route to the leader {leader_id!r}")
        try:
            return await receiver.forwarded(command)
        except errors.NotLeader:
            raise
        except errors.DtfError as exc:
            raise errors.Unavailable(f"forwarding to the leader {leader_id!r} failed: {exc.message}") from None

    async def stop(self) -> None:
        self.network._unregister(self.node_id)
        self._receiver = None
