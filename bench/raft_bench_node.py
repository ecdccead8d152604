"""One node of a 3-node Raft cluster for bench/raft_vs_pysyncobj.py, in its own process.

    python bench/raft_bench_node.py dtf --id ID --dir DIR --peers ID=HOST:PORT,... --certs DIR [--no-fsync] [--no-tls]
    python bench/raft_bench_node.py pysyncobj --id ID --dir DIR --peers ID=HOST:PORT,... --mode immediate|batched

`dtf` runs our `RaftNode` (log fsynced before acknowledging, mutual TLS between nodes,
a snapshot every 10,000 entries as the coordinator takes them; `--no-fsync` and
`--no-tls` take those away, to see what each costs); `pysyncobj` runs a
`SyncObj` with one `@replicated` method. Both replicate the same command: a worker's
heartbeat carrying a health JSON string of the requested size, which the state machine
stores after parsing it (ours: `WorkerHeartbeat` for a worker registered once).

The benchmark drives the node over stdin/stdout, one JSON object per line. A request
carries `"id"` and gets one reply with the same `"id"`:

- `{"op": "status"}`: `{"leader": bool, "leader_id", "applied", "commit", "term"}`;
- `{"op": "load", "inflight": N, "ops": M, "seconds": S}`: N clients in this process
  each propose one command at a time until M commands completed or S seconds passed;
  `{"latencies_ms": [...], "errors", "unanswered", "elapsed_s"}`. A latency runs from
  the call until the command is committed on a majority and applied here; a write with
  no answer 10 s after the load's end is counted as unanswered and abandoned;
- `{"op": "arm"}`: from now on, as soon as this node leads, commit one command and emit
  `{"event": "probe", "elected": T1, "committed": T2}`;
- `{"op": "disarm"}`, `{"op": "exit"}`.

Times in events are `time.monotonic()`, one clock for every process on the machine, so
the benchmark can subtract the moment it killed the leader.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKER_ID = "bench-worker"
SNAPSHOT_EVERY = 10_000  # entries, the coordinator's default `task_scheduler.snapshot_every`
NO_ANSWER_S = 10.0  # a write still unanswered this long after the load's end counts as unanswered
PROBE_POLL_S = 0.001  # how often a waiting probe looks whether it was disarmed, or retries

# Equal timing for both systems: election timeout 150-300 ms, heartbeat every 50 ms.
TICK_MS = 10
ELECTION_TICKS = (15, 30)
HEARTBEAT_TICKS = 5

_out_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def health_json(size: int) -> str:
    """A heartbeat's health report padded to exactly `size` characters."""
    head = '{"status":"ok","pad":"'
    return head + "x" * max(0, size - len(head) - 2) + '"}'


def parse_peers(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(","))


# --- ours ---------------------------------------------------------------------------


async def run_dtf(args: argparse.Namespace) -> None:
    import grpc

    from dtf_common.errors import DtfError
    from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
    from dtf_common.tls import channel_credentials, load_tls, server_credentials
    from dtf_coordinator.consensus.raft.node import RaftNode, RaftSettings
    from dtf_coordinator.consensus.raft.transport import Credentials, Transport
    from dtf_coordinator.state import StateMachine

    if args.no_fsync:
        os.fsync = lambda fd: None  # every durable write of the node becomes a page-cache write
    peers = parse_peers(args.peers)
    if args.no_tls:
        local = grpc.LocalConnectionType.LOCAL_TCP  # gRPC's plaintext loopback credentials
        credentials = Credentials(
            server=grpc.local_server_credentials(local), channel=grpc.local_channel_credentials(local), check_peer=False
        )
    else:
        certs = Path(args.certs)
        material = load_tls(certs / "ca.pem", certs / f"{args.id}.pem", certs / f"{args.id}-key.pem")
        credentials = Credentials(server=server_credentials(material), channel=channel_credentials(material))
    settings = RaftSettings(
        node_id=args.id,
        bind=peers[args.id],
        peers=peers,
        tick_ms=TICK_MS,
        election_ticks_min=ELECTION_TICKS[0],
        election_ticks_max=ELECTION_TICKS[1],
        heartbeat_ticks=HEARTBEAT_TICKS,
    )
    leading = asyncio.Event()  # set while this node leads

    def leader_changed(_change: object) -> None:
        if node.is_leader():
            leading.set()
        else:
            leading.clear()

    transport = Transport(args.id, settings.bind, settings.peers, credentials)
    node = RaftNode(args.dir, StateMachine(), settings, transport, on_leader_change=leader_changed)
    await node.start(lambda _effects: None)
    health = health_json(args.payload)

    def heartbeat() -> commands_pb2.Command:
        return commands_pb2.Command(
            worker_heartbeat=commands_pb2.WorkerHeartbeat(worker_id=WORKER_ID, health_json=health)
        )

    async def ensure_worker() -> None:
        if WORKER_ID not in node.state.workers:
            register = commands_pb2.RegisterWorker(
                worker_id=WORKER_ID, capabilities=types_pb2.Capabilities(hardware=["cpu"], slots=1)
            )
            await node.propose(commands_pb2.Command(register_worker=register))

    async def snapshotter() -> None:
        # What the coordinator's snapshotter does: look every second, snapshot when due.
        while True:
            await asyncio.sleep(1.0)
            if node.snapshot_due(SNAPSHOT_EVERY):
                await node.take_snapshot()

    async def load(inflight: int, ops: int, seconds: float) -> dict[str, Any]:
        await ensure_worker()
        latencies: list[float] = []
        errors = 0
        started = 0
        begin = last = time.perf_counter()  # last: when the latest answer came
        deadline = begin + seconds

        async def client() -> None:
            nonlocal started, errors, last
            while started < ops and time.perf_counter() < deadline:
                started += 1
                t0 = time.perf_counter()
                try:
                    await node.propose(heartbeat())
                except DtfError:
                    errors += 1
                    continue
                finally:
                    last = max(last, time.perf_counter())
                latencies.append((last - t0) * 1000)

        clients = [asyncio.create_task(client()) for _ in range(inflight)]
        _done, stuck = await asyncio.wait(clients, timeout=seconds + NO_ANSWER_S)
        for task in stuck:
            task.cancel()
        return {"latencies_ms": latencies, "errors": errors, "unanswered": len(stuck), "elapsed_s": last - begin}

    async def probe() -> None:
        await leading.wait()
        elected = time.monotonic()
        while True:
            try:
                await node.propose(heartbeat())
            except DtfError:
                await asyncio.sleep(PROBE_POLL_S)
                continue
            emit({"event": "probe", "elected": elected, "committed": time.monotonic()})
            return

    def status() -> dict[str, Any]:
        st = node.status()
        return {
            "leader": node.is_leader(),
            "leader_id": node.leader_hint(),
            "applied": node.state.applied_index,
            "commit": st.commit_index,
            "term": node.term,
        }

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    background = {asyncio.create_task(snapshotter())}
    probe_task: asyncio.Task[None] | None = None
    emit({"event": "ready", "pid": os.getpid()})

    async def handle(req: dict[str, Any]) -> None:
        nonlocal probe_task
        op = req["op"]
        reply: dict[str, Any] = {}
        if op == "status":
            reply = status()
        elif op == "load":
            reply = await load(req["inflight"], req["ops"], req["seconds"])
        elif op == "arm":
            probe_task = asyncio.create_task(probe())
        elif op == "disarm" and probe_task is not None:
            probe_task.cancel()
        emit({"id": req["id"], **reply})

    while line := await reader.readline():
        req = json.loads(line)
        if req["op"] == "exit":
            break
        task = asyncio.create_task(handle(req))
        background.add(task)
        task.add_done_callback(background.discard)
    for task in background:
        task.cancel()
    await node.stop()


# --- PySyncObj ----------------------------------------------------------------------


def run_pysyncobj(args: argparse.Namespace) -> None:
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
    from pysyncobj.syncobj import _RAFT_STATE

    LEADER = _RAFT_STATE.LEADER

    class Workers(SyncObj):  # type: ignore[misc]
        def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
            super().__init__(self_address, partners, conf)
            self.health: dict[str, tuple[str, bool]] = {}

        @replicated  # type: ignore[misc]
        def heartbeat(self, worker_id: str, health: str) -> int:
            self.health[worker_id] = (health, json.loads(health).get("status") == "critical")
            return len(self.health)

    peers = parse_peers(args.peers)
    by_address = {address: node_id for node_id, address in peers.items()}
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    conf = SyncObjConf(
        raftMinTimeout=ELECTION_TICKS[0] * TICK_MS / 1000,
        raftMaxTimeout=ELECTION_TICKS[1] * TICK_MS / 1000,
        # 49 ms rather than our 50: PySyncObj requires raftMinTimeout > 3 * appendEntriesPeriod.
        appendEntriesPeriod=HEARTBEAT_TICKS * TICK_MS / 1000 - 0.001,
        # batched: new entries wait for the next append period (PySyncObj's default);
        # immediate: every command is sent as it arrives and wakes the node's loop.
        appendEntriesUseBatch=args.mode == "batched",
        journalFile=str(directory / "journal.bin"),
        fullDumpFile=str(directory / "dump.bin"),
        logCompactionMinEntries=SNAPSHOT_EVERY,
        connectionRetryTime=0.5,  # a restarted peer is reconnected sooner; no effect on failover
    )
    leading = threading.Event()  # set while this node leads

    def state_changed(_old: int, new: int) -> None:
        if new == LEADER:
            leading.set()
        else:
            leading.clear()

    conf.onStateChanged = state_changed
    me = peers[args.id]
    obj = Workers(me, [a for n, a in peers.items() if n != args.id], conf)
    health = health_json(args.payload)

    def load(inflight: int, ops: int, seconds: float) -> dict[str, Any]:
        latencies: list[float] = []
        lock = threading.RLock()  # a refused command calls back in the calling thread
        finished = threading.Event()
        begin = time.perf_counter()
        state = {"started": 0, "outstanding": 0, "errors": 0, "last": begin}  # last: when the latest answer came
        deadline = begin + seconds

        def issue() -> None:  # called with the lock held
            state["started"] += 1
            state["outstanding"] += 1
            t0 = time.perf_counter()
            obj.heartbeat(WORKER_ID, health, callback=lambda _res, err: done(t0, err))

        def done(t0: float, err: int) -> None:
            now = time.perf_counter()
            elapsed = (now - t0) * 1000
            with lock:
                state["last"] = max(state["last"], now)
                state["outstanding"] -= 1
                if err == FAIL_REASON.SUCCESS:
                    latencies.append(elapsed)
                else:
                    state["errors"] += 1
                if state["started"] < ops and time.perf_counter() < deadline:
                    issue()
                elif state["outstanding"] == 0:
                    finished.set()

        with lock:
            for _ in range(min(inflight, ops)):
                issue()
        finished.wait(seconds + NO_ANSWER_S)
        with lock:
            unanswered, state["started"] = state["outstanding"], ops  # issue nothing more
            return {
                "latencies_ms": list(latencies),
                "errors": state["errors"],
                "unanswered": unanswered,
                "elapsed_s": state["last"] - begin,
            }

    probe_stop = threading.Event()

    def probe() -> None:
        while not leading.wait(PROBE_POLL_S):
            if probe_stop.is_set():
                return
        elected = time.monotonic()
        while not probe_stop.is_set():
            try:
                obj.heartbeat(WORKER_ID, health, sync=True, timeout=5.0)
            except Exception:  # SyncObjException: not leader (yet), timeout
                probe_stop.wait(PROBE_POLL_S)
                continue
            emit({"event": "probe", "elected": elected, "committed": time.monotonic()})
            return

    def status() -> dict[str, Any]:
        st = obj.getStatus()
        leader = st["leader"]
        return {
            "leader": obj._isLeader(),
            "leader_id": by_address.get(getattr(leader, "address", "")) if leader is not None else None,
            "applied": st["last_applied"],
            "commit": st["commit_idx"],
            "term": st["raft_term"],
        }

    def handle(req: dict[str, Any]) -> None:
        op = req["op"]
        reply: dict[str, Any] = {}
        if op == "status":
            reply = status()
        elif op == "load":
            reply = load(req["inflight"], req["ops"], req["seconds"])
        elif op == "arm":
            probe_stop.clear()
            threading.Thread(target=probe, daemon=True).start()
        elif op == "disarm":
            probe_stop.set()
        emit({"id": req["id"], **reply})

    emit({"event": "ready", "pid": os.getpid()})
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "exit":
            break
        threading.Thread(target=handle, args=(req,), daemon=True).start()
    obj.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=["dtf", "pysyncobj"])
    parser.add_argument("--id", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--peers", required=True, help="ID=HOST:PORT for every node, comma-separated")
    parser.add_argument("--certs", help="dtf: directory of ca.pem, ID.pem, ID-key.pem")
    parser.add_argument("--no-fsync", action="store_true", help="dtf: make os.fsync a no-op (diagnostic)")
    parser.add_argument("--no-tls", action="store_true", help="dtf: plaintext gRPC on loopback (diagnostic)")
    parser.add_argument("--mode", choices=["immediate", "batched"], default="immediate", help="pysyncobj only")
    parser.add_argument("--payload", type=int, default=100, help="characters of health JSON per command")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    runners: dict[str, Callable[[argparse.Namespace], object]] = {
        "dtf": lambda a: asyncio.run(run_dtf(a)),
        "pysyncobj": run_pysyncobj,
    }
    runners[args.system](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
