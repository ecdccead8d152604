"""The coordinator crashes or restarts under a live fleet: nothing acknowledged is lost,
nothing is recorded twice, and a restart reaches exactly the state it left."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from dtf.client import DtfClient
from dtf_common import errors
from tests.e2e.e2e_harness import FINAL, TRANSIENT, Cluster, all_pages, command_task, wait_until

pytestmark = pytest.mark.e2e


class Submitter(threading.Thread):
    """Submits batches one after another, each with ids chosen here, retrying a batch whose
    answer was lost until the coordinator either takes it or says it already has it.

    The batches from `hold_at` on wait for `resume` first, so that some are still to come
    when the test kills the coordinator, and meet it dead or restarting."""

    def __init__(self, client: DtfClient, batches: list[list[dict[str, Any]]], *, pause_s: float, hold_at: int) -> None:
        super().__init__(name="e2e-submitter", daemon=True)
        self.client = client
        self.batches = batches
        self.pause_s = pause_s
        self.hold_at = hold_at
        self.resume = threading.Event()
        self.acknowledged: list[str] = []  # ids of batches answered 201
        self.already_there: list[str] = []  # ids of batches taken before an answer was lost
        self.retries = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for i, batch in enumerate(self.batches):
                if i == self.hold_at:
                    while not (self.resume.wait(0.05) or self.stop.is_set()):
                        pass
                self.submit(batch)
                self.stop.wait(self.pause_s)
        except BaseException as exc:
            self.error = exc

    def submit(self, batch: list[dict[str, Any]]) -> None:
        ids = [t["task_id"] for t in batch]
        while not self.stop.is_set():
            try:
                answered = self.client.submit(batch)
            except TRANSIENT:
                self.retries += 1
                self.stop.wait(0.1)
                continue
            except errors.InvalidArgument as exc:
                if "already exists" not in exc.message:
                    raise
                self.already_there += ids
                return
            assert answered == ids, "the coordinator must keep the ids it was given"
            self.acknowledged += ids
            return


def test_coordinator_kill9_loses_nothing_acknowledged(cluster: Cluster) -> None:
    # Snapshots every 40 entries: the restart restores one and replays the log after it.
    coordinator = cluster.start_coordinator(task_scheduler={"snapshot_every": 40})
    workers = [cluster.start_worker(w, concurrent_tasks=4) for w in ("worker-a", "worker-b")]
    client = cluster.client()
    cluster.wait_workers("worker-a", "worker-b")

    batches = [
        [
            command_task("import time; time.sleep(0.05)", task_id=str(uuid.uuid4()), metadata={"batch": b})
            for _ in range(15)
        ]
        for b in range(10)
    ]
    all_ids = {t["task_id"] for batch in batches for t in batch}
    submitter = Submitter(cluster.coordinator.client(), batches, pause_s=0.2, hold_at=6)
    submitter.start()
    try:
        wait_until(lambda: client.status()["tasks"]["completed"] >= 50, 60, "a third of the tasks to complete")
        coordinator.kill9()
        submitter.resume.set()
        coordinator.start()
        submitter.join(60)
        assert not submitter.is_alive(), "the submitter did not finish"
    finally:
        submitter.stop.set()
    if submitter.error is not None:
        raise submitter.error
    assert submitter.retries > 0, "some submission should have met the dead coordinator"
    assert set(submitter.acknowledged) | set(submitter.already_there) == all_ids

    tasks = cluster.wait_final(all_ids, timeout=90)
    assert all(w.proc is not None and w.proc.alive() for w in workers), "the workers must outlive the coordinator"
    # Every acknowledged task is there and completed; there is no other task.
    listed = all_pages(client.tasks)
    assert {t["task_id"] for t in listed} == all_ids
    assert Counter(t["status"] for t in tasks.values()) == {"completed": len(all_ids)}

    # Exactly one result per task: outcomes re-sent after the crash were not recorded twice.
    wait_until(lambda: client.results(limit=1)["count"] >= len(all_ids), 30, "every result in the store")
    results = all_pages(client.results)
    per_task = Counter(r["task_id"] for r in results)
    assert set(per_task) == all_ids
    assert [tid for tid, n in per_task.items() if n > 1] == []
    assert len(results) == len(all_ids)

    status = client.status()
    assert status["tasks"]["completed"] == len(all_ids) == 150
    assert sum(status["tasks"].values()) == 150
    assert status["queue_depth"] == 0
    # The workers found the restarted coordinator again.
    cluster.wait_workers("worker-a", "worker-b")


def _snapshot(client: DtfClient) -> dict[str, Any]:
    status = client.status()
    return {
        "tasks_by_status": status["tasks"],
        "queue_depth": status["queue_depth"],
        "tasks": {t["task_id"]: t for t in all_pages(client.tasks)},
        "results": sorted(
            (r["result_id"], r["task_id"], r["status"], r["worker_id"]) for r in all_pages(client.results)
        ),
    }


def _store_caught_up(cluster: Cluster, client: DtfClient) -> int:
    """Wait until the results store holds the log up to the index applied now; that index."""
    index = int(client.status()["applied_index"])
    wait_until(
        lambda: cluster.api("GET", "/api/dashboard").json()["results"]["applied_index"] >= index,
        30,
        "the results store to catch up",
    )
    return index


def test_restart_replays_same_state(cluster: Cluster) -> None:
    coordinator = cluster.start_coordinator(task_scheduler={"snapshot_every": 20})
    cluster.start_worker("worker-a", concurrent_tasks=2, labels={"pool": "here"})
    client = cluster.client()
    cluster.wait_workers("worker-a")

    quick = client.submit([command_task(f"print({i})", priority=i % 3) for i in range(12)])
    [flaky] = client.submit(command_task("import sys; sys.exit(3)", max_retries=1))
    [after_flaky] = client.submit(command_task("print('never')", dependencies=[flaky]))
    [stranded] = client.submit(command_task("print('nowhere')", requirements={"labels": {"pool": "elsewhere"}}))
    [cancelled] = client.submit(command_task("print('cancelled')", dependencies=[stranded]))
    assert client.cancel(cancelled)["status"] == "cancelled"
    finished = cluster.wait_final([*quick, flaky, after_flaky, cancelled])

    assert {finished[t]["status"] for t in quick} == {"completed"}
    assert finished[flaky]["status"] == "failed"
    assert finished[flaky]["metadata"]["dtf"]["attempts"] == 2
    assert finished[after_flaky]["status"] == "failed"
    assert "dependency" in finished[after_flaky]["error"]
    assert client.task(stranded)["status"] == "pending"

    _store_caught_up(cluster, client)  # before comparing it
    before = _snapshot(client)
    assert before["results"], "some results should have been recorded"

    assert coordinator.stop() == 0
    coordinator.start()
    after = wait_until(lambda: _snapshot(client), 30, "the restarted coordinator to answer", ignore=TRANSIENT)

    assert after["tasks_by_status"] == before["tasks_by_status"]
    assert after["queue_depth"] == before["queue_depth"] == 1
    assert after["tasks"].keys() == before["tasks"].keys()
    for task_id, task in before["tasks"].items():
        again = after["tasks"][task_id]
        assert (again["status"], again["metadata"]["dtf"]["attempts"], again["worker_id"]) == (
            task["status"],
            task["metadata"]["dtf"]["attempts"],
            task["worker_id"],
        )
        assert again == task
    assert after["results"] == before["results"]

    # The worker rejoins the restarted coordinator and takes new work.
    [again] = client.submit(command_task("print('after restart')"))
    assert cluster.wait_final([again])[again]["status"] == "completed"
    assert {t["status"] for t in all_pages(client.tasks)} - FINAL == {"pending"}


def test_task_running_across_a_coordinator_restart_runs_once(cluster: Cluster) -> None:
    # After a restart the coordinator waits one lease period before it expires leases or marks
    # workers offline; 15 s leaves the worker's reconnect backoff (at most 10 s) inside it.
    coordinator = cluster.start_coordinator(task_scheduler={"lease_timeout": 15.0})
    cluster.start_worker("worker-a")
    client = cluster.client()
    cluster.wait_workers("worker-a")

    [task_id] = client.submit(command_task("import time; time.sleep(3); print('done')"))
    wait_until(lambda: client.task(task_id)["status"] == "running", 30, "the task to run")
    assert coordinator.stop() == 0
    coordinator.start()

    task = cluster.wait_final([task_id], timeout=60)[task_id]
    assert task["status"] == "completed", task
    assert (task["worker_id"], task["metadata"]["dtf"]["attempts"]) == ("worker-a", 1)
    assert task["results"]["stdout_tail"].strip() == "done"
    wait_until(lambda: client.results(task_id=task_id)["count"] >= 1, 30, "the task's result in the store")
    assert client.results(task_id=task_id)["count"] == 1


def test_writes_continue_after_a_snapshot_compacts_the_log(cluster: Cluster) -> None:
    coordinator = cluster.start_coordinator(task_scheduler={"snapshot_every": 10})
    client = cluster.client()
    # No workers: the ten submissions are the only entries, so the snapshot covers the whole log.
    ids = [client.submit(command_task(f"print({i})"))[0] for i in range(10)]
    snapshot = coordinator.data_dir / "log" / "snapshot.json"
    wait_until(snapshot.exists, 30, "the coordinator to take a snapshot")
    wait_until(lambda: (coordinator.data_dir / "log" / "log.bin").stat().st_size == 0, 30, "the log to be compacted")

    ids += client.submit(command_task("print('after the snapshot')"))
    assert coordinator.stop() == 0
    coordinator.start()
    ids += client.submit(command_task("print('after the restart')"))
    assert client.status()["tasks"]["pending"] == len(ids) == 12

    # The restored state schedules: every task runs once a worker comes.
    cluster.start_worker("worker-a", concurrent_tasks=4)
    tasks = cluster.wait_final(ids)
    assert {t["status"] for t in tasks.values()} == {"completed"}


def test_a_results_store_behind_the_log_is_brought_up_to_date_at_restart(cluster: Cluster) -> None:
    """A restart skips writing again what the store holds (its applied index says how far
    it is); a store that fell behind, or was swapped for an older copy, is rewritten."""
    coordinator = cluster.start_coordinator()
    cluster.start_worker("worker-a", concurrent_tasks=2)
    client = cluster.client()
    cluster.wait_workers("worker-a")
    ids = client.submit([command_task(f"print({i})") for i in range(6)])
    cluster.wait_final(ids)
    index = _store_caught_up(cluster, client)
    before = _snapshot(client)
    assert coordinator.stop() == 0

    # The store loses its results and forgets how far it had got, as an older copy would.
    engine = create_engine(f"duckdb:///{coordinator.config['database']['path']}")
    try:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM results"))
            connection.execute(text("DELETE FROM test_durations"))
            connection.execute(text("UPDATE store_meta SET value = '0' WHERE key = 'applied_index'"))
    finally:
        engine.dispose()
    coordinator.start()

    after = wait_until(lambda: _snapshot(client), 30, "the restarted coordinator to answer", ignore=TRANSIENT)
    assert len(after["results"]) == len(ids)
    assert after["results"] == before["results"]
    assert cluster.api("GET", "/api/dashboard").json()["results"]["applied_index"] >= index
