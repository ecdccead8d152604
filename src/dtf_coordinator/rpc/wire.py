"""The WorkerService's messages to and from the service layer's records.

The one place the coordinator reads a worker's request or writes its response: requests
become `service.worker_records` (`*_from_wire`), answers become responses (`*_to_wire`).
A report's `TaskOutcome`s are not converted: they are the command log's own records.

Every JSON field a worker sends is checked here, once, as it comes in
(`json_limits.parse_json_object`: an object, within its depth and size, valid Unicode,
finite numbers): what fails is refused with INVALID_ARGUMENT naming the field, so the
state and the results store only ever hold JSON that reads back.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtf_common.json_limits import KiB, MiB, parse_json_object
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

# Worker-supplied JSON, per field: a worker's own description (metadata, hardware
# details, health, performance) is small; a task's results and a result record's fields
# may be as large as the worker lets an outcome grow before it splits it (8 MiB).
MAX_WORKER_JSON_BYTES = 64 * KiB
MAX_OUTCOME_JSON_BYTES = 8 * MiB
RECORD_JSON_FIELDS = ("metrics_json", "hardware_metrics_json", "environment_json", "raw_data_json", "metadata_json")


def checked_json(text: str, field: str, max_bytes: int = MAX_WORKER_JSON_BYTES) -> str:
    """`text` itself, once it has parsed as a JSON object within the limits (empty: none
    sent). Raises InvalidArgument naming `field`."""
    parse_json_object(text, field=field, max_bytes=max_bytes)
    return text


def check_outcomes(outcomes: Iterable[types_pb2.TaskOutcome]) -> None:
    """Check the JSON of a report's outcomes and their result records; one bad field
    refuses the whole report (the worker then sends its outcomes singly, and drops the
    one refused on its own)."""
    for i, outcome in enumerate(outcomes):
        checked_json(outcome.results_json, f"outcomes[{i}].results_json", MAX_OUTCOME_JSON_BYTES)
        for j, record in enumerate(outcome.results):
            for name in RECORD_JSON_FIELDS:
                checked_json(getattr(record, name), f"outcomes[{i}].results[{j}].{name}", MAX_OUTCOME_JSON_BYTES)


def capabilities_from_wire(caps: types_pb2.Capabilities) -> Capabilities:
    return Capabilities(
        hardware=tuple(caps.hardware),
        gpu_count=caps.gpu_count,
        memory_mb=caps.memory_mb,
        labels=dict(caps.labels),
        slots=caps.slots,
        details_json=checked_json(caps.details_json, "capabilities.details_json"),
    )


def registration_from_wire(req: pb.RegisterRequest) -> WorkerRegistration:
    return WorkerRegistration(
        worker_id=req.worker_id,
        name=req.name,
        hardware_id=req.hardware_id,
        capabilities=capabilities_from_wire(req.capabilities),
        metadata_json=checked_json(req.metadata_json, "metadata_json"),
        lease_ids=tuple(req.lease_ids),
        reports_leases=req.reports_leases,
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
        health_json=checked_json(req.health_json, "health_json"),
        performance_json=checked_json(req.performance_json, "performance_json"),
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
