"""Coordinator throughput and submit-to-result latency, with Ray as the peer.

Starts `dtf up` (one coordinator, two local workers) in a temporary directory, then:
- throughput: N no-op tasks submitted in batches by several concurrent clients; tasks
  per second from the first submit until the coordinator reports all completed;
- latency: one no-op task at a time, submit to its `completed` task_update on the
  WebSocket; p50 and p99 over the samples.
In the same run, when Ray is installed (`pip install -e '.[bench]'`), the same no-op
work through `ray.init(num_cpus=2)`.

    python bench/throughput.py [--tasks 20000] [--latency-samples 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from rich.console import Console
from rich.table import Table

console = Console()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fsync_ms(directory: Path, samples: int = 200) -> float:
    """Median time of an append + fsync on the data directory's file system: the floor of
    every durable step (a submit, a lease, a worker's spool, a report each wait for one)."""
    times = []
    with open(directory / "fsync-probe", "ab") as f:
        for _ in range(samples):
            t0 = time.perf_counter()
            f.write(b"x" * 128)
            f.flush()
            os.fsync(f.fileno())
            times.append((time.perf_counter() - t0) * 1000)
    (directory / "fsync-probe").unlink()
    return statistics.median(times)


def start_cluster(data_dir: Path, workers: int, concurrency: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    env = {**os.environ, "DTF_TASK_SCHEDULER__MAX_QUEUE_SIZE": "1000000", "DTF_DATABASE__FLUSH_INTERVAL": "0.2"}
    argv = [sys.executable, "-m", "dtf.cli.main", "up", "--workers", str(workers), "--concurrency", str(concurrency)]
    argv += ["--data-dir", str(data_dir), "--port", "0", "--grpc-port", "0"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = data_dir / "connection.json"
    deadline = time.monotonic() + 60
    while not conn.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("dtf up did not start")
        time.sleep(0.05)
    return proc, json.loads(conn.read_text())


async def wait_workers(client: httpx.AsyncClient, n: int) -> None:
    while True:
        page = (await client.get("/api/workers")).json()
        if sum(1 for w in page["data"] if w["status"] in ("online", "busy")) >= n:
            return
        await asyncio.sleep(0.05)


async def dtf_throughput(client: httpx.AsyncClient, n: int, batch: int, clients: int) -> float:
    before = (await client.get("/api/status")).json()["tasks"]["completed"]
    body = [{"type": "noop"} for _ in range(batch)]
    queue = list(range(0, n, batch))
    start = time.perf_counter()

    async def submitter() -> None:
        while queue:
            queue.pop()
            r = await client.post("/api/tasks", json=body)
            r.raise_for_status()

    await asyncio.gather(*(submitter() for _ in range(clients)))
    submitted = time.perf_counter() - start
    with console.status(f"{n} tasks submitted in {submitted:.2f}s; waiting for results"):
        while (await client.get("/api/status")).json()["tasks"]["completed"] - before < n:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling the coordinator over HTTP, not waiting on a local event
    return n / (time.perf_counter() - start)


async def dtf_latency(info: dict[str, Any], client: httpx.AsyncClient, samples: int) -> list[float]:
    ws_url = info["api_url"].replace("http", "ws", 1) + f"/ws?token={info['admin_token']}"
    out = []
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": "task_updates", "filter": {"status": "completed"}}))
        json.loads(await ws.recv())  # subscribed
        for _ in range(samples):
            start = time.perf_counter()
            r = await client.post("/api/tasks", json={"type": "noop"})
            task_id = r.json()["task_ids"][0]
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("task_id") == task_id:
                    break
            out.append((time.perf_counter() - start) * 1000)
    return out


def ray_peer(n: int, samples: int) -> tuple[float, list[float]] | None:
    try:
        import ray
    except ImportError:
        return None
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(200)])  # warm the worker pool
    start = time.perf_counter()
    ray.get([noop.remote() for _ in range(n)])
    rate = n / (time.perf_counter() - start)
    lat = []
    for _ in range(samples):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        lat.append((time.perf_counter() - t0) * 1000)
    ray.shutdown()
    return rate, lat


async def run_dtf(args: argparse.Namespace) -> tuple[float, list[float], float]:
    with tempfile.TemporaryDirectory(prefix="dtf-bench-", dir=args.data_dir) as tmp:
        fsync = fsync_ms(Path(tmp))
        proc, info = start_cluster(Path(tmp), args.workers, args.concurrency)
        try:
            headers = {"Authorization": f"Bearer {info['admin_token']}"}
            async with httpx.AsyncClient(base_url=info["api_url"], headers=headers, timeout=120) as client:
                await wait_workers(client, args.workers)
                await dtf_latency(info, client, 20)  # warm-up
                latencies = await dtf_latency(info, client, args.latency_samples)
                rate = await dtf_throughput(client, args.tasks, args.batch, args.clients)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return rate, latencies, fsync


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=256, help="slots per worker (no-op tasks)")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--data-dir", default=None, help="where the cluster's files go (default: the temp dir)")
    args = parser.parse_args()

    rate, lat, fsync = asyncio.run(run_dtf(args))
    table = Table(title=f"no-op tasks: {args.tasks} for throughput, {args.latency_samples} one at a time for latency")
    for col in ("system", "tasks/s", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(col, justify="right")
    table.add_row(
        "dtf (1 coordinator, 2 workers)",
        f"{rate:,.0f}",
        f"{percentile(lat, 0.5):.2f}",
        f"{percentile(lat, 0.99):.2f}",
        f"{statistics.fmean(lat):.2f}",
    )
    peer = ray_peer(args.tasks, args.latency_samples)
    if peer is None:
        table.add_row("ray (num_cpus=2)", "not installed", "", "", "")
    else:
        ray_rate, ray_lat = peer
        table.add_row(
            "ray (num_cpus=2)",
            f"{ray_rate:,.0f}",
            f"{percentile(ray_lat, 0.5):.2f}",
            f"{percentile(ray_lat, 0.99):.2f}",
            f"{statistics.fmean(ray_lat):.2f}",
        )
    table.add_row("target (dtf)", ">= 5,000", "<= 2.00", "", "")
    console.print(table)
    console.print(
        f"fsync on the data directory's file system: median {fsync:.2f} ms. A no-op task's round trip"
        f" waits for 4 durable writes in sequence (submit, lease, worker spool, report): {4 * fsync:.2f} ms"
        " of it is fsync alone."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
