"""Cluster views, for `/api/cluster/*` and the WebSocket's cluster messages: pure
functions from what the consensus node says to the API's models.

A coordinator is a cluster of one (its own leader while it runs) or a Raft member.
`read_local` reads the node's typed `NodeStatus` once (`cluster_state` puts its role in
the API's words). The `build_*` functions turn that status, and
what peers said of themselves (`PeerSample`), into the API's models. Every coordinator
answers with its own view; `cluster_service` does the asking of peers and the
publishing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal, cast

from dtf_common.errors import InvalidArgument
from dtf_coordinator.api.models import (
    ClusterNode,
    ClusterState,
    ClusterStatus,
    LeaderInfo,
    LeadershipChange,
    NodeHealth,
    NodeHealthFigures,
    ReplicationProgress,
)
from dtf_coordinator.service.cluster_health import HealthFigures, PeerSample, classify
from dtf_coordinator.service.coordinator import Coordinator
from dtf_coordinator.service.membership import NodeStatus, PeerProgress

# Figures a health request may ask for, by their short and their full names.
METRICS = {
    "cpu": "cpu_usage",
    "memory": "memory_usage",
    "disk": "disk_usage",
    "network": "network_io",
    "load": "load_average",
}
ROLES: dict[str, ClusterState] = {
    "leader": "leader",
    "follower": "follower",
    "pre_candidate": "candidate",
    "candidate": "candidate",
    "failed": "stopped",
    "stopped": "stopped",
}
STATES: frozenset[str] = frozenset({"leader", "follower", "candidate", "offline", "unknown", "stopped"})


def to_datetime(ms: int | float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# ---------------------------------------------------------------------------- reading the node


def read_local(coordinator: Coordinator) -> NodeStatus:
    """The node's status, read once, with its start time where the node has none yet."""
    status = coordinator.node.status()
    if status.started_ms:
        return status
    return dataclasses.replace(status, started_ms=int(coordinator.started_at * 1000))


def cluster_state(status: NodeStatus) -> ClusterState:
    """A node's role in the API's words."""
    return ROLES.get(status.role, "unknown")


# ---------------------------------------------------------------------------- building the views


def build_status(
    local: NodeStatus,
    samples: Mapping[str, PeerSample],
    *,
    now_ms: int,
    api_urls: Mapping[str, str],
    recent_ms: int,
) -> ClusterStatus:
    """The cluster as `local` sees it, with what the peers said of themselves in `samples`."""
    nodes: list[ClusterNode] = []
    reachable: set[str] = set()
    for node_id in local.voters:
        if node_id == local.node_id:
            node = ClusterNode(
                node_id=node_id,
                state=cluster_state(local),
                term=local.term,
                last_heartbeat=to_datetime(now_ms),
                uptime_seconds=round(max(0, now_ms - local.started_ms) / 1000, 3),
            )
            if cluster_state(local) != "stopped":
                reachable.add(node_id)
        else:
            node, active = _peer(local, node_id, samples.get(node_id), now_ms=now_ms, recent_ms=recent_ms)
            if active:
                reachable.add(node_id)
        node.disabled = node_id in local.disabled
        node.api_url = api_urls.get(node_id) or None
        nodes.append(node)
    up = sum(1 for v in local.voters if v in reachable)
    health: Literal["healthy", "degraded", "unhealthy"]
    if local.leader_id is None or up < local.quorum_size:
        health = "unhealthy"
    elif up < len(local.voters):
        health = "degraded"
    else:
        health = "healthy"
    return ClusterStatus(
        leader_id=local.leader_id,
        current_term=local.term,
        nodes=nodes,
        quorum_size=local.quorum_size,
        cluster_health=health,
        reported_by=local.node_id,
        commit_index=local.commit_index,
        applied_index=local.applied_index,
        last_index=local.last_index,
    )


def _peer(
    local: NodeStatus, node_id: str, sample: PeerSample | None, *, now_ms: int, recent_ms: int
) -> tuple[ClusterNode, bool]:
    report = sample.report if sample is not None else None
    contact = local.last_contact.get(node_id)
    recent = contact is not None and now_ms - contact <= recent_ms
    progress = local.progress.get(node_id)
    active = recent or (progress is not None and progress.recent_active) or report is not None
    said = report.get("state") if report is not None else None
    state: ClusterState
    if node_id == local.leader_id:
        state = "leader"
    elif isinstance(said, str) and said in STATES:
        state = cast(ClusterState, said)  # the node's own word
    elif active:
        state = "follower"
    elif sample is not None or local.role == "leader":
        state = "offline"
    else:
        state = "unknown"
    term: int | None = None
    if report is not None and isinstance(report.get("term"), int):
        term = report["term"]
    elif active:
        term = local.term
    heard = [t for t in (contact, sample.received_ms if report is not None and sample else None) if t is not None]
    uptime: float | None = None
    reported_uptime = report.get("uptime_seconds") if report is not None else None
    if isinstance(reported_uptime, int | float) and sample is not None:
        uptime = round(reported_uptime + max(0, now_ms - sample.received_ms) / 1000, 3)
    node = ClusterNode(
        node_id=node_id,
        state=state,
        term=term,
        last_heartbeat=to_datetime(max(heard)) if heard else None,
        uptime_seconds=uptime,
        progress=_progress(progress),
    )
    return node, active


def _progress(progress: PeerProgress | None) -> ReplicationProgress | None:
    if progress is None:
        return None
    return ReplicationProgress(
        match=progress.match, next=progress.next, state=progress.state, recent_active=progress.recent_active
    )


def build_leader_info(local: NodeStatus, *, now_ms: int) -> LeaderInfo:
    changes = sorted(local.leader_history, key=lambda c: c.time_ms)
    history: list[LeadershipChange] = []
    for n, change in enumerate(changes):
        until = changes[n + 1].time_ms if n + 1 < len(changes) else now_ms
        history.append(
            LeadershipChange(
                previous_leader_id=change.previous,
                new_leader_id=change.current,
                term=change.term,
                reason=change.reason,
                timestamp=to_datetime(change.time_ms),
                election_seconds=change.election_seconds,
                leader_id=change.current,
                duration_seconds=round(max(0, until - change.time_ms) / 1000, 3),
            )
        )
    history.reverse()
    start = next((c for c in history if local.leader_id is not None and c.new_leader_id == local.leader_id), None)
    start_time = start.timestamp if start is not None else None
    return LeaderInfo(
        leader_id=local.leader_id,
        current_term=local.term,
        term_start_time=start_time,
        uptime_seconds=round(max(0.0, now_ms / 1000 - start_time.timestamp()), 3) if start_time else None,
        leadership_history=history,
    )


def own_health(local: NodeStatus, figures: HealthFigures, *, now_ms: int) -> NodeHealth:
    return NodeHealth(
        node_id=local.node_id,
        health=NodeHealthFigures(**figures.as_dict(), status=classify(figures)),
        state=cluster_state(local),
        term=local.term,
        leader_id=local.leader_id,
        uptime_seconds=round(max(0, now_ms - local.started_ms) / 1000, 3),
    )


def peer_health(node_id: str, sample: PeerSample | None) -> NodeHealth:
    if sample is not None and sample.report is not None:
        try:
            return NodeHealth.model_validate(sample.report)
        except ValueError:
            error = "its health report could not be read"
    else:
        error = sample.error if sample is not None and sample.error else "not probed"
    return NodeHealth(node_id=node_id, health=NodeHealthFigures(status="unreachable"), error=error)


def metric_fields(metrics: Iterable[str] | None) -> frozenset[str] | None:
    """The figure names a `metrics` selection asks for (None: all)."""
    if metrics is None:
        return None
    chosen: set[str] = set()
    for name in metrics:
        full = METRICS.get(name, name)
        if full not in METRICS.values():
            known = ", ".join(METRICS)
            raise InvalidArgument(f"unknown health metric {name!r} (one of {known})", field="metrics")
        chosen.add(full)
    return frozenset(chosen)


def select_metrics(entry: NodeHealth, fields: frozenset[str] | None) -> NodeHealth:
    if fields is None:
        return entry
    left_out = {name: None for name in METRICS.values() if name not in fields}
    return entry.model_copy(update={"health": entry.health.model_copy(update=left_out)})


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
