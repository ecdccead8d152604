"""Membership of the coordinator cluster: which node may be added, removed, disabled or
enabled, and which coordinator carries a change out.

Only the leader changes membership, one change at a time (single-server changes,
thesis §4.1), waiting until the change is applied. The rules:
- a node is added only if not yet a member, removed only if a member and not the last;
- a node is disabled (it may not lead; it still votes) only if enabled and not the
  last enabled voter, and enabled only if disabled;
- a cluster of one (no high availability) has no membership to change;
- on a follower, disable and enable go to the leader (`Forward`), once: a request that
  was already forwarded is refused with `NotLeader` rather than forwarded again.

The API reads the consensus node's status through this module's names (`NodeStatus`,
`PeerProgress`, `LeaderChange`), so it never imports consensus itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from dtf_common.errors import Conflict, NotFound, NotLeader, Unavailable
from dtf_coordinator.consensus.status import (
    LeaderChange,
    MembershipAction,
    MembershipChange,
    NodeStatus,
    PeerProgress,
)
from dtf_coordinator.service.coordinator import Coordinator

__all__ = ["Applied", "Forward", "LeaderChange", "Membership", "NodeStatus", "PeerProgress"]


@dataclass(frozen=True, slots=True)
class Applied:
    """A change the leader carried out, applied at log `index`."""

    node_id: str
    disabled: bool
    index: int
    leader_id: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Not the leader: the change goes to `leader_id`, whose API is at `api_url`."""

    leader_id: str
    api_url: str


class Membership:
    def __init__(self, coordinator: Coordinator, *, apply_wait_s: float) -> None:
        self.coordinator = coordinator
        self.apply_wait_s = apply_wait_s

    def status(self) -> NodeStatus:
        return self.coordinator.node.status()

    async def set_disabled(self, node_id: str, *, disable: bool, forwarded: bool) -> Applied | Forward:
        """Disable or enable `node_id`: on the leader, propose the change and wait until
        it is applied; on a follower, say where the leader is. `forwarded`: the request
        came from another coordinator already."""
        status = self.status()
        if node_id not in status.voters:
            members = ", ".join(status.voters)
            raise NotFound(f"node {node_id} is not a member of the cluster ({members})", field="node_id")
        if not status.can_change_membership:
            if disable:
                raise Conflict(
                    f"{node_id} is the only node of the cluster: disabling it would stop the cluster", field="node_id"
                )
            raise Conflict(f"{node_id} is not disabled", field="node_id")
        if not status.is_leader:
            return self._forward(status.leader_id, forwarded=forwarded)
        self._check_disable(status, node_id, disable=disable)
        action = MembershipAction.DISABLE if disable else MembershipAction.ENABLE
        try:
            index = await self._apply(MembershipChange(action, node_id), status.node_id)
        except NotLeader as exc:
            # Leadership moved while the change was on its way: the new leader decides.
            if forwarded:
                raise
            hint = exc.context.get("leader_hint")
            leader = self.status().leader_id
            if isinstance(hint, str) and hint and leader is None:
                leader = hint
            return self._forward(leader, forwarded=False)
        return Applied(node_id, disable, index, status.node_id)

    async def add(self, node_id: str, address: str, *, api_url: str | None, grpc_address: str | None) -> Applied:
        """Add a voter whose Raft port is at `address` (host:port)."""
        status = self._leader_status()
        if node_id in status.voters:
            raise Conflict(f"node {node_id} is already a member", field="node_id")
        self.coordinator.directory[node_id] = {"api_url": api_url or "", "grpc_address": grpc_address or ""}
        index = await self._apply(MembershipChange(MembershipAction.ADD, node_id, address), status.node_id)
        return Applied(node_id, False, index, status.node_id)

    async def remove(self, node_id: str) -> Applied:
        status = self._leader_status()
        if node_id not in status.voters:
            raise NotFound(f"node {node_id} is not a member of the cluster", field="node_id")
        if list(status.voters) == [node_id]:
            raise Conflict(f"{node_id} is the last member: removing it would end the cluster", field="node_id")
        index = await self._apply(MembershipChange(MembershipAction.REMOVE, node_id), status.node_id)
        self.coordinator.directory.pop(node_id, None)
        return Applied(node_id, False, index, status.node_id)

    def _leader_status(self) -> NodeStatus:
        status = self.status()
        if not status.can_change_membership:
            raise Conflict("a coordinator without high availability has no membership to change", field="node_id")
        if not status.is_leader:
            raise NotLeader("membership changes go to the leader", leader_hint=status.leader_id)
        return status

    @staticmethod
    def _check_disable(status: NodeStatus, node_id: str, *, disable: bool) -> None:
        if disable and node_id in status.disabled:
            raise Conflict(f"node {node_id} is already disabled", field="node_id")
        if not disable and node_id not in status.disabled:
            raise Conflict(f"node {node_id} is not disabled", field="node_id")
        if disable and status.enabled_voters == [node_id]:
            raise Conflict(
                f"{node_id} is the last enabled node: disabling it would leave no one to lead", field="node_id"
            )

    def _forward(self, leader: str | None, *, forwarded: bool) -> Forward:
        if leader is None:
            raise Unavailable("the cluster has no leader right now (an election is in progress or a quorum is lost)")
        url = self.coordinator.api_url_of(leader)
        if forwarded or not url:
            # Forwarded once already (leadership moved meanwhile), or nowhere to send it.
            raise NotLeader(f"this coordinator is not the leader; send the request to {leader}", leader_hint=leader)
        return Forward(leader, url)

    async def _apply(self, change: MembershipChange, leader_id: str) -> int:
        """Propose a membership change on this leader; its log index once applied."""
        try:
            return await asyncio.wait_for(self.coordinator.node.change_membership(change), self.apply_wait_s)
        except TimeoutError:
            raise Unavailable(
                f"the change was proposed but not applied within {self.apply_wait_s:g} s (is a quorum reachable?); "
                "it may still take effect: check /api/cluster/status",
                leader_hint=leader_id,
            ) from None
