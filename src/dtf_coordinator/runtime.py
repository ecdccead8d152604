"""Assembles a coordinator from its configuration and runs it.

The pieces: consensus over the command log, the service layer with its background
loops (both put together by `wiring.build_coordinator`), the results store, the gRPC
worker service (8081) and the FastAPI app (8080), and the blob store (project
snapshots, under `<data_dir>/blobs`). `CoordinatorRuntime.start()` binds both servers (port 0 picks a
free port) and `ports` tells which were bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import grpc
import uvicorn

from dtf_common.config import CoordinatorConfig, load_config
from dtf_common.private import private_dir, private_files
from dtf_coordinator.api.app import create_app
from dtf_coordinator.api.context import ApiContext
from dtf_coordinator.blobs import BlobStore
from dtf_coordinator.consensus import Consensus, RaftNode
from dtf_coordinator.rpc.worker_service import add_worker_service
from dtf_coordinator.service.idle import Activity, IdleShutdown
from dtf_coordinator.service.loops import LoopService
from dtf_coordinator.service.store_sync import StoreSync
from dtf_coordinator.shutdown import STOP_DEADLINE_S, stop_within
from dtf_coordinator.state import Effect
from dtf_coordinator.store import Store, open_store
from dtf_coordinator.wiring import build_coordinator, grpc_transport

log = logging.getLogger("dtf.coordinator")
READY_FILE = "coordinator.json"


class Snapshotter(LoopService):
    """Snapshots the state every `snapshot_every` entries, or every `max_age_s` seconds
    when the log grew, once the store holds everything the snapshot covers."""

    name = "snapshotter"

    def __init__(
        self,
        node: Consensus,
        store_sync: StoreSync,
        every: int,
        interval: float = 1.0,
        max_age_s: float | None = None,
    ) -> None:
        self.node = node
        self.store_sync = store_sync
        self.every = every
        self.interval = interval
        self.max_age_s = max_age_s
        self._last = asyncio.get_running_loop().time()

    async def run_once(self) -> int | None:
        now = asyncio.get_running_loop().time()
        aged = self.max_age_s is not None and now - self._last >= self.max_age_s
        if not self.node.snapshot_due(1 if aged else self.every):
            return None
        self._last = now
        return await self.node.take_snapshot(before_save=lambda _index: self.store_sync.flush())


class CoordinatorRuntime:
    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        self.data_dir = Path(config.server.data_dir)
        # Between coordinator processes Raft goes over gRPC; its bound port is announced.
        self.raft_transport = grpc_transport(config) if config.high_availability.enabled else None
        parts = build_coordinator(config, raft_transport=self.raft_transport)
        self.parts = parts
        self.metrics = parts.metrics
        self.hub = parts.hub
        self.node = parts.node
        self.dispatcher = parts.dispatcher
        self.coordinator = parts.coordinator
        self.monitor = parts.monitor
        self.store: Store | None = None
        self.store_sync: StoreSync | None = None
        self.blobs: BlobStore | None = None
        # Set to stop the coordinator (by `serve`'s signal handlers, or once idle).
        self.stopping = asyncio.Event()
        self.activity = Activity()
        self.ports: dict[str, int] = {}
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _on_effects(self, effects: list[Effect]) -> None:
        assert self.store_sync is not None
        self.store_sync.on_effects(effects)
        self.coordinator.on_effects(effects)

    async def start(self) -> dict[str, int]:
        cfg = self.config
        cfg.check_secret()
        private_dir(self.data_dir)
        self.store = await asyncio.to_thread(open_store, cfg.database.sqlalchemy_url())
        self.store_sync = StoreSync(lambda: self.node.state, self.store.writer, interval=cfg.database.flush_interval)
        if isinstance(self.node, RaftNode) and not self.node.settings.standalone:
            # A lagging peer installs the leader's snapshot with the store's rows beside it.
            reader, sync = self.store.reader, self.store_sync
            self.node.export_extra = lambda: {"results": reader.export_results()}
            self.node.on_snapshot_installed = lambda state, extra: sync.adopt(state, extra.get("results", []))
        await self.node.start(self._on_effects)
        if not self.store_sync.skip_stored(self.store.reader.applied_index()):
            await self.store_sync.flush()

        self._grpc = grpc.aio.server(
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 0)]
        )
        self.blobs = BlobStore(self.data_dir / "blobs")
        add_worker_service(self._grpc, self.coordinator, cfg.security.jwt_secret, self.blobs)
        self.ports["grpc"] = self._grpc.add_insecure_port(f"{cfg.server.host}:{cfg.server.workers_port}")
        if self.ports["grpc"] == 0:
            raise OSError(f"cannot bind the worker gRPC port {cfg.server.host}:{cfg.server.workers_port}")
        await self._grpc.start()

        ctx = ApiContext(
            config=cfg,
            coordinator=self.coordinator,
            results=self.store.reader,
            hub=self.hub,
            metrics=self.metrics,
            secret=cfg.security.jwt_secret,
            blobs=self.blobs,
            catch_up_store=self.store_sync.catch_up,
            activity=self.activity if cfg.server.idle_shutdown > 0 else None,
        )
        app = create_app(ctx)
        self._http = uvicorn.Server(
            uvicorn.Config(
                app,
                host=cfg.server.host,
                port=cfg.server.port,
                log_level="warning",
                lifespan="off",
                access_log=False,  # it would log /ws?token=...
                ws_max_size=1024 * 1024,
            )
        )
        http_task = asyncio.create_task(self._http.serve(), name="dtf-http")
        while not self._http.started:
            if http_task.done():
                http_task.result()
                raise OSError(f"cannot bind the API port {cfg.server.host}:{cfg.server.port}")
            await asyncio.sleep(0.01)
        self.ports["api"] = self._http.servers[0].sockets[0].getsockname()[1]
        ha = cfg.high_availability
        snapshotter = Snapshotter(
            self.node,
            self.store_sync,
            cfg.task_scheduler.snapshot_every,
            max_age_s=ha.state_snapshot_interval / 1000 if ha.enabled else None,
        )
        self._tasks = [
            http_task,
            asyncio.create_task(self.dispatcher.run(), name="dtf-dispatch"),
            asyncio.create_task(self.store_sync.run(), name="dtf-store-sync"),
            asyncio.create_task(self.monitor.run(), name="dtf-health-monitor"),
            asyncio.create_task(snapshotter.run(), name="dtf-snapshotter"),
        ]
        if cfg.server.idle_shutdown > 0:
            idle = IdleShutdown(cfg.server.idle_shutdown, self.activity, lambda: self.node.state, self.stopping)
            self._tasks.append(asyncio.create_task(idle.run(), name="dtf-idle-shutdown"))
        # The monitor's grace period starts once workers can reach us again.
        self.monitor.leader_since_ms = self.monitor.clock()
        self._write_ready_file()
        log.info(
            "coordinator %s: API on port %d, workers on port %d",
            self.node.node_id,
            self.ports["api"],
            self.ports["grpc"],
        )
        return self.ports

    def _write_ready_file(self) -> None:
        host = self.config.server.host
        public = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        info: dict[str, Any] = {
            "node_id": self.node.node_id,
            "pid": os.getpid(),
            "api_url": f"http://{public}:{self.ports['api']}",
            "grpc_address": f"{public}:{self.ports['grpc']}",
        }
        if self.raft_transport is not None:
            info["raft_address"] = f"{public}:{self.raft_transport.port}"
        self.coordinator.directory[self.node.node_id] = {
            "api_url": info["api_url"],
            "grpc_address": info["grpc_address"],
        }
        for peer in self.config.high_availability.other_peers:
            self.coordinator.directory[peer.id] = {
                "api_url": peer.api_url or "",
                "grpc_address": peer.grpc_address or "",
            }
        path = self.data_dir / READY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, path)

    async def stop(self) -> None:
        # Background loops first: a health monitor still running while the servers close
        # would count the workers' lost connections as missed heartbeats.
        http_task, loops = self._tasks[:1], self._tasks[1:]
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        for task in http_task:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        if self.store_sync is not None:
            with contextlib.suppress(Exception):
                await self.store_sync.flush()
        await self.node.stop()
        if self.store is not None:
            self.store.close()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / READY_FILE).unlink()


async def serve(config: CoordinatorConfig) -> None:
    """Run until SIGTERM or SIGINT (or, with `server.idle_shutdown`, until idle), then stop cleanly."""
    runtime = CoordinatorRuntime(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stopping.set)
    await runtime.start()
    try:
        await runtime.stopping.wait()
    finally:
        await stop_within(runtime.stop, STOP_DEADLINE_S)


def main(config_path: str | None) -> None:
    private_files()
    config = load_config(CoordinatorConfig, config_path)
    asyncio.run(serve(config))
