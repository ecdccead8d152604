"""One error hierarchy for dtf, and its vocabulary of codes.

Every error dtf raises on purpose is a `DtfError` with a `code` (its name on the wire)
and a `retryable` flag (whether the same request may succeed if sent again later)::

    DtfError            internal            a fault; also what an unknown code decodes to
    +-- InvalidArgument invalid_argument    the request is wrong: resending cannot help
    |   +-- MalformedJson     malformed_json     (HTTP only: the body is not JSON)
    |   +-- ValidationFailed  validation_error   (HTTP only: the body misses its schema)
    |   +-- PayloadTooLarge   payload_too_large  (HTTP only: the body is over the limit)
    +-- NotFound        not_found
    +-- Conflict        conflict            contradicts current state
    +-- Unauthenticated unauthenticated
    +-- PermissionDenied permission_denied
    +-- QueueFull       queue_full          retryable
    +-- Unavailable     unavailable         retryable
    |   +-- NotLeader   not_leader          retryable, at the leader named by `leader_hint`
    +-- ConfigError     config_error        local only: a process's own configuration
    +-- DamagedData     damaged_data        local only: stored state fails its checks

`REGISTRY` maps each code to its class and `error_from` turns a code read off the wire
back into an error. The edges carry the code: `dtf_common.grpc_errors` in gRPC trailing
metadata, `dtf_common.http_errors` as the last segment of a problem's `type`. Nothing here
imports a transport, so the pure cores may raise these.
"""

from __future__ import annotations

from typing import Any


class DtfError(Exception):
    """Base of every error dtf raises on purpose. `field` names the offending input;
    `context` carries what a caller may act on (`leader_hint`, `retry_after`)."""

    code: str = "internal"
    # A fault is not worth repeating blindly: it is logged and fixed, not retried.
    retryable: bool = False

    def __init__(self, message: str, *, field: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.context:
            body["context"] = self.context
        return body


class InvalidArgument(DtfError):
    code = "invalid_argument"


class MalformedJson(InvalidArgument):
    code = "malformed_json"


class ValidationFailed(InvalidArgument):
    code = "validation_error"


class PayloadTooLarge(InvalidArgument):
    code = "payload_too_large"


class NotFound(DtfError):
    # Not retryable: what is missing now stays missing unless the caller creates it.
    code = "not_found"


class Conflict(DtfError):
    """The request is well formed but contradicts current state (cancel a finished task)."""

    # Not retryable: the state it contradicts (a finished task, a member already there)
    # does not go away by waiting; the caller must look and decide again.
    code = "conflict"


class QueueFull(DtfError):
    # Retryable: the queue drains; `retry_after` says when to try again.
    code = "queue_full"
    retryable = True


class Unauthenticated(DtfError):
    code = "unauthenticated"


class PermissionDenied(DtfError):
    code = "permission_denied"


class Unavailable(DtfError):
    """This node cannot serve the request now (no leader, no quorum, stopping)."""

    code = "unavailable"
    retryable = True


class NotLeader(Unavailable):
    """This node cannot accept writes; `leader_hint` says where to go. A kind of
    Unavailable: whoever retries on Unavailable retries this too, and may go straight
    to the leader."""

    code = "not_leader"


class ConfigError(DtfError):
    # Not retryable: the same configuration fails the same way.
    code = "config_error"


class DamagedData(DtfError):
    """A durable file (the command log, hard state, a snapshot) fails its checks in a way
    a crash cannot explain: the process refuses to start rather than silently lose what it
    had acknowledged. The message names the file, the offset and the way out."""

    code = "damaged_data"


REGISTRY: dict[str, type[DtfError]] = {
    cls.code: cls
    for cls in (
        DtfError,
        InvalidArgument,
        MalformedJson,
        ValidationFailed,
        PayloadTooLarge,
        NotFound,
        Conflict,
        QueueFull,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        NotLeader,
        ConfigError,
        DamagedData,
    )
}


def error_from(code: str, message: str, field: str | None = None, context: dict[str, Any] | None = None) -> DtfError:
    """The error a code read off the wire names. An unknown code (a newer peer's) gives
    the base class with that code kept, never a crash."""
    cls = REGISTRY.get(code)
    error = (cls or DtfError)(message, field=field or None, **(context or {}))
    if cls is None:
        error.code = code
    return error
