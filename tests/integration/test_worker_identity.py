"""Each worker has an identity of its own: a join token only enrols, the credential a
registration returns acts for its worker alone, and no report can write over a task or
a result that is not the reporting worker's."""

from __future__ import annotations

import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.pb.dtf.v1 import worker_service_pb2 as pb
from dtf_common.pb.dtf.v1 import worker_service_pb2_grpc as pb_grpc
from dtf_common.schemas import TaskCreate, TaskStatus, WorkerStatus
from dtf_coordinator.auth import create_token
from dtf_worker.daemon import WorkerDaemon
from dtf_worker.identity import CREDENTIAL_FILE
from tests.integration.test_worker_daemon import (
    SECRET,
    LiveCoordinator,
    eventually,
    is_final,
    live_coordinator,
    running,
    worker_config,
)

Kind = types_pb2.TaskOutcome
Metadata = list[tuple[str, str]]
JOIN: Metadata = [("authorization", "Bearer " + create_token(SECRET, "worker", subject="join"))]


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveCoordinator]:
    async with live_coordinator(tmp_path / "coordinator", results_store=True) as coordinator:
        yield coordinator


@pytest.fixture
async def stub(live: LiveCoordinator) -> AsyncIterator[pb_grpc.WorkerServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{live.port}") as channel:
        yield pb_grpc.WorkerServiceStub(channel)


async def enrol(stub: pb_grpc.WorkerServiceStub, worker_id: str, join: Metadata = JOIN) -> Metadata:
    caps = types_pb2.Capabilities(hardware=["cpu"], slots=4)
    reply = await stub.Register(pb.RegisterRequest(worker_id=worker_id, capabilities=caps), metadata=join)
    return [("authorization", f"Bearer {reply.credential}")]


async def refused(call: Any, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


async def lease_one(live: LiveCoordinator, stub: pb_grpc.WorkerServiceStub, worker_id: str, md: Metadata) -> Any:
    [task_id] = await live.submit(TaskCreate(type="noop"))
    leased = await stub.LeaseTasks(pb.LeaseRequest(worker_id=worker_id, max_tasks=1, wait_ms=2000), metadata=md)
    [task] = leased.tasks
    assert task.task_id == task_id
    return task


@pytest.mark.anyio
async def test_a_join_token_only_enrols(live: LiveCoordinator, stub: pb_grpc.WorkerServiceStub) -> None:
    await enrol(stub, "w1")
    said = await refused(stub.Heartbeat(pb.HeartbeatRequest(worker_id="w1"), metadata=JOIN))
    assert "join token only enrols" in said
    await refused(stub.LeaseTasks(pb.LeaseRequest(worker_id="w1", max_tasks=1, wait_ms=10), metadata=JOIN))
    await refused(stub.ReportResults(pb.ReportRequest(worker_id="w1"), metadata=JOIN))
    await refused(stub.Deregister(pb.DeregisterRequest(worker_id="w1"), metadata=JOIN))
    assert live.worker("w1").status is not WorkerStatus.OFFLINE


@pytest.mark.anyio
async def test_a_credential_acts_for_its_own_worker_only(
    live: LiveCoordinator, stub: pb_grpc.WorkerServiceStub
) -> None:
    w1, w2 = await enrol(stub, "w1"), await enrol(stub, "w2")
    task = await lease_one(live, stub, "w2", w2)

    said = await refused(stub.Deregister(pb.DeregisterRequest(worker_id="w2"), metadata=w1))
    assert "worker w1's, not worker w2's" in said
    await refused(stub.Heartbeat(pb.HeartbeatRequest(worker_id="w2"), metadata=w1))
    await refused(stub.LeaseTasks(pb.LeaseRequest(worker_id="w2", max_tasks=1, wait_ms=10), metadata=w1))
    done = Kind(task_id=task.task_id, lease_id=task.lease_id, kind=Kind.COMPLETED)
    await refused(stub.ReportResults(pb.ReportRequest(worker_id="w2", outcomes=[done]), metadata=w1))
    await refused(stub.Register(pb.RegisterRequest(worker_id="w2"), metadata=w1))

    assert live.worker("w2").status is not WorkerStatus.OFFLINE
    assert live.task(task.task_id).status is TaskStatus.ASSIGNED and live.task(task.task_id).worker_id == "w2"


@pytest.mark.anyio
async def test_a_join_token_cannot_take_over_a_live_worker(
    live: LiveCoordinator, stub: pb_grpc.WorkerServiceStub
) -> None:
    own = await enrol(stub, "w1")
    said = await refused(enrol(stub, "w1"), grpc.StatusCode.FAILED_PRECONDITION)
    assert "registers with its own credential" in said
    # Its own credential registers it again (a restart); once it has left, the id may be enrolled anew.
    assert (await stub.Register(pb.RegisterRequest(worker_id="w1"), metadata=own)).credential
    await stub.Deregister(pb.DeregisterRequest(worker_id="w1"), metadata=own)
    assert await enrol(stub, "w1")


@pytest.mark.anyio
async def test_a_report_cannot_finish_another_workers_task_or_write_over_other_results(
    live: LiveCoordinator, stub: pb_grpc.WorkerServiceStub
) -> None:
    w1, w2 = await enrol(stub, "w1"), await enrol(stub, "w2")
    # w1 finishes a task with a result.
    first = await lease_one(live, stub, "w1", w1)
    record = types_pb2.ResultRecord(result_id="r-1", test_id="t", status="failure", execution_time=1.0)
    kept = Kind(task_id=first.task_id, lease_id=first.lease_id, kind=Kind.COMPLETED, results=[record])
    await stub.ReportResults(pb.ReportRequest(worker_id="w1", outcomes=[kept]), metadata=w1)
    [original] = await live.results(first.task_id)
    victim = await lease_one(live, stub, "w1", w1)

    # w2, with its own credential, reports w1's running task as done: not its lease.
    forged = Kind(task_id=victim.task_id, lease_id=victim.lease_id, worker_id="w1", kind=Kind.COMPLETED)
    reply = await stub.ReportResults(pb.ReportRequest(worker_id="w2", outcomes=[forged]), metadata=w2)
    assert reply.acks[0].status != pb.OutcomeAck.ACCEPTED and "held by worker w1" in reply.acks[0].detail
    assert live.task(victim.task_id).status is TaskStatus.ASSIGNED

    # w2 finishes its own task with records that name w1's finished task and its result's id.
    own = await lease_one(live, stub, "w2", w2)
    sneaky = types_pb2.ResultRecord(
        result_id=original["result_id"], task_id=first.task_id, test_id="t", status="success", execution_time=0.1
    )
    outcome = Kind(task_id=own.task_id, lease_id=own.lease_id, kind=Kind.COMPLETED, results=[sneaky])
    reply = await stub.ReportResults(pb.ReportRequest(worker_id="w2", outcomes=[outcome]), metadata=w2)
    assert reply.acks[0].status == pb.OutcomeAck.ACCEPTED
    assert await live.results(first.task_id) == [original], "another task's result must stay as it was"
    [stored] = await live.results(own.task_id)
    assert stored["status"] == "success" and stored["worker_id"] == "w2"
    assert stored["result_id"] != original["result_id"]
    uuid.UUID(stored["result_id"])  # the coordinator's id, not the worker's


@pytest.mark.anyio
async def test_a_worker_keeps_its_credential_and_needs_no_join_token_to_come_back(
    live: LiveCoordinator, tmp_path: Path
) -> None:
    config = worker_config(tmp_path, live.port)
    async with running(WorkerDaemon(config, grace_s=0.5)) as daemon:
        await eventually(lambda: daemon.worker_id in live.coordinator.node.state.workers, what="registered")
    credential = Path(config.execution.working_dir) / CREDENTIAL_FILE
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    # The join token is gone (revoked, say): the worker comes back with its own credential.
    config.coordinator.api_key = create_token("a-secret-that-is-not-the-clusters-0123", "worker")
    async with running(WorkerDaemon(config, grace_s=0.5)) as daemon:
        [task_id] = await live.submit(TaskCreate(type="noop"))
        await eventually(is_final(live, task_id), what="the task run by the returning worker")
    assert live.task(task_id).status is TaskStatus.COMPLETED and live.task(task_id).worker_id == daemon.worker_id
