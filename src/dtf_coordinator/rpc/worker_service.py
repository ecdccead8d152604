"""WorkerService servicer: authenticates, converts the request (`wire.py`), then delegates
to the service layer and converts its answer back.

Who may call what: a join token (role worker, no worker named) may only register, and
not as a worker that is online; the registration answers with that worker's own
credential, and every other call must carry a credential whose worker is the one the
request names. An admin token may act for any worker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dtf_common.errors import DtfError, NotFound, NotLeader, PermissionDenied
from dtf_common.grpc_errors import abort
from dtf_common.pb.dtf.v1 import worker_service_pb2 as pb
from dtf_common.pb.dtf.v1 import worker_service_pb2_grpc as pb_grpc
from dtf_coordinator.auth import WORKER, Principal, Role, bearer, create_token, require, verify_token
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

    def _caller(self, context: Ctx) -> Principal:
        metadata = dict(context.invocation_metadata() or ())
        return require(verify_token(self.secret, bearer(metadata.get("authorization"))), WORKER)

    @staticmethod
    def _check_acts_for(caller: Principal, worker_id: str | None, *, enrolling: bool = False) -> None:
        """Refuse a call made for another worker than the caller's credential names."""
        if caller.role is Role.ADMIN:
            return
        if caller.worker_id is None:
            if not enrolling:
                raise PermissionDenied(
                    "a join token only enrols a worker: register, then call with the credential "
                    "the registration returned",
                    field="authorization",
                )
            return
        if worker_id is not None and worker_id != caller.worker_id:
            raise PermissionDenied(
                f"this credential is worker {caller.worker_id}'s, not worker {worker_id}'s", field="worker_id"
            )

    async def _call(
        self,
        context: Ctx,
        fn: Callable[[Principal], Awaitable[T]],
        *,
        worker_id: str | None = None,
        enrolling: bool = False,
    ) -> T:
        try:
            caller = self._caller(context)
            self._check_acts_for(caller, worker_id, enrolling=enrolling)
            return await fn(caller)
        except NotLeader as exc:
            # Name the leader's worker address so the worker can go straight there.
            await abort(context, exc, leader_address=self.coordinator.worker_address_of(exc.context.get("leader_hint")))
        except DtfError as exc:
            await abort(context, exc)

    async def Register(self, request: pb.RegisterRequest, context: Ctx) -> pb.RegisterResponse:
        async def register(caller: Principal) -> pb.RegisterResponse:
            registration = wire.registration_from_wire(request)
            enrolling = caller.role is Role.WORKER and caller.worker_id is None
            answer = await self.coordinator.register_worker(registration, enrolling=enrolling)
            response = wire.registered_to_wire(answer)
            response.credential = create_token(
                self.secret, Role.WORKER, subject=f"worker:{answer.worker_id}", expires_in=0, worker_id=answer.worker_id
            )
            return response

        return await self._call(context, register, worker_id=request.worker_id, enrolling=True)

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Ctx) -> pb.HeartbeatResponse:
        async def heartbeat(_caller: Principal) -> pb.HeartbeatResponse:
            return wire.heartbeat_ack_to_wire(await self.coordinator.heartbeat(wire.heartbeat_from_wire(request)))

        return await self._call(context, heartbeat, worker_id=request.worker_id)

    async def LeaseTasks(self, request: pb.LeaseRequest, context: Ctx) -> pb.LeaseResponse:
        async def lease(_caller: Principal) -> pb.LeaseResponse:
            grants = await self.coordinator.lease(request.worker_id, request.max_tasks, request.wait_ms)
            return wire.grants_to_wire(grants)

        return await self._call(context, lease, worker_id=request.worker_id)

    async def ReportResults(self, request: pb.ReportRequest, context: Ctx) -> pb.ReportResponse:
        async def report(_caller: Principal) -> pb.ReportResponse:
            wire.check_outcomes(request.outcomes)
            acks = await self.coordinator.report(request.worker_id, request.outcomes)
            return wire.acks_to_wire(request.batch_id, acks)

        return await self._call(context, report, worker_id=request.worker_id)

    async def StreamResults(
        self, request_iterator: AsyncIterator[pb.ReportRequest], context: Ctx
    ) -> AsyncIterator[pb.ReportResponse]:
        async def authenticated(caller: Principal) -> Principal:
            return caller

        caller = await self._call(context, authenticated)  # authenticate once per stream
        async for request in request_iterator:
            try:
                self._check_acts_for(caller, request.worker_id)
                wire.check_outcomes(request.outcomes)
                acks = await self.coordinator.report(request.worker_id, request.outcomes)
            except DtfError as exc:
                await abort(context, exc)
            yield wire.acks_to_wire(request.batch_id, acks)

    async def Deregister(self, request: pb.DeregisterRequest, context: Ctx) -> pb.DeregisterResponse:
        async def deregister(_caller: Principal) -> pb.DeregisterResponse:
            requeued = await self.coordinator.deregister(request.worker_id, list(request.returned_lease_ids))
            return pb.DeregisterResponse(requeued=requeued)

        return await self._call(context, deregister, worker_id=request.worker_id)

    async def FetchBlob(self, request: pb.FetchBlobRequest, context: Ctx) -> AsyncIterator[pb.BlobChunk]:
        async def open_blob(_caller: Principal) -> AsyncIterator[bytes]:
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
