"""Faults against a real three-coordinator Raft cluster under load (see ha_harness.py).

Each test runs three coordinators and two workers as processes, submits short tasks
through the REST API to every coordinator throughout, injects its faults (kill -9,
partitions through the Raft links' forwarders, SIGSTOP, a damaged log, a node left far
behind), mends everything, and then holds the cluster to one verdict (`verify_healed`):
every acknowledged task on every node and completed, one result per task, at most one
leader per term, and the same state on every node. Where a fault leaves an old leader
cut off, the test also checks that it serves no linearizable read of a state it lacks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.e2e.e2e_harness import Cluster, wait_until
from tests.e2e.ha_harness import (
    ELECTION_TIMEOUT_MS,
    HaCluster,
    LeaderWatch,
    Load,
    Node,
    flip_last_record,
    last_log_index,
    snapshot_index,
    tear_last_record,
    torn_bytes_dropped,
    verify_healed,
)

pytestmark = pytest.mark.e2e

MakeCluster = Callable[..., HaCluster]
ELECTION_MAX_S = ELECTION_TIMEOUT_MS[1] / 1000


@pytest.fixture
def make_ha(cluster: Cluster) -> Iterator[MakeCluster]:
    made: list[HaCluster] = []

    def make(*, workers: int = 2, **options: object) -> HaCluster:
        ha = HaCluster(cluster, **options)  # type: ignore[arg-type]
        made.append(ha)
        return ha.start(workers=workers)

    yield make
    for ha in made:
        ha.close()


def assert_no_stale_read(node: Node, task_id: str) -> int | None:
    """`task_id` was acknowledged by the cluster; a linearizable read of it from `node`
    must find it (200) or be refused (503 / no answer), never miss it (404)."""
    status = node.read_task(task_id, consistency="linearizable")
    assert status != 404, f"{node.node_id} served a stale linearizable read: it did not know {task_id}"
    assert status in (200, 503, None), status
    return status


def test_leader_killed_repeatedly_loses_nothing(make_ha: MakeCluster) -> None:
    # Snapshots every 50 entries: a restarted node restores one and replays the log after
    # it, or is sent the leader's when it has fallen too far behind.
    ha = make_ha(snapshot_every=50)
    watch = LeaderWatch(ha).start()
    load = Load(ha).start()
    load.progress(10)
    for _ in range(3):
        leader = ha.leader()
        term = leader.term()
        leader.kill9()
        successor = ha.leader(among=ha.others(leader))
        assert successor.term() > term
        load.progress(5)
        leader.start()  # as a supervisor would
        ha.caught_up()
    load.progress(5)
    acked = load.stop()
    watch.stop()
    verify_healed(ha, acked, watch)


def test_partitions_keep_one_leader_and_lose_nothing(make_ha: MakeCluster) -> None:
    # No snapshots: every node keeps reaching its peers through the links' forwarders.
    ha = make_ha(proxied=True)
    net = ha.net
    assert net is not None
    watch = LeaderWatch(ha).start()
    load = Load(ha).start()
    load.progress(5)

    # The leader alone, the two followers together: they elect one of them, and the old
    # leader, cut off, refuses linearizable reads of what it has not seen.
    old = ha.leader()
    term = old.term()
    net.isolate(old.node_id)
    new = ha.leader(among=ha.others(old))
    assert new.term() > term
    written = new.submit()
    assert old.read_task(written, consistency="local") == 404, "the cut-off leader cannot know the new write"
    assert_no_stale_read(old, written)
    load.progress(5)
    net.heal()
    wait_until(lambda: old.read_task(written, consistency="local") == 200, 30, "the old leader to catch up")

    # A follower alone: the leader keeps its majority and goes on taking writes.
    leader = ha.leader()
    follower = ha.others(leader)[0]
    net.isolate(follower.node_id)
    written = leader.submit()
    assert_no_stale_read(follower, written)
    load.progress(5)
    net.heal()
    ha.caught_up()

    # One way: the leader can send to a follower but hears nothing back from it.
    leader = ha.leader()
    follower = ha.others(leader)[0]
    net.block(follower.node_id, leader.node_id)
    load.progress(5)
    net.heal()
    ha.caught_up()

    # The other way: a follower can send to the leader but hears nothing from it, so it
    # cannot confirm a linearizable read either.
    leader = ha.leader()
    follower = ha.others(leader)[0]
    net.block(leader.node_id, follower.node_id)
    assert_no_stale_read(follower, leader.submit())
    load.progress(5)
    net.heal()
    ha.caught_up()

    load.progress(3)
    acked = load.stop()
    watch.stop()
    verify_healed(ha, acked, watch)


def test_paused_leader_steps_down_and_serves_no_stale_read(make_ha: MakeCluster) -> None:
    ha = make_ha()
    watch = LeaderWatch(ha).start()
    load = Load(ha).start()
    load.progress(5)

    old = ha.leader()
    term = old.term()
    paused_at = time.monotonic()
    old.pause()
    try:
        new = ha.leader(among=ha.others(old))
        written = new.submit()
        # Reads sent to the paused leader wait in its sockets and meet it the moment it
        # resumes, still believing it leads.
        reads: list[int | None] = []
        readers = [
            threading.Thread(
                target=lambda: reads.append(old.read_task(written, consistency="linearizable")), daemon=True
            )
            for _ in range(3)
        ]
        for reader in readers:
            reader.start()
        time.sleep(max(0.0, paused_at + 2 * ELECTION_MAX_S - time.monotonic()))  # paused for two election timeouts
    finally:
        old.resume()
    for reader in readers:
        reader.join(30)
    assert len(reads) == len(readers), "a read of the resumed leader never returned"
    assert 404 not in reads, f"the resumed leader served a stale linearizable read: {reads}"

    def stepped_down() -> bool:
        status = old.status()
        return status is not None and not status["is_leader"] and old.term() > term

    wait_until(stepped_down, 30, "the resumed leader to step down and learn the new term")
    assert_no_stale_read(old, written)
    load.progress(5)
    acked = load.stop()
    watch.stop()
    verify_healed(ha, acked, watch)


def test_torn_or_corrupt_log_tail_is_dropped_and_caught_up(make_ha: MakeCluster) -> None:
    ha = make_ha()
    watch = LeaderWatch(ha).start()
    load = Load(ha).start()
    load.progress(10)

    # A crash in the middle of a write: the leader dies, and its last record is half there.
    leader = ha.leader()
    leader.kill9()
    ha.leader(among=ha.others(leader))
    torn = tear_last_record(leader.raft_dir)
    load.progress(5)
    leader.start()
    assert torn_bytes_dropped(leader) == torn
    ha.caught_up()

    # A flipped bit in a follower's last record: its checksum no longer matches.
    follower = ha.others(ha.leader())[0]
    follower.kill9()
    corrupt = flip_last_record(follower.raft_dir)
    load.progress(5)
    follower.start()
    assert torn_bytes_dropped(follower) == corrupt
    ha.caught_up()

    load.progress(3)
    acked = load.stop()
    watch.stop()
    verify_healed(ha, acked, watch)


def test_node_far_behind_catches_up_by_snapshot(make_ha: MakeCluster) -> None:
    ha = make_ha(snapshot_every=50)
    watch = LeaderWatch(ha).start()
    load = Load(ha).start()
    load.progress(5)

    lagging = ha.others(ha.leader())[0]
    assert lagging.stop() == 0
    behind = last_log_index(lagging.raft_dir)
    running = ha.others(lagging)
    # Both others compact their logs past everything the stopped node holds, so only a
    # snapshot can bring it back.
    wait_until(
        lambda: all(snapshot_index(n.raft_dir) > behind + 1 for n in running),
        60,
        lambda: f"both running nodes to snapshot past index {behind}",
    )
    lagging.start()
    wait_until(
        lambda: "installed a snapshot" in lagging.starts_logged()[-1], 30, "the lagging node to install a snapshot"
    )
    ha.caught_up()

    load.progress(5)
    acked = load.stop()
    watch.stop()
    verify_healed(ha, acked, watch)


class BypassesItsConfig(AssertionError):
    pass


def test_after_a_snapshot_a_node_still_reaches_peers_where_its_config_says(make_ha: MakeCluster) -> None:
    # Each node's config names its own route to each peer (here: the link's forwarder).
    # After InstallSnapshot the lagging node must still use its routes, not the sender's:
    # with `server.host: 0.0.0.0` and peers listed without the node itself (docs/ha.md),
    # the sender's own address in the snapshot is 127.0.0.1:<its Raft port>, which on
    # another host is the receiver itself.
    ha = make_ha(proxied=True, snapshot_every=50, workers=0)
    load = Load(ha, pause_s=0.05).start()
    lagging = ha.others(ha.leader())[0]
    assert lagging.stop() == 0
    behind = last_log_index(lagging.raft_dir)
    wait_until(lambda: all(snapshot_index(n.raft_dir) > behind + 1 for n in ha.others(lagging)), 60, "snapshots")
    lagging.start()
    wait_until(lambda: "installed a snapshot" in lagging.starts_logged()[-1], 30, "a snapshot to be installed")
    ha.caught_up()
    load.stop()

    raft_ports = {n.raft_port for n in ha.others(lagging)}
    direct = [
        c.raddr
        for c in psutil.Process(lagging.pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port in raft_ports
    ]
    if direct:
        raise BypassesItsConfig(f"{lagging.node_id} bypasses the routes in its config: connected to {direct}")
