"""The cluster service of one app: asks peers, publishes the cluster feeds, and passes
node membership changes to `service.membership` (relaying a disable/enable to the
leader over its API when the rules say the leader carries it out).

What only a peer knows (its uptime, its health figures and, on a follower, the other
followers' roles) comes from the peer's own API (`PeerProbe`): at most once per
`health_check_interval` for status views, afresh for health. `ClusterService` holds the
health sampler, the peers' latest answers and the feeds that publish
`cluster_status_update` (every `state_replication_interval`) and `cluster_health_update`
(every `health_check_interval`) while someone subscribes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, cast
from urllib.parse import quote

from starlette.applications import Starlette

from dtf_common.clock import wall_ms
from dtf_common.errors import Unavailable
from dtf_coordinator.api.cluster import (
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
from dtf_coordinator.service.membership import Applied, Membership, NodeStatus

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
        self.membership = Membership(self.coordinator, apply_wait_s=self.ha.leader_lease_duration / 1000)
        self._minted: tuple[str, float] | None = None

    # ---------------------------------------------------------------- views

    def local(self) -> NodeStatus:
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

    def _peers(self, local: NodeStatus) -> dict[str, str]:
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
        """Disable or enable `node_id`: carried out here on the leader; from a follower,
        passed to the leader with the caller's token and its answer relayed."""
        outcome = await self.membership.set_disabled(node_id, disable=disable, forwarded=forwarded_by is not None)
        if isinstance(outcome, Applied):
            return _change_model(outcome)
        leader, url = outcome.leader_id, outcome.api_url
        action = "disable" if disable else "enable"
        headers = {FORWARDED_HEADER: self.coordinator.node.node_id}
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

    async def add_or_remove(
        self, node_id: str, *, address: str | None, api_url: str | None = None, grpc_address: str | None = None
    ) -> NodeMembershipChange:
        """Add a voter (`address` is its Raft host:port) or remove one (`address` None)."""
        if address is None:
            return _change_model(await self.membership.remove(node_id))
        return _change_model(await self.membership.add(node_id, address, api_url=api_url, grpc_address=grpc_address))


def _change_model(applied: Applied) -> NodeMembershipChange:
    return NodeMembershipChange(
        node_id=applied.node_id, disabled=applied.disabled, index=applied.index, leader_id=applied.leader_id
    )


def service_of(app: Starlette) -> ClusterService:
    """The app's cluster service, made on first use."""
    service = getattr(app.state, "dtf_cluster", None)
    if service is None:
        service = ClusterService(cast(ApiContext, app.state.dtf))
        app.state.dtf_cluster = service
    return cast(ClusterService, service)
