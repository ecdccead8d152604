"""A high-availability cluster as real processes, for the fault tests: three Raft
coordinators and two workers, a steady load of tasks, and the verdict after the faults.

`HaCluster` writes each coordinator's config with every port chosen up front, so a
killed coordinator comes back where its peers and the workers expect it. With
`proxied=True` each coordinator reaches a peer's Raft port only through that link's
forwarder in `tcp_proxy.ProxyNet`, which the test can cut and mend.

`Load` submits tasks through the REST API from one thread per coordinator and keeps the
ids of every acknowledged submission. `LeaderWatch` asks every coordinator who leads
which term, all through the run (a restarted coordinator forgets its history, so it is
collected as it happens). `verify_healed` is the verdict once the faults are over.

Timings are short (elections in 150-300 ms) and the load is light: CI runs all five
processes and the test on two cores.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dtf.client import DtfClient
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_common.tls import create_ca, create_node_cert
from dtf_coordinator.consensus.log_store import HEADER, LOG_NAME
from dtf_coordinator.consensus.raft.storage import SNAPSHOT, unframe_snapshot
from tests.e2e.e2e_harness import FINAL, Cluster, Coordinator, Worker, all_pages, coordinator_config, wait_until
from tests.e2e.tcp_proxy import ProxyNet

NODE_IDS = ("coordinator-1", "coordinator-2", "coordinator-3")
HOST = "127.0.0.1"
ELECTION_TIMEOUT_MS = (150, 300)
HEARTBEAT_MS = 50
# How long one poll of a coordinator may take: a stopped one must not hold up the others.
POLL_TIMEOUT_S = 1.0
# A write waits this long for a leader (leader_lease_duration); a forward to the leader
# may take up to 10 s more (the Raft transport's deadline); a submission waits for both.
WRITE_WAIT_MS = 3000
SUBMIT_TIMEOUT_S = 15.0
# Short tasks: they keep the workers busy across every fault without costing CPU.
TASK_COMMAND = ["sleep", "0.1"]

_local = threading.local()


def http() -> httpx.Client:
    """This thread's HTTP client (a new client per request would cost more CPU than the polls)."""
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=POLL_TIMEOUT_S)
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def task_spec() -> dict[str, Any]:
    return {"task_id": str(uuid.uuid4()), "type": "command", "parameters": {"command": TASK_COMMAND}}


# ---------------------------------------------------------------------- coordinators


@dataclass
class Node:
    """One coordinator of the cluster and the ports it keeps across restarts."""

    node_id: str
    coordinator: Coordinator
    raft_port: int
    api_port: int
    grpc_port: int

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def grpc_address(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def raft_dir(self) -> Path:
        return self.coordinator.data_dir / "raft"

    @property
    def pid(self) -> int:
        assert self.coordinator.proc is not None
        return self.coordinator.proc.pid

    def alive(self) -> bool:
        proc = self.coordinator.proc
        return proc is not None and proc.alive()

    def token(self) -> str:
        return self.coordinator.token("admin")

    def start(self) -> Node:
        self.coordinator.start()
        return self

    def kill9(self) -> None:
        self.coordinator.kill9()

    def stop(self) -> int:
        return self.coordinator.stop()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing, as in a long GC pause
        or on an overloaded host."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def get(self, path: str, *, timeout: float = POLL_TIMEOUT_S, **params: Any) -> httpx.Response | None:
        """One GET to this coordinator's API; None when no answer came in time."""
        try:
            return http().get(
                self.api_url + path,
                params=params,
                headers={"Authorization": f"Bearer {self.token()}"},
                timeout=timeout,
            )
        except httpx.HTTPError:
            return None

    def get_json(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params) if self.alive() else None
        return response.json() if response is not None and response.status_code == 200 else None

    def status(self, **params: Any) -> dict[str, Any] | None:
        status: dict[str, Any] | None = self.get_json("/api/status", **params)
        return status

    def term(self) -> int:
        info = self.get_json("/api/cluster/leader")
        assert info is not None, f"{self.node_id} does not answer"
        term: int = info["current_term"]
        return term

    def applied(self) -> int:
        status = self.status()
        assert status is not None, f"{self.node_id} does not answer"
        index: int = status["applied_index"]
        return index

    def read_task(self, task_id: str, *, consistency: str, timeout: float = 10.0) -> int | None:
        """The HTTP status of GET /api/tasks/{id}: 200 found, 404 unknown here, 503 refused;
        None when no answer came."""
        response = self.get(f"/api/tasks/{task_id}", timeout=timeout, consistency=consistency)
        return response.status_code if response is not None else None

    def submit(self, timeout: float = 30.0) -> str:
        """Submit one task here until it is acknowledged; its id."""
        task = task_spec()

        def acknowledged() -> bool:
            try:
                response = http().post(
                    self.api_url + "/api/tasks",
                    json=[task],
                    headers={"Authorization": f"Bearer {self.token()}"},
                    timeout=SUBMIT_TIMEOUT_S,
                )
            except httpx.HTTPError:
                return False
            if response.status_code == 400 and "already exists" in response.text:
                return True  # an earlier try was taken, its answer lost
            return response.status_code == 201

        wait_until(acknowledged, timeout, f"{self.node_id} to acknowledge a write")
        task_id: str = task["task_id"]
        return task_id

    def client(self) -> DtfClient:
        return DtfClient(self.api_url, self.token(), timeout=10.0)

    def starts_logged(self) -> list[str]:
        """The coordinator's log, one part per start."""
        assert self.coordinator.proc is not None
        return self.coordinator.proc.log_path.read_text(errors="replace").split("\n===== ")[1:]


def ha_config(
    base: dict[str, Any], node_id: str, ports: dict[str, dict[str, int]], peer_ports: dict[str, int], certs: Path
) -> dict[str, Any]:
    """The high_availability section (and fixed ports) for one coordinator.

    `peer_ports[peer]` is the port this node reaches `peer`'s Raft service on: the peer's
    own Raft port, or the forwarder of the link to it."""
    config = dict(base)
    config["server"] = {**base["server"], "port": ports[node_id]["api"], "workers_port": ports[node_id]["grpc"]}
    config["high_availability"] = {
        "enabled": True,
        "coordinator_id": node_id,
        "raft_port": ports[node_id]["raft"],
        "peers": [
            {
                "id": peer,
                "host": HOST,
                "port": peer_ports[peer],
                "api_url": f"http://{HOST}:{ports[peer]['api']}",
                "grpc_address": f"{HOST}:{ports[peer]['grpc']}",
            }
            for peer in NODE_IDS
            if peer != node_id
        ],
        "election_timeout_min": ELECTION_TIMEOUT_MS[0],
        "election_timeout_max": ELECTION_TIMEOUT_MS[1],
        "heartbeat_interval": HEARTBEAT_MS,
        "leader_lease_duration": WRITE_WAIT_MS,
        # Snapshots by size only (task_scheduler.snapshot_every), never by age during a test.
        "state_snapshot_interval": 3_600_000,
        "tls": {
            "ca_file": str(certs / "ca.pem"),
            "cert_file": str(certs / f"{node_id}.pem"),
            "key_file": str(certs / f"{node_id}-key.pem"),
        },
    }
    return config


class HaCluster:
    """Three coordinators and two workers under one test's tmp_path (its `Cluster` keeps
    the processes, kills them at the end and shows their logs when the test fails)."""

    def __init__(self, base: Cluster, *, proxied: bool = False, snapshot_every: int = 10_000) -> None:
        self.base = base
        self.root = base.root
        self.net = ProxyNet() if proxied else None
        secret = secrets.token_urlsafe(24)[:32]
        certs = self.root / "certs"
        create_ca(certs)
        ports = {n: {"api": free_port(), "grpc": free_port(), "raft": free_port()} for n in NODE_IDS}
        self.nodes: dict[str, Node] = {}
        for node_id in NODE_IDS:
            create_node_cert(certs, node_id, [HOST])
            peer_ports = {
                peer: self.net.add(node_id, peer, ports[peer]["raft"]) if self.net else ports[peer]["raft"]
                for peer in NODE_IDS
                if peer != node_id
            }
            base_config = coordinator_config(
                self.root,
                node_id,
                secret,
                # Leases outlive an election and a restart; a task may lose several of them
                # to the faults and still complete.
                task_scheduler={
                    "lease_timeout": 3.0,
                    "retry_backoff": 0.1,
                    "max_attempts": 20,
                    "snapshot_every": snapshot_every,
                },
                # Fewer worker heartbeats and batched store writes, for CI's two cores.
                health_monitor={"heartbeat_interval": 0.5, "failure_threshold": 4, "check_interval": 0.25},
                database={"flush_interval": 0.5},
            )
            coordinator = Coordinator(base.procs, node_id, ha_config(base_config, node_id, ports, peer_ports, certs))
            self.nodes[node_id] = Node(node_id, coordinator, **{f"{k}_port": v for k, v in ports[node_id].items()})
        self.workers: list[Worker] = []
        # One thread per coordinator for asking all at once, each keeping its HTTP client.
        self._pool = ThreadPoolExecutor(len(self.nodes), thread_name_prefix="ask")

    # ------------------------------------------------------------------ processes

    def start(self, workers: int = 2) -> HaCluster:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(Node.start, self.nodes.values()))
        self.leader()
        for i in range(1, workers + 1):
            self.start_worker(f"worker-{i}")
        if workers:
            self.wait_workers()
        return self

    def start_worker(self, worker_id: str) -> Worker:
        first, *others = [n.grpc_address for n in self.nodes.values()]
        home = self.root / worker_id
        config = {
            "worker": {"id": worker_id, "name": worker_id, "labels": {}},
            "coordinator": {
                "url": f"http://{first}",
                "fallback_urls": [f"http://{a}" for a in others],
                "api_key": self.any_node.coordinator.token("worker"),
            },
            "execution": {"concurrent_tasks": 4, "working_dir": str(home / "work"), "cache_dir": str(home / "cache")},
        }
        worker = Worker(self.base.procs, worker_id, config, grace_s=1.0)
        self.workers.append(worker)
        return worker.start()

    def wait_workers(self, timeout: float = 60.0) -> None:
        wanted = {w.worker_id for w in self.workers}

        def registered() -> bool:
            workers = self.leader().get_json("/api/workers")
            rows = (workers["data"] if isinstance(workers, dict) else workers) or []
            return wanted <= {w["worker_id"] for w in rows if w["status"] in ("online", "busy", "error")}

        wait_until(registered, timeout, f"workers {sorted(wanted)} to register")

    @property
    def any_node(self) -> Node:
        return next(iter(self.nodes.values()))

    def others(self, *nodes: Node) -> list[Node]:
        return [n for n in self.nodes.values() if n not in nodes]

    def statuses(self, **params: Any) -> dict[str, dict[str, Any] | None]:
        """Every coordinator's /api/status, asked all at once (None: no answer)."""
        answers = self._pool.map(lambda n: n.status(**params), self.nodes.values())
        return dict(zip(self.nodes, answers, strict=True))

    def leader(self, timeout: float = 30.0, among: Iterable[Node] | None = None) -> Node:
        """The leader a majority follows: a node that says it leads and that another node
        names as its leader (a cut-off old leader may still believe it leads; nobody
        follows it)."""
        candidates = {n.node_id for n in (among if among is not None else self.nodes.values())}

        def find() -> Node | None:
            statuses = self.statuses()
            for node_id, status in statuses.items():
                if status is None or not status["is_leader"] or node_id not in candidates:
                    continue
                if any(s and s["leader_id"] == node_id for n, s in statuses.items() if n != node_id):
                    return self.nodes[node_id]
            return None

        return wait_until(find, timeout, lambda: f"a leader followed by a majority: {self.statuses()}")

    def caught_up(self, timeout: float = 60.0) -> None:
        """Until every coordinator has applied what the leader had applied when asked."""
        index = self.leader().applied()

        def applied() -> bool:
            return all(s is not None and s["applied_index"] >= index for s in self.statuses().values())

        wait_until(applied, timeout, lambda: f"every node to apply index {index}: {self.statuses()}")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.net is not None:
            self.net.close()


# ---------------------------------------------------------------------- load


@dataclass
class Load:
    """Submits one short task at a time to each coordinator, from a thread per coordinator,
    and remembers which submissions were acknowledged (201). A submission that failed or
    got no answer is not retried: it may or may not have been taken, and the verdict only
    holds the cluster to what it acknowledged."""

    cluster: HaCluster
    pause_s: float = 0.4
    acked: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for node in self.cluster.nodes.values():
            thread = threading.Thread(target=self._run, args=(node,), name=f"load-{node.node_id}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, node: Node) -> None:
        headers = {"Authorization": f"Bearer {node.token()}"}
        with httpx.Client(base_url=node.api_url, headers=headers, timeout=SUBMIT_TIMEOUT_S) as client:
            while not self._stop.is_set():
                task = task_spec()
                try:
                    response = client.post("/api/tasks", json=[task])
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                else:
                    outcome = str(response.status_code)
                    if response.status_code == 201 and response.json()["task_ids"] == [task["task_id"]]:
                        with self._lock:
                            self.acked.append(task["task_id"])
                with self._lock:
                    self.outcomes[outcome] += 1
                self._stop.wait(self.pause_s)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def progress(self, more: int = 5, timeout: float = 60.0) -> None:
        """Until `more` further submissions are acknowledged: the cluster takes writes."""
        target = self.count + more
        wait_until(lambda: self.count >= target, timeout, lambda: f"{more} more acknowledged writes ({self.outcomes})")

    def stop(self) -> list[str]:
        self._stop.set()
        for thread in self._threads:
            thread.join(SUBMIT_TIMEOUT_S + 5)
        with self._lock:
            return list(self.acked)


# ---------------------------------------------------------------------- leaders


@dataclass
class LeaderWatch:
    """Collects, from every coordinator, every (term, leader) it reports: its current view
    and its leadership history. Two leaders for one term would be a split brain."""

    cluster: HaCluster
    interval_s: float = 0.2
    leaders: dict[int, set[str]] = field(default_factory=dict)
    reports: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LeaderWatch:
        for node in self.cluster.nodes.values():
            thread = threading.Thread(target=self._run, args=(node,), name=f"watch-{node.node_id}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, node: Node) -> None:
        while not self._stop.is_set():
            info = node.get_json("/api/cluster/leader")
            if info is not None:
                seen = [(info["current_term"], info["leader_id"])]
                seen += [(c["term"], c["new_leader_id"]) for c in info["leadership_history"]]
                with self._lock:
                    self.reports += 1
                    for term, leader in seen:
                        if leader is not None:
                            self.leaders.setdefault(term, set()).add(leader)
            self._stop.wait(self.interval_s)

    def split_terms(self) -> dict[int, set[str]]:
        with self._lock:
            return {term: set(ids) for term, ids in self.leaders.items() if len(ids) > 1}

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(POLL_TIMEOUT_S + 5)


# ---------------------------------------------------------------------- the verdict


def _tasks_on(node: Node) -> dict[str, dict[str, Any]]:
    with node.client() as client:
        return {t["task_id"]: t for t in all_pages(client.tasks)}


def verify_healed(cluster: HaCluster, acked: Iterable[str], watch: LeaderWatch, timeout: float = 90.0) -> None:
    """After the faults, with every node running and every link mended:

    - every acknowledged task is on every node, and every task there completes;
    - every node's results store holds exactly one result per completed task;
    - no term had two leaders;
    - every node holds the same state (equal fingerprints at the same applied index).
    """
    acked = set(acked)
    assert acked, "the load should have had some writes acknowledged"
    for node in cluster.nodes.values():

        def finished(node: Node = node) -> dict[str, dict[str, Any]] | None:
            tasks = _tasks_on(node)
            if not acked <= tasks.keys():
                return None  # still catching up, or lost: the deadline tells which
            not_completed = [tasks[t] for t in acked if tasks[t]["status"] in FINAL - {"completed"}]
            assert not not_completed, f"acknowledged tasks did not complete on {node.node_id}: {not_completed[:3]}"
            return tasks if all(t["status"] in FINAL for t in tasks.values()) else None

        def missing(node: Node = node) -> str:
            tasks = _tasks_on(node)
            unfinished = [(t, task["status"]) for t, task in tasks.items() if task["status"] not in FINAL]
            return (
                f"{node.node_id} to hold every acknowledged task, all finished: "
                f"missing {sorted(acked - tasks.keys())[:5]}, unfinished {unfinished[:5]}"
            )

        tasks = wait_until(finished, timeout, missing)
        completed = {t for t, task in tasks.items() if task["status"] == "completed"}

        def recorded(node: Node = node, completed: set[str] = completed) -> Counter[str] | None:
            with node.client() as client:
                per_task = Counter(r["task_id"] for r in all_pages(client.results))
            return per_task if completed <= per_task.keys() else None

        per_task = wait_until(recorded, timeout, f"{node.node_id}'s results store to hold every result")
        twice = {t: n for t, n in per_task.items() if n > 1}
        assert not twice, f"{node.node_id} recorded tasks more than once: {twice}"

    assert watch.reports > 0, "the leader watch heard from no coordinator"
    assert not watch.split_terms(), f"two leaders in one term: {watch.split_terms()}"
    same_state(cluster, timeout)


def same_state(cluster: HaCluster, timeout: float = 60.0) -> str:
    """Until every node reports the same applied index with the same state fingerprint;
    fails at once if two nodes ever report different states at the same index."""
    by_index: dict[int, dict[str, str]] = {}

    def converged() -> str | None:
        statuses = cluster.statuses(fingerprint="true")
        seen: dict[str, tuple[int, str]] = {
            n: (s["applied_index"], s["state_fingerprint"]) for n, s in statuses.items() if s is not None
        }
        for node_id, (index, fingerprint) in seen.items():
            by_index.setdefault(index, {})[node_id] = fingerprint
            assert len(set(by_index[index].values())) == 1, f"different states at index {index}: {by_index[index]}"
        if len(seen) == len(cluster.nodes) and len(set(seen.values())) == 1:
            return next(iter(seen.values()))[1]
        return None

    fingerprint: str = wait_until(converged, timeout, "every node to reach the same state")
    return fingerprint


# ---------------------------------------------------------------------- the disk


def log_records(raft_dir: Path) -> list[tuple[int, int]]:
    """(offset, length) of every whole record in a node's log.bin, header included."""
    data = (raft_dir / LOG_NAME).read_bytes()
    records, pos = [], 0
    while pos + HEADER.size <= len(data):
        length, _crc = HEADER.unpack_from(data, pos)
        if pos + HEADER.size + length > len(data):
            break
        records.append((pos, HEADER.size + length))
        pos += HEADER.size + length
    return records


def tear_last_record(raft_dir: Path) -> int:
    """Cut log.bin in the middle of its last whole record, as a crash mid-write leaves it;
    returns how many bytes from that record's start on are left (the torn tail)."""
    offset, length = log_records(raft_dir)[-1]
    with open(raft_dir / LOG_NAME, "r+b") as f:
        f.truncate(offset + length // 2)
    return length // 2


def flip_last_record(raft_dir: Path) -> int:
    """Flip the bits of one byte in the payload of the last whole record of log.bin;
    returns how many bytes from that record's start on the file holds."""
    offset, length = log_records(raft_dir)[-1]
    path = raft_dir / LOG_NAME
    at = offset + HEADER.size + (length - HEADER.size) // 2
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    return path.stat().st_size - offset


def torn_bytes_dropped(node: Node) -> int:
    """What the node's latest start reported dropping from its log's tail."""
    found = re.findall(r"\((\d+) bytes of torn tail dropped\)", node.starts_logged()[-1])
    assert found, f"{node.node_id}'s latest start did not report on its log"
    return int(found[-1])


def last_log_index(raft_dir: Path) -> int:
    """The index of the last entry in a stopped node's log (or its snapshot's, if the log is empty)."""
    records = log_records(raft_dir)
    if not records:
        return snapshot_index(raft_dir)
    offset, length = records[-1]
    entry = commands_pb2.LogEntry()
    entry.ParseFromString((raft_dir / LOG_NAME).read_bytes()[offset + HEADER.size : offset + length])
    index: int = entry.index
    return index


def snapshot_index(raft_dir: Path) -> int:
    """The last index a node's snapshot covers (0: none yet)."""
    path = raft_dir / SNAPSHOT
    try:
        index: int = json.loads(unframe_snapshot(path.read_bytes(), path))["index"]
    except (FileNotFoundError, ValueError):
        return 0
    return index
