"""Domain records as the command log carries them: the parts of commands.

The one place a submitted task or a worker's capabilities take their protobuf form;
`views.py` is the way back out, from the state the log builds.
"""

from __future__ import annotations

import uuid

from dtf_common.convert import dumps
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.schemas import TaskCreate
from dtf_coordinator.service.worker_records import Capabilities


def task_spec(task: TaskCreate, *, submitter: str) -> types_pb2.TaskSpec:
    """A submitted task as `SubmitTasks` carries it; a missing id is generated here, by the
    leader, so every replica applies the same one."""
    req = task.requirements
    return types_pb2.TaskSpec(
        task_id=task.task_id or str(uuid.uuid4()),
        type=task.type,
        priority=task.priority,
        parameters_json=dumps(task.parameters),
        dependencies=task.dependencies,
        requirements=types_pb2.Requirements(
            hardware=req.hardware or "",
            min_gpus=req.min_gpus,
            min_memory_mb=req.min_memory_mb,
            labels=req.labels,
            exclude_workers=req.exclude_workers,
        ),
        metadata_json=dumps(task.metadata),
        max_retries=task.max_retries,
        timeout_s=task.timeout or 0.0,
        submitter=submitter,
    )


def capabilities(caps: Capabilities) -> types_pb2.Capabilities:
    """A worker's capabilities as `RegisterWorker` carries them."""
    return types_pb2.Capabilities(
        hardware=caps.hardware,
        gpu_count=caps.gpu_count,
        memory_mb=caps.memory_mb,
        labels=caps.labels,
        slots=caps.slots,
        details_json=caps.details_json,
    )
