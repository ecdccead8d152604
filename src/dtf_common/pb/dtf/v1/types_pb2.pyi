from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Requirements(_message.Message):
    __slots__ = ("hardware", "min_gpus", "min_memory_mb", "labels", "exclude_workers")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    MIN_GPUS_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    hardware: str
    min_gpus: int
    min_memory_mb: int
    labels: _containers.ScalarMap[str, str]
    exclude_workers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hardware: _Optional[str] = ..., min_gpus: _Optional[int] = ..., min_memory_mb: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., exclude_workers: _Optional[_Iterable[str]] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("hardware", "gpu_count", "memory_mb", "labels", "slots", "details_json")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    GPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    hardware: _containers.RepeatedScalarFieldContainer[str]
    gpu_count: int
    memory_mb: int
    labels: _containers.ScalarMap[str, str]
    slots: int
    details_json: str
    def __init__(self, hardware: _Optional[_Iterable[str]] = ..., gpu_count: _Optional[int] = ..., memory_mb: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., slots: _Optional[int] = ..., details_json: _Optional[str] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("task_id", "type", "priority", "parameters_json", "dependencies", "requirements", "metadata_json", "max_retries", "timeout_s", "submitter")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    type: str
    priority: int
    parameters_json: str
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    requirements: Requirements
    metadata_json: str
    max_retries: int
    timeout_s: float
    submitter: str
    def __init__(self, task_id: _Optional[str] = ..., type: _Optional[str] = ..., priority: _Optional[int] = ..., parameters_json: _Optional[str] = ..., dependencies: _Optional[_Iterable[str]] = ..., requirements: _Optional[_Union[Requirements, _Mapping]] = ..., metadata_json: _Optional[str] = ..., max_retries: _Optional[int] = ..., timeout_s: _Optional[float] = ..., submitter: _Optional[str] = ...) -> None: ...

class ResultRecord(_message.Message):
    __slots__ = ("result_id", "task_id", "worker_id", "test_id", "timestamp_ms", "metrics_json", "status", "execution_time", "hardware_metrics_json", "environment_json", "raw_data_json", "metadata_json")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    RAW_DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    task_id: str
    worker_id: str
    test_id: str
    timestamp_ms: int
    metrics_json: str
    status: str
    execution_time: float
    hardware_metrics_json: str
    environment_json: str
    raw_data_json: str
    metadata_json: str
    def __init__(self, result_id: _Optional[str] = ..., task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., test_id: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., metrics_json: _Optional[str] = ..., status: _Optional[str] = ..., execution_time: _Optional[float] = ..., hardware_metrics_json: _Optional[str] = ..., environment_json: _Optional[str] = ..., raw_data_json: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class TaskOutcome(_message.Message):
    __slots__ = ("task_id", "lease_id", "worker_id", "kind", "error", "results_json", "results", "non_retryable", "stdout", "stderr")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[TaskOutcome.Kind]
        STARTED: _ClassVar[TaskOutcome.Kind]
        COMPLETED: _ClassVar[TaskOutcome.Kind]
        FAILED: _ClassVar[TaskOutcome.Kind]
        PROGRESS: _ClassVar[TaskOutcome.Kind]
    KIND_UNSPECIFIED: TaskOutcome.Kind
    STARTED: TaskOutcome.Kind
    COMPLETED: TaskOutcome.Kind
    FAILED: TaskOutcome.Kind
    PROGRESS: TaskOutcome.Kind
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULTS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NON_RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    lease_id: str
    worker_id: str
    kind: TaskOutcome.Kind
    error: str
    results_json: str
    results: _containers.RepeatedCompositeFieldContainer[ResultRecord]
    non_retryable: bool
    stdout: str
    stderr: str
    def __init__(self, task_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., kind: _Optional[_Union[TaskOutcome.Kind, str]] = ..., error: _Optional[str] = ..., results_json: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ResultRecord, _Mapping]]] = ..., non_retryable: _Optional[bool] = ..., stdout: _Optional[str] = ..., stderr: _Optional[str] = ...) -> None: ...
