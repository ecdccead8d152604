"""The daemon against an in-process fake coordinator served over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from dtf_common.config import WorkerConfig
from dtf_common.errors import ConfigError
from dtf_common.pb.dtf.v1 import types_pb2, worker_service_pb2, worker_service_pb2_grpc
from dtf_worker.daemon import WorkerDaemon, main
from dtf_worker.hardware import HardwareProfile
from dtf_worker.spool import Spool

Outcome = types_pb2.TaskOutcome
TOKEN = "worker-token"
HARDWARE = HardwareProfile(
    hostname="test-host",
    os="Linux",
    os_release="6",
    platform="Linux",
    architecture="x86_64",
    cpu_model="cpu",
    physical_cores=1,
    logical_cores=2,
    memory_mb=1024,
    python_version="3.11",
    python_implementation="CPython",
)


class FakeCoordinator(worker_service_pb2_grpc.WorkerServiceServicer):  # type: ignore[misc]
    """Hands out queued tasks, records what workers say, and can misbehave on request."""

    def __init__(self) -> None:
        self.queue: list[worker_service_pb2.LeasedTask] = []
        self.known: set[str] = set()
        self.registrations: list[worker_service_pb2.RegisterRequest] = []
        self.heartbeats: list[worker_service_pb2.HeartbeatRequest] = []
        self.outcomes: list[types_pb2.TaskOutcome] = []
        self.deregistered: list[worker_service_pb2.DeregisterRequest] = []
        self.revoked: set[str] = set()
        self.report_failures = 0
        self.rejected: set[str] = set()  # task ids whose outcomes the coordinator refuses as malformed
        self.queued = asyncio.Event()

    def add(self, task_type: str, parameters: dict[str, Any]) -> str:
        n = len(self.queue) + len(self.outcomes) + 1
        task_id = f"task-{n}-{time.monotonic_ns()}"
        self.queue.append(
            worker_service_pb2.LeasedTask(
                task_id=task_id, lease_id=f"lease-{task_id}", type=task_type, parameters_json=json.dumps(parameters)
            )
        )
        self.queued.set()
        return task_id

    def final(self) -> dict[str, types_pb2.TaskOutcome]:
        return {o.task_id: o for o in self.outcomes if o.kind != Outcome.STARTED}

    async def _check(self, context: Any, worker_id: str | None = None) -> None:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        if worker_id is not None and worker_id not in self.known:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"worker {worker_id} is not registered")

    async def Register(self, request: Any, context: Any) -> Any:
        await self._check(context)
        self.registrations.append(request)
        self.known.add(request.worker_id)
        return worker_service_pb2.RegisterResponse(worker_id=request.worker_id, heartbeat_interval_s=0.1)

    async def Heartbeat(self, request: Any, context: Any) -> Any:
        await self._check(context, request.worker_id)
        self.heartbeats.append(request)
        return worker_service_pb2.HeartbeatResponse(
            revoked_lease_ids=[i for i in request.lease_ids if i in self.revoked]
        )

    async def LeaseTasks(self, request: Any, context: Any) -> Any:
        await self._check(context, request.worker_id)
        if not self.queue:
            self.queued.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queued.wait(), request.wait_ms / 1000)
        granted, self.queue = self.queue[: request.max_tasks], self.queue[request.max_tasks :]
        return worker_service_pb2.LeaseResponse(tasks=granted)

    async def ReportResults(self, request: Any, context: Any) -> Any:
        await self._check(context)
        if self.report_failures:
            self.report_failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        if any(o.task_id in self.rejected for o in request.outcomes):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed outcome")
        self.outcomes.extend(request.outcomes)
        acks = [
            worker_service_pb2.OutcomeAck(
                task_id=o.task_id, lease_id=o.lease_id, status=worker_service_pb2.OutcomeAck.ACCEPTED
            )
            for o in request.outcomes
        ]
        return worker_service_pb2.ReportResponse(batch_id=request.batch_id, acks=acks)

    async def Deregister(self, request: Any, context: Any) -> Any:
        await self._check(context, request.worker_id)
        self.deregistered.append(request)
        return worker_service_pb2.DeregisterResponse(requeued=len(request.returned_lease_ids))


async def wait_until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


Scenario = Callable[[FakeCoordinator, WorkerDaemon], Awaitable[None]]


def run_scenario(tmp_path: Path, scenario: Scenario, *, grace_s: float = 5.0, **execution: Any) -> FakeCoordinator:
    async def main() -> FakeCoordinator:
        fake = FakeCoordinator()
        server = grpc.aio.server()
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        config = WorkerConfig.model_validate(
            {
                "coordinator": {"url": f"http://127.0.0.1:{port}", "api_key": TOKEN},
                "execution": {"working_dir": str(tmp_path / "work"), "concurrent_tasks": 2, **execution},
                "reporting": {"result_batch_size": 3},
            }
        )
        daemon = WorkerDaemon(config, grace_s=grace_s, hardware=HARDWARE)
        try:
            await daemon.start()
            await scenario(fake, daemon)
        finally:
            await daemon.stop()
            await server.stop(None)
        return fake

    return asyncio.run(main())


def test_runs_leased_tasks_and_reports_every_outcome(tmp_path: Path) -> None:
    ids: dict[str, str] = {}

    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        ids["ok"] = fake.add("command", {"command": ["sh", "-c", "echo hi"]})
        ids["exit3"] = fake.add("command", {"command": "exit 3"})
        ids["noop"] = fake.add("noop", {})
        ids["bad"] = fake.add("command", {})
        ids["unknown"] = fake.add("teleport", {})
        await wait_until(lambda: len(fake.final()) == 5)
        await wait_until(lambda: len(daemon.spool) == 0)

    fake = run_scenario(tmp_path, scenario)
    final = fake.final()
    assert final[ids["ok"]].kind == Outcome.COMPLETED
    assert json.loads(final[ids["ok"]].results_json)["stdout_tail"] == "hi\n"
    assert [r.status for r in final[ids["ok"]].results] == ["success"]
    assert final[ids["exit3"]].kind == Outcome.FAILED and final[ids["exit3"]].error == "exit code 3"
    assert not final[ids["exit3"]].non_retryable
    assert final[ids["noop"]].kind == Outcome.COMPLETED and json.loads(final[ids["noop"]].results_json) == {
        "noop": True
    }
    assert final[ids["bad"]].non_retryable and "parameters.command" in final[ids["bad"]].error
    assert final[ids["unknown"]].non_retryable and "unknown task type" in final[ids["unknown"]].error
    for task_id in ids.values():
        kinds = [o.kind for o in fake.outcomes if o.task_id == task_id]
        # One end per task; its start is reported too unless it travelled in the end's batch.
        assert kinds[-1] in (Outcome.COMPLETED, Outcome.FAILED) and kinds[:-1] in ([], [Outcome.STARTED])
    [registration] = fake.registrations
    assert registration.hardware_id == "cpu-x86_64-2c" and registration.capabilities.slots == 2
    assert list(registration.capabilities.hardware) == ["cpu"]
    assert fake.heartbeats and json.loads(fake.heartbeats[0].health_json)["status"] in {
        "healthy",
        "warning",
        "critical",
    }
    assert [list(d.returned_lease_ids) for d in fake.deregistered] == [[]]


def test_worker_id_is_remembered_across_restarts(tmp_path: Path) -> None:
    config = WorkerConfig.model_validate({"execution": {"working_dir": str(tmp_path)}})
    first = WorkerDaemon(config, hardware=HARDWARE).worker_id
    assert WorkerDaemon(config, hardware=HARDWARE).worker_id == first
    assert (tmp_path / "worker_id").read_text().strip() == first


def test_reregisters_when_the_coordinator_forgets_the_worker(tmp_path: Path) -> None:
    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        await daemon.wait_registered()
        fake.known.clear()  # as after a coordinator that lost its state
        await wait_until(lambda: len(fake.registrations) == 2)
        task_id = fake.add("noop", {})
        await wait_until(lambda: task_id in fake.final())

    fake = run_scenario(tmp_path, scenario)
    assert {r.worker_id for r in fake.registrations} == {fake.registrations[0].worker_id}


def test_outcomes_wait_in_the_spool_while_reports_fail(tmp_path: Path) -> None:
    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        fake.report_failures = 3
        task_id = fake.add("noop", {})
        await wait_until(lambda: task_id in fake.final())
        assert fake.report_failures == 0

    run_scenario(tmp_path, scenario)


def test_outcomes_spooled_before_a_crash_are_sent_after_restart(tmp_path: Path) -> None:
    leftover = Outcome(task_id="old-task", lease_id="old-lease", worker_id="w", kind=Outcome.COMPLETED)
    spool = Spool(tmp_path / "work" / "spool")
    spool.put(leftover)
    spool.close()

    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        await wait_until(lambda: "old-task" in fake.final())

    run_scenario(tmp_path, scenario)
    assert len(Spool(tmp_path / "work" / "spool")) == 0


def test_a_rejected_outcome_does_not_hold_back_the_others(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "work" / "spool")
    for task_id in ("first", "poison", "second", "third"):
        spool.put(Outcome(task_id=task_id, lease_id=f"lease-{task_id}", kind=Outcome.COMPLETED))
    spool.close()

    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        fake.rejected.add("poison")
        await wait_until(lambda: len(daemon.spool) == 0)

    fake = run_scenario(tmp_path, scenario)
    assert sorted(fake.final()) == ["first", "second", "third"]


def test_revoked_lease_stops_the_task_without_reporting_it(tmp_path: Path) -> None:
    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        task_id = fake.add("command", {"command": "sleep 30"})
        await wait_until(lambda: any(o.task_id == task_id for o in fake.outcomes))
        fake.revoked.add(f"lease-{task_id}")
        await wait_until(lambda: not daemon.tasks.running)
        follow_up = fake.add("noop", {})
        await wait_until(lambda: follow_up in fake.final())
        assert task_id not in fake.final()

    began = time.monotonic()
    run_scenario(tmp_path, scenario)
    assert time.monotonic() - began < 10


def test_stop_cancels_tasks_past_the_grace_and_returns_their_leases(tmp_path: Path) -> None:
    lease: list[str] = []

    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        task_id = fake.add("command", {"command": "sleep 30"})
        lease.append(f"lease-{task_id}")
        await wait_until(lambda: bool(daemon.tasks.running))

    began = time.monotonic()
    fake = run_scenario(tmp_path, scenario, grace_s=0.2)
    assert time.monotonic() - began < 10
    assert [list(d.returned_lease_ids) for d in fake.deregistered] == [lease]
    assert not fake.final()


@pytest.mark.parametrize("concurrent_tasks", [3])
def test_runs_up_to_its_slots_at_once(tmp_path: Path, concurrent_tasks: int) -> None:
    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        ids = [fake.add("command", {"command": "sleep 0.5"}) for _ in range(6)]
        await wait_until(lambda: len(daemon.tasks.running) == concurrent_tasks)
        await wait_until(lambda: set(ids) <= set(fake.final()))

    began = time.monotonic()
    run_scenario(tmp_path, scenario, concurrent_tasks=concurrent_tasks)
    assert time.monotonic() - began < 5  # two rounds of three, not six in a row


def test_a_second_worker_cannot_share_the_working_dir(tmp_path: Path) -> None:
    async def scenario(fake: FakeCoordinator, daemon: WorkerDaemon) -> None:
        twin = WorkerDaemon(daemon.config, hardware=HARDWARE)
        with pytest.raises(ConfigError, match="in use by another running worker"):
            await twin.start()
        await twin.stop()

    run_scenario(tmp_path, scenario)


def test_main_reports_a_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "worker.yaml"
    bad.write_text("execution:\n  concurrent_tasks: 0\n")
    assert main(bad) == 2
    assert "execution.concurrent_tasks" in capsys.readouterr().err
