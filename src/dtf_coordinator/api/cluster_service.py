"""The cluster service of one app: asks peers, publishes the cluster feeds, and carries
out node disable/enable (forwarding it to the leader from a follower).

What only a peer knows (its uptime, its health figures and, on a follower, the other
followers' roles) comes from the peer's own API (`PeerProbe`): at most once per
`health_check_interval` for status views, afresh for health. `ClusterService` holds the
health sampler, the peers' latest answers and the feeds that publish
`cluster_status_update` (every `state_replication_interval`) and `cluster_health_update`
(every `health_check_interval`) while someone subscribes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, cast
from urllib.parse import quote

from starlette.applications import Starlette

from dtf_common.clock import wall_ms
from dtf_common.errors import Conflict, NotFound, NotLeader, Unavailable
from dtf_common.pb.dtf.v1 import raft_pb2
from dtf_coordinator.api.cluster import (
    LocalView,
    build_leader_info,
    build_status,
    metric_fields,
    now_iso,
    own_health,
    peer_health,
    read_local,
    select_metrics,
)
from dtf_coordinator.api.context import ApiContext
from dtf_coordinator.api.models import ClusterHealth, ClusterStatus, LeaderInfo, NodeHealth, NodeMembershipChange
from dtf_coordinator.auth import Role, create_token
from dtf_coordinator.service.cluster_health import ChannelFeed, HealthSampler, PeerProbe
from dtf_coordinator.service.events import Message

CLUSTER_STATUS = "cluster_status"
CLUSTER_HEALTH = "cluster_health"
# Set on a disable/enable forwarded to the leader, so that it is never forwarded twice.
FORWARDED_HEADER = "X-Dtf-Forwarded-By"
PEER_TOKEN_TTL_S = 300

if TYPE_CHECKING:
    import httpx  # imported where used: 0.1 s of every coordinator's start


@dataclass(frozen=True)
class Relayed:
    """The leader's answer to a forwarded request, passed on as it came."""

    status_code: int
    content: bytes
    media_type: str | None


class ClusterService:
    """One per app: the health sampler, the peers' latest answers and the cluster feeds."""

    def __init__(self, ctx: ApiContext, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.coordinator = ctx.coordinator
        self.ha = ctx.config.high_availability
        self.secret = ctx.secret
        self.transport = transport
        self.sampler = HealthSampler(ctx.config.server.data_dir)
        self.probe = PeerProbe(transport=transport)
        self.feeds = {
            CLUSTER_STATUS: ChannelFeed(
                ctx.hub, CLUSTER_STATUS, self.ha.state_replication_interval / 1000, self._status_update
            ),
            CLUSTER_HEALTH: ChannelFeed(
                ctx.hub, CLUSTER_HEALTH, self.ha.health_check_interval / 1000, self._health_update
            ),
        }
        self._minted: tuple[str, float] | None = None

    # ---------------------------------------------------------------- views

    def local(self) -> LocalView:
        return read_local(self.coordinator)

    async def status(self, token: str | None = None) -> ClusterStatus:
        local = self.local()
        samples = await self.probe.refresh(
            self._peers(local), token or self.peer_token(), max_age_ms=self.ha.health_check_interval
        )
        return build_status(
            local,
            samples,
            now_ms=wall_ms(),
            api_urls={n: self.coordinator.api_url_of(n) or "" for n in local.voters},
            recent_ms=2 * self.ha.election_timeout_max,
        )

    def leader_info(self) -> LeaderInfo:
        return build_leader_info(self.local(), now_ms=wall_ms())

    async def health(
        self,
        *,
        scope: Literal["cluster", "local"] = "cluster",
        token: str | None = None,
        metrics: Iterable[str] | None = None,
    ) -> ClusterHealth:
        fields = metric_fields(metrics)
        local = self.local()
        entries: dict[str, NodeHealth] = {local.node_id: own_health(local, self.sampler.sample(), now_ms=wall_ms())}
        if scope == "cluster":
            peers = self._peers(local)
            samples = await self.probe.refresh(peers, token or self.peer_token())
            for node_id in peers:
                entries[node_id] = peer_health(node_id, samples.get(node_id))
        order = [n for n in local.voters if n in entries]
        return ClusterHealth(nodes=[select_metrics(entries[n], fields) for n in order], timestamp=datetime.now(UTC))

    def _peers(self, local: LocalView) -> dict[str, str]:
        return {n: self.coordinator.api_url_of(n) or "" for n in local.voters if n != local.node_id}

    def peer_token(self) -> str:
        """A short-lived viewer token for asking peers when no caller's token is at hand
        (the feeds); every coordinator of a cluster shares the signing secret."""
        now = time.time()
        if self._minted is None or self._minted[1] - now < PEER_TOKEN_TTL_S / 5:
            subject = f"coordinator:{self.coordinator.node.node_id}"
            token = create_token(self.secret, Role.VIEWER, subject=subject, expires_in=PEER_TOKEN_TTL_S)
            self._minted = (token, now + PEER_TOKEN_TTL_S)
        return self._minted[0]

    # ---------------------------------------------------------------- feeds

    def feed(self, channel: str) -> ChannelFeed | None:
        return self.feeds.get(channel)

    async def _status_update(self) -> Message:
        status = await self.status()
        return {"type": "cluster_status_update", **status.model_dump(mode="json"), "timestamp": now_iso()}

    async def _health_update(self) -> Message:
        health = await self.health()
        return {"type": "cluster_health_update", **health.model_dump(mode="json", exclude_none=True)}

    async def close(self) -> None:
        for feed in self.feeds.values():
            await feed.stop()

    # ---------------------------------------------------------------- membership

    async def change(
        self, node_id: str, *, disable: bool, authorization: str | None, forwarded_by: str | None
    ) -> NodeMembershipChange | Relayed:
        """Disable or enable `node_id`: on the leader, propose the change and wait until it
        is applied; on a follower, pass the request to the leader and relay its answer."""
        local = self.local()
        if node_id not in local.voters:
            members = ", ".join(local.voters)
            raise NotFound(f"node {node_id} is not a member of the cluster ({members})", field="node_id")
        if not local.raft:
            if disable:
                raise Conflict(
                    f"{node_id} is the only node of the cluster: disabling it would stop the cluster", field="node_id"
                )
            raise Conflict(f"{node_id} is not disabled", field="node_id")
        if local.role != "leader":
            return await self._forward(local, node_id, disable, authorization, forwarded_by)
        self._check_change(local, node_id, disable=disable)
        kind = raft_pb2.ConfChange.DISABLE_NODE if disable else raft_pb2.ConfChange.ENABLE_NODE
        try:
            index = await self._apply_change(raft_pb2.ConfChange(type=kind, node_id=node_id), local.node_id)
        except NotLeader as exc:
            # Leadership moved while the change was on its way: the new leader decides.
            if forwarded_by is not None:
                raise
            hint = exc.context.get("leader_hint")
            moved = self.local()
            if isinstance(hint, str) and hint and moved.leader_id is None:
                moved = replace(moved, leader_id=hint)
            return await self._forward(moved, node_id, disable, authorization, None)
        return NodeMembershipChange(node_id=node_id, disabled=disable, index=index, leader_id=local.node_id)

    async def _apply_change(self, change: raft_pb2.ConfChange, leader_id: str) -> int:
        """Propose a membership change on this leader; its log index once applied."""
        wait_s = self.ha.leader_lease_duration / 1000
        try:
            index = await asyncio.wait_for(
                self.coordinator.node.change_membership(change),  # type: ignore[attr-defined]
                wait_s,
            )
        except TimeoutError:
            raise Unavailable(
                f"the change was proposed but not applied within {wait_s:g} s (is a quorum reachable?); "
                "it may still take effect: check /api/cluster/status",
                leader_hint=leader_id,
            ) from None
        return index if isinstance(index, int) else 0

    async def add_or_remove(
        self, node_id: str, *, address: str | None, api_url: str | None = None, grpc_address: str | None = None
    ) -> NodeMembershipChange:
        """Add a voter (`address` is its Raft host:port) or remove one (`address` None), on
        the leader, one change at a time (single-server changes, thesis §4.1)."""
        local = self.local()
        if not local.raft:
            raise Conflict("a coordinator without high availability has no membership to change", field="node_id")
        if local.role != "leader":
            raise NotLeader("membership changes go to the leader", leader_hint=local.leader_id)
        if address is not None and node_id in local.voters:
            raise Conflict(f"node {node_id} is already a member", field="node_id")
        if address is None and node_id not in local.voters:
            raise NotFound(f"node {node_id} is not a member of the cluster", field="node_id")
        if address is None and local.voters == [node_id]:
            raise Conflict(f"{node_id} is the last member: removing it would end the cluster", field="node_id")
        kind = raft_pb2.ConfChange.ADD_NODE if address is not None else raft_pb2.ConfChange.REMOVE_NODE
        if address is not None:
            self.coordinator.directory[node_id] = {"api_url": api_url or "", "grpc_address": grpc_address or ""}
        change = raft_pb2.ConfChange(type=kind, node_id=node_id, address=address or "")
        index = await self._apply_change(change, local.node_id)
        if address is None:
            self.coordinator.directory.pop(node_id, None)
        return NodeMembershipChange(node_id=node_id, disabled=False, index=index, leader_id=local.node_id)

    @staticmethod
    def _check_change(local: LocalView, node_id: str, *, disable: bool) -> None:
        if disable and node_id in local.disabled:
            raise Conflict(f"node {node_id} is already disabled", field="node_id")
        if not disable and node_id not in local.disabled:
            raise Conflict(f"node {node_id} is not disabled", field="node_id")
        if disable and local.enabled_voters == [node_id]:
            raise Conflict(
                f"{node_id} is the last enabled node: disabling it would leave no one to lead", field="node_id"
            )

    async def _forward(
        self, local: LocalView, node_id: str, disable: bool, authorization: str | None, forwarded_by: str | None
    ) -> Relayed:
        leader = local.leader_id
        if leader is None:
            raise Unavailable("the cluster has no leader right now (an election is in progress or a quorum is lost)")
        url = self.coordinator.api_url_of(leader)
        if forwarded_by is not None or not url:
            # Forwarded once already (leadership moved meanwhile), or nowhere to send it.
            raise NotLeader(f"this coordinator is not the leader; send the request to {leader}", leader_hint=leader)
        action = "disable" if disable else "enable"
        headers = {FORWARDED_HEADER: local.node_id}
        if authorization:
            headers["Authorization"] = authorization
        timeout = self.ha.leader_lease_duration / 1000 + 2
        import httpx

        try:
            async with httpx.AsyncClient(transport=self.transport, timeout=timeout) as client:
                response = await client.post(
                    f"{url.rstrip('/')}/api/cluster/node/{quote(node_id, safe='')}/{action}", headers=headers
                )
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the leader {leader} did not answer ({type(exc).__name__})", leader_hint=leader
            ) from None
        return Relayed(response.status_code, response.content, response.headers.get("content-type"))


def service_of(app: Starlette) -> ClusterService:
    """The app's cluster service, made on first use."""
    service = getattr(app.state, "dtf_cluster", None)
    if service is None:
        service = ClusterService(cast(ApiContext, app.state.dtf))
        app.state.dtf_cluster = service
    return cast(ClusterService, service)
