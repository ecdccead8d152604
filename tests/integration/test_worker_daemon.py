"""The worker daemon against a real coordinator in this process, over gRPC on loopback.

`LiveCoordinator` is the coordinator's own parts: a durable single node, the dispatcher,
the health monitor (lease expiry, offline workers), the worker service behind real JWT
auth, and on request the results store in a DuckDB file. It can stop and start again on
the same port, with its data directory or a fresh one. What the daemon did is read from the coordinator's
state, as a user of dtf would see it: task status, results, errors, attempts, workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from dtf_common.config import CoordinatorConfig, HealthMonitorConfig, TaskSchedulerConfig, WorkerConfig
from dtf_common.errors import ConfigError
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.schemas import Task, TaskCreate, TaskStatus, Worker, WorkerStatus
from dtf_coordinator.auth import create_token
from dtf_coordinator.consensus import standalone_node
from dtf_coordinator.rpc.wire import registration_from_wire
from dtf_coordinator.rpc.worker_service import add_worker_service
from dtf_coordinator.service.store_sync import StoreSync
from dtf_coordinator.state import Effect, StateMachine, StateParams
from dtf_coordinator.store import Store, open_store
from dtf_coordinator.wiring import build_coordinator
from dtf_worker.daemon import WorkerDaemon, main, run_worker
from dtf_worker.hardware import detect_hardware
from dtf_worker.identity import keep_credential, register_request, resolve_worker_id
from dtf_worker.spool import Spool

SECRET = "worker-daemon-test-secret-0123456789"
HEARTBEAT_S = 0.2
LEASE_TTL_MS = 2_000
MISSED_HEARTBEATS = 5  # offline after 1 s without a heartbeat
PARAMS = StateParams(lease_ttl_ms=LEASE_TTL_MS, max_queue_size=100, retry_backoff_ms=100)
Outcome = types_pb2.TaskOutcome
FINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


class LiveCoordinator:
    def __init__(self, data_dir: Path, *, port: int = 0, results_store: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port
        config = CoordinatorConfig(
            task_scheduler=TaskSchedulerConfig(max_queue_size=PARAMS.max_queue_size, lease_timeout=LEASE_TTL_MS / 1000),
            health_monitor=HealthMonitorConfig(
                check_interval=0.1, heartbeat_interval=HEARTBEAT_S, failure_threshold=MISSED_HEARTBEATS
            ),
        )
        self.node = standalone_node(data_dir / "log", StateMachine(PARAMS))
        parts = build_coordinator(config, self.node)
        self.dispatcher = parts.dispatcher
        self.coordinator = parts.coordinator
        self.monitor = parts.monitor
        self.store: Store | None = None
        self.sync: StoreSync | None = None
        if results_store:
            self.store = open_store(f"duckdb:///{data_dir / 'results.duckdb'}")
            self.sync = StoreSync(lambda: self.node.state, self.store.writer)
        self.server: grpc.aio.Server | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._stopped = False

    def _on_effects(self, effects: list[Effect]) -> None:
        self.coordinator.on_effects(effects)
        if self.sync is not None:
            self.sync.on_effects(effects)

    async def start(self) -> None:
        await self.node.start(self._on_effects)
        await self.serve()
        self._loops = [asyncio.create_task(self.dispatcher.run()), asyncio.create_task(self.monitor.run())]

    async def serve(self) -> None:
        """Accept workers on 127.0.0.1 (the same port as before, after the first time)."""
        self.server = grpc.aio.server()
        add_worker_service(self.server, self.coordinator, SECRET)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert self.port, "could not bind the worker service port"
        await self.server.start()

    async def unserve(self) -> None:
        """Drop every worker connection while the coordinator itself keeps running."""
        if self.server is not None:
            await self.server.stop(0)
            self.server = None

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.unserve()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.node.stop()
        if self.store is not None:
            self.store.close(flush=False)

    async def submit(self, *tasks: TaskCreate) -> list[str]:
        return await self.coordinator.submit(list(tasks), submitter="alice")

    def task(self, task_id: str) -> Task:
        return self.coordinator.get_task(task_id)

    def worker(self, worker_id: str) -> Worker:
        return self.coordinator.get_worker(worker_id)

    async def results(self, task_id: str) -> list[dict[str, Any]]:
        assert self.store is not None and self.sync is not None
        await self.sync.flush()
        rows, _ = self.store.reader.list_results(task_id=task_id)
        return rows


@contextlib.asynccontextmanager
async def live_coordinator(data_dir: Path, **kwargs: Any) -> AsyncIterator[LiveCoordinator]:
    live = LiveCoordinator(data_dir, **kwargs)
    await live.start()
    try:
        yield live
    finally:
        await live.stop()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveCoordinator]:
    async with live_coordinator(tmp_path / "coordinator") as coordinator:
        yield coordinator


def worker_config(tmp_path: Path, port: int, *, slots: int = 2, batch: int = 3, name: str = "worker") -> WorkerConfig:
    token = create_token(SECRET, "worker", subject=f"{name}-token")
    return WorkerConfig.model_validate(
        {
            "coordinator": {"url": f"http://127.0.0.1:{port}", "api_key": token},
            "execution": {
                "working_dir": str(tmp_path / name),
                "cache_dir": str(tmp_path / f"{name}-cache"),
                "concurrent_tasks": slots,
            },
            "reporting": {"result_batch_size": batch},
        }
    )


@contextlib.asynccontextmanager
async def running(daemon: WorkerDaemon) -> AsyncIterator[WorkerDaemon]:
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def eventually(condition: Callable[[], bool], within_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {within_s}s"
        await asyncio.sleep(0.02)


def is_final(live: LiveCoordinator, *task_ids: str) -> Callable[[], bool]:
    return lambda: all(live.task(t).status in FINAL for t in task_ids)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sleeper(pid_file: Path, seconds: int = 30) -> TaskCreate:
    """A command task that records its pid and sleeps."""
    return TaskCreate(type="command", parameters={"command": f"echo $$ > {pid_file}; exec sleep {seconds}"})


async def granted_leases(live: LiveCoordinator, config: WorkerConfig, count: int) -> list[tuple[str, str]]:
    """Leases the coordinator granted the worker of `config` in an earlier life: it registered,
    leased `count` long tasks, and died before reporting anything. (task_id, lease_id) pairs."""
    working_dir = Path(config.execution.working_dir)
    worker_id = resolve_worker_id(config, working_dir)
    hardware = detect_hardware()
    request = register_request(config, worker_id, hardware, hardware.hardware_id(), [])
    request.capabilities.slots = count
    await live.coordinator.register_worker(registration_from_wire(request))
    # As the daemon would have: it keeps the credential its registration returned.
    keep_credential(working_dir, create_token(SECRET, "worker", expires_in=0, worker_id=worker_id))
    ids = await live.submit(*[TaskCreate(type="command", parameters={"command": "sleep 30"}) for _ in range(count)])
    leased = await live.coordinator.lease(worker_id, count, 2000)
    assert sorted(t.task_id for t in leased) == sorted(ids)
    by_task = {t.task_id: t.lease_id for t in leased}
    return [(task_id, by_task[task_id]) for task_id in ids]


# ---------------------------------------------------------------------------- tests


@pytest.mark.anyio
async def test_runs_leased_tasks_and_reports_every_outcome(tmp_path: Path) -> None:
    async with live_coordinator(tmp_path / "coordinator", results_store=True) as live:
        config = worker_config(tmp_path, live.port)
        daemon = WorkerDaemon(config, grace_s=5)
        async with running(daemon):
            ok, exit3, noop, bad, unknown = await live.submit(
                TaskCreate(type="command", parameters={"command": ["sh", "-c", "echo hi"]}, max_retries=1),
                TaskCreate(type="command", parameters={"command": "exit 3"}, max_retries=1),
                TaskCreate(type="noop", max_retries=1),
                TaskCreate(type="command", parameters={}, max_retries=1),
                TaskCreate(type="teleport", max_retries=1),
            )
            await eventually(is_final(live, ok, exit3, noop, bad, unknown), what="every task final")
            await eventually(lambda: len(daemon.spool) == 0, what="spool drained")
            await eventually(lambda: bool(live.worker(daemon.worker_id).health_status), what="health reported")
            worker = live.worker(daemon.worker_id)

        done = live.task(ok)
        assert done.status is TaskStatus.COMPLETED and done.worker_id == daemon.worker_id
        assert done.results is not None and done.results["stdout_tail"] == "hi\n"
        assert [r["status"] for r in await live.results(ok)] == ["success"]
        assert live.task(noop).status is TaskStatus.COMPLETED and live.task(noop).results == {"noop": True}
        # An ordinary failure is retried; bad parameters and an unknown type are not worth retrying.
        failed = live.task(exit3)
        assert failed.status is TaskStatus.FAILED and failed.error == "exit code 3" and failed.scheduling.attempts == 2
        assert [r["status"] for r in await live.results(exit3)] == ["failure", "failure"]
        for task_id, why in ((bad, "parameters.command"), (unknown, "unknown task type")):
            task = live.task(task_id)
            assert task.status is TaskStatus.FAILED and task.scheduling.attempts == 1
            assert task.error is not None and why in task.error

        # Each end reported once: a repeat would be stale and not counted.
        assert worker.performance_metrics["tasks_completed"] == 2
        assert worker.performance_metrics["tasks_failed"] == 4
        # Registration describes this machine; heartbeats carry its health.
        hardware = detect_hardware()
        assert worker.hardware_id == hardware.hardware_id()
        assert worker.capabilities["hardware"] == hardware.hardware_kinds()
        assert worker.capabilities["slots"] == 2
        assert worker.capabilities["memory_mb"] == hardware.memory_mb
        assert worker.health_status["status"] in {"healthy", "warning", "critical"}
        # Stopping with nothing left to do: the worker leaves, no task is touched.
        assert live.worker(daemon.worker_id).status is WorkerStatus.OFFLINE
        assert {live.task(t).status for t in (ok, noop)} == {TaskStatus.COMPLETED}


@pytest.mark.anyio
@pytest.mark.parametrize("interval", [0.05, 3600.0])
async def test_performance_figures_go_with_a_heartbeat_once_per_metrics_interval(
    live: LiveCoordinator, tmp_path: Path, interval: float
) -> None:
    config = worker_config(tmp_path, live.port)
    config.reporting.metrics_interval = interval
    daemon = WorkerDaemon(config)
    async with running(daemon):
        first = live.node.state.workers.get
        await eventually(lambda: bool(getattr(first(daemon.worker_id), "performance_json", "")), what="first report")
        [task_id] = await live.submit(TaskCreate(type="noop"))
        await eventually(is_final(live, task_id))
        await asyncio.sleep(1.5)  # a heartbeat or more since the task ended
        reported = json.loads(live.node.state.workers[daemon.worker_id].performance_json)

    # The first heartbeat reports at once; later ones only once the interval has passed.
    assert reported["slots"] == 2
    assert reported["completed"] == (1 if interval < 1 else 0)


@pytest.mark.anyio
async def test_a_restarted_worker_rejoins_as_the_same_worker(live: LiveCoordinator, tmp_path: Path) -> None:
    config = worker_config(tmp_path, live.port)
    ids = []
    for _ in range(2):
        daemon = WorkerDaemon(config)
        async with running(daemon):
            [task_id] = await live.submit(TaskCreate(type="noop"))
            await eventually(is_final(live, task_id))
            ids.append(daemon.worker_id)
    assert ids[0] == ids[1] == (tmp_path / "worker" / "worker_id").read_text().strip()
    assert list(live.node.state.workers) == ids[:1]
    assert live.worker(ids[0]).performance_metrics["tasks_completed"] == 2


@pytest.mark.anyio
async def test_a_worker_started_before_its_coordinator_registers_once_it_listens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # As `dtf up` and `dtf run` start them, or a compose file: the worker keeps dialling
    # every PROMPT_REGISTER_RETRY_S instead of backing off, and says so once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    caplog.set_level(logging.INFO, logger="dtf.worker")
    daemon = WorkerDaemon(worker_config(tmp_path, port))
    async with running(daemon):
        await asyncio.sleep(1.0)  # refused a number of times meanwhile
        assert not daemon._registered.is_set()
        async with live_coordinator(tmp_path / "coordinator", port=port) as live:
            [task_id] = await live.submit(TaskCreate(type="noop"))
            await eventually(is_final(live, task_id), what="task run by the worker")
            assert list(live.node.state.workers) == [daemon.worker_id]
            await daemon.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "dtf.worker"]
    assert sum("not up yet" in m for m in messages) == 1
    assert not [m for m in messages if "retrying in" in m]


@pytest.mark.anyio
async def test_reregisters_with_a_coordinator_that_lost_its_state(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(live_coordinator(tmp_path / "coordinator"))
        daemon = await stack.enter_async_context(running(WorkerDaemon(worker_config(tmp_path, first.port))))
        await daemon.wait_registered()
        await first.stop()
        # Back on the same address with nothing of what it knew: the worker must introduce itself again.
        fresh = await stack.enter_async_context(live_coordinator(tmp_path / "fresh", port=first.port))
        await eventually(lambda: daemon.worker_id in fresh.node.state.workers, what="registered again")
        [task_id] = await fresh.submit(TaskCreate(type="noop"))
        await eventually(is_final(fresh, task_id), what="task run after rejoining")
        assert fresh.task(task_id).status is TaskStatus.COMPLETED
        assert list(fresh.node.state.workers) == [daemon.worker_id]
        assert fresh.worker(daemon.worker_id).hardware_id == detect_hardware().hardware_id()


@pytest.mark.anyio
async def test_outcomes_wait_in_the_spool_while_the_coordinator_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "coordinator"
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(live_coordinator(data_dir))
        daemon = await stack.enter_async_context(running(WorkerDaemon(worker_config(tmp_path, first.port))))
        [task_id] = await first.submit(TaskCreate(type="command", parameters={"command": "sleep 1; echo done"}))
        await eventually(lambda: first.task(task_id).status is TaskStatus.RUNNING)
        await first.stop()
        # The task ends while the coordinator is away: its outcome stays spooled.
        await eventually(lambda: not daemon.tasks.running, what="task finished")
        await eventually(lambda: [o.kind for _, o in daemon.spool.pending()] == [Outcome.COMPLETED], what="spooled")

        async with live_coordinator(data_dir, port=first.port) as second:
            await eventually(is_final(second, task_id), what="outcome delivered after the restart")
            await eventually(lambda: len(daemon.spool) == 0)
            task = second.task(task_id)
            assert task.status is TaskStatus.COMPLETED and task.scheduling.attempts == 1
            assert task.results is not None and task.results["stdout_tail"] == "done\n"
            # The worker goes on taking work from the restarted coordinator.
            [follow_up] = await second.submit(TaskCreate(type="noop"))
            await eventually(is_final(second, follow_up))
            assert second.task(follow_up).status is TaskStatus.COMPLETED
            await daemon.stop()
            assert second.worker(daemon.worker_id).status is WorkerStatus.OFFLINE


@pytest.mark.anyio
async def test_outcomes_spooled_before_a_crash_are_sent_after_restart(live: LiveCoordinator, tmp_path: Path) -> None:
    config = worker_config(tmp_path, live.port)
    [(task_id, lease_id)] = await granted_leases(live, config, 1)
    worker_id = resolve_worker_id(config, Path(config.execution.working_dir))
    spool = Spool(Path(config.execution.working_dir) / "spool")
    spool.put(
        Outcome(
            task_id=task_id,
            lease_id=lease_id,
            worker_id=worker_id,
            kind=Outcome.COMPLETED,
            results_json=json.dumps({"before": "the crash"}),
        )
    )
    spool.close()

    daemon = WorkerDaemon(config, grace_s=0.2)
    async with running(daemon):
        await eventually(is_final(live, task_id), what="spooled outcome delivered")
        await eventually(lambda: len(daemon.spool) == 0)
    task = live.task(task_id)
    assert task.status is TaskStatus.COMPLETED and task.results == {"before": "the crash"}


@pytest.mark.anyio
async def test_a_rejected_outcome_does_not_hold_back_the_others(live: LiveCoordinator, tmp_path: Path) -> None:
    config = worker_config(tmp_path, live.port, batch=3)
    leases = await granted_leases(live, config, 4)
    worker_id = resolve_worker_id(config, Path(config.execution.working_dir))
    spool = Spool(Path(config.execution.working_dir) / "spool")
    for n, (task_id, lease_id) in enumerate(leases):
        # The second outcome has no kind: the coordinator refuses it as malformed.
        kind = Outcome.KIND_UNSPECIFIED if n == 1 else Outcome.COMPLETED
        spool.put(Outcome(task_id=task_id, lease_id=lease_id, worker_id=worker_id, kind=kind, results_json='{"n": 1}'))
    spool.close()
    good = [task_id for n, (task_id, _) in enumerate(leases) if n != 1]
    poisoned = leases[1][0]

    daemon = WorkerDaemon(config, grace_s=0.2)
    async with running(daemon):
        await eventually(is_final(live, *good), what="the well-formed outcomes delivered")
        await eventually(lambda: len(daemon.spool) == 0, what="spool drained")
        assert live.task(poisoned).status not in FINAL
    assert {live.task(t).status for t in good} == {TaskStatus.COMPLETED}
    assert {json.dumps(live.task(t).results) for t in good} == {'{"n": 1}'}


@pytest.mark.anyio
async def test_revoked_lease_stops_the_task_without_reporting_it(live: LiveCoordinator, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    daemon = WorkerDaemon(worker_config(tmp_path, live.port), grace_s=1)
    began = time.monotonic()
    async with running(daemon):
        [task_id] = await live.submit(sleeper(pid_file))
        await eventually(lambda: live.task(task_id).status is TaskStatus.RUNNING and pid_file.exists())
        await eventually(lambda: bool(pid_file.read_text().strip()))
        pid = int(pid_file.read_text())
        await live.coordinator.cancel([task_id])
        await eventually(lambda: not daemon.tasks.running, what="task stopped")
        await eventually(lambda: not process_exists(pid), what="process gone")
        [follow_up] = await live.submit(TaskCreate(type="noop"))
        await eventually(is_final(live, follow_up))
        worker = live.worker(daemon.worker_id)
    assert time.monotonic() - began < 10
    cancelled = live.task(task_id)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.error == "cancelled by user"
    assert cancelled.results is None
    assert live.task(follow_up).status is TaskStatus.COMPLETED
    assert worker.performance_metrics["tasks_completed"] == 1
    assert worker.performance_metrics["tasks_failed"] == 0


@pytest.mark.anyio
async def test_sigterm_finishes_within_the_grace_and_hands_back_the_rest(live: LiveCoordinator, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    config = worker_config(tmp_path, live.port)
    began = time.monotonic()
    worker = asyncio.create_task(run_worker(config, grace_s=1.5))
    long, short = await live.submit(
        sleeper(pid_file), TaskCreate(type="command", parameters={"command": "sleep 0.5; echo finished"})
    )
    await eventually(lambda: {live.task(long).status, live.task(short).status} == {TaskStatus.RUNNING})
    await eventually(lambda: pid_file.exists() and bool(pid_file.read_text().strip()))
    pid = int(pid_file.read_text())
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(worker, 10)
    assert time.monotonic() - began < 10
    [worker_id] = live.node.state.workers
    assert live.worker(worker_id).status is WorkerStatus.OFFLINE
    assert not process_exists(pid)
    # The task that ended within the grace period is reported; the other goes back to the queue.
    finished = live.task(short)
    assert finished.status is TaskStatus.COMPLETED and finished.results is not None
    assert finished.results["stdout_tail"] == "finished\n"
    returned = live.task(long)
    assert returned.status is TaskStatus.PENDING and returned.worker_id is None
    assert returned.scheduling.attempts == 0  # handed back on purpose, not counted as a try
    assert returned.error == "returned by a stopping worker"


@pytest.mark.anyio
async def test_runs_up_to_its_slots_at_once(live: LiveCoordinator, tmp_path: Path) -> None:
    slots = 3
    daemon = WorkerDaemon(worker_config(tmp_path, live.port, slots=slots))
    most = 0
    async with running(daemon):
        ids = await live.submit(*[TaskCreate(type="command", parameters={"command": "sleep 0.5"}) for _ in range(6)])
        began = time.monotonic()

        def sample() -> bool:
            nonlocal most
            most = max(most, len(daemon.tasks.running))
            return all(live.task(t).status in FINAL for t in ids)

        await eventually(sample, what="all six done")
        took = time.monotonic() - began
    assert most == slots
    assert {live.task(t).status for t in ids} == {TaskStatus.COMPLETED}
    assert took < 2.8  # two rounds of three, not six in a row (3 s)


@pytest.mark.anyio
async def test_a_second_worker_cannot_share_the_working_dir(live: LiveCoordinator, tmp_path: Path) -> None:
    config = worker_config(tmp_path, live.port)
    async with running(WorkerDaemon(config)) as daemon:
        await daemon.wait_registered()
        twin = WorkerDaemon(config)
        with pytest.raises(ConfigError, match="in use by another running worker"):
            await twin.start()
        await twin.stop()
        [task_id] = await live.submit(TaskCreate(type="noop"))
        await eventually(is_final(live, task_id))
    assert live.task(task_id).status is TaskStatus.COMPLETED
    assert list(live.node.state.workers) == [daemon.worker_id]


def test_main_reports_a_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "worker.yaml"
    bad.write_text("execution:\n  concurrent_tasks: 0\n")
    assert main(bad) == 2
    assert "execution.concurrent_tasks" in capsys.readouterr().err
