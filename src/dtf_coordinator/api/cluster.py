"""Cluster views, for `/api/cluster/*` and the WebSocket's cluster requests.

A coordinator without high availability is a cluster of one: this node, leader of its
own term while it accepts writes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from dtf_coordinator.api.models import ClusterNode, ClusterStatus, LeaderInfo
from dtf_coordinator.service.coordinator import Coordinator


def current_term(coordinator: Coordinator) -> int:
    term = getattr(coordinator.node, "term", None)
    return term if isinstance(term, int) and term > 0 else 1


def cluster_status(coordinator: Coordinator) -> ClusterStatus:
    node = coordinator.node
    leading = node.is_leader()
    term = current_term(coordinator)
    return ClusterStatus(
        leader_id=node.leader_hint() if leading else None,
        current_term=term,
        nodes=[ClusterNode(node_id=node.node_id, state="leader" if leading else "stopped", term=term)],
        quorum_size=1,
        cluster_health="healthy" if leading else "unhealthy",
    )


def leader_info(coordinator: Coordinator) -> LeaderInfo:
    node = coordinator.node
    return LeaderInfo(
        leader_id=node.leader_hint() if node.is_leader() else None,
        current_term=current_term(coordinator),
        term_start_time=datetime.fromtimestamp(coordinator.started_at, tz=UTC),
        uptime_seconds=round(time.time() - coordinator.started_at, 3),
    )
