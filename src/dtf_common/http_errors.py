"""A dtf error over HTTP: an RFC 9457 problem whose `type` ends with the error's code.

    {"type": "https://dtf.dev/problems/not_leader", "title": "Not the leader", "status": 503,
     "detail": "not the leader", "field": null, "leader_hint": "coordinator-1"}

`STATUS` says which HTTP status each error answers with (the coordinator's
`api/problems.py` writes the responses); `error_from_problem` reads one back for every
REST client. An answer that is no problem of ours (a proxy's page, a HEAD with no body)
is read from its status alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dtf_common import errors

PROBLEM_BASE = "https://dtf.dev/problems/"

# Error class -> (HTTP status, title). Looked up along the MRO, so subclasses inherit.
STATUS: dict[type[errors.DtfError], tuple[int, str]] = {
    errors.InvalidArgument: (400, "Invalid argument"),
    errors.MalformedJson: (400, "Malformed JSON"),
    errors.ValidationFailed: (422, "Request validation failed"),
    errors.PayloadTooLarge: (413, "Payload too large"),
    errors.NotFound: (404, "Not found"),
    errors.Conflict: (409, "Conflict"),
    errors.QueueFull: (429, "Queue full"),
    errors.Unauthenticated: (401, "Unauthenticated"),
    errors.PermissionDenied: (403, "Permission denied"),
    # A follower cannot take writes: retryable, with where to go in `leader_hint`.
    errors.NotLeader: (503, "Not the leader"),
    errors.Unavailable: (503, "Unavailable"),
}

# The error an HTTP status means when the answer names no code of ours.
_WITHOUT_CODE: dict[int, type[errors.DtfError]] = {
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.ValidationFailed,
    429: errors.QueueFull,
    503: errors.Unavailable,
}


def status_of(error: errors.DtfError) -> tuple[int, str] | None:
    """(HTTP status, title) of `error`; None for an error with no HTTP meaning."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return None


def problem_type(code: str) -> str:
    return PROBLEM_BASE + code


def error_from_problem(status: int, body: Any, *, fallback: str = "", field: str | None = None) -> errors.DtfError:
    """The dtf error an HTTP error answer stands for: `body` is its parsed JSON (anything
    else counts as no problem body); `fallback` and `field` stand in for a message and a
    field the answer does not carry."""
    problem: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    detail = problem.get("detail") or problem.get("title") or fallback or f"HTTP {status}"
    named = problem.get("field")
    field = named if isinstance(named, str) and named else field
    kind = problem.get("type")
    if isinstance(kind, str) and kind.startswith(PROBLEM_BASE) and len(kind) > len(PROBLEM_BASE):
        hint = problem.get("leader_hint")
        context = {"leader_hint": hint} if isinstance(hint, str) and hint else None
        return errors.error_from(kind[len(PROBLEM_BASE) :], str(detail), field, context)
    return _WITHOUT_CODE.get(status, errors.DtfError)(str(detail), field=field)
