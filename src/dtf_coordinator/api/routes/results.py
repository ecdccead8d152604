"""`/api/results`: test and benchmark results, read from the results store.

The store's reads are blocking, so these handlers are plain functions, which FastAPI
runs in its thread pool, off the event loop. Before each, the store catches up with the
applied log (`store_caught_up`): a client that saw a task finish reads all its results.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from dtf_common.errors import NotFound
from dtf_common.schemas import Page, Result, ResultStatus
from dtf_coordinator.api.deps import Context, PageQuery, reader
from dtf_coordinator.api.problems import PROBLEM_RESPONSES, Problem

log = logging.getLogger("dtf.api")


async def store_caught_up(ctx: Context) -> None:
    if ctx.catch_up_store is None:
        return
    try:
        await ctx.catch_up_store()
    except Exception:  # the periodic flush retries; the read answers from what is stored
        log.warning("the results store could not catch up before a read", exc_info=True)


router = APIRouter(
    prefix="/api/results",
    tags=["results"],
    dependencies=[Depends(reader), Depends(store_caught_up)],
    responses=PROBLEM_RESPONSES,
)


class ResultQuery(PageQuery):
    task_id: str | None = None
    worker_id: str | None = None
    test_id: str | None = None
    status: ResultStatus | None = None
    since: datetime | None = Field(default=None, description="recorded at or after (ISO 8601; naive means UTC)")
    until: datetime | None = Field(default=None, description="recorded before (ISO 8601; naive means UTC)")


@router.get("", response_model=Page[Result], summary="List results, newest first")
def list_results(query: Annotated[ResultQuery, Query()], ctx: Context) -> Page[Result]:
    rows, count = ctx.results.list_results(
        task_id=query.task_id,
        worker_id=query.worker_id,
        test_id=query.test_id,
        status=query.status.value if query.status else None,
        since=query.since,
        until=query.until,
        offset=query.offset,
        limit=query.limit,
    )
    data = [Result.model_validate(row) for row in rows]
    return Page[Result](data=data, count=count, offset=query.offset, limit=query.limit)


# A bound makes pydantic check that the text is valid Unicode, as the store's queries need.
TestId = Annotated[str, Field(max_length=65_536)]


class DurationsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test_ids: list[TestId] | None = Field(default=None, max_length=200_000, description="all tests when absent")
    hardware_id: str | None = Field(default=None, max_length=128, description="only results from this hardware")
    last_n: int = Field(default=5, ge=1, le=100, description="median over each test's last N runs")


class Durations(BaseModel):
    durations: dict[str, float] = Field(description="test_id -> median seconds of its last runs")


@router.post(
    "/durations",
    response_model=Durations,
    summary="Recorded durations per test (for duration-aware scheduling)",
    description="A POST because a suite's test ids do not fit in a URL. Tests never run are absent.",
)
def test_durations(body: DurationsQuery, ctx: Context) -> Durations:
    found = ctx.results.test_durations(body.test_ids, hardware_id=body.hardware_id, last_n=body.last_n)
    return Durations(durations=found)


@router.get("/{result_id}", response_model=Result, summary="One result", responses={404: {"model": Problem}})
def get_result(result_id: Annotated[str, Path()], ctx: Context) -> Result:
    row = ctx.results.get_result(result_id)
    if row is None:
        raise NotFound(f"result {result_id} not found", field="result_id")
    return Result.model_validate(row)
