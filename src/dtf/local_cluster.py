"""`dtf up`: a coordinator and N workers on this machine, supervised.

Everything lives in the data directory: a generated secret, the coordinator's and the
workers' config files, the command log, the DuckDB results store, logs, and
`connection.json` (api_url, grpc_address, admin_token, and each process) for scripts
and other shells. Started again on the same directory it resumes where it stopped.
A process that dies is restarted, as a Kubernetes StatefulSet would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dtf.connection import LOCAL_TOKEN_S, local_admin_token
from dtf_common.errors import Unavailable
from dtf_common.private import open_private, private_dir
from dtf_common.worker_env import INDEX_VARIABLE

READY_TIMEOUT_S = 60.0
# What every local coordinator shares: the secret from the environment, and quick
# detection of a lost worker (a local one restarts within a second or two).
# How long the workers of a cluster that stops itself once idle outlive its coordinator.
WORKER_EXIT_WHEN_LOST_S = 10.0
LOCAL_SETTINGS: dict[str, Any] = {
    "security": {"jwt_secret": "${DTF_JWT_SECRET}"},
    "health_monitor": {"heartbeat_interval": 1.0, "failure_threshold": 5, "check_interval": 1.0},
    "task_scheduler": {"lease_timeout": 10.0},
}


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _grpc_address(coordinator_config: Path) -> str:
    server = yaml.safe_load(coordinator_config.read_text())["server"]
    return f"{server['host']}:{server['workers_port']}"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0

    def due_for_restart(self, now: float) -> bool:
        """A child that keeps dying is restarted with exponential backoff (0.5 s to 30 s)."""
        if self.alive():
            return False
        if self.next_start == 0.0:
            quick = now - self.started_at < 10
            self.restarts = self.restarts + 1 if quick else 1
            self.next_start = now + (min(30.0, 0.5 * 2 ** (self.restarts - 1)) if quick else 0.0)
        return now >= self.next_start

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.next_start = 0.0
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = os.fdopen(open_private(self.log_path), "ab")  # handed to the child
        self.process = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True
        )
        log.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class LocalCluster:
    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 2,
        concurrency: int = 1,
        host: str = "127.0.0.1",
        port: int = 8080,
        grpc_port: int = 8081,
        labels: dict[str, str] | None = None,
        coordinators: int = 1,
        idle_shutdown: float = 0.0,
        announce: bool = False,
    ) -> None:
        """`idle_shutdown`: seconds after which an idle coordinator stops itself, and its
        workers follow (0 = never; `dtf run`'s clusters). `announce`: write connection.json
        as the processes start, marked not ready, for another process to wait on (`dtf
        run`); else only once the coordinators are ready (`dtf up`)."""
        if coordinators < 1 or coordinators % 2 == 0:
            raise ValueError("--coordinators must be 1 or an odd number (3, 5): Raft needs a majority")
        self.dir = data_dir.resolve()
        self.n_coordinators = coordinators
        self.n_workers = workers
        self.concurrency = concurrency
        self.host = host
        self.port = port
        self.grpc_port = grpc_port
        self.labels = labels or {}
        self.idle_shutdown = idle_shutdown
        self.announce = announce
        self.coordinators: list[Child] = []
        self.workers: list[Child] = []
        self.info: dict[str, Any] = {}
        # Set by `launch_coordinators` for `launch_workers`: the cluster's secret, and where
        # the workers find the coordinators.
        self._secret_value = ""
        self._grpc_addresses: list[str] = []
        self.ready: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ set-up

    def _secret(self) -> str:
        path = self.dir / "secret"
        if path.exists():
            return path.read_text().strip()
        secret = secrets.token_urlsafe(32)
        _write_private(path, secret)
        return secret

    def _choose_ports(self) -> None:
        """Concrete ports (0 or a taken one: a free one), so that the connection can be
        written before the coordinator listens."""
        if self.port == 0 or not _port_free(self.host, self.port):
            self.port = _free_port(self.host)
        if self.grpc_port in (0, self.port) or not _port_free(self.host, self.grpc_port):
            self.grpc_port = _free_port(self.host)

    def _coordinator_config(self) -> Path:
        path = self.dir / "coordinator.yaml"
        if not path.exists():
            config = {
                "server": {"host": self.host, "data_dir": str(self.dir / "coordinator")},
                "database": {"type": "duckdb", "path": str(self.dir / "results.duckdb")},
                **LOCAL_SETTINGS,
            }
            path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _ha_configs(self) -> list[Path]:
        """One config per coordinator of a local HA cluster, with its certificates.

        Ports are chosen once and written into the files, so a restarted coordinator comes
        back where its peers and workers expect it.
        """
        from dtf_common.tls import create_ca, create_node_cert

        ids = [f"coordinator-{i}" for i in range(1, self.n_coordinators + 1)]
        paths = [self.dir / f"{node_id}.yaml" for node_id in ids]
        if all(path.exists() for path in paths):
            return paths
        certs = self.dir / "certs"
        create_ca(certs)
        ports = {node_id: {k: _free_port(self.host) for k in ("api", "grpc", "raft")} for node_id in ids}
        if _port_free(self.host, self.port):
            ports[ids[0]]["api"] = self.port
        nodes = {
            node_id: {
                "id": node_id,
                "host": self.host,
                "port": ports[node_id]["raft"],
                "api_url": f"http://{self.host}:{ports[node_id]['api']}",
                "grpc_address": f"{self.host}:{ports[node_id]['grpc']}",
            }
            for node_id in ids
        }
        for node_id, path in zip(ids, paths, strict=True):
            cert = create_node_cert(certs, node_id, [self.host, "localhost"])
            config = {
                "server": {
                    "host": self.host,
                    "port": ports[node_id]["api"],
                    "workers_port": ports[node_id]["grpc"],
                    "data_dir": str(self.dir / node_id),
                },
                "database": {"type": "duckdb", "path": str(self.dir / f"results-{node_id}.duckdb")},
                **LOCAL_SETTINGS,
                "high_availability": {
                    "enabled": True,
                    "coordinator_id": node_id,
                    "raft_port": ports[node_id]["raft"],
                    "peers": [nodes[other] for other in ids if other != node_id],
                    "tls": {"ca_file": str(cert.ca), "cert_file": str(cert.cert), "key_file": str(cert.key)},
                },
            }
            path.write_text(yaml.safe_dump(config, sort_keys=False))
        return paths

    def _worker_config(self, i: int, grpc_addresses: list[str], token: str) -> Path:
        path = self.dir / f"worker-{i}.yaml"
        first, *others = grpc_addresses
        config = {
            "worker": {"id": f"local-worker-{i}", "name": f"local worker {i}", "labels": self.labels},
            "coordinator": {
                "url": f"http://{first}",
                "api_key": token,
                "fallback_urls": [f"http://{a}" for a in others],
                # A coordinator that stops itself once idle takes its workers with it.
                "exit_when_lost": WORKER_EXIT_WHEN_LOST_S if self.idle_shutdown > 0 else 0,
            },
            "execution": {"concurrent_tasks": self.concurrency, "working_dir": str(self.dir / "workers" / str(i))},
            "health": {"report_interval": 5},
        }
        _write_private(path, yaml.safe_dump(config, sort_keys=False))
        return path

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> dict[str, Any]:
        """Start the cluster and return its connection once every coordinator is ready."""
        self.launch()
        return self.await_ready()

    def launch(self) -> None:
        """Start the coordinators and then, without waiting for them, the workers: a worker
        imports, fingerprints the machine and warms its pytest server while the coordinators
        start, and registers as soon as they listen (`dtf_worker.daemon`)."""
        self.launch_coordinators()
        self.launch_workers()

    def launch_coordinators(self) -> None:
        """The first half of `launch`."""
        private_dir(self.dir)
        secret = self._secret()
        if self.n_coordinators == 1:
            self._choose_ports()
            config = self._coordinator_config()  # the secret reaches it as DTF_JWT_SECRET
            self.coordinators = [
                Child(
                    "coordinator",
                    [sys.executable, "-m", "dtf.cli.main", "coordinator", "--config", str(config)],
                    self.dir / "logs" / "coordinator.log",
                    env={
                        "DTF_JWT_SECRET": secret,
                        "DTF_SERVER__PORT": str(self.port),
                        "DTF_SERVER__WORKERS_PORT": str(self.grpc_port),
                        "DTF_SERVER__IDLE_SHUTDOWN": str(self.idle_shutdown),
                    },
                )
            ]
            grpc_addresses = [f"{self.host}:{self.grpc_port}"]
        else:
            paths = self._ha_configs()
            self.coordinators = [
                Child(
                    path.stem,
                    [sys.executable, "-m", "dtf.cli.main", "coordinator", "--config", str(path)],
                    self.dir / "logs" / f"{path.stem}.log",
                    env={"DTF_JWT_SECRET": secret},
                )
                for path in paths
            ]
            grpc_addresses = [_grpc_address(path) for path in paths]
        for child in self.coordinators:
            child.start()
        self._secret_value, self._grpc_addresses = secret, grpc_addresses

    def launch_workers(self, env: dict[str, str] | None = None) -> None:
        """The second half of `launch`, once `launch_coordinators` has started them; `env`:
        variables the workers get beside this process's environment."""
        from dtf_common.tokens import create_token  # after the coordinators are on their way

        secret, grpc_addresses = self._secret_value, self._grpc_addresses
        # A join token: the workers enrol with it once, then use their own credentials.
        token = create_token(secret, "worker", subject="local-workers", expires_in=LOCAL_TOKEN_S)
        self._start_workers(grpc_addresses, token, env or {})
        self.info = {
            "api_url": f"http://{self.host}:{self.port}" if self.n_coordinators == 1 else "",
            "grpc_address": grpc_addresses[0],
            "admin_token": local_admin_token(secret),  # expires: readers mint their own (dtf.connection)
            "data_dir": str(self.dir),
        }
        if self.announce and self.n_coordinators == 1:
            # Written at once, marked not ready: another process (the pytest session that
            # `dtf run` becomes) finds the cluster starting here, and waits for it.
            self.ready = {"coordinator": {"api_url": self.info["api_url"], "grpc_address": grpc_addresses[0]}}
            self._write_connection(ready=False)

    def await_ready(self) -> dict[str, Any]:
        """Wait for every coordinator launched to be ready; write and return the connection."""
        try:
            ready = [self._await_ready(child) for child in self.coordinators]
        except BaseException:
            self.stop()  # leave nothing behind a coordinator that did not come up
            raise
        self.ready = {child.name: info for child, info in zip(self.coordinators, ready, strict=True)}
        self.info |= {"api_url": ready[0]["api_url"], "grpc_address": ready[0]["grpc_address"]}
        self._write_connection(ready=True)
        return self.info

    def _start_workers(self, grpc_addresses: list[str], token: str, env: dict[str, str]) -> None:
        for i in range(1, self.n_workers + 1):
            path = self._worker_config(i, grpc_addresses, token)
            child = Child(
                f"worker-{i}",
                [sys.executable, "-m", "dtf.cli.main", "worker", "--config", str(path)],
                self.dir / "logs" / f"worker-{i}.log",
                # Its place among this machine's workers: batches that play xdist workers get
                # ids (gwN) that no two running at once share.
                env={**env, INDEX_VARIABLE: str(i - 1)},
            )
            child.start()
            self.workers.append(child)

    def _ready_file(self, child: Child) -> Path:
        name = "coordinator" if self.n_coordinators == 1 else child.name
        return self.dir / name / "coordinator.json"

    def _await_ready(self, child: Child) -> dict[str, Any]:
        ready_file = self._ready_file(child)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not child.alive():
                tail = child.log_path.read_text()[-2000:]
                raise Unavailable(f"{child.name} exited during start-up:\n{tail}")
            try:
                info: dict[str, Any] = json.loads(ready_file.read_text())
                if info.get("pid") == child.pid:
                    return info
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise Unavailable(f"{child.name} did not become ready in {READY_TIMEOUT_S:.0f}s (see {child.log_path})")

    def _write_connection(self, *, ready: bool) -> None:
        info = {
            **self.info,
            "ready": ready,
            "coordinators": [
                {
                    "id": self.ready[child.name].get("node_id", "coordinator-1"),
                    "api_url": self.ready[child.name]["api_url"],
                    "grpc_address": self.ready[child.name]["grpc_address"],
                    "pid": child.pid,
                }
                for child in self.coordinators
            ],
            "workers": [{"id": f"local-worker-{i + 1}", "pid": w.pid} for i, w in enumerate(self.workers)],
        }
        _write_private(self.dir / "connection.json", json.dumps(info, indent=2))

    def supervise_once(self) -> list[str]:
        """Restart any process that died; returns the names restarted."""
        restarted = []
        now = time.monotonic()
        for child in self.coordinators:
            if child.due_for_restart(now):
                child.start()
                self.ready[child.name] = self._await_ready(child)
                restarted.append(child.name)
        for child in self.workers:
            if child.due_for_restart(now):
                child.start()
                restarted.append(child.name)
        if restarted:
            self._write_connection(ready=True)
        return restarted

    def stop(self) -> None:
        for child in self.workers:
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.workers:
            child.stop()
        for child in self.coordinators:
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.coordinators:
            child.stop()


def _our_process(pid: int) -> Any:
    """The psutil.Process of `pid` when it is a dtf process (not a reused pid), else None."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc if any("dtf" in part for part in proc.cmdline()) else None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def stop_data_dir(data_dir: Path, timeout: float = 30.0) -> int | None:
    """Stop the cluster of a data directory (`dtf down`): SIGTERM to a `dtf up` supervising
    it (which would restart what it loses, and stops its children in order), else to the
    workers and then to the coordinators (while a worker stops, its coordinator still
    tells it which tasks were cancelled); SIGKILL to what is left after `timeout` seconds.
    How many processes were stopped; None when the directory has no readable
    connection.json."""
    import psutil

    try:
        info = json.loads((data_dir / "connection.json").read_text())
    except (OSError, ValueError):
        return None

    def ours(entries: list[dict[str, Any]]) -> list[Any]:
        pids = [int(c["pid"]) for c in entries if c.get("pid")]
        return [p for p in (_our_process(pid) for pid in pids) if p is not None]

    workers, coordinators = ours(info.get("workers", [])), ours(info.get("coordinators", []))
    supervisors: dict[int, Any] = {}
    for proc in workers + coordinators:
        try:
            parent = proc.parent()
            if parent is not None and "up" in parent.cmdline() and _our_process(parent.pid) is not None:
                supervisors[parent.pid] = parent
        except psutil.Error:
            pass
    stages = [list(supervisors.values()), workers, coordinators]
    for stage in stages:
        for proc in stage:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _gone, alive = psutil.wait_procs(stage, timeout=timeout)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
    return len({p.pid for stage in stages for p in stage})
