"""The one mapping from errors to HTTP problem responses (RFC 9457, `application/problem+json`).

Every error the API answers with has the same shape::

    {"type": "https://dtf.dev/problems/not_found", "title": "Not found", "status": 404,
     "detail": "task 0b6c... not found", "field": "task_id"}

`type` ends with the error's code (`dtf_common.errors.REGISTRY`; the statuses are in
`dtf_common.http_errors`, whose `error_from_problem` reads them back for clients).
`field` names the offending input (`body[0].priority`, `task_id`, `limit`) or is null;
request validation errors add `errors`, one entry per failed field. `install` registers
the handlers on an app; `problem_response` and `error_response` build responses for
code that answers outside a route (middleware, the WebSocket handshake).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from dtf_common.errors import (
    DtfError,
    MalformedJson,
    NotLeader,
    PayloadTooLarge,
    QueueFull,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from dtf_common.http_errors import PROBLEM_BASE, STATUS, status_of
from dtf_common.json_limits import MAX_JSON_DEPTH

log = logging.getLogger("dtf.api")

MEDIA_TYPE = "application/problem+json"
QUEUE_FULL_RETRY_AFTER_S = 5
UNAVAILABLE_RETRY_AFTER_S = 1

# Problem codes of plain HTTP errors (unknown route, wrong method, body too large...).
HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: (PayloadTooLarge.code, STATUS[PayloadTooLarge][1]),
    415: ("unsupported_media_type", "Unsupported media type"),
    500: ("internal", "Internal error"),
}


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the offending input, e.g. body[0].priority")
    message: str
    type: str = Field(description="machine-readable reason, e.g. less_than_equal, extra_forbidden")


class Problem(BaseModel):
    """An error response (RFC 9457)."""

    type: str = Field(description=f"{PROBLEM_BASE}<code>", examples=[PROBLEM_BASE + "not_found"])
    title: str
    status: int
    detail: str
    field: str | None = Field(default=None, description="the offending input, when one is to blame")
    errors: list[FieldError] | None = Field(default=None, description="every failed field (validation errors)")
    leader_hint: str | None = Field(default=None, description="the leader's node id (not_leader only)")


def _doc(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


# For OpenAPI: what every authenticated endpoint may answer besides success.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("Malformed JSON or an invalid argument"),
    401: _doc("Missing or invalid bearer token"),
    403: _doc("The token's role may not do this"),
    422: _doc("Request validation failed; `errors` names every offending field"),
    500: _doc("Internal error (details are in the coordinator log only)"),
}


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    title: str | None = None,
    field: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    leader_hint: str | None = None,
) -> JSONResponse:
    phrase = _phrase(status)
    default_code, default_title = HTTP_CODES.get(status, (phrase.lower().replace(" ", "_").replace("-", "_"), phrase))
    problem = Problem(
        type=PROBLEM_BASE + (code or default_code),
        title=title or default_title,
        status=status,
        detail=detail,
        field=field,
        errors=errors,
        leader_hint=leader_hint,
    )
    body = problem.model_dump(exclude_none=True)
    body.setdefault("field", None)
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_response(error: DtfError) -> JSONResponse:
    """The problem response for a dtf error."""
    mapped = status_of(error)
    if mapped is None:  # a DtfError with no HTTP meaning (ConfigError...): a server fault
        log.error("unmapped error answered as 500: %r", error)
        return problem_response(500, "internal error", code="internal")
    status, title = mapped
    headers: dict[str, str] = {}
    leader_hint: str | None = None
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="dtf"'
    elif isinstance(error, QueueFull):
        headers["Retry-After"] = str(error.context.get("retry_after", QUEUE_FULL_RETRY_AFTER_S))
    elif isinstance(error, NotLeader | Unavailable):
        headers["Retry-After"] = str(error.context.get("retry_after", UNAVAILABLE_RETRY_AFTER_S))
        hint = error.context.get("leader_hint")
        leader_hint = str(hint) if hint else None
    return problem_response(
        status, error.message, code=error.code, title=title, field=error.field, headers=headers, leader_hint=leader_hint
    )


def field_path(loc: Sequence[str | int]) -> str:
    """A validation error's location as one path: ("body", 0, "priority") -> "body[0].priority".

    Path, query and header parameters are named alone ("task_id", "limit"); body fields
    keep the "body" root.
    """
    parts = list(loc)
    if parts and parts[0] in ("path", "query", "header", "cookie"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


async def _dtf_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DtfError)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    broken = next((e for e in raw if e.get("type") == "json_invalid"), None)
    if broken is not None:
        reason = (broken.get("ctx") or {}).get("error", "invalid JSON")
        position = broken["loc"][-1] if isinstance(broken["loc"][-1], int) else None
        where = f" at position {position}" if position is not None else ""
        return problem_response(
            400,
            f"request body is not valid JSON: {reason}{where}",
            code=MalformedJson.code,
            title=STATUS[MalformedJson][1],
            field="body",
        )
    errors = [
        FieldError(field=field_path(e.get("loc", ())), message=str(e.get("msg", "invalid")), type=str(e.get("type")))
        for e in raw
    ]
    first = errors[0] if errors else FieldError(field="body", message="invalid request", type="invalid")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return problem_response(
        422,
        f"{first.field}: {first.message}{more}",
        code=ValidationFailed.code,
        title=STATUS[ValidationFailed][1],
        field=first.field,
        errors=errors,
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, RecursionError):  # FastAPI's wrapping of a body too deep to parse
        return _body_too_deep()
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else _phrase(exc.status_code)
    headers = dict(exc.headers) if exc.headers else None
    field = "body" if exc.status_code == 413 else None
    return problem_response(exc.status_code, detail, field=field, headers=headers)


def _body_too_deep() -> JSONResponse:
    """A body nested so deep that the JSON parser gave up (about 1000 levels, far past
    `json_limits.MAX_JSON_DEPTH`): refused as a whole, since no field of it can be named."""
    message = f"the JSON is nested too deeply to parse (free-form fields allow {MAX_JSON_DEPTH} levels)"
    return problem_response(
        422,
        f"body: {message}",
        code=ValidationFailed.code,
        title=STATUS[ValidationFailed][1],
        field="body",
        errors=[FieldError(field="body", message=message, type="json_too_deep")],
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "internal error; the coordinator log has the details", code="internal")


def install(app: FastAPI) -> None:
    """Answer every error of `app` with a problem response, and document them as such."""
    app.add_exception_handler(DtfError, _dtf_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_media_type(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_media_type(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents every response model as application/json; say problem+json for ours."""
    ref = "#/components/schemas/" + Problem.__name__
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if content.get("application/json", {}).get("schema", {}).get("$ref") == ref:
                    content[MEDIA_TYPE] = content.pop("application/json")
    return spec
