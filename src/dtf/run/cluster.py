"""Finding the cluster a run goes to, and what it needs from it.

A remote coordinator (`--coordinator URL` with a token, or `--connection FILE`), else the
live cluster in the data directory, else the one starting there, else a coordinator and N
workers started for the run. A local cluster is known by its data directory alone (its
`connection.json`, written as it starts), so `dtf run` can start it before it becomes
the pytest session that uses it, and the cluster can outlive the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dtf.connection import CONNECTION_FILE, read_connection
from dtf.run.args import batch_pytest_args
from dtf.run.config import RunConfig
from dtf_common.errors import Unavailable
from dtf_common.worker_env import PREWARM_VARIABLE

# How long a warm or remote cluster may take to show a live worker.
WORKERS_WAIT_S = 15.0
LIVE_WORKER = frozenset({"online", "busy"})
# How long a coordinator started for a run may take to answer.
READY_TIMEOUT_S = 60.0


class WorkerLister(Protocol):
    def workers(self) -> list[dict[str, Any]]: ...


def _connection(data_dir: Path, *, fresh_token: bool = True) -> dict[str, Any] | None:
    try:
        info = read_connection(data_dir / CONNECTION_FILE, fresh_token=fresh_token)
        str(info["api_url"]), str(info["admin_token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def _healthy(url: str) -> bool:
    import httpx

    from dtf.client import needs_certificates

    try:
        health = httpx.get(f"{url.rstrip('/')}/health", timeout=1.0, verify=needs_certificates([url]))
    except httpx.HTTPError:
        return False
    return health.status_code == 200


def live_cluster(data_dir: Path) -> dict[str, Any] | None:
    """The connection of the cluster running in `data_dir` (by `dtf up` or a `dtf run`),
    or None when there is none or its coordinator does not answer /health."""
    info = _connection(data_dir)
    if info is None or not info["api_url"] or not info["admin_token"]:
        return None
    return info if _healthy(str(info["api_url"])) else None


def cluster_alive(data_dir: Path) -> bool:
    """Whether the coordinators named in `data_dir`'s connection.json are running (cheap:
    no request, no token: `dtf run` asks before it starts anything)."""
    info = _connection(data_dir, fresh_token=False)
    pids = [int(c["pid"]) for c in (info or {}).get("coordinators", []) if c.get("pid")]
    return bool(pids) and all(_alive(pid) for pid in pids)


def starting_cluster(data_dir: Path) -> dict[str, Any] | None:
    """The connection of a cluster being started in `data_dir` (written before its
    coordinator listens, `"ready": false`) whose coordinator process is alive."""
    info = _connection(data_dir)
    if info is None or info.get("ready") is not False:
        return None
    pids = [int(c["pid"]) for c in info.get("coordinators", []) if c.get("pid")]
    return info if pids and all(_alive(pid) for pid in pids) else None


def _alive(pid: int) -> bool:
    """Whether `pid` is a running dtf process (not an exited one, nor a reused pid)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and any("dtf" in part for part in proc.cmdline())
    except psutil.Error:
        return False


def await_started(data_dir: Path, info: dict[str, Any], timeout: float = READY_TIMEOUT_S) -> None:
    """Wait for the coordinator of a starting cluster to answer /health. Raises
    Unavailable, with the end of its log, when it exits or does not answer in time."""
    url = str(info["api_url"])
    pids = [int(c["pid"]) for c in info.get("coordinators", []) if c.get("pid")]
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if not all(_alive(pid) for pid in pids):
            log = data_dir / "logs" / "coordinator.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise Unavailable(f"the coordinator in {data_dir} exited during start-up:\n{tail}")
        if time.monotonic() > deadline:
            raise Unavailable(f"the coordinator in {data_dir} did not answer in {timeout:.0f}s")
        time.sleep(0.02)


@dataclass
class Target:
    """Where a run goes. `started_here`: this run started the cluster (in `data_dir`)."""

    api_url: str
    token: str
    kind: str  # "remote", "warm" or "started"
    started_here: bool = False
    fresh_data_dir: bool = False  # the run started its cluster in a data directory it created


def locate(config: RunConfig) -> Target | None:
    """A remote coordinator (`coordinator` + `token`, or `connection`), else the live
    cluster in `data_dir`; None when the run needs a cluster of its own."""
    if config.coordinator:
        if not config.token:
            raise Unavailable("--coordinator needs a token: --token or DTF_TOKEN")
        return Target(config.coordinator, config.token, "remote")
    if config.connection is not None:
        try:
            info = read_connection(config.connection)
            return Target(str(info["api_url"]), str(info["admin_token"]), "remote")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"cannot read {config.connection}: {exc}") from None
    warm = live_cluster(config.data_dir)
    return None if warm is None else Target(str(warm["api_url"]), str(warm["admin_token"]), "warm")


def launch_cluster(config: RunConfig) -> bool:
    """Start a coordinator and `workers` local workers in `data_dir`, without waiting for
    them, so that they start while pytest collects; `find_target` then waits for them.
    The workers are told where the batches will run and with which arguments, so each
    starts (or clones) its pytest server at once. Returns whether the data directory is
    new. The processes outlive this one: the cluster stops itself once idle for
    `idle_timeout` (never with `keep`), or with `dtf down`."""
    from dtf.local_cluster import LocalCluster

    fresh = not config.data_dir.exists()
    idle = 0.0 if config.keep else config.idle_timeout
    cluster = LocalCluster(
        config.data_dir, workers=config.workers, concurrency=1, port=0, grpc_port=0, idle_shutdown=idle, announce=True
    )
    try:
        cluster.launch_coordinators()  # first: the coordinator's start is what the first test waits for
        prewarm = json.dumps({"cwd": str(config.cwd), "args": batch_pytest_args(config.pytest_args), "xdist": True})
        cluster.launch_workers({PREWARM_VARIABLE: prewarm})
    except BaseException:
        cluster.stop()
        raise
    return fresh


# Set by `dtf run` for the pytest session it becomes, when it started the cluster itself
# before that: {"data_dir": ..., "fresh": bool}.
LAUNCHED_VARIABLE = "DTF_RUN_LAUNCHED"


def find_target(config: RunConfig, starting: Callable[[], None] | None = None) -> Target:
    """Where the run goes: a remote cluster; the cluster `dtf run` started for this run
    before it became this session; a live cluster in the data directory, or one starting
    there (another run's); else a cluster started now. A local one once its coordinator
    answers; `starting` is called first when that takes a cluster's start."""
    if config.coordinator or config.connection is not None:
        remote = locate(config)
        assert remote is not None
        return remote
    launched = launched_by_this_run(config.data_dir)
    info = _connection(config.data_dir) if launched is not None else None
    if launched is not None and info is not None:
        if starting is not None:
            starting()
        _await_own_start(config.data_dir, info)
        return Target(str(info["api_url"]), str(info["admin_token"]), "started", True, launched)
    found = locate(config)
    if found is not None:
        return found
    if starting is not None:
        starting()
    info = starting_cluster(config.data_dir)
    if info is not None:
        await_started(config.data_dir, info)
        return Target(str(info["api_url"]), str(info["admin_token"]), "warm")
    fresh = launch_cluster(config)
    info = starting_cluster(config.data_dir)
    if info is None:
        _stop_own(config.data_dir)
        raise Unavailable(f"the cluster in {config.data_dir} exited during start-up (see {config.data_dir}/logs)")
    _await_own_start(config.data_dir, info)
    return Target(str(info["api_url"]), str(info["admin_token"]), "started", True, fresh)


def _await_own_start(data_dir: Path, info: dict[str, Any]) -> None:
    """Wait for the coordinator of the cluster this run started; when it does not come up,
    stop what did (its workers would wait for it for ever) before saying why."""
    try:
        await_started(data_dir, info)
    except BaseException:
        _stop_own(data_dir)
        raise


def _stop_own(data_dir: Path) -> None:
    from dtf.local_cluster import stop_data_dir

    with contextlib.suppress(Exception):
        stop_data_dir(data_dir, timeout=5.0)


def launched_by_this_run(data_dir: Path) -> bool | None:
    """Whether the data directory was new, when this run's `dtf run` started the cluster
    in it; None when it did not."""
    try:
        launched = json.loads(os.environ.get(LAUNCHED_VARIABLE) or "null")
        if launched and Path(launched["data_dir"]).resolve() == data_dir.resolve():
            return bool(launched["fresh"])
    except (ValueError, KeyError, TypeError):
        pass
    return None


def project_root(cwd: Path) -> Path:
    """The git work tree holding `cwd`, else `cwd` itself: what a snapshot packs."""
    import subprocess

    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return cwd
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else cwd


def ship_snapshot(config: RunConfig, client: Any, say: Callable[[str], None]) -> dict[str, str] | None:
    """Build (or reuse) the project's snapshot and upload it unless the coordinator has it;
    the task parameter `snapshot`. None when snapshots are not available in this install."""
    try:
        from dtf.run.snapshot import build_snapshot
    except ImportError:
        return None
    if not hasattr(client, "upload_blob"):
        return None
    cwd = config.cwd.resolve()
    root = project_root(cwd).resolve()
    say("packing the project")
    snapshot = build_snapshot(root, cache_dir=config.data_dir / "snapshots")
    sent = client.upload_blob(snapshot.sha256, snapshot.archive)
    subdir = cwd.relative_to(root).as_posix() if cwd != root else ""
    say(
        f"project snapshot {snapshot.sha256[:12]} ({snapshot.files} files, {snapshot.bytes / 1e6:.1f} MB"
        + (", uploaded)" if sent else ", already on the coordinator)")
    )
    return {"sha256": snapshot.sha256, "subdir": subdir}


def live_workers(client: WorkerLister) -> list[str]:
    return [str(w["worker_id"]) for w in client.workers() if w.get("status") in LIVE_WORKER]


def wait_for_workers(client: WorkerLister) -> int:
    """The number of live workers of a cluster this run did not start (at least one)."""
    deadline = time.monotonic() + WORKERS_WAIT_S
    while True:
        live = live_workers(client)
        if live:
            return len(live)
        if time.monotonic() > deadline:
            raise Unavailable(f"no live worker is registered with the coordinator after {WORKERS_WAIT_S:.0f}s")
        time.sleep(0.1)
