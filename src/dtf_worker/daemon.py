"""The worker daemon: register, then heartbeat, lease, execute and report until stopped.

Three loops run side by side once started, each retrying the coordinator with backoff
so that a coordinator restart or leader change only delays work:

- heartbeat: liveness, health and the leases held; leases the coordinator revoked stop
  their tasks, whose outcomes are then dropped;
- lease: long-polls for as many tasks as there are free slots and starts each one;
- report: sends spooled outcomes in batches and deletes them once acknowledged.

A task's outcomes (STARTED, then COMPLETED or FAILED) go to the durable spool first and
to the coordinator from there, so nothing finished is lost to a crash of either side.
A coordinator that no longer knows this worker (NOT_FOUND, FAILED_PRECONDITION) gets a
fresh Register from whichever loop noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import IO

import psutil

from dtf_common.config import WorkerConfig, load_config
from dtf_common.errors import (
    ConfigError,
    Conflict,
    DtfError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from dtf_common.pb.dtf.v1 import worker_service_pb2
from dtf_worker.backoff import Backoff
from dtf_worker.client import CoordinatorClient
from dtf_worker.executors.registry import default_executors
from dtf_worker.hardening import harden_process
from dtf_worker.hardware import HardwareProfile, detect_hardware
from dtf_worker.health import collect_health
from dtf_worker.identity import (
    keep_credential,
    lock_working_dir,
    read_credential,
    register_request,
    resolve_worker_id,
)
from dtf_worker.leftovers import kill_leftover_tasks
from dtf_worker.reporter import ResultSender
from dtf_worker.snapshots import SnapshotCache
from dtf_worker.spool import Spool
from dtf_worker.task_runner import TaskRunner

log = logging.getLogger("dtf.worker")

LEASE_WAIT_MS = 5000
DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_GRACE_S = 30.0
FLUSH_TIMEOUT_S = 10.0
DEREGISTER_DEADLINE_S = 5.0
REPORT_IDLE_POLL_S = 1.0
# For this long after it starts, a worker whose coordinator is not up yet dials it again
# every PROMPT_REGISTER_RETRY_S instead of backing off.
PROMPT_REGISTER_S = 30.0
PROMPT_REGISTER_RETRY_S = 0.05


class WorkerDaemon:
    def __init__(
        self,
        config: WorkerConfig,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        client: CoordinatorClient | None = None,
        hardware: HardwareProfile | None = None,
    ) -> None:
        self.config = config
        self.grace_s = grace_s
        self.working_dir = Path(config.execution.working_dir).resolve()
        self.worker_id = resolve_worker_id(config, self.working_dir)
        self.spool = Spool(config.reporting.spool_dir or self.working_dir / "spool")
        self.hardware = hardware
        self.hardware_id = config.worker.hardware_id or ""
        self._client = client
        self._sender: ResultSender | None = None
        self.snapshots: SnapshotCache | None = None
        self.tasks = TaskRunner(
            executors=default_executors(),
            worker_id=self.worker_id,
            runs_dir=self.working_dir / "runs",
            cache_dir=Path(config.execution.cache_dir).resolve(),
            default_timeout=config.execution.timeout,
            spool=self.spool,
            on_spooled=self._wake_sender,
            slots=config.execution.concurrent_tasks,
        )
        self._registered = asyncio.Event()
        self._register_lock = asyncio.Lock()
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._heartbeat_interval = DEFAULT_HEARTBEAT_S
        self._next_health = 0.0
        self._next_metrics = 0.0
        self._stopping = False
        self._lock: IO[bytes] | None = None
        self._prompt_until = 0.0
        # Set when the coordinator has been out of reach for `coordinator.exit_when_lost`.
        self.lost = asyncio.Event()
        self._last_contact: float | None = None
        # This worker's own credential (a registration returns it; the configured api_key
        # is a join token that only enrols); "" until it has one.
        self._credential = ""

    @property
    def client(self) -> CoordinatorClient:
        assert self._client is not None, "start() first"
        return self._client

    @property
    def sender(self) -> ResultSender:
        assert self._sender is not None, "start() first"
        return self._sender

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Fingerprint the machine and start the loops; registration happens in them, with retries.
        Raises ConfigError when another worker is using the same working directory."""
        self._lock = lock_working_dir(self.working_dir)
        self._prompt_until = time.monotonic() + PROMPT_REGISTER_S
        if self.hardware is None:
            self.hardware = await asyncio.to_thread(detect_hardware)
        self.hardware_id = self.hardware_id or self.hardware.hardware_id()
        self.tasks.hardware_id = self.hardware_id
        if self._client is None:
            self._client = CoordinatorClient.from_config(self.config.coordinator)
        self._use_credential(read_credential(self.working_dir))
        self.snapshots = SnapshotCache(self._client, self.tasks.cache_dir)
        self.tasks.materialize = self.snapshots.ensure
        self._sender = ResultSender(
            self.spool,
            self._client,
            self.worker_id,
            self.config.reporting.result_batch_size,
            on_acknowledged=self.tasks.acknowledged,
        )
        # What tasks left behind when the worker last died: their processes, then their files.
        await asyncio.to_thread(kill_leftover_tasks, self.tasks.runs_dir)
        shutil.rmtree(self.tasks.runs_dir, ignore_errors=True)
        psutil.cpu_percent(interval=None)  # the first reading only sets the baseline
        log.info(
            "worker %s (%s, %s) starting: coordinator %s, %d slots, %d outcomes spooled",
            self.worker_id,
            self.hardware_id,
            ",".join(self.hardware.hardware_kinds()),
            self._client.target,
            self.config.execution.concurrent_tasks,
            len(self.spool),
        )
        self._loops = {
            "heartbeat": asyncio.create_task(self._heartbeat_loop(), name="dtf-worker-heartbeat"),
            "lease": asyncio.create_task(self._lease_loop(), name="dtf-worker-lease"),
            "report": asyncio.create_task(self._report_loop(), name="dtf-worker-report"),
        }
        if self.config.coordinator.exit_when_lost > 0:
            self._loops["lost"] = asyncio.create_task(self._lost_loop(), name="dtf-worker-lost")

    async def wait_registered(self) -> None:
        await self._registered.wait()

    async def stop(self) -> None:
        """Stop leasing, let running tasks finish within the grace period, cancel the rest,
        deliver what is spooled, hand back unfinished leases and close the connection."""
        if self._stopping:
            return
        self._stopping = True
        log.info("worker %s stopping", self.worker_id)
        await self._cancel_loop("lost")
        await self._cancel_loop("lease")
        returned = await self.tasks.finish(self.grace_s)
        await self._cancel_loop("report")
        reachable = not self.lost.is_set()  # else: what is spooled waits for the next start
        if self._sender is not None and reachable:
            await self._flush()
        await self._cancel_loop("heartbeat")
        if self._client is not None:
            if reachable:
                await self._deregister(returned)
            await self._client.close()
        self.spool.close()  # whatever is still spooled is durable for the next start
        if self._lock is not None:
            self._lock.close()
        log.info("worker %s stopped", self.worker_id)

    async def _cancel_loop(self, name: str) -> None:
        loop_task = self._loops.pop(name, None)
        if loop_task is not None:
            loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop_task

    async def _flush(self) -> None:
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await self.sender.flush()
        except (TimeoutError, DtfError) as exc:
            log.warning("%d outcomes stay spooled until the next start: %s", len(self.spool), str(exc) or "timed out")

    async def _deregister(self, returned: list[str]) -> None:
        if not self._registered.is_set():
            return
        request = worker_service_pb2.DeregisterRequest(worker_id=self.worker_id, returned_lease_ids=returned)
        try:
            response = await self.client.deregister(request, deadline_s=DEREGISTER_DEADLINE_S)
            log.info("deregistered; %d returned leases requeued", response.requeued)
        except DtfError as exc:
            log.warning("deregistering failed: %s", exc)

    # ------------------------------------------------------------------ registration

    def _use_credential(self, credential: str) -> None:
        """Call with `credential` from now on, and keep it for the next start ("" goes back
        to the configured join token and forgets the stored one)."""
        if credential != self._credential:
            keep_credential(self.working_dir, credential)
        self._credential = credential
        self.client.use_token(credential or self.config.coordinator.api_key)
        self.tasks.secrets = {s for s in (credential, self.config.coordinator.api_key) if s}

    async def _ensure_registered(self) -> None:
        if self._registered.is_set():
            return
        async with self._register_lock:
            backoff = Backoff()
            waiting = False
            while not self._registered.is_set():
                assert self.hardware is not None
                request = register_request(
                    self.config, self.worker_id, self.hardware, self.hardware_id, self.tasks.held_leases()
                )
                try:
                    response = await self.client.register(request)
                except Exception as exc:
                    if isinstance(exc, Unauthenticated | PermissionDenied) and self._credential:
                        # The cluster's secret changed, or the worker was forgotten: enrol again.
                        log.warning("this worker's credential was refused (%s); enrolling with the join token", exc)
                        self._use_credential("")
                        continue
                    if isinstance(exc, Unavailable) and time.monotonic() < self._prompt_until:
                        # Started beside its coordinator (dtf up, a compose file): dial
                        # again shortly, so the worker registers as soon as it listens.
                        if not waiting:
                            log.info("coordinator %s not up yet (%s); waiting for it", self.client.target, exc)
                            waiting = True
                        self.client.redial()
                        await asyncio.sleep(PROMPT_REGISTER_RETRY_S)
                        continue
                    delay = backoff.next_delay()
                    log.warning("registering with %s failed (%s); retrying in %.1fs", self.client.target, exc, delay)
                    await asyncio.sleep(delay)
                    continue
                self._heartbeat_interval = response.heartbeat_interval_s or DEFAULT_HEARTBEAT_S
                self._last_contact = time.monotonic()
                if response.credential and response.credential != self._credential:
                    self._use_credential(response.credential)
                self._registered.set()
                log.info(
                    "registered as %s with coordinator %s; heartbeat every %.1fs",
                    self.worker_id,
                    response.coordinator_id or self.client.target,
                    self._heartbeat_interval,
                )

    async def _after_failure(self, what: str, exc: Exception, backoff: Backoff, cap: float | None = None) -> None:
        if isinstance(exc, NotFound | Conflict):
            # The coordinator is up but does not know us (any more): register again at once,
            # or it will count our silence as missed heartbeats and requeue our tasks.
            self._registered.clear()
            log.warning("%s refused (%s); registering again", what, exc)
            await asyncio.sleep(0.05)
            return
        delay = backoff.next_delay() if cap is None else min(cap, backoff.next_delay())
        if isinstance(exc, DtfError):
            log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
        else:
            log.error("%s failed; retrying in %.1fs", what, delay, exc_info=exc)
        await asyncio.sleep(delay)

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeat_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._ensure_registered()
                await self.heartbeat_once()
            except Exception as exc:
                # Never fall silent for longer than a heartbeat interval while reconnecting.
                await self._after_failure("heartbeat", exc, backoff, cap=self._heartbeat_interval)
                continue
            self._last_contact = time.monotonic()
            backoff.reset()
            await asyncio.sleep(self._heartbeat_interval)

    async def _lost_loop(self) -> None:
        """Set `lost` once a coordinator this worker had reached has been out of reach for
        `coordinator.exit_when_lost` seconds: the workers of a cluster that stops itself
        when idle go with it."""
        limit = self.config.coordinator.exit_when_lost
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            if self._last_contact is not None and time.monotonic() - self._last_contact >= limit:
                log.warning("the coordinator has been out of reach for %.0fs: exiting", limit)
                self.lost.set()
                return

    async def heartbeat_once(self) -> None:
        health = performance = ""  # empty: unchanged since the last report
        now = time.monotonic()
        if now >= self._next_health:
            health = json.dumps(collect_health(self.working_dir, self.config.health))
            self._next_health = now + self.config.health.report_interval
        if now >= self._next_metrics:
            performance = json.dumps(self.performance())
            self._next_metrics = now + self.config.reporting.metrics_interval
        response = await self.client.heartbeat(
            worker_service_pb2.HeartbeatRequest(
                worker_id=self.worker_id,
                health_json=health,
                performance_json=performance,
                lease_ids=self.tasks.held_leases(),
            )
        )
        for lease_id in response.revoked_lease_ids:
            self.tasks.revoke(lease_id)

    def performance(self) -> dict[str, int]:
        return {
            "running": len(self.tasks.running),
            "slots": self.config.execution.concurrent_tasks,
            "completed": self.tasks.counts["completed"],
            "failed": self.tasks.counts["failed"],
        }

    # ------------------------------------------------------------------ leasing and running

    async def _lease_loop(self) -> None:
        backoff = Backoff()
        while True:
            free = await self.tasks.wait_for_free_slot(self.config.execution.concurrent_tasks)
            try:
                await self._ensure_registered()
                began = time.monotonic()
                leases = await self.client.lease_tasks(
                    worker_service_pb2.LeaseRequest(worker_id=self.worker_id, max_tasks=free, wait_ms=LEASE_WAIT_MS)
                )
            except Exception as exc:
                await self._after_failure("lease", exc, backoff)
                continue
            backoff.reset()
            for lease in leases:
                self.tasks.start(lease)
            if not leases and time.monotonic() - began < 0.05:
                await asyncio.sleep(0.2)  # a coordinator answering at once instead of long-polling is not hammered

    # ------------------------------------------------------------------ reporting

    async def _report_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                sent = await self.sender.send_once()
            except Exception as exc:
                await self._after_failure("report", exc, backoff)
                continue
            backoff.reset()
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.sender.wake.wait(), REPORT_IDLE_POLL_S)

    def _wake_sender(self) -> None:
        if self._sender is not None:
            self._sender.wake.set()


# ---------------------------------------------------------------------- entry points


async def run_worker(
    config: WorkerConfig, *, stop_event: asyncio.Event | None = None, grace_s: float | None = None
) -> None:
    """Run a worker until `stop_event` is set, or until SIGTERM/SIGINT when none is given."""
    stop = stop_event or asyncio.Event()
    handled: list[signal.Signals] = []
    if stop_event is None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
    grace = config.execution.shutdown_grace if grace_s is None else grace_s
    daemon = WorkerDaemon(config, grace_s=grace)
    try:
        await daemon.start()
        stopped, lost = asyncio.create_task(stop.wait()), asyncio.create_task(daemon.lost.wait())
        try:
            await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            lost.cancel()
    finally:
        await daemon.stop()
        for sig in handled:
            asyncio.get_running_loop().remove_signal_handler(sig)


def main(config_path: str | Path | None = None, *, grace_s: float | None = None) -> int:
    """`dtf worker --config worker.yaml`: runs until SIGTERM/SIGINT; returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Here, in the worker's own process, not in start(): an in-process daemon (a test's)
    # must not change its host process.
    harden_process()
    try:
        asyncio.run(run_worker(load_config(WorkerConfig, config_path), grace_s=grace_s))
    except ConfigError as exc:
        print(f"dtf worker: {exc.message}", file=sys.stderr)
        return 2
    return 0
