"""Reading a leased task off the wire, and what the worker does with one it cannot read."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from dtf_common.pb.dtf.v1 import types_pb2, worker_service_pb2
from dtf_worker.client import lease_from_wire
from dtf_worker.executors.noop import NoopExecutor
from dtf_worker.executors.registry import ExecutorRegistry
from dtf_worker.lease import AnyLease, Lease, UnreadableLease
from dtf_worker.spool import Spool
from dtf_worker.task_runner import TaskRunner

Outcome = types_pb2.TaskOutcome


def wire(**fields: Any) -> worker_service_pb2.LeasedTask:
    return worker_service_pb2.LeasedTask(task_id="task-1", lease_id="lease-1", type="noop", **fields)


def test_a_lease_is_read_whole() -> None:
    lease = lease_from_wire(
        wire(
            parameters_json=json.dumps({"command": ["true"], "env": {"A": "1"}}),
            metadata_json=json.dumps({"name": "smoke"}),
            attempt=2,
            timeout_s=30.0,
            priority=7,
            lease_expires_ms=1_700_000_000_000,
        )
    )
    assert lease == Lease(
        task_id="task-1",
        lease_id="lease-1",
        type="noop",
        parameters={"command": ["true"], "env": {"A": "1"}},
        metadata={"name": "smoke"},
        attempt=2,
        timeout_s=30.0,
        priority=7,
        expires_ms=1_700_000_000_000,
    )


def test_empty_parameters_and_metadata_are_empty_objects() -> None:
    lease = lease_from_wire(wire())
    assert isinstance(lease, Lease) and lease.parameters == {} and lease.metadata == {}


@pytest.mark.parametrize("metadata_json", ["{not json", "[1, 2]"])
def test_unreadable_metadata_counts_as_empty(metadata_json: str) -> None:
    lease = lease_from_wire(wire(metadata_json=metadata_json, parameters_json="{}"))
    assert isinstance(lease, Lease) and lease.metadata == {}


@pytest.mark.parametrize(
    ("parameters_json", "message"),
    [("{not json", "parameters are not valid JSON"), ("[1, 2]", "parameters must be a JSON object")],
)
def test_unreadable_parameters_are_named(parameters_json: str, message: str) -> None:
    lease = lease_from_wire(wire(parameters_json=parameters_json, attempt=3))
    assert isinstance(lease, UnreadableLease)
    assert (lease.task_id, lease.lease_id, lease.type, lease.attempt) == ("task-1", "lease-1", "noop", 3)
    assert lease.problem.field == "parameters" and message in lease.problem.message


def outcomes_of(lease: AnyLease, tmp_path: Path) -> list[types_pb2.TaskOutcome]:
    """What a task runner spools for `lease`, once its task has ended."""

    async def go() -> list[types_pb2.TaskOutcome]:
        spool = Spool(tmp_path / "spool")
        runner = TaskRunner(
            executors=ExecutorRegistry({"noop": NoopExecutor()}),
            worker_id="w1",
            runs_dir=tmp_path / "runs",
            cache_dir=tmp_path / "cache",
            default_timeout=60.0,
            spool=spool,
            on_spooled=lambda: None,
        )
        runner.start(lease)
        jobs = [r.job for r in runner.running.values() if r.job is not None]
        await asyncio.gather(*jobs)
        spool.sync()
        try:
            return [outcome for _, outcome in spool.pending()]
        finally:
            spool.close()

    return asyncio.run(go())


def test_a_lease_with_bad_parameters_fails_at_once_and_is_not_retried(tmp_path: Path) -> None:
    # A noop task reads no parameters, so only the conversion can have failed it.
    started, ended = outcomes_of(lease_from_wire(wire(parameters_json="{not json")), tmp_path)
    assert (started.kind, ended.kind) == (Outcome.STARTED, Outcome.FAILED)
    assert (ended.task_id, ended.lease_id, ended.worker_id) == ("task-1", "lease-1", "w1")
    assert ended.non_retryable
    assert ended.error.startswith("invalid parameters: parameters are not valid JSON")


def test_a_readable_lease_runs(tmp_path: Path) -> None:
    started, ended = outcomes_of(lease_from_wire(wire(parameters_json="{}")), tmp_path)
    assert (started.kind, ended.kind) == (Outcome.STARTED, Outcome.COMPLETED)
    assert json.loads(ended.results_json) == {"noop": True} and not ended.non_retryable
