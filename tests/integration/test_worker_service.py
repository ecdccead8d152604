"""The gRPC worker service over a real socket: register, lease, report, heartbeat, auth."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dtf_common.config import CoordinatorConfig, HealthMonitorConfig, TaskSchedulerConfig
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.pb.dtf.v1 import worker_service_pb2 as pb
from dtf_common.pb.dtf.v1 import worker_service_pb2_grpc as pb_grpc
from dtf_common.schemas import TaskCreate
from dtf_coordinator.auth import create_token
from dtf_coordinator.consensus import standalone_node
from dtf_coordinator.rpc.worker_service import add_worker_service
from dtf_coordinator.state import StateMachine, StateParams
from dtf_coordinator.wiring import build_coordinator

SECRET = "integration-test-secret-0123456789"
Kind = types_pb2.TaskOutcome


class Harness:
    def __init__(self, directory: Path, params: StateParams) -> None:
        config = CoordinatorConfig(
            task_scheduler=TaskSchedulerConfig(
                max_queue_size=params.max_queue_size, lease_timeout=params.lease_ttl_ms / 1000
            ),
            health_monitor=HealthMonitorConfig(heartbeat_interval=0.5),
        )
        self.node = standalone_node(directory, StateMachine(params))
        parts = build_coordinator(config, self.node)
        self.dispatcher = parts.dispatcher
        self.coordinator = parts.coordinator
        self.server = grpc.aio.server()
        self.tasks: list[asyncio.Task[None]] = []
        self.port = 0

    async def start(self) -> None:
        await self.node.start(self.coordinator.on_effects)
        add_worker_service(self.server, self.coordinator, SECRET)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.tasks.append(asyncio.create_task(self.dispatcher.run()))

    async def stop(self) -> None:
        await self.server.stop(0)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.node.stop()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path / "log", StateParams(lease_ttl_ms=5_000, max_queue_size=100))
    await h.start()
    yield h
    await h.stop()


def stub_for(
    port: int, role: str = "worker"
) -> tuple[grpc.aio.Channel, pb_grpc.WorkerServiceStub, list[tuple[str, str]]]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    token = create_token(SECRET, role, subject="test-worker")
    return channel, pb_grpc.WorkerServiceStub(channel), [("authorization", f"Bearer {token}")]


async def enrol(
    stub: pb_grpc.WorkerServiceStub, join: list[tuple[str, str]], worker_id: str, **kw: Any
) -> list[tuple[str, str]]:
    """Register `worker_id` with a join token; the metadata of its own credential."""
    reply = await stub.Register(register_request(worker_id, **kw), metadata=join)
    assert reply.credential, "a registration answers with the worker's own credential"
    return [("authorization", f"Bearer {reply.credential}")]


def register_request(worker_id: str, hardware: list[str] | None = None, slots: int = 2) -> pb.RegisterRequest:
    caps = types_pb2.Capabilities(hardware=hardware or ["cpu"], memory_mb=4096, slots=slots)
    return pb.RegisterRequest(worker_id=worker_id, name=worker_id, hardware_id="cpu-test", capabilities=caps)


@pytest.mark.anyio
async def test_task_round_trip_over_grpc(harness: Harness) -> None:
    channel, stub, join = stub_for(harness.port)
    async with channel:
        reply = await stub.Register(register_request("w1"), metadata=join)
        assert reply.lease_ttl_s == 5.0
        md = [("authorization", f"Bearer {reply.credential}")]
        [task_id] = await harness.coordinator.submit(
            [TaskCreate(type="command", parameters={"command": ["true"]})], submitter="alice"
        )
        leased = await stub.LeaseTasks(pb.LeaseRequest(worker_id="w1", max_tasks=2, wait_ms=2000), metadata=md)
        assert [t.task_id for t in leased.tasks] == [task_id]
        lease = leased.tasks[0]
        assert json.loads(lease.parameters_json) == {"command": ["true"]}
        record = types_pb2.ResultRecord(
            result_id=str(uuid.uuid4()), task_id=task_id, test_id="true", status="success", execution_time=0.01
        )
        started = Kind(task_id=task_id, lease_id=lease.lease_id, kind=Kind.STARTED)
        done = Kind(task_id=task_id, lease_id=lease.lease_id, kind=Kind.COMPLETED, results=[record])
        acks = await stub.ReportResults(
            pb.ReportRequest(worker_id="w1", batch_id=7, outcomes=[started, done]), metadata=md
        )
        assert acks.batch_id == 7
        assert [a.status for a in acks.acks] == [pb.OutcomeAck.ACCEPTED, pb.OutcomeAck.ACCEPTED]
        assert harness.coordinator.get_task(task_id).status == "completed"
        # The same report again (a worker retrying after a lost reply) is stale and changes nothing.
        again = await stub.ReportResults(pb.ReportRequest(worker_id="w1", batch_id=8, outcomes=[done]), metadata=md)
        assert again.acks[0].status == pb.OutcomeAck.STALE
        assert harness.coordinator.get_task(task_id).status == "completed"


@pytest.mark.anyio
async def test_long_poll_wakes_when_a_task_arrives(harness: Harness) -> None:
    channel, stub, join = stub_for(harness.port)
    async with channel:
        md = await enrol(stub, join, "w1")
        poll = asyncio.ensure_future(
            stub.LeaseTasks(pb.LeaseRequest(worker_id="w1", max_tasks=1, wait_ms=10_000), metadata=md)
        )
        await asyncio.sleep(0.2)
        assert not poll.done()
        [task_id] = await harness.coordinator.submit([TaskCreate(type="noop")], submitter="alice")
        leased = await asyncio.wait_for(poll, 5)
        assert [t.task_id for t in leased.tasks] == [task_id]


@pytest.mark.anyio
async def test_requirements_route_tasks_to_matching_workers(harness: Harness) -> None:
    channel, stub, join = stub_for(harness.port)
    async with channel:
        cpu = await enrol(stub, join, "cpu-box")
        gpu = await enrol(stub, join, "gpu-box", hardware=["cpu", "cuda"])
        [gpu_task] = await harness.coordinator.submit(
            [TaskCreate(type="noop", requirements={"hardware": "cuda"})], submitter="alice"
        )
        cpu_poll = await stub.LeaseTasks(pb.LeaseRequest(worker_id="cpu-box", max_tasks=1, wait_ms=300), metadata=cpu)
        assert list(cpu_poll.tasks) == []
        gpu_poll = await stub.LeaseTasks(pb.LeaseRequest(worker_id="gpu-box", max_tasks=1, wait_ms=2000), metadata=gpu)
        assert [t.task_id for t in gpu_poll.tasks] == [gpu_task]


@pytest.mark.anyio
async def test_heartbeat_revokes_leases_of_cancelled_tasks(harness: Harness) -> None:
    channel, stub, join = stub_for(harness.port)
    async with channel:
        md = await enrol(stub, join, "w1")
        [task_id] = await harness.coordinator.submit([TaskCreate(type="noop")], submitter="alice")
        leased = await stub.LeaseTasks(pb.LeaseRequest(worker_id="w1", max_tasks=1, wait_ms=2000), metadata=md)
        lease_id = leased.tasks[0].lease_id
        beat = await stub.Heartbeat(pb.HeartbeatRequest(worker_id="w1", lease_ids=[lease_id]), metadata=md)
        assert list(beat.revoked_lease_ids) == []
        await harness.coordinator.cancel([task_id])
        beat = await stub.Heartbeat(pb.HeartbeatRequest(worker_id="w1", lease_ids=[lease_id]), metadata=md)
        assert list(beat.revoked_lease_ids) == [lease_id]


@pytest.mark.anyio
async def test_wrong_token_and_role_are_refused_with_status(harness: Harness) -> None:
    channel, stub, _ = stub_for(harness.port)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Register(register_request("w1"))
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        bad = [("authorization", "Bearer " + create_token("another-secret-0123456789", "worker"))]
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await stub.Register(register_request("w1"), metadata=bad)
        assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
        _, _, viewer = stub_for(harness.port, role="viewer")
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.Register(register_request("w1"), metadata=viewer)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert harness.node.state.workers == {}


@pytest.mark.anyio
async def test_unknown_worker_must_register(harness: Harness) -> None:
    channel, stub, _ = stub_for(harness.port)
    md = [("authorization", "Bearer " + create_token(SECRET, "worker", worker_id="ghost"))]
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.LeaseTasks(pb.LeaseRequest(worker_id="ghost", max_tasks=1, wait_ms=10), metadata=md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "register" in (err.value.details() or "")


@pytest.mark.anyio
async def test_full_queue_is_resource_exhausted(harness: Harness) -> None:
    from dtf_common.errors import QueueFull

    await harness.coordinator.submit([TaskCreate(type="noop") for _ in range(100)], submitter="alice")
    with pytest.raises(QueueFull):
        await harness.coordinator.submit([TaskCreate(type="noop")], submitter="alice")
    assert harness.node.state.pending_count == 100


@pytest.mark.anyio
async def test_streamed_reports_are_acknowledged_in_order(harness: Harness) -> None:
    channel, stub, join = stub_for(harness.port)
    async with channel:
        md = await enrol(stub, join, "w1", slots=50)
        ids = await harness.coordinator.submit([TaskCreate(type="noop") for _ in range(50)], submitter="alice")
        leased = await stub.LeaseTasks(pb.LeaseRequest(worker_id="w1", max_tasks=50, wait_ms=2000), metadata=md)
        assert len(leased.tasks) == 50

        async def requests() -> AsyncIterator[pb.ReportRequest]:
            for i, t in enumerate(leased.tasks):
                outcome = Kind(task_id=t.task_id, lease_id=t.lease_id, kind=Kind.COMPLETED)
                yield pb.ReportRequest(worker_id="w1", batch_id=i, outcomes=[outcome])

        replies = [r async for r in stub.StreamResults(requests(), metadata=md)]
        assert [r.batch_id for r in replies] == list(range(50))
        assert all(r.acks[0].status == pb.OutcomeAck.ACCEPTED for r in replies)
        assert {harness.coordinator.get_task(i).status for i in ids} == {"completed"}
