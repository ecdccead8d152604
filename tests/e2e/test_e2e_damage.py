"""A coordinator whose command log was damaged on disk refuses to start, saying where and
how to get out, instead of silently starting from less than it acknowledged; a torn tail
(what a crash during a write leaves) is still dropped and the coordinator starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.e2e_harness import TRANSIENT, Cluster, Coordinator, all_pages, command_task, wait_until

pytestmark = pytest.mark.e2e


def with_tasks(cluster: Cluster, count: int) -> tuple[Coordinator, list[str], Path]:
    """A coordinator that acknowledged `count` tasks, stopped; and its log file."""
    coordinator = cluster.start_coordinator()
    client = cluster.client()
    ids = [task_id for i in range(count) for task_id in client.submit(command_task(f"print({i})"))]  # an entry each
    assert coordinator.stop() == 0
    return coordinator, ids, coordinator.data_dir / "log" / "log.bin"


def refuses_to_start(coordinator: Coordinator) -> str:
    with pytest.raises(AssertionError, match="exited while starting"):
        coordinator.start()
    assert coordinator.proc is not None
    assert coordinator.proc.wait() == 2
    return coordinator.proc.tail()


def task_ids(cluster: Cluster) -> set[str]:
    client = cluster.client()
    [tasks] = wait_until(lambda: (all_pages(client.tasks),), 30, "the API", ignore=TRANSIENT)
    return {t["task_id"] for t in tasks}


@pytest.mark.parametrize("mutation", ["byte at 10%", "byte at 50%", "zeroed first bytes"])
def test_a_damaged_log_refuses_to_start_and_names_the_way_out(cluster: Cluster, mutation: str) -> None:
    coordinator, ids, log = with_tasks(cluster, 60)
    data = bytearray(log.read_bytes())
    if mutation == "zeroed first bytes":
        data[:16] = bytes(16)
    else:
        data[int(len(data) * (0.1 if "10%" in mutation else 0.5))] ^= 0x04
    log.write_bytes(bytes(data))

    said = refuses_to_start(coordinator)

    assert "is damaged at byte" in said and "truncate -s" in said
    assert log.read_bytes() == bytes(data), "the damaged log must be left as it was"
    # The way out it names: keep the entries before the damage, knowingly losing the rest.
    size = int(said.split("truncate -s ")[1].split()[0])
    with open(log, "r+b") as f:
        f.truncate(size)
    coordinator.start()
    kept = task_ids(cluster)
    assert kept < set(ids) and (len(kept) >= 3 or mutation == "zeroed first bytes")
    assert ids[: len(kept)] == [i for i in ids if i in kept], "what is kept is the log's head"


def test_a_torn_tail_is_dropped_and_everything_acknowledged_is_kept(cluster: Cluster) -> None:
    coordinator, ids, log = with_tasks(cluster, 20)
    with open(log, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x12\x34")  # a record's header, cut short by a crash
    coordinator.start()
    assert task_ids(cluster) == set(ids)
    assert coordinator.proc is not None and "torn tail" in coordinator.proc.tail()
