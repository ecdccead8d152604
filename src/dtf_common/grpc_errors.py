"""A dtf error on gRPC, both ways: the status code tells any gRPC client what kind of
failure it is; trailing metadata tells a dtf client which error exactly.

    dtf-error-code   the error's code (a key of `dtf_common.errors.REGISTRY`)
    dtf-error-field  the offending input, when one is to blame
    dtf-leader-hint  NotLeader: the leader's node id, when known
    dtf-leader-grpc  NotLeader to a worker: the leader's WorkerService address

The details are the message. Every server answers through `abort` (built on `status_of`
and `trailers`); every gRPC client reads with `error_from_rpc`.
A failure that carries no code is gRPC's own (a peer down, a deadline passed, a
message too large) and is read from its status code alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

import grpc
import grpc.aio

from dtf_common import errors

CODE_METADATA = "dtf-error-code"
FIELD_METADATA = "dtf-error-field"
LEADER_HINT_METADATA = "dtf-leader-hint"
LEADER_METADATA = "dtf-leader-grpc"

Metadata = tuple[tuple[str, str], ...]

# The status code each error answers with; looked up along the MRO, so subclasses inherit.
STATUS: dict[type[errors.DtfError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    errors.QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,  # NotLeader too
}

# The error a status code means when it came without a code of ours.
_WITHOUT_CODE: dict[grpc.StatusCode, type[errors.DtfError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.ALREADY_EXISTS: errors.Conflict,
    grpc.StatusCode.ABORTED: errors.Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.QueueFull,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    grpc.StatusCode.CANCELLED: errors.Unavailable,
}


def status_of(error: errors.DtfError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


def trailers(error: errors.DtfError, *, leader_address: str | None = None) -> Metadata:
    """The trailing metadata that names `error` (and, to a worker, the leader's address)."""
    pairs = [(CODE_METADATA, error.code), (FIELD_METADATA, error.field or "")]
    if isinstance(error, errors.NotLeader):
        pairs += [
            (LEADER_HINT_METADATA, str(error.context.get("leader_hint") or "")),
            (LEADER_METADATA, leader_address or ""),
        ]
    # Plain metadata values must be printable ASCII; a value that is not stays behind.
    return tuple((key, value) for key, value in pairs if value and value.isascii() and value.isprintable())


def error_from_rpc(
    status: grpc.StatusCode, details: str, metadata: Iterable[tuple[str, str | bytes]] | None
) -> errors.DtfError:
    """The dtf error a failed call stands for."""
    found = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    code = found.get(CODE_METADATA)
    if code is None:
        cls = _WITHOUT_CODE.get(status, errors.DtfError)
        return cls(details or status.name.lower(), grpc_code=status.name)
    context = {
        name: found[key]
        for name, key in (("leader_hint", LEADER_HINT_METADATA), ("leader_address", LEADER_METADATA))
        if found.get(key)
    }
    return errors.error_from(code, details or status.name.lower(), found.get(FIELD_METADATA), context)


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: errors.DtfError, *, leader_address: str | None = None
) -> NoReturn:
    """End a call a coordinator's servicer (WorkerService, RaftService) is answering with
    `error`; `leader_address` is where a worker finds the leader."""
    await context.abort(status_of(error), error.message, trailers(error, leader_address=leader_address))
