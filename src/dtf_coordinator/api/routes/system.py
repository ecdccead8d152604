"""System endpoints: `/api/status` and `/api/dashboard` (authenticated), `/health` and
`/metrics` (not).

`/metrics` is open on purpose: Prometheus scrapers rarely carry a bearer token, and it
exposes counts and latencies only, never task contents, parameters or results. Where
even counts are sensitive, keep the port off untrusted networks or put the scrape
behind a proxy that authenticates.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from dtf_coordinator.api.deps import Context, reader
from dtf_coordinator.api.models import Dashboard, Health, SystemStatus
from dtf_coordinator.api.problems import PROBLEM_RESPONSES
from dtf_coordinator.service.coordinator import TaskFilter

RECENT_TASKS = 20

router = APIRouter(prefix="/api", tags=["system"], dependencies=[Depends(reader)], responses=PROBLEM_RESPONSES)
operations = APIRouter(tags=["operations"])


@router.get("/status", response_model=SystemStatus, summary="Coordinator status: role, queue, tasks, workers")
async def get_status(
    ctx: Context,
    fingerprint: Annotated[
        bool, Query(description="add state_fingerprint: a digest of the whole state, equal on replicas in sync")
    ] = False,
) -> SystemStatus:
    return SystemStatus.model_validate(ctx.coordinator.status(fingerprint=fingerprint))


@router.get("/dashboard", response_model=Dashboard, summary="Everything a dashboard shows, in one call")
async def get_dashboard(ctx: Context) -> Dashboard:
    status = SystemStatus.model_validate(ctx.coordinator.status())
    recent, _count = ctx.coordinator.list_tasks(TaskFilter(), 0, RECENT_TASKS)
    summary = await run_in_threadpool(ctx.results.summary)
    return Dashboard(status=status, results=summary, recent_tasks=recent)


@operations.get("/health", response_model=Health, summary="Liveness (no authentication)")
async def health() -> Health:
    return Health()


@operations.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (no authentication; see the module's notes)",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition format"}},
)
async def metrics(ctx: Context) -> Response:
    # On the event loop: the gauges read coordinator state, which only the loop mutates.
    ctx.coordinator.update_gauges()
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
