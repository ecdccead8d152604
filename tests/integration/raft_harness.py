"""An in-process Raft cluster of real `RaftNode`s: real gRPC on loopback with mutual TLS,
real log files and fsyncs. Nodes can be stopped and started again on the same files."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
from dtf_common.tls import channel_credentials, create_ca, create_node_cert, load_tls, server_credentials
from dtf_coordinator.consensus.raft.node import RaftNode, RaftSettings
from dtf_coordinator.consensus.raft.transport import Credentials, Transport
from dtf_coordinator.state import Effect, StateMachine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def submit(*task_ids: str) -> commands_pb2.Command:
    specs = [types_pb2.TaskSpec(task_id=t, type="command") for t in task_ids]
    return commands_pb2.Command(submit_tasks=commands_pb2.SubmitTasks(tasks=specs))


@dataclass
class RaftCluster:
    root: Path
    size: int = 3
    initial: int | None = None  # members at bootstrap; the rest join at run time
    tick_ms: int = 10
    addresses: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, RaftNode[StateMachine]] = field(default_factory=dict)
    effects: dict[str, list[Effect]] = field(default_factory=dict)
    installed: dict[str, list[tuple[set[str], dict[str, Any]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = [f"coordinator-{i}" for i in range(1, self.size + 1)]
        create_ca(self.root / "certs")
        for node_id in self.ids:
            create_node_cert(self.root / "certs", node_id, ["127.0.0.1"])
            self.addresses[node_id] = f"127.0.0.1:{free_port()}"

    def credentials(self, node_id: str) -> Credentials:
        certs = self.root / "certs"
        material = load_tls(certs / "ca.pem", certs / f"{node_id}.pem", certs / f"{node_id}-key.pem")
        return Credentials(server=server_credentials(material), channel=channel_credentials(material))

    def make(self, node_id: str, **overrides: int) -> RaftNode[StateMachine]:
        """A node of this cluster, not started."""
        settings = RaftSettings(
            node_id=node_id,
            bind=self.addresses[node_id],
            peers={
                n: a for n, a in self.addresses.items() if n in self.ids[: self.initial or self.size] or n == node_id
            },
            tick_ms=self.tick_ms,
            election_ticks_min=overrides.get("election_ticks_min", 15),
            election_ticks_max=overrides.get("election_ticks_max", 30),
            heartbeat_ticks=overrides.get("heartbeat_ticks", 5),
            write_wait_s=5.0,
        )
        transport = Transport(node_id, settings.bind, settings.peers, self.credentials(node_id))
        node = RaftNode(self.root / node_id, StateMachine(), settings, transport)
        # What a snapshot carries beside the state: here, a marker naming the exporting node.
        node.export_extra = lambda: {"exported_by": node_id}
        installed = self.installed.setdefault(node_id, [])
        node.on_snapshot_installed = lambda state, extra: installed.append((set(state.tasks), extra))
        return node

    async def start(self, node_id: str, **overrides: int) -> RaftNode[StateMachine]:
        node = self.make(node_id, **overrides)
        sink: Callable[[list[Effect]], None] = self.effects.setdefault(node_id, []).extend
        await node.start(sink)
        self.nodes[node_id] = node
        return node

    async def start_all(self) -> None:
        for node_id in self.ids[: self.initial or self.size]:
            await self.start(node_id)

    async def stop(self, node_id: str, *, crash: bool = False) -> None:
        """Stop a node; `crash` skips the leadership hand-over, as a dying process would."""
        node = self.nodes.pop(node_id)
        await node.stop(hand_over=not crash)

    async def stop_all(self) -> None:
        for node_id in list(self.nodes):
            await self.stop(node_id)

    async def leader(self, wait_s: float = 10.0, among: list[str] | None = None) -> RaftNode[StateMachine]:
        """The one node that leads, once the running nodes agree on it."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            running = [self.nodes[n] for n in (among or list(self.nodes)) if n in self.nodes]
            leaders = [n for n in running if n.is_leader()]
            if len(leaders) == 1 and all(n.leader_hint() == leaders[0].node_id for n in running):
                return leaders[0]
            await asyncio.sleep(0.02)
        roles = {n.node_id: (n.role, n.term, n.leader_hint()) for n in self.nodes.values()}
        raise AssertionError(f"no agreed leader within {wait_s}s: {roles}")

    async def converged(self, wait_s: float = 10.0) -> str:
        """Wait until every running node applied the same log; returns the common fingerprint."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            nodes = list(self.nodes.values())
            applied = {n.state.applied_index for n in nodes}
            prints = {n.state.fingerprint() for n in nodes}
            if len(applied) == 1 and len(prints) == 1:
                return prints.pop()
            await asyncio.sleep(0.05)
        detail = {n.node_id: n.state.applied_index for n in self.nodes.values()}
        raise AssertionError(f"nodes did not converge within {wait_s}s: {detail}")
