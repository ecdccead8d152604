"""`/api/cluster`: the high-availability view of the coordinators (read-only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from dtf_coordinator.api.cluster import cluster_status, leader_info
from dtf_coordinator.api.deps import Context, reader
from dtf_coordinator.api.models import ClusterNode, ClusterStatus, LeaderInfo
from dtf_coordinator.api.problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/cluster", tags=["cluster"], dependencies=[Depends(reader)], responses=PROBLEM_RESPONSES)


@router.get("/status", response_model=ClusterStatus, summary="Cluster status: nodes, leader, term")
async def get_cluster_status(ctx: Context) -> ClusterStatus:
    return cluster_status(ctx.coordinator)


@router.get("/nodes", response_model=list[ClusterNode], summary="Coordinator nodes of the cluster")
async def list_cluster_nodes(ctx: Context) -> list[ClusterNode]:
    return cluster_status(ctx.coordinator).nodes


@router.get("/leader", response_model=LeaderInfo, summary="The current leader")
async def get_leader(ctx: Context) -> LeaderInfo:
    return leader_info(ctx.coordinator)
