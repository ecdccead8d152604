"""Bad requests against a running coordinator, over the wire: each is refused with a
problem that says why, and none of them changes anything."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest

from dtf_coordinator.auth import create_token
from tests.e2e.e2e_harness import Cluster, command_task

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
MAX_BODY = 64 * 1024


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    problem: dict[str, object] = response.json()
    assert problem["status"] == status
    assert problem["type"] == f"https://dtf.dev/problems/{code}", problem
    assert problem["title"] and problem["detail"], problem
    return problem


def test_bad_input_changes_nothing(cluster: Cluster) -> None:
    cluster.start_coordinator(security={"max_body_bytes": MAX_BODY})
    api = cluster.api
    first = api("POST", "/api/tasks", json=command_task("print('first')"))
    assert first.status_code == 201, first.text
    before = api("GET", "/api/tasks").json()
    assert before["count"] == 1

    # Not JSON at all.
    broken = api(
        "POST",
        "/api/tasks",
        content=b'{"type": "command", "parameters": ',
        headers={"content-type": "application/json"},
    )
    _problem(broken, 400, "malformed_json")

    # An unknown field, and an out-of-range one: both named.
    unknown = api("POST", "/api/tasks", json={**command_task("print(1)"), "bogus": 1, "priority": 11})
    problem = _problem(unknown, 422, "validation_error")
    fields = {e["field"] for e in problem["errors"]}  # type: ignore[attr-defined]
    assert fields == {"body[0].bogus", "body[0].priority"}, problem
    assert problem["field"] in fields
    assert "bogus" in json.dumps(problem)

    # In a batch, the index of the offending task is named.
    batch = api("POST", "/api/tasks", json=[command_task("print(1)"), {"type": "command", "prioritty": 3}])
    assert _problem(batch, 422, "validation_error")["field"] == "body[1].prioritty"

    # A dependency cycle inside a batch: refused whole, the cycle named.
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    cycle = api(
        "POST",
        "/api/tasks",
        json=[
            command_task("print('a')", task_id=a, dependencies=[c]),
            command_task("print('b')", task_id=b, dependencies=[a]),
            command_task("print('c')", task_id=c, dependencies=[b]),
        ],
    )
    problem = _problem(cycle, 400, "invalid_argument")
    assert "cycle" in str(problem["detail"])
    assert all(x in str(problem["detail"]) for x in (a, b, c)), problem

    # A dependency on a task that does not exist.
    ghost = str(uuid.uuid4())
    missing = api("POST", "/api/tasks", json=[command_task("print(1)"), command_task("print(2)", dependencies=[ghost])])
    problem = _problem(missing, 400, "invalid_argument")
    assert ghost in str(problem["detail"])
    assert problem["field"] == "body[1].dependencies"

    # Over security.max_body_bytes: with a Content-Length, and streamed without one.
    big = [command_task("print(1)", metadata={"pad": "x" * 1000}) for _ in range(MAX_BODY // 1000 + 5)]
    too_large = api("POST", "/api/tasks", json=big)
    assert _problem(too_large, 413, "payload_too_large")["field"] == "body"

    def chunks() -> Iterator[bytes]:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    streamed = api("POST", "/api/tasks", content=chunks(), headers={"content-type": "application/json"})
    _problem(streamed, 413, "payload_too_large")

    # No token, a token signed with another secret, a token that may not submit.
    for headers in ({}, {"Authorization": f"Bearer {create_token(secrets.token_urlsafe(24), 'admin')}"}):
        refused = api("POST", "/api/tasks", role=None, json=command_task("print(1)"), headers=headers)
        assert _problem(refused, 401, "unauthenticated")["field"] == "authorization"
        assert refused.headers["www-authenticate"].startswith("Bearer")
    viewer = api("POST", "/api/tasks", role="viewer", json=command_task("print(1)"))
    assert _problem(viewer, 403, "permission_denied")["field"] == "authorization"
    assert api("GET", "/api/tasks", role="viewer").status_code == 200
    worker_token = api("GET", "/api/tasks", role="worker")
    _problem(worker_token, 403, "permission_denied")

    # Nothing above left a trace.
    after = api("GET", "/api/tasks").json()
    assert after["count"] == before["count"] == 1
    assert after["data"] == before["data"]
    status = api("GET", "/api/status").json()
    assert sum(status["tasks"].values()) == 1

    # And the coordinator still takes a good submission.
    good = api("POST", "/api/tasks", role="submitter", json=[command_task("print(1)"), command_task("print(2)")])
    assert good.status_code == 201, good.text
    assert api("GET", "/api/tasks").json()["count"] == 3
