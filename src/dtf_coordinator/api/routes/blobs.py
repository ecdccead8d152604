"""`/api/blobs`: content-addressed uploads (project snapshots) that workers fetch by hash.

`PUT /api/blobs/{sha256}` streams the body to disk and stores it only when its SHA-256
matches the path; `HEAD` tells a client whether it can skip the upload. The general body
limit (`security.max_body_bytes`) does not apply here; `blobs.MAX_BLOB_BYTES` does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dtf_common.errors import Unavailable
from dtf_coordinator.api.deps import Context, Reader, Submitter
from dtf_coordinator.api.problems import PROBLEM_RESPONSES, Problem, problem_response
from dtf_coordinator.blobs import BlobStore, BlobTooLarge, check_sha256

router = APIRouter(prefix="/api/blobs", tags=["blobs"], responses=PROBLEM_RESPONSES)

Sha256 = Annotated[str, Path(description="lowercase hex SHA-256 of the blob's bytes")]


class BlobStored(BaseModel):
    sha256: str
    size: int = Field(description="bytes stored")
    created: bool = Field(description="false when the blob was already stored (the body was not read)")


def _store(ctx: Context) -> BlobStore:
    if ctx.blobs is None:
        raise Unavailable("this coordinator stores no blobs")
    return ctx.blobs


@router.put(
    "/{sha256}",
    response_model=BlobStored,
    status_code=201,
    summary="Upload a blob (a project snapshot) named by its SHA-256",
    responses={
        200: {"model": BlobStored, "description": "Already stored; the body was not read"},
        413: {"model": Problem, "description": "The blob is over the size limit (1 GiB)"},
        503: {"model": Problem, "description": "This coordinator stores no blobs"},
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def put_blob(sha256: Sha256, request: Request, ctx: Context, _who: Submitter) -> Response:
    store = _store(ctx)
    check_sha256(sha256)
    if store.exists(sha256):
        return JSONResponse(BlobStored(sha256=sha256, size=store.size(sha256), created=False).model_dump())
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > store.max_bytes:
        return problem_response(413, f"blob is larger than the limit of {store.max_bytes} bytes", field="body")
    try:
        size = await store.put(sha256, request.stream())
    except BlobTooLarge as exc:
        return problem_response(413, exc.message, field="body")
    return JSONResponse(BlobStored(sha256=sha256, size=size, created=True).model_dump(), status_code=201)


@router.head(
    "/{sha256}",
    summary="Whether a blob is stored (200 with Content-Length, else 404)",
    responses={200: {"description": "Stored"}, 404: {"description": "Not stored"}},
)
async def head_blob(sha256: Sha256, ctx: Context, _who: Reader) -> Response:
    store = _store(ctx)
    check_sha256(sha256)
    if not store.exists(sha256):
        return Response(status_code=404)
    return Response(status_code=200, headers={"content-length": str(store.size(sha256))})
