"""The one place a coordinator's gRPC servicers (WorkerService, RaftService) answer with
a dtf error: its status code, its message as details, its code and field (and a
leader's whereabouts) in trailing metadata, as `dtf_common.grpc_errors` defines them."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
import grpc.aio

from dtf_common import errors
from dtf_common.grpc_errors import status_of, trailers


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: errors.DtfError, *, leader_address: str | None = None
) -> NoReturn:
    """End the call with `error`; `leader_address` is where a worker finds the leader."""
    await context.abort(status_of(error), error.message, trailers(error, leader_address=leader_address))
