"""Health of the coordinators: this node's own figures (psutil), its peers' figures
(fetched from their REST API) and the loops that publish cluster news on the event hub.

- `HealthSampler` samples this host: CPU, memory, the data directory's disk, network
  throughput since the previous sample and the 1-minute load average. `classify` turns
  figures into healthy, warning or critical.
- `PeerProbe` asks every other coordinator for its own sample
  (`GET <api_url>/api/cluster/health?scope=local`) with a one-second timeout, all at
  once, and keeps the latest answer of each; a peer that does not answer is recorded as
  unreachable with the reason.
- `ChannelFeed` publishes a freshly built message on one hub channel every interval,
  only while the channel has subscribers; it stops by itself when the last one leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psutil

from dtf_common.clock import wall_ms
from dtf_coordinator.service.events import EventHub, Message
from dtf_coordinator.service.loops import LoopService

log = logging.getLogger("dtf.cluster")

PROBE_TIMEOUT_S = 1.0
PROBE_PATH = "/api/cluster/health?scope=local"
MIN_SAMPLE_INTERVAL_S = 0.5  # samples closer than this reuse the last one (CPU % needs a window)

HealthLevel = Literal["healthy", "warning", "critical"]
# Thresholds (percent; load average per CPU) of the health status of one node.
WARNING = {"cpu_usage": 80.0, "memory_usage": 85.0, "disk_usage": 90.0, "load_per_cpu": 2.0}
CRITICAL = {"cpu_usage": 95.0, "memory_usage": 95.0, "disk_usage": 95.0, "load_per_cpu": 4.0}

if TYPE_CHECKING:
    import httpx  # imported where used: 0.1 s of every coordinator's start


@dataclass(frozen=True, slots=True)
class HealthFigures:
    cpu_usage: float
    memory_usage: float
    disk_usage: float
    network_io: float  # MB/s, sent plus received
    load_average: float
    cpu_count: int = 1

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu_usage": self.cpu_usage,
            "memory_usage": self.memory_usage,
            "disk_usage": self.disk_usage,
            "network_io": self.network_io,
            "load_average": self.load_average,
        }


def classify(figures: HealthFigures) -> HealthLevel:
    """critical when any figure is at or over its critical threshold, warning likewise, else healthy."""
    values = figures.as_dict()
    values["load_per_cpu"] = figures.load_average / max(1, figures.cpu_count)
    if any(values[name] >= limit for name, limit in CRITICAL.items()):
        return "critical"
    if any(values[name] >= limit for name, limit in WARNING.items()):
        return "warning"
    return "healthy"


class HealthSampler:
    """This host's figures. CPU and network are rates since the previous sample, so the
    sampler keeps the previous reading; the first sample after start covers the time since."""

    def __init__(self, disk_path: Path | str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.disk_path = Path(disk_path)
        self._clock = clock
        self._last: HealthFigures | None = None
        self._last_at = 0.0
        psutil.cpu_percent(interval=None)  # starts the CPU window
        self._net_at = clock()
        self._net_bytes = _net_bytes()

    def sample(self) -> HealthFigures:
        now = self._clock()
        if self._last is not None and now - self._last_at < MIN_SAMPLE_INTERVAL_S:
            return self._last
        net_bytes = _net_bytes()
        elapsed = max(now - self._net_at, 1e-3)
        network = max(0, net_bytes - self._net_bytes) / elapsed / 1e6
        self._net_at, self._net_bytes = now, net_bytes
        try:
            load = psutil.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform
            load = 0.0
        figures = HealthFigures(
            cpu_usage=round(psutil.cpu_percent(interval=None), 1),
            memory_usage=round(psutil.virtual_memory().percent, 1),
            disk_usage=round(psutil.disk_usage(str(_existing(self.disk_path))).percent, 1),
            network_io=round(network, 3),
            load_average=round(load, 2),
            cpu_count=psutil.cpu_count() or 1,
        )
        self._last, self._last_at = figures, now
        return figures


def _net_bytes() -> int:
    counters = psutil.net_io_counters()
    return int(counters.bytes_sent + counters.bytes_recv) if counters is not None else 0


def _existing(path: Path) -> Path:
    """The path, or its nearest existing parent (the data directory may not exist yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(os.sep)


@dataclass(frozen=True, slots=True)
class PeerSample:
    """One peer's answer to a probe: its own `/api/cluster/health?scope=local` entry."""

    node_id: str
    received_ms: int  # this node's wall clock when the answer (or the failure) came
    report: dict[str, Any] | None = None  # the peer's NodeHealth, as JSON
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.report is not None


class PeerProbe:
    """Fetches peers' own health reports, concurrently, and keeps the latest of each.

    Concurrent callers share one round of requests. `transport` is for tests (an httpx
    transport); by default requests go over the network.
    """

    def __init__(
        self,
        *,
        timeout_s: float = PROBE_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.timeout_s = timeout_s
        self.transport = transport
        self.clock = clock
        self.latest: dict[str, PeerSample] = {}
        self._round: asyncio.Task[None] | None = None
        self._round_started_ms = 0

    async def refresh(self, peers: Mapping[str, str], token: str, *, max_age_ms: int = 0) -> dict[str, PeerSample]:
        """The latest sample of each peer (node id -> API URL), probing again when the
        newest round is older than `max_age_ms`, failed, or missed a peer."""
        if peers:
            current = self._round
            if current is None or (current.done() and self._stale(current, peers, max_age_ms)):
                self._round_started_ms = self.clock()
                current = self._round = asyncio.create_task(self._probe_all(dict(peers), token), name="dtf-probe")
            # Shielded: one caller going away must not cancel the round others wait on.
            await asyncio.shield(current)
        return {p: self.latest[p] for p in peers if p in self.latest}

    def _stale(self, done: asyncio.Task[None], peers: Mapping[str, str], max_age_ms: int) -> bool:
        if done.cancelled() or done.exception() is not None:
            return True
        return self.clock() - self._round_started_ms > max_age_ms or any(p not in self.latest for p in peers)

    async def _probe_all(self, peers: dict[str, str], token: str) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout_s, headers=headers) as client:
            samples = await asyncio.gather(*(self._probe(client, p, url) for p, url in peers.items()))
        for sample in samples:
            self.latest[sample.node_id] = sample

    async def _probe(self, client: httpx.AsyncClient, node_id: str, api_url: str) -> PeerSample:
        if not api_url:
            return PeerSample(node_id, self.clock(), error="no API address known for this node")
        import httpx

        try:
            response = await client.get(api_url.rstrip("/") + PROBE_PATH)
        except httpx.HTTPError as exc:
            return PeerSample(node_id, self.clock(), error=f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
        if response.status_code != 200:
            return PeerSample(node_id, self.clock(), error=f"HTTP {response.status_code} from {api_url}")
        try:
            body = response.json()
            report = next(n for n in body["nodes"] if n.get("node_id") == node_id)
        except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
            return PeerSample(node_id, self.clock(), error=f"{api_url} did not answer with node {node_id}'s health")
        return PeerSample(node_id, self.clock(), report=report)


class ChannelFeed(LoopService):
    """Publishes `build()`'s message on `channel` every `interval_s` while anyone listens.

    `ensure_running` starts the loop (subscribing does); `kick` makes it publish now, or,
    when nobody listens any more, stop now. `run_once` is one publication.
    """

    run_first = True

    def __init__(self, hub: EventHub, channel: str, interval_s: float, build: Callable[[], Awaitable[Message]]) -> None:
        self.hub = hub
        self.channel = channel
        self.name = f"publishing on {channel}"
        self.interval = interval_s
        self.build = build
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def ensure_running(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self.run(), name=f"dtf-feed-{self.channel}")

    def should_run(self) -> bool:
        return self.hub.has_subscribers(self.channel)

    async def run_once(self) -> bool:
        message = await self.build()
        if not self.hub.has_subscribers(self.channel):
            return False
        self.hub.publish(self.channel, message)
        self.published += 1
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
