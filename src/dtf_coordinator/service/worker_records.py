"""What the service layer takes from workers and gives back, whatever the transport.

`rpc/wire.py` converts these to and from the WorkerService's protobuf messages; the
`Coordinator` sees only these. JSON-valued fields (health, metadata, parameters) stay
JSON text: they travel as text on the wire and in the command log, and the coordinator
passes them on unread.

A worker's report is the exception: its `types_pb2.TaskOutcome` records are what the
command log stores, so they go from the wire into the log unchanged (a copy into
records and back would cost more per result than parsing the whole request).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a worker offers, as its fingerprint detected it."""

    hardware: tuple[str, ...] = ()
    gpu_count: int = 0
    memory_mb: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    slots: int = 0  # 0: the state machine's default of one
    details_json: str = ""


@dataclass(frozen=True, slots=True)
class WorkerRegistration:
    """A worker joining the fleet, or rejoining with the same id after a restart."""

    worker_id: str
    name: str = ""
    hardware_id: str = ""
    capabilities: Capabilities = field(default_factory=Capabilities)
    metadata_json: str = ""
    # The leases it holds as it registers (`reports_leases`: the worker says which it holds;
    # its other running leases died with its last process).
    lease_ids: tuple[str, ...] = ()
    reports_leases: bool = False


@dataclass(frozen=True, slots=True)
class Registered:
    """The coordinator's answer to a registration: how often to beat, how long a lease lasts."""

    worker_id: str
    heartbeat_interval_s: float
    lease_ttl_s: float
    coordinator_id: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness and health, and the leases the worker holds now (each one is renewed)."""

    worker_id: str
    health_json: str = ""
    performance_json: str = ""
    lease_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """Of the leases the worker named, those the coordinator no longer honours."""

    revoked_lease_ids: tuple[str, ...]
    lease_ttl_s: float


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """One task leased to a worker: what it runs and until when the lease holds."""

    task_id: str
    lease_id: str
    type: str
    parameters_json: str
    attempt: int
    timeout_s: float
    lease_expires_ms: int
    metadata_json: str
    priority: int


@dataclass(frozen=True, slots=True)
class OutcomeAck:
    """The answer to one reported outcome, once durable: `accepted` when it was applied,
    not when its lease was no longer current (stale: it changed nothing)."""

    task_id: str
    lease_id: str
    accepted: bool
    detail: str = ""
