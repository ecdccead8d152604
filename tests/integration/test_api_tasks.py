"""`/api/tasks` against a real coordinator: submission, validation, auth, limits, cancel."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from jose import jwt

from dtf_coordinator.auth import create_token
from tests.integration.conftest import API_SECRET

if TYPE_CHECKING:
    from conftest import ApiFactory, ApiHarness

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
CMD = {"type": "command", "parameters": {"command": ["true"]}}


def problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"https://dtf.dev/problems/{code}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "field" in body
    return dict(body)


async def count_tasks(api: ApiHarness) -> int:
    response = await api.client.get("/api/tasks", headers=api.auth("viewer"))
    assert response.status_code == 200
    return int(response.json()["count"])


# ---------------------------------------------------------------- submission


async def test_submit_one_returns_201_and_the_task_reads_back(api: ApiHarness) -> None:
    response = await api.client.post("/api/tasks", json=CMD | {"priority": 7}, headers=api.auth())
    assert response.status_code == 201, response.text
    (task_id,) = response.json()["task_ids"]

    task = (await api.client.get(f"/api/tasks/{task_id}", headers=api.auth("viewer"))).json()
    assert task["task_id"] == task_id
    assert task["status"] == "pending"
    assert task["priority"] == 7
    assert task["parameters"] == {"command": ["true"]}
    assert task["metadata"]["dtf"]["submitter"] == "submitter-alice"


async def test_submit_batch_with_dependencies_inside_and_across_batches(api: ApiHarness) -> None:
    (first,) = await api.submit(CMD)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    ids = await api.submit(
        CMD | {"task_id": b, "dependencies": [a, first]},
        CMD | {"task_id": a},
    )
    assert ids == [b, a]
    task_b = (await api.client.get(f"/api/tasks/{b}", headers=api.auth())).json()
    assert sorted(task_b["dependencies"]) == sorted([a, first])
    assert await count_tasks(api) == 3


async def test_dependency_cycle_is_refused_whole_and_names_the_cycle(api: ApiHarness) -> None:
    await api.submit(CMD)
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    batch = [CMD | {"task_id": a, "dependencies": [c]}, CMD | {"task_id": b, "dependencies": [a]}]
    batch.append(CMD | {"task_id": c, "dependencies": [b]})
    response = await api.client.post("/api/tasks", json=batch, headers=api.auth())
    body = problem(response, 400, "invalid_argument")
    assert "cycle" in str(body["detail"])
    assert all(t in str(body["detail"]) for t in (a, b, c))
    assert await count_tasks(api) == 1


async def test_unknown_dependency_names_the_task_in_the_body(api: ApiHarness) -> None:
    batch = [CMD, CMD | {"dependencies": [str(uuid.uuid4())]}]
    body = problem(await api.client.post("/api/tasks", json=batch, headers=api.auth()), 400, "invalid_argument")
    assert body["field"] == "body[1].dependencies"


async def test_malformed_json_is_400(api: ApiHarness) -> None:
    response = await api.client.post(
        "/api/tasks", content=b'{"type": "command",', headers=api.auth() | {"content-type": "application/json"}
    )
    body = problem(response, 400, "malformed_json")
    assert body["field"] == "body"


async def test_unknown_field_is_named(api: ApiHarness) -> None:
    response = await api.client.post("/api/tasks", json=CMD | {"priorty": 3}, headers=api.auth())
    body = problem(response, 422, "validation_error")
    assert body["field"] == "body[0].priorty"
    assert body["errors"] == [
        {"field": "body[0].priorty", "message": "Extra inputs are not permitted", "type": "extra_forbidden"}
    ]


async def test_priority_out_of_range_names_the_batch_entry(api: ApiHarness) -> None:
    batch = [CMD, CMD | {"priority": 11}]
    body = problem(await api.client.post("/api/tasks", json=batch, headers=api.auth()), 422, "validation_error")
    assert body["field"] == "body[1].priority"
    assert await count_tasks(api) == 0


async def test_empty_batch_is_refused(api: ApiHarness) -> None:
    body = problem(await api.client.post("/api/tasks", json=[], headers=api.auth()), 422, "validation_error")
    assert body["field"] == "body"


async def test_oversized_body_is_413_before_parsing(api_factory: ApiFactory) -> None:
    api = await api_factory(max_body_bytes=2048)
    big = CMD | {"metadata": {"blob": "x" * 4096}}
    body = problem(await api.client.post("/api/tasks", json=big, headers=api.auth()), 413, "payload_too_large")
    assert body["field"] == "body"

    # Without a Content-Length (streamed in chunks) the bytes are counted as they arrive.
    async def chunks() -> AsyncIterator[bytes]:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    response = await api.client.post(
        "/api/tasks", content=chunks(), headers=api.auth() | {"content-type": "application/json"}
    )
    problem(response, 413, "payload_too_large")
    assert await count_tasks(api) == 0


async def test_queue_full_is_429_with_retry_after(api_factory: ApiFactory) -> None:
    api = await api_factory(max_queue_size=3)
    await api.submit(CMD, CMD)
    response = await api.client.post("/api/tasks", json=[CMD, CMD], headers=api.auth())
    problem(response, 429, "queue_full")
    assert int(response.headers["retry-after"]) > 0
    assert await count_tasks(api) == 2


# ---------------------------------------------------------------- authentication


def bad_authorization(kind: str, secret: str) -> dict[str, str]:
    expired = jwt.encode({"sub": "x", "role": "admin", "exp": int(time.time()) - 60}, secret, algorithm="HS256")
    no_role = jwt.encode({"sub": "x"}, secret, algorithm="HS256")
    value = {
        "garbage": "Bearer not-a-jwt",
        "basic": "Basic dXNlcjpwYXNz",
        "empty-bearer": "Bearer ",
        "wrong-secret": f"Bearer {create_token('some-other-secret-0123456789', 'admin')}",
        "expired": f"Bearer {expired}",
        "no-role": f"Bearer {no_role}",
    }.get(kind)
    return {"Authorization": value} if value is not None else {}


@pytest.mark.parametrize("kind", ["missing", "garbage", "basic", "empty-bearer", "wrong-secret", "expired", "no-role"])
async def test_missing_or_invalid_token_is_401(api: ApiHarness, kind: str) -> None:
    response = await api.client.get("/api/tasks", headers=bad_authorization(kind, api.ctx.secret))
    body = problem(response, 401, "unauthenticated")
    assert body["field"] == "authorization"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_viewer_may_read_but_not_submit_or_cancel(api: ApiHarness) -> None:
    (task_id,) = await api.submit(CMD)
    assert (await api.client.get("/api/tasks", headers=api.auth("viewer"))).status_code == 200
    problem(await api.client.post("/api/tasks", json=CMD, headers=api.auth("viewer")), 403, "permission_denied")
    response = await api.client.post(f"/api/tasks/{task_id}/cancel", headers=api.auth("viewer"))
    problem(response, 403, "permission_denied")
    # A worker token is for the gRPC worker service only.
    problem(await api.client.get("/api/tasks", headers=api.auth("worker")), 403, "permission_denied")


# ---------------------------------------------------------------- reads


async def test_unknown_task_is_404(api: ApiHarness) -> None:
    body = problem(await api.client.get(f"/api/tasks/{uuid.uuid4()}", headers=api.auth()), 404, "not_found")
    assert body["field"] == "task_id"


async def test_unknown_route_is_a_404_problem(api: ApiHarness) -> None:
    problem(await api.client.get("/api/nothing-here", headers=api.auth()), 404, "not_found")
    problem(await api.client.delete("/api/tasks", headers=api.auth()), 405, "method_not_allowed")


async def test_list_filters_and_pagination(api: ApiHarness) -> None:
    low = await api.submit(*[CMD | {"priority": 1} for _ in range(3)])
    high = await api.submit(*[{"type": "pytest", "priority": 9} for _ in range(4)])
    viewer = api.auth("viewer")

    page = (await api.client.get("/api/tasks", params={"limit": 5}, headers=viewer)).json()
    assert page["count"] == 7 and page["offset"] == 0 and page["limit"] == 5
    assert len(page["data"]) == 5
    rest = (await api.client.get("/api/tasks", params={"offset": 5, "limit": 5}, headers=viewer)).json()
    listed = [t["task_id"] for t in page["data"] + rest["data"]]
    assert sorted(listed) == sorted(low + high)
    assert listed[0] == high[-1]  # newest first

    by_type = (await api.client.get("/api/tasks", params={"type": "pytest"}, headers=viewer)).json()
    assert by_type["count"] == 4 and {t["type"] for t in by_type["data"]} == {"pytest"}
    by_priority = (await api.client.get("/api/tasks", params={"priority": 1}, headers=viewer)).json()
    assert sorted(t["task_id"] for t in by_priority["data"]) == sorted(low)
    pending = (await api.client.get("/api/tasks", params={"status": "pending"}, headers=viewer)).json()
    assert pending["count"] == 7
    later = (await api.client.get("/api/tasks", params={"since": "2999-01-01T00:00:00Z"}, headers=viewer)).json()
    assert later["count"] == 0
    earlier = (await api.client.get("/api/tasks", params={"until": "2999-01-01T00:00:00"}, headers=viewer)).json()
    assert earlier["count"] == 7


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "sleeping"}, "status"),
        ({"priority": 11}, "priority"),
        ({"since": "yesterday"}, "since"),
        ({"staus": "pending"}, "staus"),
    ],
)
async def test_bad_query_parameters_are_named(api: ApiHarness, params: dict[str, object], field: str) -> None:
    body = problem(await api.client.get("/api/tasks", params=params, headers=api.auth()), 422, "validation_error")
    assert body["field"] == field


# ---------------------------------------------------------------- cancel


async def test_cancel_then_cancel_again_is_409(api: ApiHarness) -> None:
    (task_id,) = await api.submit(CMD)
    response = await api.client.post(f"/api/tasks/{task_id}/cancel", headers=api.auth())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["end_time"] is not None

    again = await api.client.post(f"/api/tasks/{task_id}/cancel", headers=api.auth("admin"))
    body = problem(again, 409, "conflict")
    assert body["field"] == "task_id"
    assert "cancelled" in str(body["detail"])


async def test_only_its_submitter_or_an_admin_may_cancel_a_task(api: ApiHarness) -> None:
    (alices,) = await api.submit(CMD)  # the submitter token's subject is submitter-alice
    bob = {"Authorization": "Bearer " + create_token(API_SECRET, "submitter", subject="bob")}
    refused = problem(await api.client.post(f"/api/tasks/{alices}/cancel", headers=bob), 403, "permission_denied")
    assert "only its submitter or an admin" in str(refused["detail"])
    assert api.coordinator.get_task(alices).status == "pending"
    assert (await api.client.post(f"/api/tasks/{alices}/cancel", headers=api.auth())).status_code == 200

    bobs = (await api.client.post("/api/tasks", json=CMD, headers=bob)).json()["task_ids"][0]
    cancelled = await api.client.post(f"/api/tasks/{bobs}/cancel", headers=api.auth("admin"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


async def test_environment_values_show_only_to_the_submitter_and_admins(api: ApiHarness) -> None:
    secret_env = {"API_KEY": "s3cret", "MODE": "ci"}
    (task_id,) = await api.submit(CMD | {"parameters": {**CMD["parameters"], "env": secret_env}})
    bob = {"Authorization": "Bearer " + create_token(API_SECRET, "submitter", subject="bob")}

    def env_of(body: dict[str, object]) -> object:
        return body["parameters"]["env"]  # type: ignore[index]

    for headers in (api.auth("submitter"), api.auth("admin")):
        assert env_of((await api.client.get(f"/api/tasks/{task_id}", headers=headers)).json()) == secret_env
    hidden = {"API_KEY": "(hidden)", "MODE": "(hidden)"}
    for headers in (api.auth("viewer"), bob):
        assert env_of((await api.client.get(f"/api/tasks/{task_id}", headers=headers)).json()) == hidden
        listed = (await api.client.get("/api/tasks", headers=headers)).json()["data"]
        assert [env_of(t) for t in listed if t["task_id"] == task_id] == [hidden]
    # The task runs with its values: only what is shown changes.
    assert json.loads(api.node.state.tasks[task_id].parameters_json)["env"] == secret_env


async def test_cancel_unknown_task_is_404_and_writes_nothing(api: ApiHarness) -> None:
    before = api.node.state.applied_index
    problem(await api.client.post(f"/api/tasks/{uuid.uuid4()}/cancel", headers=api.auth()), 404, "not_found")
    assert api.node.state.applied_index == before


async def test_oversized_body_over_the_wire(api: ApiHarness, api_server: str) -> None:
    limit = api.ctx.config.security.max_body_bytes
    big = json.dumps(CMD | {"metadata": {"blob": "x" * (limit + 1)}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    headers = api.auth() | {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://{api_server}") as client:
        problem(await client.post("/api/tasks", content=big, headers=headers), 413, "payload_too_large")
        problem(await client.post("/api/tasks", content=chunks(), headers=headers), 413, "payload_too_large")
        # The connection is still usable for the next request.
        assert (await client.post("/api/tasks", json=CMD, headers=api.auth())).status_code == 201
    assert await count_tasks(api) == 1


@pytest.mark.parametrize("token", [None, "not-a-jwt", "forged"])
async def test_a_body_without_a_valid_token_is_refused_before_it_is_read(
    api: ApiHarness, api_server: str, token: str | None
) -> None:
    """Unauthenticated traffic costs a header check: a request announcing 15 MiB, of which
    only the first kilobyte is sent, is answered 401 at once, the rest never awaited."""
    host, port = api_server.split(":")
    headers = ["POST /api/tasks HTTP/1.1", f"Host: {api_server}", "Content-Type: application/json"]
    headers.append(f"Content-Length: {15 * 1024 * 1024}")
    if token == "forged":
        token = create_token("another-secret-0123456789abcdef", "admin")
    if token is not None:
        headers.append(f"Authorization: Bearer {token}")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + b'{"type": "command", "x": "' + b"x" * 1024)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.split()[1] == "401", head
    assert 'www-authenticate: bearer realm="dtf"' in [line.lower() for line in lines]
    assert await count_tasks(api) == 0


async def test_task_keeps_the_owners_fields_and_reports_scheduling_under_metadata(api: ApiHarness) -> None:
    submitter = api.auth("submitter")
    body = CMD | {"metadata": {"team": "ml"}, "max_retries": 2, "requirements": {"hardware": "cuda"}}
    created = await api.client.post("/api/tasks", json=body, headers=submitter)
    task = (await api.client.get(f"/api/tasks/{created.json()['task_ids'][0]}", headers=submitter)).json()
    assert set(task) == {
        "task_id", "type", "status", "priority", "create_time", "start_time", "end_time",
        "worker_id", "parameters", "dependencies", "results", "error", "metadata",
    }  # fmt: skip
    assert task["metadata"]["team"] == "ml"
    scheduling = task["metadata"]["dtf"]
    assert (scheduling["max_retries"], scheduling["attempts"]) == (2, 0)
    assert scheduling["requirements"]["hardware"] == "cuda"
    reserved = await api.client.post("/api/tasks", json=CMD | {"metadata": {"dtf": {}}}, headers=submitter)
    assert reserved.status_code == 422
    assert reserved.json()["field"] == "body[0].metadata"
