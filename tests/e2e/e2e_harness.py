"""Real dtf processes for the end-to-end tests: coordinators, workers and CLI commands.

Every process is started with `python -m dtf.cli.main ...` (or the worker daemon's own
entry point where a test needs a setting the CLI does not offer) in its own session,
with its output in a log file under the test's tmp_path, and with `DTF_E2E_RUN` set to a
value unique to the test. Task processes inherit that variable, so `ProcessSet.kill_all`
finds and kills them too, even after the worker that started them was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import yaml

from dtf.client import DtfClient
from dtf_common import errors
from dtf_coordinator.auth import create_token

T = TypeVar("T")

POLL_S = 0.05
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
FINAL = frozenset({"completed", "failed", "cancelled"})
# Errors a poll may meet while a coordinator restarts.
TRANSIENT: tuple[type[BaseException], ...] = (errors.Unavailable, httpx.TransportError)


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    message: str | Callable[[], str] = "condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` every 50 ms until it returns something truthy, and return that.

    `timeout` only guards against a hang: running out fails the test with `message`
    (a string, or a function giving one, called then) and the last value seen.
    Exceptions of the `ignore` types count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        time.sleep(POLL_S)


def command_task(code: str, **fields: Any) -> dict[str, Any]:
    """A `command` task running `python -c code` with this interpreter."""
    return {"type": "command", "parameters": {"command": [sys.executable, "-c", code]}, **fields}


def all_pages(fetch: Callable[..., dict[str, Any]], **filters: Any) -> list[dict[str, Any]]:
    """Every item of a paged listing (`client.tasks`, `client.results`)."""
    items: list[dict[str, Any]] = []
    while True:
        page = fetch(offset=len(items), limit=1000, **filters)
        items.extend(page["data"])
        if not page["data"] or len(items) >= page["count"]:
            return items


# ---------------------------------------------------------------------- processes


@dataclass
class Proc:
    """One child process, in its own session, writing to its own log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    cwd: Path | None = None

    def start(self) -> Proc:
        assert not self.alive(), f"{self.name} is already running"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill9(self) -> None:
        """SIGKILL the process, its process group and every descendant (task processes run
        in sessions of their own): as if the machine under it had died."""
        if not self.alive():
            return
        below = self.descendants()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for child in below:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        assert self.popen is not None
        self.popen.wait(STOP_TIMEOUT_S)

    def terminate(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """The exit status; fails the test if the process does not exit within `timeout`."""
        assert self.popen is not None, f"{self.name} was never started"
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f}s\n{self.tail()}") from None

    def tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return text[-chars:]


class ProcessSet:
    """Every process a test started, so teardown can kill them all and a failure show their logs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run_id = secrets.token_hex(8)
        self.procs: list[Proc] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
        env.update({"DTF_E2E_RUN": self.run_id, "PYTHONUNBUFFERED": "1"})
        env.update(extra or {})
        return env

    def new(self, name: str, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        proc = Proc(name, [sys.executable, *args], self.root / "logs" / f"{name}.log", self.env(env), cwd=cwd)
        self.procs.append(proc)
        return proc

    def logs(self, chars: int = 3000) -> str:
        parts = []
        for proc in self.procs:
            state = "running" if proc.alive() else f"exited {proc.popen.returncode if proc.popen else '-'}"
            parts.append(f"----- {proc.name} ({state}): {proc.log_path}\n{proc.tail(chars)}")
        return "\n".join(parts)

    def kill_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.kill9()
        # Task processes of workers killed earlier were re-parented: find them by their tag.
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.pid != os.getpid() and process.environ().get("DTF_E2E_RUN") == self.run_id:
                    process.kill()


# ---------------------------------------------------------------------- coordinator


def coordinator_config(root: Path, name: str, secret: str, **overrides: dict[str, Any]) -> dict[str, Any]:
    """A coordinator.yaml for tests: loopback, any free ports, short timings."""
    config: dict[str, dict[str, Any]] = {
        "server": {"host": "127.0.0.1", "port": 0, "workers_port": 0, "data_dir": str(root / name / "data")},
        "database": {"type": "duckdb", "path": str(root / name / "results.duckdb")},
        "security": {"jwt_secret": secret},
        "health_monitor": {"heartbeat_interval": 0.3, "failure_threshold": 3, "check_interval": 0.2},
        "task_scheduler": {"lease_timeout": 2.0, "retry_backoff": 0.1},
    }
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    return config


@dataclass
class Coordinator:
    """A `dtf coordinator` process and what it needs: its config file, secret and tokens."""

    procs: ProcessSet
    name: str
    config: dict[str, Any]
    proc: Proc | None = None
    info: dict[str, Any] = field(default_factory=dict)
    starts: int = 0

    @property
    def root(self) -> Path:
        return self.procs.root / self.name

    @property
    def config_path(self) -> Path:
        return self.root / "coordinator.yaml"

    @property
    def data_dir(self) -> Path:
        return Path(self.config["server"]["data_dir"])

    @property
    def secret(self) -> str:
        secret: str = self.config["security"]["jwt_secret"]
        return secret

    @property
    def api_url(self) -> str:
        url: str = self.info["api_url"]
        return url

    @property
    def grpc_address(self) -> str:
        address: str = self.info["grpc_address"]
        return address

    def token(self, role: str, subject: str | None = None) -> str:
        return create_token(self.secret, role, subject=subject or f"e2e-{role}")

    def client(self, role: str = "admin") -> DtfClient:
        return DtfClient(self.api_url, self.token(role))

    def start(self) -> Coordinator:
        """Start the process and wait until it has written coordinator.json with its own pid.

        A restart keeps the ports of the first start, so workers find it again."""
        if self.info:
            self.config["server"]["port"] = int(self.api_url.rsplit(":", 1)[1])
            self.config["server"]["workers_port"] = int(self.grpc_address.rsplit(":", 1)[1])
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        if self.proc is None:
            self.proc = self.procs.new(
                self.name, ["-m", "dtf.cli.main", "coordinator", "--config", str(self.config_path)]
            )
        proc = self.proc
        proc.start()
        self.starts += 1
        ready = self.data_dir / "coordinator.json"

        def ready_info() -> dict[str, Any] | None:
            if not proc.alive():
                raise AssertionError(f"{self.name} exited while starting:\n{proc.tail()}")
            with contextlib.suppress(FileNotFoundError, ValueError):
                info: dict[str, Any] = json.loads(ready.read_text())
                if info.get("pid") == proc.pid:
                    return info
            return None

        self.info = wait_until(ready_info, START_TIMEOUT_S, lambda: f"{self.name} to be ready:\n{proc.tail()}")
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()

    def stop(self) -> int:
        """SIGTERM, and the exit status."""
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait()


# ---------------------------------------------------------------------- worker


@dataclass
class Worker:
    """A worker daemon process with its own worker.yaml and working directory."""

    procs: ProcessSet
    worker_id: str
    config: dict[str, Any]
    grace_s: float | None = None
    proc: Proc | None = None

    @property
    def config_path(self) -> Path:
        return self.procs.root / self.worker_id / "worker.yaml"

    def start(self) -> Worker:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        if self.proc is None:
            if self.grace_s is None:
                args = ["-m", "dtf.cli.main", "worker", "--config", str(self.config_path)]
            else:
                # `dtf worker` has no option for the shutdown grace period (30 s): run the
                # same daemon through its entry point with a shorter one.
                code = (
                    "import sys; from dtf_worker.daemon import main; "
                    "sys.exit(main(sys.argv[1], grace_s=float(sys.argv[2])))"
                )
                args = ["-c", code, str(self.config_path), str(self.grace_s)]
            self.proc = self.procs.new(self.worker_id, args)
        self.proc.start()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()


# ---------------------------------------------------------------------- the test's cluster


class Cluster:
    """What one test starts: coordinators, workers and CLI commands, all under tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs = ProcessSet(root)
        self.coordinators: list[Coordinator] = []
        self.workers: list[Worker] = []
        self._clients: list[DtfClient] = []

    @property
    def coordinator(self) -> Coordinator:
        assert self.coordinators, "start a coordinator first"
        return self.coordinators[0]

    def start_coordinator(self, *, start: bool = True, **overrides: dict[str, Any]) -> Coordinator:
        name = f"coordinator-{len(self.coordinators) + 1}"
        secret = secrets.token_urlsafe(24)[:32]
        coordinator = Coordinator(self.procs, name, coordinator_config(self.root, name, secret, **overrides))
        self.coordinators.append(coordinator)
        return coordinator.start() if start else coordinator

    def start_worker(
        self,
        worker_id: str,
        *,
        concurrent_tasks: int = 1,
        grace_s: float | None = None,
        labels: dict[str, str] | None = None,
        start: bool = True,
    ) -> Worker:
        coordinator = self.coordinator
        home = self.root / worker_id
        config = {
            "worker": {"id": worker_id, "name": worker_id, "labels": labels or {}},
            "coordinator": {"url": f"http://{coordinator.grpc_address}", "api_key": coordinator.token("worker")},
            "execution": {
                "concurrent_tasks": concurrent_tasks,
                "working_dir": str(home / "work"),
                "cache_dir": str(home / "cache"),
            },
        }
        worker = Worker(self.procs, worker_id, config, grace_s=grace_s)
        self.workers.append(worker)
        return worker.start() if start else worker

    def client(self, role: str = "admin") -> DtfClient:
        client = self.coordinator.client(role)
        self._clients.append(client)
        return client

    def api(self, method: str, path: str, *, role: str | None = "admin", **kwargs: Any) -> httpx.Response:
        """One raw HTTP request to the coordinator's API, with a token for `role` (None: no token)."""
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers.setdefault("Authorization", f"Bearer {self.coordinator.token(role)}")
        return httpx.request(method, self.coordinator.api_url + path, headers=headers, timeout=30.0, **kwargs)

    def cli(
        self, name: str, *args: str, timeout: float = 60.0, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `dtf ARGS...` to the end; stdout and stderr come back as text (and in its log)."""
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "dtf.cli.main", *args]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.procs.env({"COLUMNS": "120"}),
            cwd=cwd or self.root,
            stdin=subprocess.DEVNULL,
        )
        log.write_text(
            f"$ {' '.join(argv)}\nexit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
        return done

    def write_connection(self, path: Path | None = None) -> Path:
        """A connection.json for `dtf --connection`, as `dtf up` writes one."""
        path = path or self.root / "connection.json"
        info = {
            "api_url": self.coordinator.api_url,
            "grpc_address": self.coordinator.grpc_address,
            "admin_token": self.coordinator.token("admin"),
        }
        path.write_text(json.dumps(info))
        return path

    def worker_by_id(self, worker_id: str) -> dict[str, Any]:
        return {w["worker_id"]: w for w in self._any_client().workers()}[worker_id]

    def _any_client(self) -> DtfClient:
        return self._clients[0] if self._clients else self.client()

    def wait_workers(self, *worker_ids: str, timeout: float = 30.0) -> None:
        """Until each of these workers is registered and not offline. ("error" is a health
        verdict, such as a busy CPU on a small test machine; such a worker still takes work.)"""
        client = self._any_client()

        def ready() -> bool:
            status = {w["worker_id"]: w["status"] for w in client.workers()}
            return all(status.get(w) in ("online", "busy", "error") for w in worker_ids)

        wait_until(ready, timeout, f"workers {worker_ids} to register", ignore=TRANSIENT)

    def wait_final(self, task_ids: Iterable[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        """Until every one of these tasks is completed, failed or cancelled; returns them by id."""
        client = self._any_client()
        wanted = set(task_ids)

        def finished() -> dict[str, dict[str, Any]] | None:
            # The status counts are cheap: list the tasks only once enough are final.
            status = client.status()
            # A cluster of one is always its own leader; not being one means it stopped taking writes.
            assert status["is_leader"], f"the coordinator is not taking writes:\n{self.procs.logs()}"
            if sum(n for s, n in status["tasks"].items() if s in FINAL) < len(wanted):
                return None
            tasks = {t["task_id"]: t for t in all_pages(client.tasks) if t["task_id"] in wanted}
            missing = wanted - tasks.keys()
            assert not missing, f"tasks unknown to the coordinator: {sorted(missing)[:5]}"
            return tasks if all(t["status"] in FINAL for t in tasks.values()) else None

        return wait_until(finished, timeout, f"{len(wanted)} tasks to finish", ignore=TRANSIENT)

    def close(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self.procs.kill_all()
