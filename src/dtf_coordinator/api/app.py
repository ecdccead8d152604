"""The coordinator's HTTP application: REST under `/api`, the WebSocket at `/ws`,
`/health`, `/metrics`, and OpenAPI with Swagger UI at `/docs`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from dtf_coordinator.api import problems, swagger, ws
from dtf_coordinator.api.activity import ActivityTracker
from dtf_coordinator.api.context import ApiContext
from dtf_coordinator.api.limits import AuthenticateFirst, BodySizeLimit
from dtf_coordinator.api.routes import blobs, cluster, results, system, tasks, workers

DESCRIPTION = """\
REST and WebSocket API of a dtf coordinator.

Every `/api` endpoint needs `Authorization: Bearer <JWT>`, a token signed with the
coordinator's secret whose `role` claim is `viewer` (read), `submitter` (read, submit,
cancel) or `admin`. Errors are `application/problem+json` (RFC 9457) with a `field`
naming the offending input. `/health` and `/metrics` need no token.
"""

TAGS = [
    {"name": "tasks", "description": "Submit, list, read and cancel tasks"},
    {"name": "workers", "description": "Registered workers and their health"},
    {"name": "results", "description": "Test and benchmark results from the results store"},
    {"name": "system", "description": "Coordinator status and dashboard data"},
    {"name": "cluster", "description": "High-availability cluster view"},
    {"name": "blobs", "description": "Content-addressed uploads (project snapshots) that workers fetch"},
    {"name": "operations", "description": "Liveness and Prometheus metrics (no authentication)"},
]


def _version() -> str:
    try:
        return version("dtf")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(ctx: ApiContext) -> FastAPI:
    """The application over `ctx`; the caller serves it (uvicorn) and owns `ctx`'s parts."""
    app = FastAPI(
        title="dtf coordinator", version=_version(), description=DESCRIPTION, openapi_tags=TAGS, docs_url=None
    )
    app.state.dtf = ctx
    swagger.install(app)
    problems.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=ctx.config.security.max_body_bytes)
    # Added last, so it runs first: no body is read for a caller without a valid token.
    app.add_middleware(AuthenticateFirst, secret=ctx.secret)
    if ctx.activity is not None:
        app.add_middleware(ActivityTracker, activity=ctx.activity)
    for router in (
        tasks.router,
        workers.router,
        results.router,
        system.router,
        cluster.router,
        blobs.router,
        system.operations,
        ws.router,
    ):
        app.include_router(router)
    return app
