"""Workers, results, status, dashboard, health, metrics and the OpenAPI document."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_coordinator.service.coordinator import result_id
from dtf_coordinator.service.worker_records import Capabilities, WorkerRegistration

if TYPE_CHECKING:
    from conftest import ApiHarness

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
CMD = {"type": "command", "parameters": {"command": ["true"]}}


async def run_on_a_worker(api: ApiHarness, worker_id: str = "worker-1", *, flush: bool = True) -> tuple[str, list[str]]:
    """Submit a task, have a worker (through the service layer, as gRPC does) lease it and
    report two results; flush them to the results store unless told not to. Returns
    (task_id, result_ids)."""
    (task_id,) = await api.submit(CMD)
    capabilities = Capabilities(hardware=("cpu",), memory_mb=4096, slots=2)
    await api.coordinator.register_worker(
        WorkerRegistration(worker_id=worker_id, hardware_id="cpu-x86", capabilities=capabilities)
    )
    (task,) = await api.coordinator.lease(worker_id, max_tasks=1, wait_ms=5000)
    assert task.task_id == task_id
    now_ms = int(time.time() * 1000)
    result_ids = [f"{task_id}-r{i}" for i in range(2)]
    records = [
        types_pb2.ResultRecord(
            result_id=rid,
            task_id=task_id,
            worker_id=worker_id,
            test_id=f"tests/test_model.py::test_{i}",
            timestamp_ms=now_ms + i,
            metrics_json=json.dumps({"latency_ms": 10 + i}),
            status="success" if i == 0 else "failure",
            execution_time=0.5 + i,
        )
        for i, rid in enumerate(result_ids)
    ]
    outcome = types_pb2.TaskOutcome(
        task_id=task_id,
        lease_id=task.lease_id,
        kind=types_pb2.TaskOutcome.COMPLETED,
        results_json=json.dumps({"exit_code": 0}),
        results=records,
    )
    (ack,) = await api.coordinator.report(worker_id, [outcome])
    assert ack.accepted
    if flush:
        await api.sync.flush()
    # The coordinator's ids for the records, derived from the worker's within the lease.
    return task_id, [result_id(task_id, task.lease_id, rid) for rid in result_ids]


async def test_workers_list_and_get(api: ApiHarness) -> None:
    viewer = api.auth("viewer")
    assert (await api.client.get("/api/workers", headers=viewer)).json() == {
        "data": [],
        "count": 0,
        "offset": 0,
        "limit": 100,
    }
    await run_on_a_worker(api)
    page = (await api.client.get("/api/workers", headers=viewer)).json()
    assert page["count"] == 1
    (worker,) = page["data"]
    assert worker["worker_id"] == "worker-1"
    assert worker["hardware_id"] == "cpu-x86"
    assert (await api.client.get("/api/workers/worker-1", headers=viewer)).json()["worker_id"] == "worker-1"
    offline = (await api.client.get("/api/workers", params={"status": "offline"}, headers=viewer)).json()
    assert offline["count"] == 0

    missing = await api.client.get("/api/workers/nobody", headers=viewer)
    assert missing.status_code == 404
    assert missing.json()["field"] == "worker_id"
    assert (await api.client.get("/api/workers")).status_code == 401


async def test_a_finished_tasks_results_are_readable_before_the_next_periodic_flush(api: ApiHarness) -> None:
    task_id, result_ids = await run_on_a_worker(api, flush=False)
    viewer = api.auth("viewer")
    assert api.sync.pending  # nothing has written the results to the store yet

    task = (await api.client.get(f"/api/tasks/{task_id}", headers=viewer)).json()
    page = (await api.client.get("/api/results", params={"task_id": task_id}, headers=viewer)).json()

    assert task["status"] == "completed"
    assert sorted(r["result_id"] for r in page["data"]) == sorted(result_ids)
    durations = await api.client.post("/api/results/durations", json={"test_ids": None}, headers=viewer)
    assert len(durations.json()["durations"]) == 2


async def test_results_list_filter_and_get(api: ApiHarness) -> None:
    task_id, result_ids = await run_on_a_worker(api)
    viewer = api.auth("viewer")

    page = (await api.client.get("/api/results", params={"task_id": task_id}, headers=viewer)).json()
    assert page["count"] == 2
    assert [r["result_id"] for r in page["data"]] == result_ids[::-1]  # newest first
    failures = (await api.client.get("/api/results", params={"status": "failure"}, headers=viewer)).json()
    assert [r["result_id"] for r in failures["data"]] == [result_ids[1]]
    by_test = await api.client.get("/api/results", params={"test_id": "tests/test_model.py::test_0"}, headers=viewer)
    assert by_test.json()["count"] == 1
    paged = (await api.client.get("/api/results", params={"limit": 1, "offset": 1}, headers=viewer)).json()
    assert paged["count"] == 2 and [r["result_id"] for r in paged["data"]] == [result_ids[0]]
    later = (await api.client.get("/api/results", params={"since": "2999-01-01T00:00:00Z"}, headers=viewer)).json()
    assert later["count"] == 0

    one = (await api.client.get(f"/api/results/{result_ids[0]}", headers=viewer)).json()
    assert one["task_id"] == task_id
    assert one["worker_id"] == "worker-1"
    assert one["metrics"] == {"latency_ms": 10}
    assert one["status"] == "success"

    missing = await api.client.get("/api/results/no-such-result", headers=viewer)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    assert missing.json()["field"] == "result_id"
    bad = await api.client.get("/api/results", params={"status": "meh"}, headers=viewer)
    assert bad.status_code == 422 and bad.json()["field"] == "status"


async def test_status_and_dashboard(api: ApiHarness) -> None:
    await run_on_a_worker(api)
    await api.submit(CMD, CMD)
    viewer = api.auth("viewer")

    status = (await api.client.get("/api/status", headers=viewer)).json()
    assert status["node_id"] == api.node.node_id
    assert status["is_leader"] is True
    assert status["queue_depth"] == 2
    assert status["tasks"]["completed"] == 1

    dashboard = (await api.client.get("/api/dashboard", headers=viewer)).json()
    assert dashboard["status"]["queue_depth"] == 2
    assert len(dashboard["recent_tasks"]) == 3
    assert dashboard["results"]["results_by_status"] == {"success": 1, "failure": 1}
    assert len(dashboard["results"]["results_per_hour"]) == 24
    assert (await api.client.get("/api/dashboard")).status_code == 401


async def test_cluster_endpoints(api: ApiHarness) -> None:
    viewer = api.auth("viewer")
    node_id = api.node.node_id
    status = (await api.client.get("/api/cluster/status", headers=viewer)).json()
    assert status["leader_id"] == node_id
    assert status["current_term"] == api.node.term
    assert status["quorum_size"] == 1
    assert status["cluster_health"] == "healthy"
    assert status["reported_by"] == node_id
    (node,) = status["nodes"]
    assert {k: node[k] for k in ("node_id", "state", "term", "disabled", "progress")} == {
        "node_id": node_id,
        "state": "leader",
        "term": api.node.term,
        "disabled": False,
        "progress": None,
    }
    assert node["last_heartbeat"].endswith("Z")
    assert node["uptime_seconds"] >= 0
    leader = (await api.client.get("/api/cluster/leader", headers=viewer)).json()
    assert leader["leader_id"] == node_id
    nodes = (await api.client.get("/api/cluster/nodes", headers=viewer)).json()
    assert [(n["node_id"], n["state"], n["term"]) for n in nodes] == [(node_id, "leader", api.node.term)]
    for path in ("status", "nodes", "leader", "health", "visualize"):
        assert (await api.client.get(f"/api/cluster/{path}")).status_code == 401, path


async def test_health_and_metrics_need_no_token(api: ApiHarness) -> None:
    assert (await api.client.get("/health")).json() == {"status": "ok"}
    await api.submit(CMD, CMD, CMD)
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'dtf_tasks{status="pending"} 3.0' in text
    assert "dtf_queue_depth 3.0" in text
    assert "dtf_commit_latency_seconds_bucket" in text


async def test_openapi_and_swagger_ui(api: ApiHarness) -> None:
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text.lower()
    # Served from this process, so Swagger UI works where no CDN can be reached.
    assert "cdn" not in docs.text.lower()
    script = await api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert (await api.client.get("/docs/assets/swagger-ui.css")).status_code == 200
    spec = (await api.client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "dtf coordinator"
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    paths = spec["paths"]
    for path in [
        "/api/tasks",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/cancel",
        "/api/workers",
        "/api/workers/{worker_id}",
        "/api/results",
        "/api/results/{result_id}",
        "/api/dashboard",
        "/api/status",
        "/api/cluster/status",
        "/api/cluster/nodes",
        "/api/cluster/leader",
        "/api/cluster/health",
        "/api/cluster/visualize",
        "/api/cluster/node/{node_id}/disable",
        "/api/cluster/node/{node_id}/enable",
        "/health",
        "/metrics",
    ]:
        assert path in paths, path
    submit = paths["/api/tasks"]["post"]
    assert submit["security"] == [{"bearer": []}]
    assert "201" in submit["responses"]
    assert PROBLEM in submit["responses"]["422"]["content"]
    body_schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert len(body_schema["anyOf"]) == 2  # one task or a list
    assert "security" not in paths["/metrics"]["get"]


async def test_unhandled_error_is_a_500_problem_without_internals(api: ApiHarness) -> None:
    api.store.close(flush=False)  # the results store is gone: its reads now fail
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://dtf.test") as client:
        response = await client.get("/api/results", headers=api.auth("viewer"))
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == "https://dtf.dev/problems/internal"
    assert "Error" not in body["detail"] and "sql" not in body["detail"].lower()


async def test_recorded_durations_per_test(api: ApiHarness) -> None:
    await run_on_a_worker(api)
    viewer = api.auth("viewer")
    response = await api.client.post(
        "/api/results/durations", json={"test_ids": ["tests/test_model.py::test_0", "never-ran"]}, headers=viewer
    )
    assert response.status_code == 200
    durations = response.json()["durations"]
    assert set(durations) == {"tests/test_model.py::test_0"}
    assert durations["tests/test_model.py::test_0"] == 0.5
    everything = (await api.client.post("/api/results/durations", json={}, headers=viewer)).json()["durations"]
    assert "tests/test_model.py::test_0" in everything
    other_hardware = {"test_ids": ["tests/test_model.py::test_0"], "hardware_id": "cuda-x"}
    assert (await api.client.post("/api/results/durations", json=other_hardware, headers=viewer)).json() == {
        "durations": {}
    }
    bad = await api.client.post("/api/results/durations", json={"last_n": 0}, headers=viewer)
    assert bad.status_code == 422 and bad.json()["field"] == "body.last_n"
