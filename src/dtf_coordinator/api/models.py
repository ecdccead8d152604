"""Response models of the API's own endpoints (status, dashboard, cluster).

Tasks, workers and results use the shared schemas of `dtf_common.schemas`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dtf_common.schemas import Task


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class SystemStatus(BaseModel):
    """`Coordinator.status()`; keys added there pass through."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(description='"ok" on the leader, "follower" elsewhere')
    node_id: str
    leader_id: str | None
    is_leader: bool
    uptime_seconds: float
    applied_index: int
    tasks: dict[str, int] = Field(description="tasks by status")
    queue_depth: int = Field(description="tasks pending")
    max_queue_size: int
    workers: dict[str, int] = Field(description="workers by status")


class Dashboard(BaseModel):
    status: SystemStatus
    results: dict[str, Any] = Field(
        description="results store summary: tasks_by_status, results_by_status, workers_by_status, "
        "results_per_hour (last 24 hours), execution_time_by_type, applied_index"
    )
    recent_tasks: list[Task] = Field(description="the 20 most recently submitted tasks, newest first")


ClusterState = Literal["leader", "follower", "candidate", "offline", "unknown", "stopped"]
ClusterHealthLevel = Literal["healthy", "degraded", "unhealthy"]
NodeHealthStatus = Literal["healthy", "warning", "critical", "unreachable"]


class ReplicationProgress(BaseModel):
    """How far the leader has replicated its log to one follower (the leader's view only)."""

    match: int = Field(description="highest log index known to be on the follower")
    next: int = Field(description="next log index the leader sends it")
    state: str = Field(description="probe, replicate or snapshot")
    recent_active: bool = Field(description="heard from within the last election timeout")


class ClusterNode(BaseModel):
    node_id: str
    state: ClusterState = Field(
        description="the node's role as far as this coordinator can tell: offline when it has not been heard "
        "from lately, unknown when this coordinator cannot tell (a follower's view of another follower that "
        "does not answer), stopped for this coordinator when it no longer runs"
    )
    term: int | None = Field(description="the node's current term, if known")
    last_heartbeat: datetime | None = Field(
        default=None, description="when this coordinator last heard from the node (now for itself)"
    )
    uptime_seconds: float | None = Field(default=None, description="how long the node's coordinator has run")
    disabled: bool = Field(
        default=False,
        description="disabled by an admin: it may not lead (a disabled leader hands over) but still "
        "replicates, votes and counts in the quorum",
    )
    api_url: str | None = Field(default=None, description="the node's REST API")
    progress: ReplicationProgress | None = Field(default=None, description="replication to the node (leader only)")


class ClusterStatus(BaseModel):
    leader_id: str | None
    current_term: int
    nodes: list[ClusterNode]
    quorum_size: int = Field(description="votes needed to elect a leader or commit: a majority of the voters")
    cluster_health: ClusterHealthLevel = Field(
        description="healthy: a leader and every voter reachable; degraded: a leader and a quorum "
        "reachable; unhealthy: no leader or no quorum"
    )
    reported_by: str = Field(description="the coordinator that answered; the view is its own")
    commit_index: int = Field(description="highest log index this coordinator knows committed")
    applied_index: int = Field(description="highest log index this coordinator has applied")
    last_index: int = Field(description="highest index in this coordinator's log")


class LeadershipChange(BaseModel):
    """One change of leader seen by this coordinator. `leader_id` and `duration_seconds` are the
    term's view of the same event: who led from then on and for how long (until the next change,
    or until now for the newest)."""

    previous_leader_id: str | None
    new_leader_id: str | None = Field(description="null: the leader was lost and none is known yet")
    term: int
    reason: str = Field(description="elected, leader_discovered, leader_timeout, leader_lost, stepped_down")
    timestamp: datetime
    election_seconds: float | None = Field(default=None, description="how long the election took, if timed")
    leader_id: str | None
    duration_seconds: float


class LeaderInfo(BaseModel):
    leader_id: str | None
    current_term: int
    term_start_time: datetime | None = Field(description="when this coordinator saw the current leader take over")
    uptime_seconds: float | None = Field(description="seconds since term_start_time")
    leadership_history: list[LeadershipChange] = Field(
        default_factory=list, description="changes of leader seen by this coordinator, newest first"
    )


class NodeHealthFigures(BaseModel):
    """A node's resource use. A figure not asked for, or not measured, is left out."""

    cpu_usage: float | None = Field(default=None, description="percent of all CPUs")
    memory_usage: float | None = Field(default=None, description="percent of physical memory in use")
    disk_usage: float | None = Field(default=None, description="percent used of the disk holding the data directory")
    network_io: float | None = Field(default=None, description="MB/s sent and received, since the previous sample")
    load_average: float | None = Field(default=None, description="1-minute load average")
    status: NodeHealthStatus


class NodeHealth(BaseModel):
    node_id: str
    health: NodeHealthFigures
    state: ClusterState | None = Field(default=None, description="the node's role, as it reports it")
    term: int | None = None
    leader_id: str | None = None
    uptime_seconds: float | None = None
    error: str | None = Field(default=None, description="why the node could not be sampled (unreachable only)")


class ClusterHealth(BaseModel):
    nodes: list[NodeHealth]
    timestamp: datetime


class NodeMembershipChange(BaseModel):
    """The answer to disabling or enabling a node, once the change is committed and applied."""

    node_id: str
    disabled: bool
    index: int = Field(description="log index of the membership change")
    leader_id: str = Field(description="the leader that made the change")
