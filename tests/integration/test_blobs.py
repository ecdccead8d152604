"""Project snapshots end to end: a client uploads one over REST to a real coordinator,
and a real worker daemon fetches it once over gRPC and runs pytest tasks inside it.

The project exists only in the snapshot: its directory is deleted before the worker
starts, and the worker's own working directory is elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from dtf.client import DtfClient
from dtf.run.snapshot import build_snapshot
from dtf_common.config import CoordinatorConfig, WorkerConfig
from dtf_common.errors import InvalidArgument, NotFound
from dtf_coordinator.auth import create_token
from dtf_coordinator.blobs import BlobStore
from dtf_coordinator.runtime import CoordinatorRuntime
from dtf_worker.client import CoordinatorClient
from dtf_worker.daemon import WorkerDaemon

if TYPE_CHECKING:
    from conftest import ApiHarness

SECRET = "blob-test-secret-0123456789abcdef"
TEST_FILE = """\
def test_passes():
    assert 1 + 1 == 2


def test_fails():
    assert "snapshot" == "checkout"
"""


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[CoordinatorRuntime]:
    config = CoordinatorConfig.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": 0, "workers_port": 0, "data_dir": str(tmp_path / "coordinator")},
            "database": {"url": f"duckdb:///{tmp_path / 'results.duckdb'}", "flush_interval": 0.05},
            "security": {"jwt_secret": SECRET},
            "health_monitor": {"heartbeat_interval": 0.5},
        }
    )
    runtime = CoordinatorRuntime(config)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def api_url(runtime: CoordinatorRuntime) -> str:
    return f"http://127.0.0.1:{runtime.ports['api']}"


def headers(role: str = "submitter") -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(SECRET, role, subject=f'{role}-test')}"}


def make_project(root: Path) -> Path:
    (root / "suite/tests").mkdir(parents=True)
    (root / "suite/tests/test_remote.py").write_text(TEST_FILE)
    (root / "README.md").write_text("a project\n")
    return root


async def eventually(condition: Callable[[], Any], within_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within_s
    while not (value := await condition()):
        assert time.monotonic() < deadline, f"{what} not met within {within_s}s"
        await asyncio.sleep(0.05)
    return value


@pytest.mark.anyio
async def test_upload_checks_the_hash_and_head_tells_what_is_there(runtime: CoordinatorRuntime, tmp_path: Path) -> None:
    data = b"a snapshot's bytes" * 1000
    sha256 = hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient(base_url=api_url(runtime), headers=headers()) as http:
        assert (await http.head(f"/api/blobs/{sha256}")).status_code == 404

        wrong = await http.put(f"/api/blobs/{'0' * 64}", content=data)
        assert wrong.status_code == 400, wrong.text
        assert wrong.headers["content-type"] == "application/problem+json"
        assert wrong.json()["field"] == "sha256" and sha256 in wrong.json()["detail"]
        malformed = await http.put("/api/blobs/not-a-hash", content=data)
        assert malformed.status_code == 400 and malformed.json()["field"] == "sha256"
        assert (await http.head(f"/api/blobs/{'0' * 64}")).status_code == 404

        # Larger than security.max_body_bytes would allow any other endpoint, and streamed.
        big = b"x" * (17 * 1024 * 1024)
        big_sha = hashlib.sha256(big).hexdigest()

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            yield big[: 1 << 20]
            yield big[1 << 20 :]

        stored = await http.put(f"/api/blobs/{big_sha}", content=chunked())
        assert stored.status_code == 201, stored.text
        assert stored.json() == {"sha256": big_sha, "size": len(big), "created": True}

        assert (await http.put(f"/api/blobs/{sha256}", content=data)).status_code == 201
        head = await http.head(f"/api/blobs/{sha256}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        again = await http.put(f"/api/blobs/{sha256}", content=data)
        assert again.status_code == 200 and again.json()["created"] is False

        viewer = await http.put(f"/api/blobs/{sha256}", content=data, headers=headers("viewer"))
        assert viewer.status_code == 403
    assert (runtime.data_dir / "blobs" / sha256).read_bytes() == data

    # Workers read it back over gRPC, with their own token; an unknown hash is NOT_FOUND.
    worker = CoordinatorClient(
        f"http://127.0.0.1:{runtime.ports['grpc']}", api_key=create_token(SECRET, "worker", subject="w", worker_id="w")
    )
    try:
        assert b"".join([chunk async for chunk in worker.fetch_blob(sha256)]) == data
        chunks = [len(chunk) async for chunk in worker.fetch_blob(big_sha)]
        assert chunks == [1 << 20] * 17
        with pytest.raises(NotFound):
            [chunk async for chunk in worker.fetch_blob("f" * 64)]
    finally:
        await worker.close()


@pytest.mark.anyio
async def test_a_worker_without_the_project_runs_its_tests_from_one_fetched_snapshot(
    runtime: CoordinatorRuntime, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "project")
    snapshot = build_snapshot(project, cache_dir=tmp_path / "client-cache")
    assert snapshot.files == 2

    client = DtfClient(api_url(runtime), headers()["Authorization"].removeprefix("Bearer "))
    try:
        assert await asyncio.to_thread(client.upload_blob, snapshot.sha256, snapshot.archive) is True
        assert await asyncio.to_thread(client.upload_blob, snapshot.sha256, snapshot.archive) is False
        with pytest.raises(InvalidArgument):
            await asyncio.to_thread(client.upload_blob, "0" * 64, snapshot.archive)
    finally:
        client.close()
    for path in sorted(project.rglob("*"), reverse=True):  # the worker can only use the snapshot
        path.rmdir() if path.is_dir() else path.unlink()

    node_ids = ["tests/test_remote.py::test_passes", "tests/test_remote.py::test_fails"]
    task = {
        "type": "pytest",
        "max_retries": 0,
        "parameters": {"node_ids": node_ids, "snapshot": snapshot.parameter("suite"), "timeout": 60},
    }
    unknown = {
        "type": "pytest",
        "max_retries": 0,
        "parameters": {"node_ids": node_ids, "snapshot": {"sha256": "e" * 64}},
    }
    async with httpx.AsyncClient(base_url=api_url(runtime), headers=headers()) as http:
        submitted = await http.post("/api/tasks", json=[task, task, unknown])
        assert submitted.status_code == 201, submitted.text
        first, second, missing = submitted.json()["task_ids"]

        worker_config = WorkerConfig.model_validate(
            {
                "coordinator": {
                    "url": f"http://127.0.0.1:{runtime.ports['grpc']}",
                    "api_key": create_token(SECRET, "worker", subject="worker-token"),
                },
                "execution": {
                    "working_dir": str(tmp_path / "worker"),
                    "cache_dir": str(tmp_path / "worker-cache"),
                    "concurrent_tasks": 3,
                },
                "reporting": {"result_batch_size": 10},
            }
        )
        daemon = WorkerDaemon(worker_config, grace_s=5)
        await daemon.start()
        try:

            async def final() -> list[dict[str, Any]] | None:
                tasks = [(await http.get(f"/api/tasks/{t}")).json() for t in (first, second, missing)]
                done = all(t["status"] in ("completed", "failed", "cancelled") for t in tasks)
                return tasks if done else None

            tasks = await eventually(final, what="every task final")
        finally:
            await daemon.stop()

        for ran in tasks[:2]:
            assert ran["status"] == "failed", ran  # one of its two tests fails
            assert ran["results"]["passed"] == 1 and ran["results"]["failed"] == 1, ran["results"]
        assert "cannot fetch snapshot" in tasks[2]["error"] and "not found" in tasks[2]["error"]

        async def per_test() -> dict[str, str] | None:
            page = (await http.get("/api/results", params={"task_id": first})).json()
            return {r["test_id"]: r["status"] for r in page["data"]} if page["count"] == 2 else None

        assert await eventually(per_test, what="per-test results stored") == {
            node_ids[0]: "success",
            node_ids[1]: "failure",
        }

    assert daemon.snapshots is not None and daemon.snapshots.fetches == 2  # the snapshot once, the unknown hash once
    cached = sorted(p.name for p in (tmp_path / "worker-cache" / "snapshots").iterdir())
    assert cached == [snapshot.sha256]
    assert (tmp_path / "worker-cache" / "snapshots" / snapshot.sha256 / "suite/tests/test_remote.py").is_file()


@pytest.mark.anyio
async def test_the_blob_limit_answers_413_and_a_node_without_a_store_503(api: ApiHarness, tmp_path: Path) -> None:
    data = b"y" * 2000
    sha256 = hashlib.sha256(data).hexdigest()
    unavailable = await api.client.put(f"/api/blobs/{sha256}", content=data, headers=api.auth())
    assert unavailable.status_code == 503, unavailable.text

    api.ctx.blobs = BlobStore(tmp_path / "blobs", max_bytes=1000)
    declared = await api.client.put(f"/api/blobs/{sha256}", content=data, headers=api.auth())
    assert declared.status_code == 413 and declared.json()["field"] == "body"

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 300):
            yield data[start : start + 300]

    streamed = await api.client.put(f"/api/blobs/{sha256}", content=chunked(), headers=api.auth())
    assert streamed.status_code == 413 and streamed.json()["field"] == "body"
    assert not api.ctx.blobs.exists(sha256)
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []  # the partial upload is gone
