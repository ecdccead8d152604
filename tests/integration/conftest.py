"""Shared fixtures of the API tests: a real coordinator (durable single node, dispatcher,
event hub, metrics, wired by `build_coordinator` as the runtime wires it; an in-memory
DuckDB results store kept in sync) behind the real app.

`api` is one such coordinator with an httpx client over ASGI; `api_factory` builds more
with other limits; `api_server` serves `api` with uvicorn on a free port for tests
where the wire matters (WebSocket, body streaming).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from dtf_common.config import (
    CoordinatorConfig,
    HealthMonitorConfig,
    SecurityConfig,
    ServerConfig,
    TaskSchedulerConfig,
)
from dtf_coordinator.api import ApiContext, create_app
from dtf_coordinator.auth import Role, create_token
from dtf_coordinator.consensus import RaftNode
from dtf_coordinator.service.coordinator import Coordinator
from dtf_coordinator.service.store_sync import StoreSync
from dtf_coordinator.state import Effect, StateMachine
from dtf_coordinator.store import Store, open_store
from dtf_coordinator.wiring import build_coordinator

API_SECRET = "api-test-secret-0123456789abcdef"


@dataclass
class ApiHarness:
    ctx: ApiContext
    node: RaftNode[StateMachine]
    coordinator: Coordinator
    store: Store
    sync: StoreSync
    client: httpx.AsyncClient
    app: FastAPI
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str = "submitter") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def submit(self, *tasks: dict[str, Any], role: str = "submitter") -> list[str]:
        body: Any = list(tasks) if len(tasks) != 1 else tasks[0]
        response = await self.client.post("/api/tasks", json=body, headers=self.auth(role))
        assert response.status_code == 201, response.text
        ids: list[str] = response.json()["task_ids"]
        return ids


ApiFactory = Callable[..., Awaitable[ApiHarness]]


@pytest.fixture
async def api_factory(tmp_path: Path) -> AsyncIterator[ApiFactory]:
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def make(*, max_queue_size: int = 1000, max_body_bytes: int = 1024 * 1024) -> ApiHarness:
            nonlocal count
            count += 1
            config = CoordinatorConfig(
                server=ServerConfig(data_dir=str(tmp_path / f"coordinator-{count}")),
                security=SecurityConfig(jwt_secret=API_SECRET, max_body_bytes=max_body_bytes),
                task_scheduler=TaskSchedulerConfig(max_queue_size=max_queue_size, lease_timeout=5),
                health_monitor=HealthMonitorConfig(heartbeat_interval=1),
            )
            parts = build_coordinator(config)
            node, coordinator, hub, metrics = parts.node, parts.coordinator, parts.hub, parts.metrics
            assert isinstance(node, RaftNode) and node.settings.standalone
            store = open_store("duckdb:///:memory:")
            stack.callback(store.close, flush=False)
            sync = StoreSync(lambda: node.state, store.writer)

            def sink(effects: list[Effect]) -> None:
                coordinator.on_effects(effects)
                sync.on_effects(effects)

            await node.start(sink)
            stack.push_async_callback(node.stop)
            dispatcher = asyncio.create_task(coordinator.dispatcher.run())
            stack.push_async_callback(_cancel, dispatcher)
            ctx = ApiContext(
                config=config,
                coordinator=coordinator,
                results=store.reader,
                hub=hub,
                metrics=metrics,
                secret=API_SECRET,
                catch_up_store=sync.catch_up,
            )
            app = create_app(ctx)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dtf.test")
            stack.push_async_callback(client.aclose)
            tokens = {role.value: create_token(API_SECRET, role, subject=f"{role.value}-alice") for role in Role}
            return ApiHarness(ctx, node, coordinator, store, sync, client, app, tokens)

        yield make


@pytest.fixture
async def api(api_factory: ApiFactory) -> ApiHarness:
    return await api_factory()


@pytest.fixture
async def api_server(api: ApiHarness) -> AsyncIterator[str]:
    """`api`'s app served by uvicorn on 127.0.0.1 and a free port; yields the base URL."""
    config = uvicorn.Config(api.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
