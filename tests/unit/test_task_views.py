"""A task's requirements and scheduling record read back as they were submitted.

The path a submission takes: `TaskCreate` (the REST body) -> `to_log.task_spec` (the
command) -> the state machine's record -> `views.task_view` (what clients read).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dtf_common.json_limits import INT64_MAX, INT64_MIN
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.schemas import MAX_MEMORY_MB, RESERVED_METADATA_KEY, Requirements, Scheduling, TaskCreate
from dtf_coordinator.service import to_log
from dtf_coordinator.service.views import result_row, task_view
from tests.unit.commands import Driver, submit

text = st.text(min_size=1, max_size=12)
requirements = st.builds(
    Requirements,
    hardware=st.none() | st.sampled_from(["cpu", "cuda", "rocm", "mps"]),
    min_gpus=st.integers(min_value=0, max_value=1024),
    min_memory_mb=st.integers(min_value=0, max_value=MAX_MEMORY_MB),
    labels=st.dictionaries(text, text, max_size=3),
    exclude_workers=st.lists(text, max_size=3),
)
submissions = st.builds(
    TaskCreate,
    type=st.sampled_from(["command", "pytest", "benchmark"]),
    priority=st.integers(min_value=0, max_value=10),
    parameters=st.dictionaries(text, st.integers(min_value=INT64_MIN, max_value=INT64_MAX) | text, max_size=3),
    requirements=requirements,
    metadata=st.dictionaries(text.filter(lambda k: k != RESERVED_METADATA_KEY), text, max_size=3),
    max_retries=st.integers(min_value=0, max_value=100),
    timeout=st.none() | st.floats(min_value=0.5, max_value=7 * 86400),
)


@given(submissions)
def test_a_submitted_task_reads_back_as_submitted(submitted: TaskCreate) -> None:
    driver = Driver()
    spec = to_log.task_spec(submitted, submitter="alice")
    driver.apply(submit(spec, at=1_000))
    task = task_view(driver.sm.tasks[spec.task_id])

    assert (task.task_id, task.type, task.priority) == (spec.task_id, submitted.type, submitted.priority)
    assert task.parameters == submitted.parameters
    assert task.scheduling == Scheduling(
        requirements=submitted.requirements,
        attempts=0,
        max_retries=submitted.max_retries,
        timeout=submitted.timeout,
        submitter="alice",
    )
    # The record is in the schema's own shape, so what a client reads is what it validates.
    record = task.metadata[RESERVED_METADATA_KEY]
    assert record == task.scheduling.model_dump()
    assert {k: v for k, v in task.metadata.items() if k != RESERVED_METADATA_KEY} == submitted.metadata


def test_a_task_id_is_kept_or_generated() -> None:
    given_id = "2b7e1516-28ae-4d2a-a6ab-f7158809cf4f"
    assert to_log.task_spec(TaskCreate(type="noop", task_id=given_id), submitter="").task_id == given_id
    first, second = (to_log.task_spec(TaskCreate(type="noop"), submitter="") for _ in range(2))
    assert first.task_id and first.task_id != second.task_id


def test_a_result_row_keeps_a_known_status_and_stores_others_as_failures() -> None:
    def row(status: str) -> str:
        record = types_pb2.ResultRecord(result_id="r", task_id="t", test_id="x", status=status, execution_time=-1)
        stored = result_row(record, "cpu-x86")
        assert (stored["hardware_id"], stored["execution_time"], stored["metrics"]) == ("cpu-x86", 0.0, "{}")
        return str(stored["status"])

    assert [row(s) for s in ("success", "failure", "partial", "exploded", "")] == [
        "success",
        "failure",
        "partial",
        "failure",
        "failure",
    ]
