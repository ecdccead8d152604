"""`/api/workers`: the registered workers (read-only; workers register over gRPC)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from dtf_common.schemas import Page, Worker, WorkerStatus
from dtf_coordinator.api.deps import Context, PageQuery, reader
from dtf_coordinator.api.problems import PROBLEM_RESPONSES, Problem

router = APIRouter(prefix="/api/workers", tags=["workers"], dependencies=[Depends(reader)], responses=PROBLEM_RESPONSES)


class WorkerQuery(PageQuery):
    status: WorkerStatus | None = None


@router.get("", response_model=Page[Worker], summary="List workers")
async def list_workers(query: Annotated[WorkerQuery, Query()], ctx: Context) -> Page[Worker]:
    workers = ctx.coordinator.list_workers(query.status)
    page = workers[query.offset : query.offset + query.limit]
    return Page[Worker](data=page, count=len(workers), offset=query.offset, limit=query.limit)


@router.get("/{worker_id}", response_model=Worker, summary="One worker", responses={404: {"model": Problem}})
async def get_worker(worker_id: Annotated[str, Path()], ctx: Context) -> Worker:
    return ctx.coordinator.get_worker(worker_id)
