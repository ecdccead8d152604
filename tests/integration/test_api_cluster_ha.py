"""The cluster API over three real Raft coordinators in one process: each a `RaftNode`
(gRPC on loopback with mutual TLS, real log files) behind its own uvicorn-served API,
the coordinators' directory pointing at each other. What an operator relies on: every
node shows the same leader and term, a follower knows its peers through their API,
a stopped node shows as offline and unreachable, disable and enable work from any node,
and a disabled leader hands over with a leadership_update on the WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import connect

from dtf_common.config import CoordinatorConfig, HighAvailabilityConfig, SecurityConfig
from dtf_coordinator.api import ApiContext, create_app
from dtf_coordinator.api.cluster_service import service_of
from dtf_coordinator.auth import Role, create_token
from dtf_coordinator.consensus.status import LeaderChange
from dtf_coordinator.service.events import EventHub
from dtf_coordinator.state import StateMachine
from dtf_coordinator.store import Store, open_store
from dtf_coordinator.wiring import CoordinatorParts, build_coordinator

# Skipped where the Raft node or its test harness is not part of the tree.
pytest.importorskip("dtf_coordinator.consensus.raft.core")
from dtf_coordinator.consensus.raft.node import RaftNode, RaftSettings
from dtf_coordinator.consensus.raft.transport import Transport
from tests.integration.raft_harness import RaftCluster, submit

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SECRET = "ha-api-test-secret-0123456789abcdef"
PROBLEM = "application/problem+json"


@dataclass
class Member:
    node: RaftNode[StateMachine]
    hub: EventHub
    app: FastAPI
    store: Store
    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str = ""


class HaApi:
    """Three coordinators: Raft nodes of a `RaftCluster`, each with its API served."""

    def __init__(self, root: Path) -> None:
        self.raft = RaftCluster(root)
        self.members: dict[str, Member] = {}
        self.tokens = {role.value: create_token(SECRET, role, subject=f"{role.value}-ops") for role in Role}

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def start(self, node_id: str) -> Member:
        built: list[CoordinatorParts] = []

        def leader_changed(change: LeaderChange) -> None:  # as the coordinator runtime reports it
            built[0].leader_changed(change)

        settings = RaftSettings(
            node_id=node_id, bind=self.raft.addresses[node_id], peers=dict(self.raft.addresses), write_wait_s=5.0
        )
        transport = Transport(node_id, settings.bind, settings.peers, self.raft.credentials(node_id))
        node = RaftNode(self.raft.root / node_id, StateMachine(), settings, transport, on_leader_change=leader_changed)
        ha = HighAvailabilityConfig(
            enabled=True,
            coordinator_id=node_id,
            state_replication_interval=200,
            health_check_interval=500,
            leader_lease_duration=5000,
        )
        config = CoordinatorConfig(security=SecurityConfig(jwt_secret=SECRET), high_availability=ha)
        parts = build_coordinator(config, node)
        built.append(parts)
        hub, metrics, coordinator = parts.hub, parts.metrics, parts.coordinator
        await node.start(coordinator.on_effects)
        self.raft.nodes[node_id] = node
        store = open_store("duckdb:///:memory:")
        ctx = ApiContext(
            config=config, coordinator=coordinator, results=store.reader, hub=hub, metrics=metrics, secret=SECRET
        )
        app = create_app(ctx)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        member = Member(node, hub, app, store, server, task, f"http://127.0.0.1:{port}")
        self.members[node_id] = member
        self._share_directory()
        return member

    def _share_directory(self) -> None:
        directory = {n: {"api_url": m.url, "grpc_address": ""} for n, m in self.members.items()}
        for member in self.members.values():
            coordinator = service_of(member.app).coordinator
            for node_id in self.raft.ids:
                # A stopped member keeps its last address: that is where it is looked for.
                coordinator.directory.setdefault(node_id, {"api_url": "", "grpc_address": ""})
                if node_id in directory:
                    coordinator.directory[node_id] = dict(directory[node_id])

    async def stop(self, node_id: str) -> None:
        member = self.members.pop(node_id)
        await service_of(member.app).close()
        member.server.should_exit = True
        await asyncio.wait_for(member.task, timeout=10)
        await self.raft.stop(node_id)
        member.store.close(flush=False)

    async def stop_all(self) -> None:
        for node_id in list(self.members):
            await self.stop(node_id)

    async def get(self, node_id: str, path: str, role: str = "viewer", **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.members[node_id].url, headers=self.auth(role)) as client:
            response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, node_id: str, path: str, role: str = "admin") -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.members[node_id].url, headers=self.auth(role), timeout=15) as c:
            return await c.post(path)


@pytest.fixture
async def ha(tmp_path: Path) -> AsyncIterator[HaApi]:
    cluster = HaApi(tmp_path)
    try:
        for node_id in cluster.raft.ids:
            await cluster.start(node_id)
        await cluster.raft.leader()
        yield cluster
    finally:
        await cluster.stop_all()


async def eventually(check: Any) -> Any:
    """`await check()` until it returns something truthy (within ten seconds)."""
    timeout = 10.0
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {timeout}s; last: {last!r}")


async def test_every_node_shows_the_same_leader_and_term(ha: HaApi) -> None:
    leader = await ha.raft.leader()
    for node_id in ha.raft.ids:
        status = await ha.get(node_id, "/api/cluster/status")
        assert status["reported_by"] == node_id
        assert status["leader_id"] == leader.node_id
        assert status["current_term"] == leader.term
        assert status["quorum_size"] == 2
        assert status["cluster_health"] == "healthy", status
        states = {n["node_id"]: n["state"] for n in status["nodes"]}
        assert states == {n: "leader" if n == leader.node_id else "follower" for n in ha.raft.ids}
        for node in status["nodes"]:
            assert node["term"] == leader.term
            assert node["uptime_seconds"] is not None and node["uptime_seconds"] >= 0
            assert node["last_heartbeat"] is not None
            assert node["api_url"] == ha.members[node["node_id"]].url
        # Only the leader knows how far each follower's log has got.
        has_progress = {n["node_id"] for n in status["nodes"] if n["progress"] is not None}
        assert has_progress == (set(ha.raft.ids) - {leader.node_id} if node_id == leader.node_id else set())


async def test_replication_progress_and_leader_history(ha: HaApi) -> None:
    leader = await ha.raft.leader()
    await leader.propose(submit("t-1", "t-2"))
    await ha.raft.converged()
    status = await ha.get(leader.node_id, "/api/cluster/status")
    for node in status["nodes"]:
        if node["node_id"] != leader.node_id:
            # recent_active is cleared at every CheckQuorum round, so it is not asserted here.
            assert node["progress"]["match"] == status["last_index"]
    info = await ha.get(leader.node_id, "/api/cluster/leader")
    assert info["leader_id"] == leader.node_id and info["current_term"] == leader.term
    newest = info["leadership_history"][0]
    assert newest["new_leader_id"] == leader.node_id and newest["reason"] == "elected"
    assert newest["timestamp"] == info["term_start_time"]
    follower = next(n for n in ha.raft.ids if n != leader.node_id)
    seen = await ha.get(follower, "/api/cluster/leader")
    assert seen["leader_id"] == leader.node_id
    assert seen["leadership_history"][0]["new_leader_id"] == leader.node_id


async def test_health_of_every_node_from_any_node(ha: HaApi) -> None:
    leader = await ha.raft.leader()
    follower = next(n for n in ha.raft.ids if n != leader.node_id)
    health = await ha.get(follower, "/api/cluster/health")
    nodes = {n["node_id"]: n for n in health["nodes"]}
    assert list(nodes) == ha.raft.ids
    for node_id, entry in nodes.items():
        assert entry["health"]["status"] in ("healthy", "warning", "critical"), entry
        assert 0 <= entry["health"]["memory_usage"] <= 100
        assert entry["state"] == ("leader" if node_id == leader.node_id else "follower")


async def test_a_stopped_node_is_offline_and_unreachable(ha: HaApi) -> None:
    leader = await ha.raft.leader()
    down = next(n for n in ha.raft.ids if n != leader.node_id)
    await ha.stop(down)

    async def degraded() -> dict[str, Any] | None:
        status: dict[str, Any] = await ha.get(leader.node_id, "/api/cluster/status")
        return status if status["cluster_health"] == "degraded" else None

    status = await eventually(degraded)
    node = next(n for n in status["nodes"] if n["node_id"] == down)
    assert node["state"] == "offline"
    assert node["progress"]["recent_active"] is False
    health = await ha.get(leader.node_id, "/api/cluster/health")
    entry = next(n for n in health["nodes"] if n["node_id"] == down)
    assert entry["health"] == {"status": "unreachable"} and entry["error"]


async def test_disable_and_enable_from_a_follower(ha: HaApi) -> None:
    leader = await ha.raft.leader()
    follower, other = (n for n in ha.raft.ids if n != leader.node_id)
    done = await ha.post(follower, f"/api/cluster/node/{other}/disable")
    assert done.status_code == 200, done.text
    assert done.json()["disabled"] is True and done.json()["leader_id"] == leader.node_id

    async def everywhere_disabled() -> bool:
        for node_id in ha.raft.ids:
            status = await ha.get(node_id, "/api/cluster/status")
            if not {n["node_id"]: n["disabled"] for n in status["nodes"]}[other]:
                return False
        return True

    await eventually(everywhere_disabled)
    again = await ha.post(follower, f"/api/cluster/node/{other}/disable")
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM, again.text
    assert (await ha.post(follower, "/api/cluster/node/coordinator-9/disable")).status_code == 404
    assert (await ha.post(follower, f"/api/cluster/node/{other}/disable", role="viewer")).status_code == 403

    enabled = await ha.post(other, f"/api/cluster/node/{other}/enable")
    assert enabled.status_code == 200, enabled.text
    assert not leader.conf_state.disabled


async def test_a_disabled_leader_hands_over_and_subscribers_hear_of_it(ha: HaApi) -> None:
    leader = await ha.raft.leader()
    await leader.propose(submit("warm-up"))
    watcher = next(n for n in ha.raft.ids if n != leader.node_id)
    url = ha.members[watcher].url.replace("http://", "ws://") + f"/ws?token={ha.tokens['viewer']}"
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "leadership_updates"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"

        done = await ha.post(watcher, f"/api/cluster/node/{leader.node_id}/disable")
        assert done.status_code == 200, done.text
        new = await ha.raft.leader(among=[n for n in ha.raft.ids if n != leader.node_id])
        assert new.node_id != leader.node_id

        updates: list[dict[str, Any]] = []
        while not updates or updates[-1]["new_leader_id"] != new.node_id:
            updates.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        last = updates[-1]
        assert last["type"] == "leadership_update" and last["term"] == new.term
        assert set(last) == {"type", "previous_leader_id", "new_leader_id", "term", "reason", "timestamp"}

    info = await ha.get(watcher, "/api/cluster/leader")
    assert info["leader_id"] == new.node_id
    status = await ha.get(new.node_id, "/api/cluster/status")
    old = next(n for n in status["nodes"] if n["node_id"] == leader.node_id)
    assert old["disabled"] is True and old["state"] == "follower"
    assert (await ha.post(new.node_id, f"/api/cluster/node/{leader.node_id}/enable")).status_code == 200


async def test_status_feed_on_a_follower(ha: HaApi) -> None:
    leader = await ha.raft.leader()
    follower = next(n for n in ha.raft.ids if n != leader.node_id)
    url = ha.members[follower].url.replace("http://", "ws://") + f"/ws?token={ha.tokens['viewer']}"
    async with connect(url) as ws:
        request = {"type": "subscribe", "channel": "cluster_status", "filter": {"node_id": leader.node_id}}
        await ws.send(json.dumps(request))
        updates = []
        with contextlib.suppress(TimeoutError):
            while len(updates) < 3:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["type"] == "cluster_status_update":
                    updates.append(message)
        assert len(updates) == 3  # every state_replication_interval (200 ms here)
        for update in updates:
            (node,) = update["nodes"]
            assert (node["node_id"], node["state"], node["term"]) == (leader.node_id, "leader", leader.term)


async def test_membership_changes_are_made_on_the_leader_and_refuse_bad_requests(ha: HaApi) -> None:
    leader = await ha.raft.leader()
    follower = next(n for n in ha.raft.ids if n != leader.node_id)
    new = {"node_id": "coordinator-9", "host": "127.0.0.1", "port": 1}

    async def call(node_id: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=ha.members[node_id].url, headers=ha.auth("admin"), timeout=15) as c:
            return await c.request(method, path, **kwargs)

    elsewhere = await call(follower, "POST", "/api/cluster/nodes", json=new)
    assert elsewhere.status_code == 503 and elsewhere.json()["leader_hint"] == leader.node_id
    member = await call(leader.node_id, "POST", "/api/cluster/nodes", json={**new, "node_id": follower})
    assert member.status_code == 409 and member.json()["field"] == "node_id"
    unknown = await call(leader.node_id, "DELETE", "/api/cluster/nodes/coordinator-9")
    assert unknown.status_code == 404
    bad = await call(leader.node_id, "POST", "/api/cluster/nodes", json={**new, "port": 0})
    assert bad.status_code == 422
    viewer = await ha.post(leader.node_id, "/api/cluster/nodes", role="viewer")
    assert viewer.status_code == 403
    # A real change: add a node that is not running yet, then remove it again.
    added = await call(leader.node_id, "POST", "/api/cluster/nodes", json=new)
    assert added.status_code == 201, added.text
    assert "coordinator-9" in leader.conf_state.voters
    removed = await call(leader.node_id, "DELETE", "/api/cluster/nodes/coordinator-9")
    assert removed.status_code == 200, removed.text
    assert "coordinator-9" not in leader.conf_state.voters
