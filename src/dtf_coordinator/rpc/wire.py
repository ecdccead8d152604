"""The WorkerService's messages to and from the service layer's records.

The one place the coordinator reads a worker's request or writes its response: requests
become `service.worker_records` (`*_from_wire`), answers become responses (`*_to_wire`).
A report's `TaskOutcome`s are not converted: they are the command log's own records.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.pb.dtf.v1 import worker_service_pb2 as pb
from dtf_coordinator.service.worker_records import (
    Capabilities,
    Heartbeat,
    HeartbeatAck,
    LeaseGrant,
    OutcomeAck,
    Registered,
    WorkerRegistration,
)


def capabilities_from_wire(caps: types_pb2.Capabilities) -> Capabilities:
    return Capabilities(
        hardware=tuple(caps.hardware),
        gpu_count=caps.gpu_count,
        memory_mb=caps.memory_mb,
        labels=dict(caps.labels),
        slots=caps.slots,
        details_json=caps.details_json,
    )


def registration_from_wire(req: pb.RegisterRequest) -> WorkerRegistration:
    return WorkerRegistration(
        worker_id=req.worker_id,
        name=req.name,
        hardware_id=req.hardware_id,
        capabilities=capabilities_from_wire(req.capabilities),
        metadata_json=req.metadata_json,
    )


def registered_to_wire(answer: Registered) -> pb.RegisterResponse:
    return pb.RegisterResponse(
        worker_id=answer.worker_id,
        heartbeat_interval_s=answer.heartbeat_interval_s,
        lease_ttl_s=answer.lease_ttl_s,
        coordinator_id=answer.coordinator_id,
    )


def heartbeat_from_wire(req: pb.HeartbeatRequest) -> Heartbeat:
    return Heartbeat(
        worker_id=req.worker_id,
        health_json=req.health_json,
        performance_json=req.performance_json,
        lease_ids=tuple(req.lease_ids),
    )


def heartbeat_ack_to_wire(ack: HeartbeatAck) -> pb.HeartbeatResponse:
    return pb.HeartbeatResponse(revoked_lease_ids=ack.revoked_lease_ids, lease_ttl_s=ack.lease_ttl_s)


def grants_to_wire(grants: Iterable[LeaseGrant]) -> pb.LeaseResponse:
    return pb.LeaseResponse(
        tasks=[
            pb.LeasedTask(
                task_id=g.task_id,
                lease_id=g.lease_id,
                type=g.type,
                parameters_json=g.parameters_json,
                attempt=g.attempt,
                timeout_s=g.timeout_s,
                lease_expires_ms=g.lease_expires_ms,
                metadata_json=g.metadata_json,
                priority=g.priority,
            )
            for g in grants
        ]
    )


def acks_to_wire(batch_id: int, acks: Iterable[OutcomeAck]) -> pb.ReportResponse:
    accepted, stale = pb.OutcomeAck.ACCEPTED, pb.OutcomeAck.STALE
    return pb.ReportResponse(
        batch_id=batch_id,
        acks=[
            pb.OutcomeAck(
                task_id=a.task_id, lease_id=a.lease_id, status=accepted if a.accepted else stale, detail=a.detail
            )
            for a in acks
        ],
    )
