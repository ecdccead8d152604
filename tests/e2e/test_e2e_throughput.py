"""Many small tasks through one coordinator and two workers, end to end."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.e2e_harness import Cluster, all_pages, command_task, wait_until

pytestmark = pytest.mark.e2e


def test_200_tasks_complete(cluster: Cluster) -> None:
    cluster.start_coordinator()
    cluster.start_worker("worker-a", concurrent_tasks=4)
    cluster.start_worker("worker-b", concurrent_tasks=4)
    client = cluster.client()
    cluster.wait_workers("worker-a", "worker-b")

    bodies = [command_task(f"print({i})", priority=i % 11, metadata={"i": i}) for i in range(200)]
    ids = client.submit(bodies[:100]) + client.submit(bodies[100:])
    assert len(set(ids)) == 200

    tasks = cluster.wait_final(ids, timeout=120)
    assert Counter(t["status"] for t in tasks.values()) == {"completed": 200}
    by_worker = Counter(t["worker_id"] for t in tasks.values())
    assert set(by_worker) == {"worker-a", "worker-b"}, by_worker
    for task_id, body in zip(ids, bodies, strict=True):
        task = tasks[task_id]
        assert task["results"]["exit_code"] == 0
        assert task["results"]["stdout_tail"].strip() == str(body["metadata"]["i"])
        assert task["priority"] == body["priority"]

    # The results store is written behind the log: wait until it has caught up, then
    # it must hold one result per task, no more.
    wait_until(lambda: client.results(limit=1)["count"] >= 200, 30, "200 results in the store")
    results = all_pages(client.results)
    per_task = Counter(r["task_id"] for r in results)
    assert len(results) == client.results(limit=1)["count"] == 200
    assert set(per_task) == set(ids)
    assert max(per_task.values()) == 1
    assert {r["status"] for r in results} == {"success"}
    assert {r["worker_id"] for r in results} == {"worker-a", "worker-b"}

    status = client.status()
    assert status["tasks"]["completed"] == 200
    assert sum(status["tasks"].values()) == 200
