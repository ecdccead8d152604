"""Dependencies shared by the routers: the API context, the caller's identity and paging.

Handlers declare what they need with the `Annotated` aliases here: `ctx: Context`,
`who: Reader` (any of viewer, submitter, admin) or `who: Submitter` (submitter, admin);
a read-only router takes `dependencies=[Depends(reader)]` instead.
Listing filters are query models built on `PageQuery`, which refuse unknown parameters
(a misspelt filter is an error, not a silent "match everything").
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from dtf_coordinator.api.context import ApiContext
from dtf_coordinator.auth import READ, SUBMIT, Principal, bearer, require, verify_token

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_OFFSET = 2**53 - 1

# Declares the scheme in OpenAPI (Swagger UI's Authorize button); the check itself is
# `authenticate`, which names what is wrong with a missing or malformed header.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="A JWT (HS256) signed with the coordinator's `security.jwt_secret`; its `role` claim "
    "(viewer, submitter or admin) grants access.",
)


async def get_context(conn: HTTPConnection) -> ApiContext:
    # async: a plain function dependency would be run on a thread for every request.
    return cast(ApiContext, conn.app.state.dtf)


Context = Annotated[ApiContext, Depends(get_context)]


async def authenticate(
    conn: HTTPConnection,
    ctx: Context,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Principal:
    return verify_token(ctx.secret, bearer(conn.headers.get("authorization")))


async def reader(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    return require(principal, READ)


async def submitter(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    return require(principal, SUBMIT)


Reader = Annotated[Principal, Depends(reader)]
Submitter = Annotated[Principal, Depends(submitter)]


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Echoed in the answer: kept within what every JSON reader holds exactly (2**53).
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="matches to skip")
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"page size, at most {MAX_PAGE}")
