"""WorkerService servicer: authenticates, converts the request (`wire.py`), then delegates
to the service layer and converts its answer back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dtf_common.errors import DtfError, NotFound, NotLeader
from dtf_common.grpc_errors import abort
from dtf_common.pb.dtf.v1 import worker_service_pb2 as pb
from dtf_common.pb.dtf.v1 import worker_service_pb2_grpc as pb_grpc
from dtf_coordinator.auth import WORKER, bearer, require, verify_token
from dtf_coordinator.blobs import BlobStore
from dtf_coordinator.rpc import wire
from dtf_coordinator.service.coordinator import Coordinator

log = logging.getLogger("dtf.rpc")
T = TypeVar("T")
Ctx = grpc.aio.ServicerContext[Any, Any]


class WorkerService(pb_grpc.WorkerServiceServicer):  # type: ignore[misc]
    def __init__(self, coordinator: Coordinator, secret: str, blobs: BlobStore | None = None) -> None:
        self.coordinator = coordinator
        self.secret = secret
        self.blobs = blobs

    async def _call(self, context: Ctx, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            metadata = dict(context.invocation_metadata() or ())
            require(verify_token(self.secret, bearer(metadata.get("authorization"))), WORKER)
            return await fn()
        except NotLeader as exc:
            # Name the leader's worker address so the worker can go straight there.
            await abort(context, exc, leader_address=self.coordinator.worker_address_of(exc.context.get("leader_hint")))
        except DtfError as exc:
            await abort(context, exc)

    async def Register(self, request: pb.RegisterRequest, context: Ctx) -> pb.RegisterResponse:
        async def register() -> pb.RegisterResponse:
            answer = await self.coordinator.register_worker(wire.registration_from_wire(request))
            return wire.registered_to_wire(answer)

        return await self._call(context, register)

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Ctx) -> pb.HeartbeatResponse:
        async def heartbeat() -> pb.HeartbeatResponse:
            return wire.heartbeat_ack_to_wire(await self.coordinator.heartbeat(wire.heartbeat_from_wire(request)))

        return await self._call(context, heartbeat)

    async def LeaseTasks(self, request: pb.LeaseRequest, context: Ctx) -> pb.LeaseResponse:
        async def lease() -> pb.LeaseResponse:
            grants = await self.coordinator.lease(request.worker_id, request.max_tasks, request.wait_ms)
            return wire.grants_to_wire(grants)

        return await self._call(context, lease)

    async def ReportResults(self, request: pb.ReportRequest, context: Ctx) -> pb.ReportResponse:
        async def report() -> pb.ReportResponse:
            wire.check_outcomes(request.outcomes)
            acks = await self.coordinator.report(request.worker_id, request.outcomes)
            return wire.acks_to_wire(request.batch_id, acks)

        return await self._call(context, report)

    async def StreamResults(
        self, request_iterator: AsyncIterator[pb.ReportRequest], context: Ctx
    ) -> AsyncIterator[pb.ReportResponse]:
        async def first() -> None:
            return None

        await self._call(context, first)  # authenticate once per stream
        async for request in request_iterator:
            try:
                wire.check_outcomes(request.outcomes)
                acks = await self.coordinator.report(request.worker_id, request.outcomes)
            except DtfError as exc:
                await abort(context, exc)
            yield wire.acks_to_wire(request.batch_id, acks)

    async def Deregister(self, request: pb.DeregisterRequest, context: Ctx) -> pb.DeregisterResponse:
        async def deregister() -> pb.DeregisterResponse:
            requeued = await self.coordinator.deregister(request.worker_id, list(request.returned_lease_ids))
            return pb.DeregisterResponse(requeued=requeued)

        return await self._call(context, deregister)

    async def FetchBlob(self, request: pb.FetchBlobRequest, context: Ctx) -> AsyncIterator[pb.BlobChunk]:
        async def open_blob() -> AsyncIterator[bytes]:
            if self.blobs is None:
                raise NotFound("this coordinator stores no blobs", field="sha256")
            return self.blobs.read(request.sha256)

        chunks = await self._call(context, open_blob)
        try:
            async for data in chunks:
                yield pb.BlobChunk(data=data)
        except DtfError as exc:  # raised by the first read: an unknown or malformed hash
            await abort(context, exc)


def add_worker_service(
    server: grpc.aio.Server, coordinator: Coordinator, secret: str, blobs: BlobStore | None = None
) -> None:
    pb_grpc.add_WorkerServiceServicer_to_server(WorkerService(coordinator, secret, blobs), server)
