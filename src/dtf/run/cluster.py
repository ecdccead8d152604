"""Finding the cluster a run goes to, and what it needs from it.

A remote coordinator (`--coordinator URL` with a token, or `--connection FILE`), else the
live cluster in the data directory, else a coordinator and N workers started for the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dtf.run.args import batch_pytest_args
from dtf.run.config import RunConfig
from dtf_common.errors import Unavailable

if TYPE_CHECKING:
    from dtf.cli.local_cluster import LocalCluster

# How long a warm or remote cluster may take to show a live worker.
WORKERS_WAIT_S = 15.0
LIVE_WORKER = frozenset({"online", "busy"})


class WorkerLister(Protocol):
    def workers(self) -> list[dict[str, Any]]: ...


def live_cluster(data_dir: Path) -> dict[str, Any] | None:
    """The connection of the cluster running in `data_dir` (by `dtf up` or `dtf run --keep`),
    or None when there is none or its coordinator does not answer /health."""
    try:
        info: dict[str, Any] = json.loads((data_dir / "connection.json").read_text())
        url, token = str(info["api_url"]), str(info["admin_token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    import httpx

    from dtf.client import needs_certificates

    try:
        health = httpx.get(f"{url.rstrip('/')}/health", timeout=1.0, verify=needs_certificates([url]))
        healthy = health.status_code == 200
    except httpx.HTTPError:
        return None
    return info if healthy and token else None


@dataclass
class Target:
    """Where a run goes. `cluster` is set when this run started the cluster."""

    api_url: str
    token: str
    kind: str  # "remote", "warm" or "started"
    cluster: LocalCluster | None = None
    fresh_data_dir: bool = False  # the run started its cluster in a data directory it created


@dataclass
class Launched:
    """The processes of a cluster a run started for itself, maybe not ready yet."""

    cluster: LocalCluster
    fresh_data_dir: bool  # the data directory did not exist before
    claimed: bool = False  # a run took it over, and stops it (or keeps it) when it ends


def locate(config: RunConfig) -> Target | None:
    """A remote coordinator (`coordinator` + `token`, or `connection`), else the live
    cluster in `data_dir`; None when the run needs a cluster of its own."""
    if config.coordinator:
        if not config.token:
            raise Unavailable("--coordinator needs a token: --token or DTF_TOKEN")
        return Target(config.coordinator, config.token, "remote")
    if config.connection is not None:
        try:
            info = json.loads(config.connection.read_text())
            return Target(str(info["api_url"]), str(info["admin_token"]), "remote")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"cannot read {config.connection}: {exc}") from None
    warm = live_cluster(config.data_dir)
    return None if warm is None else Target(str(warm["api_url"]), str(warm["admin_token"]), "warm")


def launch_cluster(config: RunConfig) -> Launched:
    """Start a coordinator and `workers` local workers, without waiting for them, so they
    start while pytest collects; `find_target` then waits for them. The workers are told
    where the batches will run and with which arguments, so each starts (or clones) its
    pytest server at once."""
    from dtf.cli.local_cluster import LocalCluster

    fresh = not config.data_dir.exists()
    cluster = LocalCluster(config.data_dir, workers=config.workers, concurrency=1, port=0, grpc_port=0)
    try:
        cluster.launch_coordinators()  # first: the coordinator's start is what the first test waits for
        from dtf_worker.executors.pytest_share import PREWARM_VARIABLE

        prewarm = json.dumps({"cwd": str(config.cwd), "args": batch_pytest_args(config.pytest_args), "xdist": True})
        cluster.launch_workers({PREWARM_VARIABLE: prewarm})
    except BaseException:
        cluster.stop()
        raise
    return Launched(cluster, fresh)


def find_target(config: RunConfig, start: Target | Launched | None = None) -> Target:
    """Where the run goes: `start` when the caller has found it (`locate`) or launched it
    (`launch_cluster`), else what `locate` finds, else a cluster started now. A cluster
    of the run's own is returned once its coordinators are ready."""
    if start is None:
        start = locate(config) or launch_cluster(config)
    if isinstance(start, Target):
        return start
    start.claimed = True
    try:
        info = start.cluster.await_ready()
    except BaseException:
        start.cluster.stop()
        raise
    return Target(str(info["api_url"]), str(info["admin_token"]), "started", start.cluster, start.fresh_data_dir)


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
