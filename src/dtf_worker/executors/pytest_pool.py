"""Long-lived pytest processes (`pytest_server`) for the pytest executor.

A new `python -m pytest` per batch pays the interpreter, pytest, its plugins and the
suite's conftest files again every time (about 1.4 s on a 2-core machine with a few
plugins installed). The pool keeps, per worker slot and per *key* (interpreter,
directory, pytest options, environment), a server that has paid that once and forks a
child per batch. A server is used by one batch at a time; a worker running two batches
of the same project at once has two.

`run` returns None when no server can take the batch (fork unavailable, the pool
switched off with `DTF_PYTEST_FORK=0`, a server that would not start): the executor
then starts a fresh process, as before. A server that finds the modules it imported
changed on disk answers `stale` and exits; the batch then goes to a fresh server.

Servers are tied to the worker by their command pipe: when the worker exits, however it
exits, they see end of input, kill the batch they run and exit too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtf_worker.executors import pytest_progress, pytest_server
from dtf_worker.executors.process import ProcessRun, TreeSampler, read_tail, signal_group

log = logging.getLogger("dtf.worker")

ENV_SWITCH = "DTF_PYTEST_FORK"
# Variables the worker sets for each batch: they do not name a server (its warm-up runs
# without them), and each batch's child gets its own.
BATCH_VARIABLES = frozenset(
    {
        "DTF_TASK_ID",
        "DTF_WORKER_ID",
        "DTF_HARDWARE_ID",
        "DTF_CACHE_DIR",
        pytest_progress.ENV_VAR,
        pytest_progress.YIELD_VAR,
    }
)
# How long a new server may take to import pytest and its plugins.
READY_TIMEOUT_S = 300.0
# How long a server may take to check its modules and fork.
START_TIMEOUT_S = 30.0
# How long a server may take to report a child it has killed.
REAP_TIMEOUT_S = 10.0
MAX_IDLE = 6
MAX_IDLE_PER_KEY = 2
# After a server fails to start for a key, fresh processes serve that key this long.
RETRY_AFTER_S = 60.0


@dataclass(frozen=True)
class ServerKey:
    """What a server's warm state depends on."""

    python: str
    cwd: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, cwd: Path, args: Sequence[str], env: Mapping[str, str]) -> ServerKey:
        stable = sorted((k, v) for k, v in env.items() if k not in BATCH_VARIABLES)
        return cls(sys.executable, str(cwd), tuple(args), tuple(stable))


@dataclass(frozen=True)
class BatchSpec:
    """One batch for a server: pytest's arguments, and where the child runs and writes."""

    argv: list[str]
    cwd: Path
    env: Mapping[str, str]
    log_dir: Path

    def message(self) -> dict[str, Any]:
        """The server's command. The server runs with the rest of the environment already
        (its key), so only the batch's own variables travel."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return {
            "run": {
                "argv": self.argv,
                "cwd": str(self.cwd),
                "env": {k: v for k, v in self.env.items() if k in BATCH_VARIABLES},
                "stdout": str(self.log_dir / "stdout.log"),
                "stderr": str(self.log_dir / "stderr.log"),
            }
        }


def warm_paths(node_ids: Sequence[str]) -> list[str]:
    """The directories of the batch's tests: the warm-up loads their conftest files."""
    dirs = {os.path.dirname(n.split("::", 1)[0]) or "." for n in node_ids}
    return sorted(dirs)


class _Lines:
    """JSON messages, one a line, from a non-blocking pipe. Not bound to an event loop:
    each wait registers a reader on the running loop and removes it again."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False
        os.set_blocking(fd, False)

    def poll(self) -> dict[str, Any] | None:
        """A whole message if one has arrived; never waits."""
        while not self.eof and b"\n" not in self.buffer:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buffer += chunk
        if b"\n" not in self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            return {}
        return message if isinstance(message, dict) else {}

    async def read(self, wait_s: float | None) -> dict[str, Any] | None:
        """The next message; None at end of input or after `wait_s` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if wait_s is None else loop.time() + wait_s
        while True:
            message = self.poll()
            if message is not None or self.eof:
                return message
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.fd, _resolve, readable)
            try:
                await asyncio.wait({readable}, timeout=remaining)
            finally:
                loop.remove_reader(self.fd)
                readable.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PytestServer:
    """One `pytest_server` process and its pipes."""

    def __init__(self, key: ServerKey, warm: Sequence[str]) -> None:
        self.key = key
        warm_argv = [*key.args, "--collect-only", "--ignore-glob=*", *warm]
        self.proc = _spawn(
            [key.python, pytest_server.__file__, json.dumps({"warm_argv": warm_argv})],
            cwd=key.cwd,
            env=dict(key.env),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.lines = _Lines(self.proc.stdout.fileno())
        self.ready: dict[str, Any] | None = None
        self.broken = False

    @property
    def usable(self) -> bool:
        return self.ready is not None and not self.broken and not self.lines.eof and self.proc.poll() is None

    async def wait_ready(self, wait_s: float) -> bool:
        message = await self.lines.read(wait_s)
        if message is None or not message.get("ready"):
            self.broken = True
            return False
        self.ready = message
        log.debug(
            "pytest server %s ready in %.2fs (warm-up exit %s) for %s",
            self.proc.pid,
            float(message.get("seconds") or 0.0),
            message.get("warm_exit"),
            self.key.cwd,
        )
        return True

    def _send(self, message: dict[str, Any]) -> bool:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True
            return False
        return True

    async def run(
        self, spec: BatchSpec, *, time_limit: float, cancel: asyncio.Event, kill_grace_s: float
    ) -> ProcessRun | None:
        """Run one batch in a forked child. None when the server did not start it (its
        modules changed on disk, or it is gone): the batch has not run."""
        started = time.monotonic()
        if not self._send(spec.message()):
            return None
        reply = await self.lines.read(START_TIMEOUT_S)
        if reply is None or "started" not in reply:
            self.broken = True
            if reply is not None and "stale" in reply:
                log.info("pytest server %s restarts: %s", self.proc.pid, reply["stale"])
            return None
        pid = int(reply["started"])
        tree = TreeSampler(pid)
        sampling = asyncio.create_task(tree.run())
        timed_out = cancelled = False
        exited: dict[str, Any] | None = None
        try:
            ended = await self._exit_cancel_or_time_limit(cancel, time_limit - (time.monotonic() - started))
            wall = time.monotonic() - started
            if isinstance(ended, dict):
                exited = ended
            else:
                timed_out, cancelled = ended == "timeout", ended == "cancel"
                exited = await self._terminate(pid, kill_grace_s)
        finally:
            sampling.cancel()
            if exited is None:
                # Cancelled, or the server went away: the child must not outlive the batch.
                signal_group(pid, signal.SIGKILL)
                self.broken = True
            tree.kill_escaped()
        return ProcessRun(
            exit_code=int(exited.get("exit_code", -signal.SIGKILL)) if exited else -signal.SIGKILL,
            timed_out=timed_out,
            cancelled=cancelled,
            timeout_s=time_limit,
            wall_time_s=wall,
            cpu_time_s=float(exited.get("cpu_time_s") or 0.0) if exited else 0.0,
            peak_memory_mb=tree.peak_bytes / (1024 * 1024),
            stdout_tail=read_tail(spec.log_dir / "stdout.log"),
            stderr_tail=read_tail(spec.log_dir / "stderr.log"),
        )

    async def _exit_cancel_or_time_limit(self, cancel: asyncio.Event, time_limit: float) -> dict[str, Any] | str:
        exited = asyncio.ensure_future(self.lines.read(None))
        cancelled = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, cancelled}, timeout=max(0.0, time_limit), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in (exited, cancelled):
                waiter.cancel()
            await asyncio.gather(exited, cancelled, return_exceptions=True)
        if exited in done:
            message = exited.result()
            return message if message is not None else {}  # {}: the server died with its child
        return "cancel" if cancelled in done else "timeout"

    async def _terminate(self, pid: int, grace_s: float) -> dict[str, Any] | None:
        """SIGTERM the child's group, SIGKILL it after `grace_s`; the server's report of its end."""
        signal_group(pid, signal.SIGTERM)
        message = await self.lines.read(grace_s)
        if message is None and not self.lines.eof:
            signal_group(pid, signal.SIGKILL)
            message = await self.lines.read(REAP_TIMEOUT_S)
        return message

    def close(self) -> None:
        """Stop the server (it runs no batch, or its batch is already over)."""
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def _spawn(argv: list[str], *, cwd: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


class PytestServerPool:
    def __init__(self, *, max_idle: int = MAX_IDLE, max_idle_per_key: int = MAX_IDLE_PER_KEY) -> None:
        self.max_idle = max_idle
        self.max_idle_per_key = max_idle_per_key
        # Idle servers by key, least recently used key first; within a key, newest last.
        self.idle: OrderedDict[ServerKey, list[PytestServer]] = OrderedDict()
        # Started ahead of any batch (`prewarm`), not yet known to be ready.
        self.starting: dict[ServerKey, PytestServer] = {}
        self.busy: Counter[ServerKey] = Counter()
        self.failed_at: dict[ServerKey, float] = {}
        self.started = 0  # servers started, for tests and logs

    @staticmethod
    def available() -> bool:
        return hasattr(os, "fork") and os.environ.get(ENV_SWITCH, "1") != "0"

    async def run(
        self,
        key: ServerKey,
        spec: BatchSpec,
        *,
        warm: Sequence[str],
        time_limit: float,
        cancel: asyncio.Event,
        kill_grace_s: float,
    ) -> ProcessRun | None:
        """The batch run in a child of a server for `key`; None when no server could run it."""
        if not self.available():
            return None
        failed = self.failed_at.get(key)
        if failed is not None and time.monotonic() - failed < RETRY_AFTER_S:
            return None
        for _ in range(2):  # a stale server is replaced once
            server = await self._acquire(key, warm, min(READY_TIMEOUT_S, time_limit))
            if server is None:
                self.failed_at[key] = time.monotonic()
                return None
            self.busy[key] += 1
            try:
                result = await server.run(spec, time_limit=time_limit, cancel=cancel, kill_grace_s=kill_grace_s)
            finally:
                self.busy[key] -= 1
                self._release(server)
            if result is not None:
                return result
            self.drop(key)  # its other servers imported the same files
        return None

    def prewarm(self, key: ServerKey, warm: Sequence[str]) -> None:
        """Start a server for `key` now; the first batch for that key waits for it."""
        if not self.available() or key in self.starting or self.idle.get(key):
            return
        try:
            self.starting[key] = PytestServer(key, warm)
        except OSError as exc:
            log.debug("cannot start a pytest server for %s: %s", key.cwd, exc)
            return
        self.started += 1
        log.info("starting a pytest server for %s ahead of its batches", key.cwd)

    async def _acquire(self, key: ServerKey, warm: Sequence[str], wait_s: float) -> PytestServer | None:
        servers = self.idle.get(key, [])
        while servers:
            server = servers.pop()
            if server.usable:
                return server
            server.close()
        server_or_none = self.starting.pop(key, None)
        if server_or_none is None:
            try:
                server_or_none = PytestServer(key, warm)
            except OSError as exc:  # no such directory or interpreter: the fresh process will say so
                log.debug("cannot start a pytest server for %s: %s", key.cwd, exc)
                return None
            self.started += 1
        server = server_or_none
        try:
            ready = await server.wait_ready(wait_s)
        except BaseException:
            server.close()
            raise
        if not ready:
            log.warning("a pytest server for %s did not start; batches there start fresh processes", key.cwd)
            server.close()
            return None
        return server

    def _release(self, server: PytestServer) -> None:
        if not server.usable:
            server.close()
            return
        servers = self.idle.setdefault(server.key, [])
        servers.append(server)
        self.idle.move_to_end(server.key)
        while len(servers) > self.max_idle_per_key:
            servers.pop(0).close()
        while sum(len(s) for s in self.idle.values()) > self.max_idle:
            oldest_key, oldest = next(iter(self.idle.items()))
            oldest.pop(0).close()
            if not oldest:
                del self.idle[oldest_key]

    def drop(self, key: ServerKey) -> None:
        for server in self.idle.pop(key, []):
            server.close()

    def close(self) -> None:
        """Stop every idle server."""
        for key in list(self.idle):
            self.drop(key)
        for server in self.starting.values():
            server.close()
        self.starting.clear()
