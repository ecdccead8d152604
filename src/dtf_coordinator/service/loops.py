"""Background services of the leader, each a loop around a testable `run_once`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dtf_common.clock import wall_ms
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.consensus import Consensus
from dtf_coordinator.state import LeasesReleased

log = logging.getLogger("dtf.loops")
# The longest a worker's gRPC channel waits between reconnection attempts
# (grpc.max_reconnect_backoff_ms in dtf_worker.client); heartbeats retry within their interval.
WORKER_RECONNECT_MAX_MS = 5_000


class LoopService:
    """A background loop around a testable `run_once`: called every `interval` seconds, or
    at once after `kick()`, for as long as `should_run()` holds (always, by default) and
    until cancelled. It waits first unless `run_first`. An error in one pass is logged
    and the loop goes on: the next pass retries whatever is still to do."""

    name = "loop"
    interval: float = 1.0
    run_first = False
    _wake: asyncio.Event | None = None

    async def run_once(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def should_run(self) -> bool:
        return True

    def kick(self) -> None:
        """Run the next pass now instead of at the end of the interval."""
        self._event().set()

    def _event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    async def _wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event().wait(), timeout=self.interval)

    async def run(self) -> None:
        if not self.run_first:
            await self._wait()
        # No await between the check and leaving: a service that stops on `should_run`
        # can be started again by whoever sees it done.
        while self.should_run():
            self._event().clear()  # this pass answers every kick so far; later ones wake the next
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", self.name)
            await self._wait()


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str  # "worker_offline", "lease_expired", "worker_unhealthy"
    subject: str
    message: str
    time_ms: int


AlertHandler = Callable[[Alert], None]


def log_alert(alert: Alert) -> None:
    log.warning("alert %s %s: %s", alert.kind, alert.subject, alert.message)


class HealthMonitor(LoopService):
    """Expires leases and marks workers offline after `failure_threshold` missed heartbeats.

    After this node becomes leader it waits before acting (the longer of a lease period
    and the offline window, plus the workers' longest reconnect back-off), so that
    workers that were alive all along can reach the new leader: their recorded last-seen
    times are as old as the leader change.
    """

    name = "health-monitor"

    def __init__(
        self,
        node: Consensus,
        *,
        check_interval: float,
        heartbeat_interval: float,
        failure_threshold: int,
        lease_ttl_ms: int,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.node = node
        self.interval = check_interval
        self.offline_after_ms = int(heartbeat_interval * failure_threshold * 1000)
        self.failure_threshold = failure_threshold
        self.grace_ms = max(lease_ttl_ms, self.offline_after_ms) + WORKER_RECONNECT_MAX_MS
        self.clock = clock
        self.leader_since_ms = clock()
        self.handlers: list[AlertHandler] = [log_alert]

    def register_alert_handler(self, handler: AlertHandler) -> None:
        self.handlers.append(handler)

    def _alert(self, alert: Alert) -> None:
        for handler in self.handlers:
            try:
                handler(alert)
            except Exception:
                log.exception("alert handler failed")

    async def run_once(self) -> list[Alert]:
        if not self.node.is_leader():
            return []
        now = self.clock()
        if now - self.leader_since_ms < self.grace_ms:
            return []
        state = self.node.state
        alerts: list[Alert] = []
        for worker in list(state.workers.values()):
            if worker.alive and now - worker.last_seen_ms > self.offline_after_ms:
                reason = f"missed {self.failure_threshold} heartbeats"
                outcome = await self.node.propose(
                    commands_pb2.Command(
                        worker_offline=commands_pb2.WorkerOffline(worker_id=worker.worker_id, reason=reason)
                    )
                )
                requeued = len(outcome.requeued) if isinstance(outcome, LeasesReleased) else 0
                alerts.append(Alert("worker_offline", worker.worker_id, f"{reason}; {requeued} task(s) requeued", now))
        if state.expired_leases(now):
            outcome = await self.node.propose(commands_pb2.Command(expire_leases=commands_pb2.ExpireLeases()))
            if isinstance(outcome, LeasesReleased) and (outcome.requeued or outcome.failed):
                alerts.append(
                    Alert(
                        "lease_expired",
                        ",".join(outcome.requeued + outcome.failed)[:200],
                        f"{len(outcome.requeued)} requeued, {len(outcome.failed)} failed",
                        now,
                    )
                )
        for alert in alerts:
            self._alert(alert)
        return alerts
