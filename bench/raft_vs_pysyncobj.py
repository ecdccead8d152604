"""Our Raft against PySyncObj: 3 nodes on loopback, one OS process per node, in one run.

Systems take turns (`--rounds`, 3 by default, so a busy spell of the machine falls on
each alike); each turn starts a fresh 3-node cluster of `bench/raft_bench_node.py`
processes and measures, pooled over the rounds:

- replication under load: clients inside the leader's process keep 1, 64 and 1,000
  commands in flight (each client proposes one command at a time), for `--seconds` or
  `--ops` commands per load, whichever ends first; replicated ops/s, the commit latency
  (call until committed on a majority and applied on the leader) p50 and p99, elections
  begun during the load, and the CPU time of the leader and followers per command;
- failover: kill -9 the leader, time from the kill until a surviving node has
  committed a new command (a survivor proposes as soon as it leads); restart the
  killed node on its files, wait until all three agree again; `--trials` in all,
  median and worst, and when the new leader was elected.

Both systems replicate the same command (a worker heartbeat with a 100-character
health JSON that the state machine parses and stores) with the same timing: election
timeout 150 to 300 ms, heartbeat every 50 ms. Ours runs as a coordinator does: every
batch of entries fsynced before it counts, mutual TLS between the nodes, a snapshot
every 10,000 entries. PySyncObj does not fsync (its journal is a memory-mapped file the
OS writes back in its own time) and talks plain TCP. Its two modes:

- immediate (`appendEntriesUseBatch=False`): each command is sent to the followers as it
  arrives; the fastest PySyncObj gets one command at a time;
- batched (`appendEntriesUseBatch=True`, its default): new entries wait for the next
  append period (49 ms here, the heartbeat), so many commands share one message.

`--systems` also takes `dtf-nofsync` and `dtf-nofsync-notls`, ours without fsync and
without TLS, to see what the disk and the encryption cost.

    python bench/raft_vs_pysyncobj.py [--rounds 3] [--seconds 5] [--trials 20] [--quick]
        [--systems dtf,pysyncobj-immediate,pysyncobj-batched] [--profile DIR]

The default run takes about 5 minutes on a 2-core machine; `--quick` (one round, 1 s per
load, 3 failover trials) about 40 seconds. `--profile DIR` records the leader process
of each load with py-spy (`pip install py-spy`) and prints where its CPU time goes; the
figures of a profiled run are a little lower than without.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

console = Console()
if not console.is_terminal:
    console = Console(width=160)  # tables stay readable in a log file

NODE_SCRIPT = Path(__file__).with_name("raft_bench_node.py")
NODE_IDS = ["node-1", "node-2", "node-3"]
SETTLE_TIMEOUT_S = 30.0
FAILOVER_TIMEOUT_S = 15.0
SEED = 20250301

# The targets for ours (fsync and TLS on).
TARGET_P50_MS = 2.0
TARGET_OPS = 5_000
TARGET_OPS_P99_MS = 50.0
TARGET_FAILOVER_MEDIAN_MS = 350.0
TARGET_FAILOVER_WORST_MS = 700.0


@dataclass(frozen=True)
class System:
    label: str
    kind: str  # the runner's system argument
    mode: str | None = None  # PySyncObj's send mode
    flags: tuple[str, ...] = ()  # the runner's diagnostic switches

    @property
    def slug(self) -> str:
        return "-".join([self.kind, *([self.mode] if self.mode else []), *(f.strip("-") for f in self.flags)])


DEFAULT_SYSTEMS = "dtf,pysyncobj-immediate,pysyncobj-batched"
SYSTEMS = {
    "dtf": System("dtf", "dtf"),
    # Diagnostics, not in the default run: what the disk and TLS cost ours.
    "dtf-nofsync": System("dtf, no fsync", "dtf", flags=("--no-fsync",)),
    "dtf-nofsync-notls": System("dtf, no fsync/TLS", "dtf", flags=("--no-fsync", "--no-tls")),
    "pysyncobj-immediate": System("PySyncObj immediate", "pysyncobj", "immediate"),
    "pysyncobj-batched": System("PySyncObj batched", "pysyncobj", "batched"),
}


@dataclass
class LoadResult:
    inflight: int
    ops: int
    errors: int
    unanswered: int  # writes with no answer 10 s after the load's end, abandoned
    elapsed_s: float  # from the first call to the latest answer
    latencies_ms: list[float]
    new_terms: int = 0  # elections begun during the load (the highest term after minus before)
    leader_cpu_s: float = 0.0  # CPU time (user + system, all threads) of the leader process during the load
    followers_cpu_s: float = 0.0  # the same, both followers together

    def cpu_us_per_op(self, seconds: float) -> float:
        return seconds / self.ops * 1e6 if self.ops else float("nan")

    @property
    def rate(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Failover:
    committed_ms: list[float] = field(default_factory=list)
    elected_ms: list[float] = field(default_factory=list)
    timeouts: int = 0  # no commit within FAILOVER_TIMEOUT_S: counted as infinitely slow
    skipped: int = 0  # leadership had moved before the kill: not counted

    @property
    def median_ms(self) -> float:
        return statistics.median(self.committed_ms + [math.inf] * self.timeouts)

    @property
    def worst_ms(self) -> float:
        return math.inf if self.timeouts else max(self.committed_ms)


@dataclass
class SystemResult:
    """One system's figures, pooled over the rounds: a load's commands, time and
    latencies add up across rounds, as do the failover trials."""

    system: System
    loads: dict[int, LoadResult] = field(default_factory=dict)  # by commands in flight
    failover: Failover = field(default_factory=Failover)
    profiles: dict[int, Path] = field(default_factory=dict)

    def add_load(self, load: LoadResult) -> None:
        pooled = self.loads.get(load.inflight)
        if pooled is None:
            self.loads[load.inflight] = load
            return
        pooled.ops += load.ops
        pooled.errors += load.errors
        pooled.unanswered += load.unanswered
        pooled.elapsed_s += load.elapsed_s
        pooled.latencies_ms += load.latencies_ms
        pooled.new_terms += load.new_terms
        pooled.leader_cpu_s += load.leader_cpu_s
        pooled.followers_cpu_s += load.followers_cpu_s

    def add_failover(self, f: Failover) -> None:
        self.failover.committed_ms += f.committed_ms
        self.failover.elected_ms += f.elected_ms
        self.failover.timeouts += f.timeouts
        self.failover.skipped += f.skipped


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def fsync_ms(directory: Path, samples: int = 200) -> float:
    """Median time of an append + fsync on the data directory's file system."""
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


# --- one node process -----------------------------------------------------------------


class NodeProcess:
    """A running `raft_bench_node.py`, spoken to over its stdin and stdout."""

    def __init__(self, node_id: str, proc: asyncio.subprocess.Process) -> None:
        self.node_id = node_id
        self.proc = proc
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader = asyncio.create_task(self._read(), name=f"read-{node_id}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            fut = self._replies.pop(msg.pop("id", -1), None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(msg)
            else:
                self.events.put_nowait(msg)
        self.events.put_nowait({"event": "exited"})
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.node_id} exited"))
        self._replies.clear()

    async def request(self, op: str, within: float = 30.0, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next] = fut
        self.proc.stdin.write((json.dumps({"id": self._next, "op": op, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, within)

    async def ready(self, log: Path, within: float = 60.0) -> None:
        while True:
            event = await asyncio.wait_for(self.events.get(), within)
            if event.get("event") == "ready":
                return
            if event.get("event") == "exited":
                raise RuntimeError(f"{self.node_id} exited on start ({log}):\n" + tail(log))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op":"exit"}\n')
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.kill()
                await self.proc.wait()
        self._reader.cancel()


# --- a cluster of three ---------------------------------------------------------------


class Cluster:
    def __init__(self, system: System, root: Path, payload: int) -> None:
        self.system = system
        self.root = root
        self.payload = payload
        self.addresses = {node_id: f"127.0.0.1:{free_port()}" for node_id in NODE_IDS}
        self.nodes: dict[str, NodeProcess] = {}
        root.mkdir(parents=True, exist_ok=True)
        if system.kind == "dtf":
            from dtf_common.tls import create_ca, create_node_cert

            create_ca(root / "certs")
            for node_id in NODE_IDS:
                create_node_cert(root / "certs", node_id, ["127.0.0.1"])

    def argv(self, node_id: str) -> list[str]:
        peers = ",".join(f"{n}={a}" for n, a in self.addresses.items())
        argv = [sys.executable, str(NODE_SCRIPT), self.system.kind, "--id", node_id, "--peers", peers]
        argv += ["--dir", str(self.root / node_id), "--payload", str(self.payload)]
        if self.system.kind == "dtf":
            argv += ["--certs", str(self.root / "certs")]
        if self.system.mode is not None:
            argv += ["--mode", self.system.mode]
        return argv + list(self.system.flags)

    async def start(self, node_id: str) -> NodeProcess:
        log_path = self.root / f"{node_id}.log"
        log = log_path.open("ab")  # the child gets its own copy of the descriptor; ours is closed below
        proc = await asyncio.create_subprocess_exec(
            *self.argv(node_id),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            limit=64 * 1024 * 1024,  # a load's reply carries every latency
        )
        log.close()
        node = NodeProcess(node_id, proc)
        await node.ready(log_path)
        self.nodes[node_id] = node
        return node

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(n) for n in NODE_IDS))

    async def settled(self, within: float = SETTLE_TIMEOUT_S) -> NodeProcess:
        """The leader, once every node follows it and has applied all it committed."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError, ConnectionError):
                nodes = list(self.nodes.values())
                states = await asyncio.gather(*(n.request("status", within=5) for n in nodes))
                leaders = [n for n, st in zip(nodes, states, strict=True) if st["leader"]]
                if len(leaders) == 1 and len(nodes) == len(NODE_IDS):
                    lead = leaders[0]
                    commit = states[nodes.index(lead)]["commit"]
                    if all(st["leader_id"] == lead.node_id and st["applied"] >= commit for st in states):
                        return lead
            await asyncio.sleep(0.02)
        raise RuntimeError(f"{self.system.label}: the cluster did not settle within {within:.0f}s; see {self.root}")

    async def term(self) -> int:
        states = await asyncio.gather(*(n.request("status", within=30) for n in self.nodes.values()))
        return max(int(st["term"]) for st in states)

    async def stop_all(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes.values()))
        self.nodes.clear()


# --- measuring ------------------------------------------------------------------------


async def run_load(
    cluster: Cluster, inflight: int, ops: int, seconds: float, profile: Path | None
) -> tuple[LoadResult, Path | None]:
    leader = await cluster.settled()
    spy: asyncio.subprocess.Process | None = None
    out: Path | None = None
    if profile is not None:
        out = profile / f"{cluster.system.slug}-{inflight}.txt"
        spy = await asyncio.create_subprocess_exec(
            *py_spy_argv(leader.pid, out, seconds),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # attached before the load begins
    followers = [n for n in cluster.nodes.values() if n is not leader]
    term_before = await cluster.term()
    before = {n.node_id: cpu_seconds(n.pid) for n in cluster.nodes.values()}
    reply = await leader.request("load", within=seconds + 300, inflight=inflight, ops=ops, seconds=seconds)
    after = {n.node_id: cpu_seconds(n.pid) for n in cluster.nodes.values()}
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        await spy.wait()
    result = LoadResult(
        inflight,
        len(reply["latencies_ms"]),
        reply["errors"],
        reply["unanswered"],
        reply["elapsed_s"],
        reply["latencies_ms"],
    )
    result.new_terms = await cluster.term() - term_before
    result.leader_cpu_s = after[leader.node_id] - before[leader.node_id]
    result.followers_cpu_s = sum(after[n.node_id] - before[n.node_id] for n in followers)
    return result, out


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


async def run_failover(cluster: Cluster, trials: int, rng: random.Random, progress: Progress) -> Failover:
    result = Failover()
    task = progress.add_task(f"{cluster.system.label}: failover", total=trials)
    for _ in range(trials):
        leader = await cluster.settled()
        await asyncio.sleep(rng.uniform(0.2, 0.5))  # kill at a random phase of the heartbeat
        survivors = [n for n in cluster.nodes.values() if n is not leader]
        for node in survivors:
            await node.request("arm")
        killed_at = time.monotonic()
        leader.kill()
        event = await first_probe(survivors)
        if event is None:
            result.timeouts += 1
        elif event["committed"] < killed_at:
            result.skipped += 1  # a survivor led before the kill: leadership moved on its own
        else:
            result.committed_ms.append((event["committed"] - killed_at) * 1000)
            result.elected_ms.append((event["elected"] - killed_at) * 1000)
        for node in survivors:
            await node.request("disarm")
            while not node.events.empty():
                node.events.get_nowait()
        await leader.proc.wait()
        await leader.stop()
        await cluster.start(leader.node_id)
        progress.advance(task)
    return result


async def first_probe(survivors: list[NodeProcess]) -> dict[str, Any] | None:
    """The first survivor's report of a commit as leader; None if none came in time."""
    waits = [asyncio.create_task(node.events.get()) for node in survivors]
    done, pending = await asyncio.wait(waits, timeout=FAILOVER_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    for w in pending:
        w.cancel()
    return next(iter(done)).result() if done else None


def py_spy_argv(pid: int, out: Path, seconds: float) -> list[str]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [exe, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", str(out),
            "--duration", str(int(seconds) + 30), "--nonblocking"]  # fmt: skip


# Frames that name a cost: the systems measured, their transports and the benchmark's clients.
OWN_FRAMES = ("dtf_coordinator/", "dtf_common/", "pysyncobj/", "grpc/", "raft_bench_node.py")
RUNNER_FRAMES = ("<module> (", "main (", "main.<locals>.<lambda> (", "run_pysyncobj (")  # not a cost


def where_time_goes(path: Path, top: int = 12) -> list[tuple[str, float]]:
    """Share of the leader's CPU samples (py-spy's folded stacks) by the innermost frame
    of the systems, their transports or the benchmark: a fsync counts to `LogStore.sync`,
    a protobuf encode to the function that called it. Samples with none of those frames
    are the event loop's and the threads' own work (selecting, scheduling, waking)."""
    where: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        name = "event loop and threads (select, scheduling, wake-ups)"
        for frame in reversed(stack.split(";")):
            if any(marker in frame for marker in OWN_FRAMES) and not frame.startswith(RUNNER_FRAMES):
                function, _, place = frame.partition(" (")
                name = f"{function} ({place.rsplit(':', 1)[0]})"
                break
        where[name] += int(count)
    return [(name, n / total) for name, n in where.most_common(top)] if total else []


async def measure(result: SystemResult, rnd: int, args: argparse.Namespace, root: Path, progress: Progress) -> None:
    """One round of one system on a fresh cluster: the loads, then its share of the trials."""
    system = result.system
    cluster = Cluster(system, root / f"{system.slug}-{rnd}", args.payload)
    rng = random.Random(SEED + rnd)
    trials = args.trials // args.rounds + (1 if rnd < args.trials % args.rounds else 0)
    try:
        await cluster.start_all()
        await run_load(cluster, 64, args.ops, args.warmup, None)  # warm-up, not counted
        task = progress.add_task(f"{system.label}, round {rnd + 1}: load", total=len(args.loads))
        for inflight in args.loads:
            load, out = await run_load(cluster, inflight, args.ops, args.seconds, args.profile)
            result.add_load(load)
            if out is not None:
                result.profiles[inflight] = out
            progress.advance(task)
        if trials:
            result.add_failover(await run_failover(cluster, trials, rng, progress))
    finally:
        await cluster.stop_all()


# --- reporting ------------------------------------------------------------------------


def report(results: list[SystemResult], args: argparse.Namespace, fsync: float, loadavg: tuple[float, float]) -> None:
    table = Table(title=f"replication under load: 3 nodes on loopback, {args.payload}-character command")
    columns = ("system", "in flight", "commands", "errors", "unanswered", "new terms", "ops/s", "p50 ms", "p99 ms")
    columns += ("leader CPU µs/op", "followers' CPU µs/op")  # type: ignore[assignment]
    for col in columns:
        table.add_column(col, justify="right")
    for res in results:
        for load in res.loads.values():
            table.add_row(
                res.system.label,
                f"{load.inflight:,}",
                f"{load.ops:,}",
                str(load.errors),
                str(load.unanswered),
                str(load.new_terms),
                f"{load.rate:,.0f}",
                f"{percentile(load.latencies_ms, 0.5):.2f}",
                f"{percentile(load.latencies_ms, 0.99):.2f}",
                f"{load.cpu_us_per_op(load.leader_cpu_s):,.0f}",
                f"{load.cpu_us_per_op(load.followers_cpu_s):,.0f}",
            )
    console.print(table)

    fo = Table(title="failover: kill -9 the leader, until a survivor commits a new command")
    columns = ("system", "trials", "median ms", "worst ms", "elected: median ms", "worst ms", "timed out", "skipped")
    for col in columns:
        fo.add_column(col, justify="right")
    for res in results:
        f = res.failover
        if not f.committed_ms and not f.timeouts:
            continue
        fo.add_row(
            res.system.label,
            str(len(f.committed_ms) + f.timeouts),
            ms(f.median_ms),
            ms(f.worst_ms),
            ms(statistics.median(f.elected_ms)) if f.elected_ms else "-",
            ms(max(f.elected_ms)) if f.elected_ms else "-",
            str(f.timeouts),
            str(f.skipped),
        )
    console.print(fo)

    ours = next((r for r in results if r.system.kind == "dtf"), None)
    if ours is not None:
        console.print(targets_table(ours))
    for res in results:
        for inflight, path in res.profiles.items():
            rows = where_time_goes(path)
            if rows:
                console.print(
                    f"[bold]{res.system.label}, {inflight} in flight[/bold]: the leader's CPU samples ({path})"
                )
                for name, share in rows:
                    console.print(f"  {share * 100:5.1f}%  {name}", markup=False)
    versions = ", ".join(f"{p} {version(p)}" for p in ("pysyncobj", "grpcio", "protobuf"))
    console.print(
        f"machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, {versions}; "
        f"fsync (append 128 bytes) on the data directory's file system: median {fsync:.2f} ms; "
        f"load average (1 min) {loadavg[0]:.1f} before the run, {loadavg[1]:.1f} after."
    )
    console.print(
        "Both: election timeout 150-300 ms, heartbeat 50 ms (PySyncObj 49: it needs less than a third of the minimum), "
        "clients inside the leader's process. "
        "Ours fsyncs every batch of log entries before it counts and encrypts with mutual TLS; "
        "PySyncObj does not fsync (its journal is a memory-mapped file) and sends plain TCP."
    )


def targets_table(ours: SystemResult) -> Table:
    t = Table(title="targets for ours (with fsync and TLS)")
    for col in ("target", "measured", ""):
        t.add_column(col)
    one = ours.loads.get(1)
    if one is not None:
        p50 = percentile(one.latencies_ms, 0.5)
        t.add_row("commit p50 <= 2 ms (1 in flight)", f"{p50:.2f} ms", verdict(p50 <= TARGET_P50_MS))
    good = [ld for ld in ours.loads.values() if percentile(ld.latencies_ms, 0.99) <= TARGET_OPS_P99_MS]
    best = max(good, key=lambda ld: ld.rate, default=None)
    if best is not None:
        measured = (
            f"{best.rate:,.0f} ops/s at p99 {percentile(best.latencies_ms, 0.99):.1f} ms ({best.inflight} in flight)"
        )
        t.add_row(">= 5,000 ops/s at p99 <= 50 ms", measured, verdict(best.rate >= TARGET_OPS))
    elif ours.loads:
        t.add_row(">= 5,000 ops/s at p99 <= 50 ms", "no load kept p99 <= 50 ms", verdict(False))
    f = ours.failover
    if f.committed_ms or f.timeouts:
        median, worst = f.median_ms, f.worst_ms
        t.add_row("failover median <= 350 ms", f"{ms(median)} ms", verdict(median <= TARGET_FAILOVER_MEDIAN_MS))
        t.add_row("failover worst <= 700 ms", f"{ms(worst)} ms", verdict(worst <= TARGET_FAILOVER_WORST_MS))
    return t


def ms(value: float) -> str:
    return f"> {FAILOVER_TIMEOUT_S * 1000:.0f}" if math.isinf(value) else f"{value:.0f}"


def verdict(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]NOT met[/red]"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


async def run(args: argparse.Namespace) -> int:
    systems = [SYSTEMS[name] for name in args.systems]
    if any(s.kind == "pysyncobj" for s in systems) and version("pysyncobj") == "not installed":
        console.print("[red]PySyncObj is not installed: pip install -e '.[bench]'[/red]")
        return 2
    results = [SystemResult(system) for system in systems]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dtf-raft-bench-", dir=args.data_dir) as tmp:
        root = Path(tmp)
        fsync = fsync_ms(root)
        with Progress(console=console, transient=True) as progress:
            for rnd in range(args.rounds):  # systems take turns, so a busy spell hits each alike
                for result in results:
                    await measure(result, rnd, args, root, progress)
    report(results, args, fsync, (load_before, os.getloadavg()[0]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS,
                        help=f"comma-separated, of {', '.join(SYSTEMS)}")  # fmt: skip
    parser.add_argument("--loads", default="1,64,1000", help="commands in flight, comma-separated")
    parser.add_argument("--seconds", type=float, default=None, help="length of each load in each round (default 5)")
    parser.add_argument("--ops", type=int, default=1_000_000, help="at most this many commands per load")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring (default 2)")
    parser.add_argument("--trials", type=int, default=None, help="failover trials per system (default 20)")
    parser.add_argument("--rounds", type=int, default=None, help="systems take this many turns (default 3)")
    parser.add_argument("--payload", type=int, default=100, help="characters of health JSON per command")
    parser.add_argument("--data-dir", default=None, help="where the nodes' files go (default: the temp dir)")
    parser.add_argument("--profile", default=None, help="record the leader with py-spy into this directory")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 s per load, 3 failover trials")
    args = parser.parse_args()
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system {unknown[0]!r}; choose from {', '.join(SYSTEMS)}")
    args.loads = [int(n) for n in args.loads.split(",")]
    if args.profile:
        args.profile = Path(args.profile).resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    defaults = (1.0, 3, 0.5, 1) if args.quick else (5.0, 20, 2.0, 3)  # what a flag sets wins
    for name, value in zip(("seconds", "trials", "warmup", "rounds"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
