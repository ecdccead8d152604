"""`/api/cluster`: the high-availability view of the coordinators, and node disable/enable.

Reads need any read role; disable and enable need admin. Every coordinator answers
reads with its own view; disable and enable are carried out by the leader (a follower
forwards them there with the caller's token and relays the answer).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from dtf_coordinator.api.cluster_service import FORWARDED_HEADER, ClusterService, Relayed, service_of
from dtf_coordinator.api.cluster_view import render_html, render_svg
from dtf_coordinator.api.deps import Context, authenticate, bearer_scheme, reader
from dtf_coordinator.api.models import ClusterHealth, ClusterNode, ClusterStatus, LeaderInfo, NodeMembershipChange
from dtf_coordinator.api.problems import PROBLEM_RESPONSES, Problem
from dtf_coordinator.auth import ADMIN, READ, Principal, bearer, require, verify_token

router = APIRouter(prefix="/api/cluster", tags=["cluster"], responses=PROBLEM_RESPONSES)


async def cluster_service(conn: HTTPConnection) -> ClusterService:
    return service_of(conn.app)


async def admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    return require(principal, ADMIN)


async def page_reader(
    conn: HTTPConnection,
    ctx: Context,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    token: Annotated[
        str | None, Query(description="the bearer token, for browsers, which cannot send a header on a link")
    ] = None,
) -> Principal:
    header = conn.headers.get("authorization")
    raw = bearer(header) if header is not None or token is None else token
    return require(verify_token(ctx.secret, raw), READ)


Service = Annotated[ClusterService, Depends(cluster_service)]
ReadAccess = [Depends(reader)]


def caller_token(request: Request) -> str:
    return bearer(request.headers.get("authorization"))


@router.get("/status", response_model=ClusterStatus, dependencies=ReadAccess, summary="Cluster status as seen here")
async def get_cluster_status(request: Request, cluster: Service) -> ClusterStatus:
    return await cluster.status(caller_token(request))


@router.get("/nodes", response_model=list[ClusterNode], dependencies=ReadAccess, summary="Coordinator nodes")
async def list_cluster_nodes(request: Request, cluster: Service) -> list[ClusterNode]:
    return (await cluster.status(caller_token(request))).nodes


@router.get("/leader", response_model=LeaderInfo, dependencies=ReadAccess, summary="The leader and its history")
async def get_leader(cluster: Service) -> LeaderInfo:
    return cluster.leader_info()


@router.get(
    "/health",
    response_model=ClusterHealth,
    response_model_exclude_none=True,
    dependencies=ReadAccess,
    summary="CPU, memory, disk, network and load of every coordinator",
)
async def get_cluster_health(
    request: Request,
    cluster: Service,
    scope: Annotated[
        Literal["cluster", "local"], Query(description="local: this coordinator only, without asking its peers")
    ] = "cluster",
    metrics: Annotated[
        list[str] | None, Query(description="figures to report: cpu, memory, disk, network, load (default all)")
    ] = None,
) -> ClusterHealth:
    return await cluster.health(scope=scope, token=caller_token(request), metrics=metrics)


SVG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}, "image/svg+xml": {}}, "description": "the page, or the bare SVG"}
}


@router.get(
    "/visualize",
    response_class=HTMLResponse,
    responses=SVG_RESPONSE,
    dependencies=[Depends(page_reader)],
    summary="The cluster drawn: nodes, roles, terms, replication and the leadership timeline",
)
async def visualize_cluster(
    request: Request,
    cluster: Service,
    format: Annotated[Literal["html", "svg"], Query(description="html: a page; svg: the drawing alone")] = "html",
    refresh: Annotated[int, Query(ge=0, le=3600, description="reload the page every N seconds (0: never)")] = 0,
) -> Response:
    header = request.headers.get("authorization")
    status = await cluster.status(bearer(header) if header else None)
    leader = cluster.leader_info()
    if format == "svg":
        return Response(render_svg(status, leader), media_type="image/svg+xml")
    return HTMLResponse(render_html(status, leader, refresh_s=refresh))


NodeId = Annotated[str, Path(min_length=1, max_length=200, description="the coordinator's id")]
CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such node in the cluster"},
    409: {"model": Problem, "description": "Already in that state, or the cluster would be left without a node"},
    503: {"model": Problem, "description": "No leader reachable, or the change was not applied in time"},
}


async def _change(request: Request, cluster: ClusterService, node_id: str, *, disable: bool) -> Any:
    result = await cluster.change(
        node_id,
        disable=disable,
        authorization=request.headers.get("authorization"),
        forwarded_by=request.headers.get(FORWARDED_HEADER),
    )
    if isinstance(result, Relayed):
        return Response(result.content, status_code=result.status_code, media_type=result.media_type)
    return result


@router.post(
    "/node/{node_id}/disable",
    response_model=NodeMembershipChange,
    responses=CHANGE_RESPONSES,
    dependencies=[Depends(admin)],
    summary="Disable a node: it may not lead until enabled (a leader hands over); it still votes",
)
async def disable_node(request: Request, cluster: Service, node_id: NodeId) -> Any:
    return await _change(request, cluster, node_id, disable=True)


@router.post(
    "/node/{node_id}/enable",
    response_model=NodeMembershipChange,
    responses=CHANGE_RESPONSES,
    dependencies=[Depends(admin)],
    summary="Enable a disabled node again",
)
async def enable_node(request: Request, cluster: Service, node_id: NodeId) -> Any:
    return await _change(request, cluster, node_id, disable=False)


class NewNode(BaseModel):
    node_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$", description="its high_availability.coordinator_id")
    # Length bounds also make pydantic refuse text that is not valid Unicode.
    host: str = Field(min_length=1, max_length=255, description="where its Raft port is reached")
    port: int = Field(ge=1, le=65535, description="its Raft port")
    api_url: str | None = Field(default=None, max_length=2048, description="its REST API, for clients sent to it")
    grpc_address: str | None = Field(default=None, max_length=512, description="its worker gRPC host:port")


MEMBERSHIP_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such member (remove)"},
    409: {"model": Problem, "description": "Already a member, or the last member"},
    503: {"model": Problem, "description": "Not the leader (leader_hint says which is), or not applied in time"},
}


@router.post(
    "/nodes",
    response_model=NodeMembershipChange,
    status_code=201,
    responses=MEMBERSHIP_RESPONSES,
    dependencies=[Depends(admin)],
    summary="Add a coordinator to the cluster (on the leader; start it with the new peer list first)",
)
async def add_node(cluster: Service, node: NewNode) -> NodeMembershipChange:
    host = f"[{node.host}]" if ":" in node.host else node.host
    return await cluster.add_or_remove(
        node.node_id, address=f"{host}:{node.port}", api_url=node.api_url, grpc_address=node.grpc_address
    )


@router.delete(
    "/nodes/{node_id}",
    response_model=NodeMembershipChange,
    responses=MEMBERSHIP_RESPONSES,
    dependencies=[Depends(admin)],
    summary="Remove a coordinator from the cluster (on the leader; a removed leader steps down)",
)
async def remove_node(cluster: Service, node_id: NodeId) -> NodeMembershipChange:
    return await cluster.add_or_remove(node_id, address=None)
