from dtf_common.pb.dtf.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_NORMAL: _ClassVar[EntryType]
    ENTRY_CONF_CHANGE: _ClassVar[EntryType]
ENTRY_NORMAL: EntryType
ENTRY_CONF_CHANGE: EntryType

class SubmitTasks(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskSpec]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_types_pb2.TaskSpec, _Mapping]]] = ...) -> None: ...

class RegisterWorker(_message.Message):
    __slots__ = ("worker_id", "hardware_id", "capabilities", "metadata_json", "name", "held_lease_ids", "reports_held")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    HELD_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_HELD_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hardware_id: str
    capabilities: _types_pb2.Capabilities
    metadata_json: str
    name: str
    held_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    reports_held: bool
    def __init__(self, worker_id: _Optional[str] = ..., hardware_id: _Optional[str] = ..., capabilities: _Optional[_Union[_types_pb2.Capabilities, _Mapping]] = ..., metadata_json: _Optional[str] = ..., name: _Optional[str] = ..., held_lease_ids: _Optional[_Iterable[str]] = ..., reports_held: _Optional[bool] = ...) -> None: ...

class WorkerHeartbeat(_message.Message):
    __slots__ = ("worker_id", "health_json", "performance_json", "held_lease_ids", "reports_held")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTH_JSON_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    HELD_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_HELD_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    health_json: str
    performance_json: str
    held_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    reports_held: bool
    def __init__(self, worker_id: _Optional[str] = ..., health_json: _Optional[str] = ..., performance_json: _Optional[str] = ..., held_lease_ids: _Optional[_Iterable[str]] = ..., reports_held: _Optional[bool] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("task_id", "worker_id", "lease_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    worker_id: str
    lease_id: str
    def __init__(self, task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class AssignTasks(_message.Message):
    __slots__ = ("assignments",)
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ...) -> None: ...

class ReportOutcomes(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[_types_pb2.TaskOutcome, _Mapping]]] = ...) -> None: ...

class CancelTasks(_message.Message):
    __slots__ = ("task_ids", "reason")
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ExpireLeases(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerOffline(_message.Message):
    __slots__ = ("worker_id", "reason")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    reason: str
    def __init__(self, worker_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeregisterWorker(_message.Message):
    __slots__ = ("worker_id", "returned_lease_ids")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RETURNED_LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    returned_lease_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., returned_lease_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("time_ms", "submit_tasks", "register_worker", "worker_heartbeat", "assign_tasks", "report_outcomes", "cancel_tasks", "expire_leases", "worker_offline", "deregister_worker")
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TASKS_FIELD_NUMBER: _ClassVar[int]
    REGISTER_WORKER_FIELD_NUMBER: _ClassVar[int]
    WORKER_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_TASKS_FIELD_NUMBER: _ClassVar[int]
    REPORT_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TASKS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_LEASES_FIELD_NUMBER: _ClassVar[int]
    WORKER_OFFLINE_FIELD_NUMBER: _ClassVar[int]
    DEREGISTER_WORKER_FIELD_NUMBER: _ClassVar[int]
    time_ms: int
    submit_tasks: SubmitTasks
    register_worker: RegisterWorker
    worker_heartbeat: WorkerHeartbeat
    assign_tasks: AssignTasks
    report_outcomes: ReportOutcomes
    cancel_tasks: CancelTasks
    expire_leases: ExpireLeases
    worker_offline: WorkerOffline
    deregister_worker: DeregisterWorker
    def __init__(self, time_ms: _Optional[int] = ..., submit_tasks: _Optional[_Union[SubmitTasks, _Mapping]] = ..., register_worker: _Optional[_Union[RegisterWorker, _Mapping]] = ..., worker_heartbeat: _Optional[_Union[WorkerHeartbeat, _Mapping]] = ..., assign_tasks: _Optional[_Union[AssignTasks, _Mapping]] = ..., report_outcomes: _Optional[_Union[ReportOutcomes, _Mapping]] = ..., cancel_tasks: _Optional[_Union[CancelTasks, _Mapping]] = ..., expire_leases: _Optional[_Union[ExpireLeases, _Mapping]] = ..., worker_offline: _Optional[_Union[WorkerOffline, _Mapping]] = ..., deregister_worker: _Optional[_Union[DeregisterWorker, _Mapping]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("term", "index", "command", "type")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    command: bytes
    type: EntryType
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., command: _Optional[bytes] = ..., type: _Optional[_Union[EntryType, str]] = ...) -> None: ...
