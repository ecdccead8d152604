from dtf_common.pb.dtf.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("worker_id", "name", "hardware_id", "capabilities", "metadata_json", "lease_ids", "reports_leases")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_LEASES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    name: str
    hardware_id: str
    capabilities: _types_pb2.Capabilities
    metadata_json: str
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    reports_leases: bool
    def __init__(self, worker_id: _Optional[str] = ..., name: _Optional[str] = ..., hardware_id: _Optional[str] = ..., capabilities: _Optional[_Union[_types_pb2.Capabilities, _Mapping]] = ..., metadata_json: _Optional[str] = ..., lease_ids: _Optional[_Iterable[str]] = ..., reports_leases: _Optional[bool] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("worker_id", "heartbeat_interval_s", "lease_ttl_s", "coordinator_id", "credential")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    heartbeat_interval_s: float
    lease_ttl_s: float
    coordinator_id: str
    credential: str
    def __init__(self, worker_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., lease_ttl_s: _Optional[float] = ..., coordinator_id: _Optional[str] = ..., credential: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "health_json", "performance_json", "lease_ids")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTH_JSON_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    health_json: str
    performance_json: str
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., health_json: _Optional[str] = ..., performance_json: _Optional[str] = ..., lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("revoked_lease_ids", "lease_ttl_s")
    REVOKED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    revoked_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    lease_ttl_s: float
    def __init__(self, revoked_lease_ids: _Optional[_Iterable[str]] = ..., lease_ttl_s: _Optional[float] = ...) -> None: ...

class LeaseRequest(_message.Message):
    __slots__ = ("worker_id", "max_tasks", "wait_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    max_tasks: int
    wait_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., max_tasks: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class LeasedTask(_message.Message):
    __slots__ = ("task_id", "lease_id", "type", "parameters_json", "attempt", "timeout_s", "lease_expires_ms", "metadata_json", "priority")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    lease_id: str
    type: str
    parameters_json: str
    attempt: int
    timeout_s: float
    lease_expires_ms: int
    metadata_json: str
    priority: int
    def __init__(self, task_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., type: _Optional[str] = ..., parameters_json: _Optional[str] = ..., attempt: _Optional[int] = ..., timeout_s: _Optional[float] = ..., lease_expires_ms: _Optional[int] = ..., metadata_json: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[LeasedTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[LeasedTask, _Mapping]]] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("worker_id", "batch_id", "outcomes")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    batch_id: int
    outcomes: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskOutcome]
    def __init__(self, worker_id: _Optional[str] = ..., batch_id: _Optional[int] = ..., outcomes: _Optional[_Iterable[_Union[_types_pb2.TaskOutcome, _Mapping]]] = ...) -> None: ...

class OutcomeAck(_message.Message):
    __slots__ = ("task_id", "lease_id", "status", "detail")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[OutcomeAck.Status]
        ACCEPTED: _ClassVar[OutcomeAck.Status]
        STALE: _ClassVar[OutcomeAck.Status]
    STATUS_UNSPECIFIED: OutcomeAck.Status
    ACCEPTED: OutcomeAck.Status
    STALE: OutcomeAck.Status
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    lease_id: str
    status: OutcomeAck.Status
    detail: str
    def __init__(self, task_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., status: _Optional[_Union[OutcomeAck.Status, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("batch_id", "acks")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    acks: _containers.RepeatedCompositeFieldContainer[OutcomeAck]
    def __init__(self, batch_id: _Optional[int] = ..., acks: _Optional[_Iterable[_Union[OutcomeAck, _Mapping]]] = ...) -> None: ...

class DeregisterRequest(_message.Message):
    __slots__ = ("worker_id", "returned_lease_ids")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RETURNED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    returned_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., returned_lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeregisterResponse(_message.Message):
    __slots__ = ("requeued",)
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    requeued: int
    def __init__(self, requeued: _Optional[int] = ...) -> None: ...

class FetchBlobRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...
