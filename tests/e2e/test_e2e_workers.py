"""Workers die or stop under a running task: the task is not lost, and runs elsewhere."""

from __future__ import annotations

import pytest

from tests.e2e.e2e_harness import Cluster, all_pages, command_task, wait_until

pytestmark = pytest.mark.e2e


def test_worker_kill9_mid_task_requeues_to_other(cluster: Cluster) -> None:
    cluster.start_coordinator()
    worker_a = cluster.start_worker("worker-a")
    client = cluster.client()
    cluster.wait_workers("worker-a")

    [task_id] = client.submit(command_task("import time; time.sleep(3)"))
    running = wait_until(
        lambda: (t := client.task(task_id))["status"] == "running" and t,
        30,
        "the task to run on worker-a",
    )
    assert running["worker_id"] == "worker-a"
    assert running["metadata"]["dtf"]["attempts"] == 1

    cluster.start_worker("worker-b")
    worker_a.kill9()

    task = cluster.wait_final([task_id], timeout=60)[task_id]
    assert task["status"] == "completed", task
    assert task["worker_id"] == "worker-b"
    assert task["metadata"]["dtf"]["attempts"] >= 2
    assert task["results"]["exit_code"] == 0
    wait_until(lambda: client.results(task_id=task_id)["count"] >= 1, 30, "the task's result in the store")
    results = all_pages(client.results, task_id=task_id)
    assert [r["worker_id"] for r in results] == ["worker-b"]
    assert cluster.worker_by_id("worker-a")["status"] == "offline"


def test_worker_sigterm_hands_back_leases(cluster: Cluster) -> None:
    cluster.start_coordinator()
    # A 1 s grace period: the long task outlives it and must be handed back.
    worker_a = cluster.start_worker("worker-a", concurrent_tasks=1, grace_s=1.0)
    client = cluster.client()
    cluster.wait_workers("worker-a")

    # Long on worker-a (it would never finish there in time), short anywhere else.
    long_code = "import os, time; time.sleep(60 if os.environ['DTF_WORKER_ID'] == 'worker-a' else 0.2)"
    [long_id] = client.submit(command_task(long_code, priority=9))
    wait_until(lambda: client.task(long_id)["status"] == "running", 30, "the long task to run on worker-a")
    queued = client.submit([command_task(f"print({i})") for i in range(3)])
    assert {client.task(t)["status"] for t in queued} == {"pending"}, "worker-a has one slot, and it is taken"

    assert worker_a.proc is not None
    worker_a.proc.terminate()
    assert worker_a.proc.wait(timeout=30) == 0, worker_a.proc.tail()

    # Deregistering is acknowledged before the worker exits: it is offline now, and its
    # lease is back in the queue without counting as an attempt.
    assert cluster.worker_by_id("worker-a")["status"] == "offline"
    handed_back = client.task(long_id)
    assert handed_back["status"] == "pending", handed_back
    assert handed_back["worker_id"] is None
    assert handed_back["metadata"]["dtf"]["attempts"] == 0
    assert {client.task(t)["status"] for t in queued} == {"pending"}

    cluster.start_worker("worker-b")
    tasks = cluster.wait_final([long_id, *queued], timeout=60)
    assert {t["status"] for t in tasks.values()} == {"completed"}
    assert {t["worker_id"] for t in tasks.values()} == {"worker-b"}
    assert tasks[long_id]["metadata"]["dtf"]["attempts"] == 1
    # worker-a's stopped run reported nothing: the one result is worker-b's.
    wait_until(lambda: client.results(task_id=long_id)["count"] >= 1, 30, "the long task's result in the store")
    assert [r["worker_id"] for r in all_pages(client.results, task_id=long_id)] == ["worker-b"]
