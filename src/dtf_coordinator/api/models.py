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


ClusterState = Literal["leader", "follower", "candidate", "stopped"]


class ClusterNode(BaseModel):
    node_id: str
    state: ClusterState
    term: int


class ClusterStatus(BaseModel):
    leader_id: str | None
    current_term: int
    nodes: list[ClusterNode]
    quorum_size: int
    cluster_health: Literal["healthy", "degraded", "unhealthy"]


class LeadershipTerm(BaseModel):
    leader_id: str
    term: int
    duration_seconds: float


class LeaderInfo(BaseModel):
    leader_id: str | None
    current_term: int
    term_start_time: datetime
    uptime_seconds: float
    leadership_history: list[LeadershipTerm] = Field(default_factory=list, description="earlier terms, newest first")
