"""One error hierarchy for dtf. The edges translate it: `dtf_coordinator.api.problems`
to HTTP problem responses, `dtf_coordinator.rpc.status` to gRPC status codes."""

from __future__ import annotations

from typing import Any


class DtfError(Exception):
    """Base of every error dtf raises on purpose. `field` names the offending input."""

    code = "internal"

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


class NotFound(DtfError):
    code = "not_found"


class Conflict(DtfError):
    """The request is well formed but contradicts current state (cancel a finished task)."""

    code = "conflict"


class QueueFull(DtfError):
    code = "queue_full"


class Unauthenticated(DtfError):
    code = "unauthenticated"


class PermissionDenied(DtfError):
    code = "permission_denied"


# gRPC trailing metadata of a NOT_LEADER answer: the leader's worker address.
LEADER_METADATA = "dtf-leader-grpc"


class NotLeader(DtfError):
    """This node cannot accept writes; `leader_hint` says where to go."""

    code = "not_leader"


class Unavailable(DtfError):
    code = "unavailable"


class ConfigError(DtfError):
    code = "config_error"
