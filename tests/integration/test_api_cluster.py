"""`/api/cluster/*` and the WebSocket's cluster channels over real uvicorn servers.

A cluster of one (the default coordinator) answers everything itself. The multi-node
views are checked with coordinators whose consensus node is a `RaftMember`: the
`Consensus` port as a Raft node answers it (its `NodeStatus`, membership changes),
scripted, over a real single node, so that two real API servers can ask each other for
their health and forward a disable to the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from dtf_common.errors import NotLeader
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.api.cluster import build_leader_info, build_status
from dtf_coordinator.api.cluster_service import ClusterService, service_of
from dtf_coordinator.consensus import RaftNode
from dtf_coordinator.consensus.base import BeforeSnapshot
from dtf_coordinator.consensus.status import (
    LeaderChange,
    MembershipAction,
    MembershipChange,
    NodeStatus,
    PeerProgress,
    Role,
)
from dtf_coordinator.service.cluster_health import (
    ChannelFeed,
    HealthFigures,
    HealthSampler,
    PeerProbe,
    PeerSample,
    classify,
)
from dtf_coordinator.service.events import EventHub
from dtf_coordinator.state import Outcome, StateMachine

if TYPE_CHECKING:
    from conftest import ApiFactory, ApiHarness

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
SVG = "{http://www.w3.org/2000/svg}"


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """`app` on 127.0.0.1 and a free port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await service_of(app).close()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def closed_port_url() -> str:
    """An address where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
    return message


async def ask(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    return await receive(ws)


async def until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    for _ in range(50):
        message = await receive(ws)
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


def ws_url(base: str, api: ApiHarness, role: str = "viewer") -> str:
    return base.replace("http://", "ws://") + f"/ws?token={api.tokens[role]}"


# ---------------------------------------------------------------------------- a cluster of one


async def test_single_node_status_nodes_and_leader(api: ApiHarness) -> None:
    node_id = api.node.node_id
    async with serve(api.app) as base, httpx.AsyncClient(base_url=base, headers=api.auth("viewer")) as client:
        status = (await client.get("/api/cluster/status")).json()
        assert status["leader_id"] == node_id
        assert status["current_term"] == api.node.term
        assert status["quorum_size"] == 1
        assert status["cluster_health"] == "healthy"
        assert status["applied_index"] == api.node.state.applied_index
        (node,) = status["nodes"]
        assert node["node_id"] == node_id and node["state"] == "leader" and node["term"] == api.node.term
        assert node["disabled"] is False
        assert 0 <= node["uptime_seconds"] < 60

        nodes = (await client.get("/api/cluster/nodes")).json()
        assert [n["node_id"] for n in nodes] == [node_id]

        leader = (await client.get("/api/cluster/leader")).json()
        assert leader["leader_id"] == node_id
        assert leader["current_term"] == api.node.term
        assert leader["term_start_time"].endswith("Z")
        assert leader["uptime_seconds"] >= 0
        assert [c["reason"] for c in leader["leadership_history"]] == ["elected"]


async def test_single_node_health(api: ApiHarness) -> None:
    async with serve(api.app) as base, httpx.AsyncClient(base_url=base, headers=api.auth("viewer")) as client:
        health = (await client.get("/api/cluster/health")).json()
        (entry,) = health["nodes"]
        assert entry["node_id"] == api.node.node_id
        assert entry["state"] == "leader"
        figures = entry["health"]
        assert set(figures) == {"cpu_usage", "memory_usage", "disk_usage", "network_io", "load_average", "status"}
        assert 0 <= figures["memory_usage"] <= 100 and 0 < figures["disk_usage"] <= 100
        assert figures["status"] in ("healthy", "warning", "critical")
        assert health["timestamp"].endswith("Z")

        local = (await client.get("/api/cluster/health", params={"scope": "local"})).json()
        assert [n["node_id"] for n in local["nodes"]] == [api.node.node_id]

        chosen = (await client.get("/api/cluster/health", params=[("metrics", "cpu"), ("metrics", "disk")])).json()
        assert set(chosen["nodes"][0]["health"]) == {"cpu_usage", "disk_usage", "status"}

        bad = await client.get("/api/cluster/health", params={"metrics": "temperature"})
        assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
        assert bad.json()["field"] == "metrics"
        assert (await client.get("/api/cluster/health", params={"scope": "galaxy"})).status_code == 422


async def test_single_node_refuses_disable_and_enable(api: ApiHarness) -> None:
    node_id = api.node.node_id
    async with serve(api.app) as base, httpx.AsyncClient(base_url=base, headers=api.auth("admin")) as client:
        refused = await client.post(f"/api/cluster/node/{node_id}/disable")
        assert refused.status_code == 409
        assert refused.headers["content-type"] == PROBLEM
        body = refused.json()
        assert body["type"] == "https://dtf.dev/problems/conflict"
        assert body["field"] == "node_id"
        assert "only node" in body["detail"]

        assert (await client.post(f"/api/cluster/node/{node_id}/enable")).status_code == 409
        unknown = await client.post("/api/cluster/node/coordinator-9/disable")
        assert unknown.status_code == 404 and unknown.json()["type"] == "https://dtf.dev/problems/not_found"

        for role, status in (("viewer", 403), ("submitter", 403)):
            denied = await client.post(f"/api/cluster/node/{node_id}/disable", headers=api.auth(role))
            assert denied.status_code == status, role
        anonymous = await client.post(f"/api/cluster/node/{node_id}/disable", headers={"Authorization": ""})
        assert anonymous.status_code == 401
    assert api.node.is_leader()


async def test_visualize_html_and_svg(api: ApiHarness) -> None:
    async with serve(api.app) as base, httpx.AsyncClient(base_url=base) as client:
        page = await client.get("/api/cluster/visualize", headers=api.auth("viewer"))
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "<svg" in html and api.node.node_id in html and "Leadership history" in html
        # Nothing fetched from elsewhere: no scripts, stylesheets or images by address.
        assert "<script" not in html and "src=" not in html and "<link" not in html

        # A browser cannot send a header on a link: the token may come in the query.
        token = api.tokens["viewer"]
        drawing = await client.get("/api/cluster/visualize", params={"format": "svg", "token": token})
        assert drawing.status_code == 200
        assert drawing.headers["content-type"].startswith("image/svg+xml")
        root = ET.fromstring(drawing.text)
        assert root.tag == f"{SVG}svg"
        nodes = root.findall(f".//{SVG}g[@class='node']")
        assert [(g.get("data-node-id"), g.get("data-state")) for g in nodes] == [(api.node.node_id, "leader")]
        assert root.findall(f".//{SVG}rect[@class='term']"), "the leadership timeline has a band"

        refreshing = await client.get("/api/cluster/visualize", params={"refresh": 5, "token": token})
        assert 'http-equiv="refresh" content="5"' in refreshing.text
        assert (await client.get("/api/cluster/visualize")).status_code == 401
        assert (await client.get("/api/cluster/visualize", params={"token": "garbage"})).status_code == 401
        worker = await client.get("/api/cluster/visualize", params={"token": api.tokens["worker"]})
        assert worker.status_code == 403


async def test_ws_cluster_status_channel(api: ApiHarness) -> None:
    async with serve(api.app) as base, connect(ws_url(base, api)) as ws:
        reply = await ask(ws, {"type": "subscribe", "channel": "cluster_status"})
        assert reply == {"type": "subscribed", "channel": "cluster_status", "filter": {}}
        update = await receive(ws)  # the first comes at once
        assert update["type"] == "cluster_status_update"
        assert update["timestamp"].endswith("Z")
        assert update["leader_id"] == api.node.node_id
        (node,) = update["nodes"]
        assert {"node_id", "state", "term", "last_heartbeat", "uptime_seconds"} <= set(node)
        # Then one every state_replication_interval (1 s by default).
        started = time.monotonic()
        assert (await until(ws, "cluster_status_update"))["type"] == "cluster_status_update"
        assert time.monotonic() - started > 0.5

        # A node_id filter keeps that node alone; a node not in the cluster gets nothing.
        other = await ask(ws, {"type": "subscribe", "channel": "cluster_status", "filter": {"node_id": "nobody"}})
        while other["type"] != "subscribed":
            other = await receive(ws)
        assert (await ask(ws, {"type": "get_leader_info"}))["type"] == "leader_info_response"
        mine = {"type": "subscribe", "channel": "cluster_status", "filter": {"node_id": api.node.node_id}}
        await ask(ws, mine)
        filtered = await until(ws, "cluster_status_update")
        assert [n["node_id"] for n in filtered["nodes"]] == [api.node.node_id]


async def test_ws_cluster_health_channel_and_request(api: ApiHarness) -> None:
    async with serve(api.app) as base, connect(ws_url(base, api)) as ws:
        reply = await ask(ws, {"type": "get_cluster_health", "metrics": ["cpu", "memory", "disk"], "request_id": 3})
        assert reply["type"] == "cluster_health_response"
        assert reply["request_id"] == 3
        (entry,) = reply["nodes"]
        assert entry["node_id"] == api.node.node_id
        assert set(entry["health"]) == {"cpu_usage", "memory_usage", "disk_usage", "status"}

        assert (await ask(ws, {"type": "subscribe", "channel": "cluster_health"}))["type"] == "subscribed"
        update = await until(ws, "cluster_health_update")
        assert update["timestamp"].endswith("Z")
        (entry,) = update["nodes"]
        assert entry["health"]["status"] in ("healthy", "warning", "critical")
        assert {"cpu_usage", "memory_usage", "disk_usage", "network_io", "load_average"} <= set(entry["health"])


async def test_ws_leadership_updates_channel(api: ApiHarness) -> None:
    change = {
        "type": "leadership_update",
        "previous_leader_id": "coordinator-1",
        "new_leader_id": "coordinator-2",
        "term": 4,
        "reason": "leader_timeout",
        "timestamp": "2025-03-14T15:35:12Z",
    }
    async with serve(api.app) as base, connect(ws_url(base, api)) as ws, connect(ws_url(base, api)) as picky:
        await ask(ws, {"type": "subscribe", "channel": "leadership_updates"})
        await ask(picky, {"type": "subscribe", "channel": "leadership_updates", "filter": {"new_leader_id": "c-3"}})
        # What the runtime publishes when the Raft node reports a change of leader.
        api.ctx.hub.publish("leadership_updates", change)
        assert await receive(ws) == change
        assert (await ask(picky, {"type": "get_leader_info"}))["type"] == "leader_info_response"


async def test_feeds_stop_when_the_last_subscriber_leaves(api: ApiHarness) -> None:
    async with serve(api.app) as base:
        async with connect(ws_url(base, api)) as ws:
            await ask(ws, {"type": "subscribe", "channel": "cluster_status"})
            await ask(ws, {"type": "subscribe", "channel": "cluster_health"})
            feeds = service_of(api.app).feeds
            assert all(feed.running for feed in feeds.values())
            await ask(ws, {"type": "unsubscribe", "channel": "cluster_health"})
        for _ in range(200):
            if not any(feed.running for feed in feeds.values()):
                break
            await asyncio.sleep(0.01)
        assert not any(feed.running for feed in feeds.values())
        assert not api.ctx.hub.has_subscribers("cluster_status")


async def test_feed_interval_follows_the_config(api: ApiHarness) -> None:
    ha = api.ctx.config.high_availability.model_copy(update={"state_replication_interval": 50})
    config = api.ctx.config.model_copy(update={"high_availability": ha})
    api.app.state.dtf_cluster = ClusterService(dataclasses.replace(api.ctx, config=config))
    async with serve(api.app) as base, connect(ws_url(base, api)) as ws:
        await ask(ws, {"type": "subscribe", "channel": "cluster_status"})
        started = time.monotonic()
        for _ in range(5):
            await until(ws, "cluster_status_update")
        assert time.monotonic() - started < 2


# ---------------------------------------------------------------------------- several members


@dataclasses.dataclass
class Conf:
    """The voters as replicated, which a test edits as replication would."""

    voters: list[str]
    disabled: list[str] = dataclasses.field(default_factory=list)


class RaftMember:
    """A Raft member as the API reads it (the `Consensus` port), scripted by the test,
    over a real standalone node that keeps taking writes."""

    def __init__(
        self, inner: RaftNode[StateMachine], node_id: str, voters: list[str], *, leader: str | None, term: int
    ) -> None:
        self.inner = inner
        self.state = inner.state
        self.node_id = node_id
        self.term = term
        self.leader = leader
        self.role: Role = "leader" if leader == node_id else "follower"
        self.started_ms = time.time_ns() // 1_000_000 - 120_000
        self.leader_history: list[LeaderChange] = []
        self.last_contact: dict[str, int] = {}
        self.progress: dict[str, PeerProgress] = {}
        self.conf = Conf(list(voters))
        self.changes: list[MembershipChange] = []

    async def start(self, sink: Any) -> None:  # the inner node is started by the harness
        pass

    async def stop(self) -> None:
        pass

    async def propose(self, command: commands_pb2.Command) -> Outcome:
        return await self.inner.propose(command)

    async def read_barrier(self) -> int:
        return await self.inner.read_barrier()

    def is_leader(self) -> bool:
        return self.role == "leader"

    def leader_hint(self) -> str | None:
        return self.leader

    def status(self) -> NodeStatus:
        return NodeStatus(
            node_id=self.node_id,
            role=self.role,
            term=self.term,
            leader_id=self.leader,
            commit_index=40,
            applied_index=39,
            last_index=42,
            voters=tuple(sorted(self.conf.voters)),
            disabled=frozenset(self.conf.disabled),
            progress=self.progress if self.role == "leader" else {},
            last_contact=self.last_contact,
            leader_history=tuple(self.leader_history),
            started_ms=self.started_ms,
            can_change_membership=True,
        )

    async def change_membership(self, change: MembershipChange) -> int:
        if self.role != "leader":
            raise NotLeader("membership changes go to the leader", leader_hint=self.leader)
        if change.action is MembershipAction.DISABLE:
            self.conf.disabled.append(change.node_id)
        else:
            self.conf.disabled.remove(change.node_id)
        self.changes.append(change)
        return 43

    def transfer_leadership(self, to: str) -> None:
        pass

    def snapshot_due(self, every: int) -> bool:
        return False

    async def take_snapshot(self, before_save: BeforeSnapshot | None = None) -> int:
        return self.state.applied_index


@dataclasses.dataclass
class Cluster:
    leader: ApiHarness
    follower: ApiHarness
    leader_node: RaftMember
    follower_node: RaftMember
    leader_url: str
    follower_url: str


VOTERS = ["coordinator-1", "coordinator-2", "coordinator-3"]


@pytest.fixture
async def cluster(api_factory: ApiFactory) -> AsyncIterator[Cluster]:
    """coordinator-1 leads, coordinator-2 follows (both served), coordinator-3 is down."""
    leader, follower = await api_factory(), await api_factory()
    now = time.time_ns() // 1_000_000
    one = RaftMember(leader.node, "coordinator-1", VOTERS, leader="coordinator-1", term=5)
    two = RaftMember(follower.node, "coordinator-2", VOTERS, leader="coordinator-1", term=5)
    one.progress = {
        "coordinator-2": PeerProgress(match=42, next=43, state="replicate", recent_active=True),
        "coordinator-3": PeerProgress(match=17, next=18, state="probe", recent_active=False),
    }
    one.last_contact = {"coordinator-2": now - 20, "coordinator-3": now - 600_000}
    two.last_contact = {"coordinator-1": now - 10}
    one.leader_history = [
        LeaderChange(None, "coordinator-3", 3, "elected", now - 300_000, 0.2),
        LeaderChange("coordinator-3", "coordinator-1", 5, "leader_timeout", now - 100_000, 0.31),
    ]
    two.leader_history = [LeaderChange(None, "coordinator-1", 5, "leader_discovered", now - 99_000)]
    leader.coordinator.node = one
    follower.coordinator.node = two
    async with serve(leader.app) as leader_url, serve(follower.app) as follower_url:
        directory = {
            "coordinator-1": {"api_url": leader_url, "grpc_address": ""},
            "coordinator-2": {"api_url": follower_url, "grpc_address": ""},
            "coordinator-3": {"api_url": closed_port_url(), "grpc_address": ""},
        }
        leader.coordinator.directory = {k: dict(v) for k, v in directory.items()}
        follower.coordinator.directory = {k: dict(v) for k, v in directory.items()}
        yield Cluster(leader, follower, one, two, leader_url, follower_url)


async def test_status_as_the_leader_sees_it(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.leader_url, headers=cluster.leader.auth("viewer")) as client:
        status = (await client.get("/api/cluster/status")).json()
    assert status["leader_id"] == "coordinator-1"
    assert status["current_term"] == 5
    assert status["quorum_size"] == 2
    assert status["cluster_health"] == "degraded"  # two of three reachable
    assert (status["commit_index"], status["applied_index"], status["last_index"]) == (40, 39, 42)
    nodes = {n["node_id"]: n for n in status["nodes"]}
    assert list(nodes) == VOTERS
    assert nodes["coordinator-1"]["state"] == "leader"
    assert nodes["coordinator-1"]["uptime_seconds"] >= 120
    two = nodes["coordinator-2"]
    assert two["state"] == "follower" and two["term"] == 5
    assert two["progress"] == {"match": 42, "next": 43, "state": "replicate", "recent_active": True}
    assert two["uptime_seconds"] >= 120  # as coordinator-2 itself said
    assert two["api_url"] == cluster.follower_url
    three = nodes["coordinator-3"]
    assert three["state"] == "offline" and three["term"] is None and three["uptime_seconds"] is None
    assert three["progress"]["recent_active"] is False


async def test_status_as_a_follower_sees_it(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.follower_url, headers=cluster.follower.auth("viewer")) as client:
        status = (await client.get("/api/cluster/status")).json()
        nodes = {n["node_id"]: n for n in status["nodes"]}
        assert status["reported_by"] == "coordinator-2"
        assert status["leader_id"] == "coordinator-1"
        assert nodes["coordinator-2"]["state"] == "follower"
        assert nodes["coordinator-1"]["state"] == "leader" and nodes["coordinator-1"]["progress"] is None
        assert nodes["coordinator-3"]["state"] == "offline"
        assert status["cluster_health"] == "degraded"

        cluster.follower_node.leader = None  # an election is on: no leader known here
        cluster.follower_node.role = "pre_candidate"
        status = (await client.get("/api/cluster/status")).json()
        assert status["cluster_health"] == "unhealthy"
        assert status["leader_id"] is None
        assert {n["node_id"]: n["state"] for n in status["nodes"]}["coordinator-2"] == "candidate"


async def test_health_of_every_node(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.follower_url, headers=cluster.follower.auth("viewer")) as client:
        health = (await client.get("/api/cluster/health")).json()
    nodes = {n["node_id"]: n for n in health["nodes"]}
    assert list(nodes) == VOTERS
    assert nodes["coordinator-1"]["state"] == "leader"  # as it reported itself
    assert nodes["coordinator-1"]["health"]["status"] in ("healthy", "warning", "critical")
    assert "cpu_usage" in nodes["coordinator-1"]["health"]
    assert nodes["coordinator-2"]["state"] == "follower"
    down = nodes["coordinator-3"]
    assert down["health"] == {"status": "unreachable"}
    assert "Connect" in down["error"]


async def test_leader_history_newest_first(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.leader_url, headers=cluster.leader.auth("viewer")) as client:
        leader = (await client.get("/api/cluster/leader")).json()
    assert leader["leader_id"] == "coordinator-1"
    assert leader["current_term"] == 5
    assert 99 <= leader["uptime_seconds"] <= 110
    newest, oldest = leader["leadership_history"]
    assert newest["previous_leader_id"] == "coordinator-3" and newest["new_leader_id"] == "coordinator-1"
    assert (newest["term"], newest["reason"], newest["election_seconds"]) == (5, "leader_timeout", 0.31)
    assert newest["timestamp"] == leader["term_start_time"]
    assert (oldest["leader_id"], oldest["term"], oldest["duration_seconds"]) == ("coordinator-3", 3, 200.0)


async def test_disable_on_a_follower_is_carried_out_by_the_leader(cluster: Cluster) -> None:
    admin = cluster.follower.auth("admin")
    async with httpx.AsyncClient(base_url=cluster.follower_url, headers=admin) as client:
        done = await client.post("/api/cluster/node/coordinator-3/disable")
        assert done.status_code == 200, done.text
        assert done.json() == {"node_id": "coordinator-3", "disabled": True, "index": 43, "leader_id": "coordinator-1"}
        assert [c.node_id for c in cluster.leader_node.changes] == ["coordinator-3"]
        cluster.follower_node.conf.disabled.append("coordinator-3")  # as replication would

        again = await client.post("/api/cluster/node/coordinator-3/disable")
        assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
        assert "already disabled" in again.json()["detail"]

        status = (await client.get("/api/cluster/status")).json()
        assert {n["node_id"]: n["disabled"] for n in status["nodes"]}["coordinator-3"] is True
        # A disabled node still votes: the quorum stays a majority of three, one of which is down.
        assert status["quorum_size"] == 2 and status["cluster_health"] == "degraded"

        enabled = await client.post("/api/cluster/node/coordinator-3/enable")
        assert enabled.status_code == 200 and enabled.json()["disabled"] is False
        assert list(cluster.leader_node.conf.disabled) == []

        # A viewer's token is refused by the follower before anything is forwarded.
        denied = await client.post("/api/cluster/node/coordinator-3/disable", headers=cluster.follower.auth("viewer"))
        assert denied.status_code == 403
        assert len(cluster.leader_node.changes) == 2


async def test_disable_refusals_on_the_leader(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.leader_url, headers=cluster.leader.auth("admin")) as client:
        assert (await client.post("/api/cluster/node/coordinator-2/enable")).status_code == 409
        cluster.leader_node.conf.disabled.extend(["coordinator-2", "coordinator-3"])
        last = await client.post("/api/cluster/node/coordinator-1/disable")
        assert last.status_code == 409 and "last enabled node" in last.json()["detail"]
        assert (await client.post("/api/cluster/node/coordinator-7/disable")).status_code == 404
    assert cluster.leader_node.changes == []


async def test_follower_without_a_reachable_leader_answers_503(cluster: Cluster) -> None:
    admin = cluster.follower.auth("admin")
    async with httpx.AsyncClient(base_url=cluster.follower_url, headers=admin) as client:
        cluster.follower.coordinator.directory["coordinator-1"]["api_url"] = closed_port_url()
        gone = await client.post("/api/cluster/node/coordinator-3/disable")
        assert gone.status_code == 503 and gone.headers["content-type"] == PROBLEM
        assert gone.json()["leader_hint"] == "coordinator-1"
        assert "Retry-After" in gone.headers

        # A request already forwarded once is never forwarded again.
        looped = await client.post("/api/cluster/node/coordinator-3/disable", headers={"X-Dtf-Forwarded-By": "x"})
        assert looped.status_code == 503 and looped.json()["type"] == "https://dtf.dev/problems/not_leader"

        cluster.follower_node.leader = None
        leaderless = await client.post("/api/cluster/node/coordinator-3/disable")
        assert leaderless.status_code == 503 and "no leader" in leaderless.json()["detail"]
    assert cluster.leader_node.changes == []


async def test_ws_status_of_several_nodes_with_a_node_filter(cluster: Cluster) -> None:
    async with connect(ws_url(cluster.follower_url, cluster.follower)) as ws:
        status = await ask(ws, {"type": "get_cluster_status"})
        assert [n["state"] for n in status["nodes"]] == ["leader", "follower", "offline"]
        wanted = {"type": "subscribe", "channel": "cluster_status", "filter": {"node_id": "coordinator-1"}}
        await ask(ws, wanted)
        update = await until(ws, "cluster_status_update")
        (node,) = update["nodes"]
        assert (node["node_id"], node["state"], node["term"]) == ("coordinator-1", "leader", 5)
        assert node["uptime_seconds"] >= 120 and node["last_heartbeat"].endswith("Z")

        await ask(ws, {"type": "subscribe", "channel": "cluster_health", "filter": {"node_id": "coordinator-3"}})
        health = await until(ws, "cluster_health_update")
        assert health["nodes"] == [
            {"node_id": "coordinator-3", "health": {"status": "unreachable"}, "error": health["nodes"][0]["error"]}
        ]


async def test_visualize_several_nodes(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.leader_url, headers=cluster.leader.auth("viewer")) as client:
        drawing = await client.get("/api/cluster/visualize", params={"format": "svg"})
    root = ET.fromstring(drawing.text)
    nodes = root.findall(f".//{SVG}g[@class='node']")
    states = {g.get("data-node-id"): g.get("data-state") for g in nodes}
    assert states == {"coordinator-1": "leader", "coordinator-2": "follower", "coordinator-3": "offline"}
    assert len(root.findall(f".//{SVG}rect[@class='replication']")) == 2
    assert len(root.findall(f".//{SVG}rect[@class='term']")) == 2


# ---------------------------------------------------------------------------- the parts alone


def test_classify_thresholds() -> None:
    calm = HealthFigures(cpu_usage=10, memory_usage=40, disk_usage=50, network_io=1, load_average=0.5, cpu_count=4)
    assert classify(calm) == "healthy"
    assert classify(dataclasses.replace(calm, memory_usage=88)) == "warning"
    assert classify(dataclasses.replace(calm, load_average=9)) == "warning"  # over 2 per CPU
    assert classify(dataclasses.replace(calm, disk_usage=97)) == "critical"
    assert classify(dataclasses.replace(calm, cpu_usage=85, load_average=17)) == "critical"


def test_sampler_reuses_a_sample_taken_moments_ago(tmp_path: Any) -> None:
    clock = [100.0]
    sampler = HealthSampler(tmp_path / "not-yet-created", clock=lambda: clock[0])
    first = sampler.sample()
    assert sampler.sample() is first
    clock[0] += 5
    assert sampler.sample() is not first
    assert first.disk_usage > 0 and first.network_io >= 0


async def test_probe_shares_one_round_and_reports_failures() -> None:
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        assert request.headers["authorization"] == "Bearer tok"
        assert request.url.params["scope"] == "local"
        if request.url.host == "b":
            return httpx.Response(503, json={"status": 503})
        if request.url.host == "c":
            return httpx.Response(200, text="not json")
        return httpx.Response(200, json={"nodes": [{"node_id": "a", "health": {"status": "healthy"}}]})

    probe = PeerProbe(transport=httpx.MockTransport(answer))
    peers = {"a": "http://a", "b": "http://b", "c": "http://c", "d": ""}
    first, second = await asyncio.gather(probe.refresh(peers, "tok"), probe.refresh(peers, "tok"))
    assert sorted(calls) == ["a", "b", "c"]  # one round for both callers; d has no address
    assert first == second
    assert first["a"].ok and first["a"].report == {"node_id": "a", "health": {"status": "healthy"}}
    assert first["b"].error == "HTTP 503 from http://b"
    assert first["c"].error is not None and not first["c"].ok
    assert first["d"].error == "no API address known for this node"
    await probe.refresh(peers, "tok", max_age_ms=60_000)
    assert len(calls) == 3  # fresh enough: no new round


async def test_channel_feed_publishes_only_while_subscribed() -> None:
    hub = EventHub()
    built = 0

    async def build() -> dict[str, Any]:
        nonlocal built
        built += 1
        return {"type": "tick", "n": built}

    feed = ChannelFeed(hub, "ticks", 0.01, build)
    assert await feed.run_once() is False  # nobody listens: built, not published
    sub = hub.subscribe("ticks")
    feed.ensure_running()
    for _ in range(100):
        if sub.queue.qsize() >= 3:
            break
        await asyncio.sleep(0.01)
    assert sub.queue.qsize() >= 3
    hub.unsubscribe(sub)
    feed.kick()
    for _ in range(100):
        if not feed.running:
            break
        await asyncio.sleep(0.01)
    assert not feed.running


def test_views_of_a_node_that_knows_nothing_yet() -> None:
    local = NodeStatus(
        node_id="n1",
        role="follower",
        term=0,
        leader_id=None,
        commit_index=0,
        applied_index=0,
        last_index=0,
        voters=("n1", "n2", "n3"),
        started_ms=1_000,
        can_change_membership=True,
    )
    status = build_status(local, {}, now_ms=2_000, api_urls={}, recent_ms=600)
    assert [n.state for n in status.nodes] == ["follower", "unknown", "unknown"]
    assert status.cluster_health == "unhealthy"
    failed = {"n2": PeerSample("n2", 1_900, error="refused")}
    assert build_status(local, failed, now_ms=2_000, api_urls={}, recent_ms=600).nodes[1].state == "offline"
    leader = build_leader_info(local, now_ms=2_000)
    assert leader.leader_id is None and leader.term_start_time is None and leader.leadership_history == []
