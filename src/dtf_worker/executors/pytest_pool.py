"""Long-lived pytest processes (`dtf_pytest.server`) for the pytest executor.

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
import select
import signal
import socket
import subprocess
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtf_worker.executors.process import ProcessRun, TreeSampler, has_exited, read_tail, signal_group
from dtf_worker.executors.pytest_share import (
    BATCH_VARIABLES,
    ServerKey,
    SharePaths,
    forking,
    spawn_server,
)

__all__ = ["BatchSpec", "PytestServer", "PytestServerPool", "ServerKey"]

log = logging.getLogger("dtf.worker")

# How long a new server may take to import pytest and its plugins.
READY_TIMEOUT_S = 300.0
# How long a server may take to check its modules and fork.
START_TIMEOUT_S = 30.0
# How long a server may take to report a child it has killed.
REAP_TIMEOUT_S = 10.0
# How long a server may take to exit at the end of its input, before it is killed.
CLOSE_TIMEOUT_S = 2.0
MAX_IDLE = 6
MAX_IDLE_PER_KEY = 2
# After a server fails to start for a key, fresh processes serve that key this long.
RETRY_AFTER_S = 60.0
# How often to look for the shared server another process is warming up.
SHARE_POLL_S = 0.02


@dataclass(frozen=True)
class BatchSpec:
    """One batch for a server: pytest's arguments, and where the child runs and writes."""

    argv: list[str]
    cwd: Path
    env: Mapping[str, str]
    log_dir: Path
    # The batch runs a selection of the tests its server's session collected (its
    # arguments are the server's own): the child resumes that session.
    resume: bool = False

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
                "resume": self.resume,
            }
        }


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
    """One `dtf_pytest.server` process and its channel: pipes to a process this worker started
    (`spawn`), or a connection to a clone of a shared server (`clone`)."""

    def __init__(
        self,
        key: ServerKey,
        reads: int,
        writes: int,
        *,
        proc: subprocess.Popen[bytes] | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.key = key
        self.proc = proc
        self.sock = sock
        self.writes = writes
        self.lines = _Lines(reads)
        self.ready: dict[str, Any] | None = None
        self.broken = False

    @classmethod
    def spawn(cls, key: ServerKey, share: tuple[SharePaths, int] | None = None) -> PytestServer:
        """Start a server (see `pytest_share.spawn_server`)."""
        return cls.of(key, spawn_server(key, share))

    @classmethod
    def of(cls, key: ServerKey, proc: subprocess.Popen[bytes]) -> PytestServer:
        """The server `proc`, started by `pytest_share.spawn_server`."""
        assert proc.stdin is not None and proc.stdout is not None
        return cls(key, proc.stdout.fileno(), proc.stdin.fileno(), proc=proc)

    @classmethod
    def clone(cls, key: ServerKey, sock: socket.socket) -> PytestServer:
        """The clone that the shared server forks for the connection `sock`."""
        return cls(key, sock.fileno(), sock.fileno(), sock=sock)

    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        return int(self.ready["pid"]) if self.ready and "pid" in self.ready else None

    @property
    def usable(self) -> bool:
        alive = self.proc is None or self.proc.poll() is None
        return self.ready is not None and not self.broken and not self.lines.eof and alive

    async def wait_ready(self, wait_s: float) -> bool:
        message = await self.lines.read(wait_s)
        if message is None or not message.get("ready"):
            self.broken = True
            return False
        self.ready = message
        log.debug(
            "pytest server %s ready in %.2fs (warm-up exit %s%s) for %s",
            self.pid,
            float(message.get("seconds") or 0.0),
            message.get("warm_exit"),
            f", a clone of {message['clone_of']}" if "clone_of" in message else "",
            self.key.cwd,
        )
        return True

    def _send(self, message: dict[str, Any]) -> bool:
        data = (json.dumps(message) + "\n").encode()
        try:
            while data:
                try:
                    data = data[os.write(self.writes, data) :]
                except BlockingIOError:  # a clone's socket is non-blocking for reads too
                    select.select([], [self.writes], [], START_TIMEOUT_S)
        except OSError:
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
                log.info("pytest server %s restarts: %s", self.pid, reply["stale"])
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
        """Stop the server (it runs no batch, or its batch is already over). At the end of
        its input it exits, and a shared one stops sharing; one that does not is killed."""
        pid = self.pid
        if self.sock is not None:
            self.sock.close()
            if pid is not None:
                _await_exit(pid, CLOSE_TIMEOUT_S)  # not our child: it is gone when kill finds nothing
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(CLOSE_TIMEOUT_S)
        if pid is not None and (self.proc is None or self.proc.returncode is None):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(REAP_TIMEOUT_S)


def _await_exit(pid: int, timeout: float) -> None:
    """Wait until `pid`, a process not ours to reap, has exited (a zombie counts: whether
    its new parent reaps it is not up to us)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not has_exited(pid):
        time.sleep(0.01)


async def clone_or_lock(key: ServerKey, paths: SharePaths, wait_s: float) -> PytestServer | int | None:
    """A ready clone of the server that shares `key`'s warm state, waiting while another
    process warms it up; else, once no one holds it, the key's lock (a descriptor, held):
    a server started now is to share in its place. None after `wait_s`, or when the
    server that shares gives no clone while it still holds the lock."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        sock = paths.connect()
        if sock is not None:
            server = PytestServer.clone(key, sock)
            if await _ready(server, deadline - loop.time()):
                return server
        lock = paths.try_lock()
        if lock is not None or sock is not None or loop.time() >= deadline:
            return lock
        await asyncio.sleep(SHARE_POLL_S)  # another process is warming it up


async def _ready(server: PytestServer, wait_s: float) -> bool:
    """Whether `server` became ready within `wait_s`; closed when it did not."""
    try:
        ready = await server.wait_ready(max(0.0, wait_s))
    except BaseException:
        server.close()
        raise
    if not ready:
        server.close()
    return ready


class PytestServerPool:
    def __init__(
        self,
        *,
        max_idle: int = MAX_IDLE,
        max_idle_per_key: int = MAX_IDLE_PER_KEY,
        share: Path | bool = True,
    ) -> None:
        """`share`: the directory of shared servers (`pytest_share`); True for this user's
        default, False for servers of this pool's own only."""
        self.max_idle = max_idle
        self.max_idle_per_key = max_idle_per_key
        self.share = share
        # Idle servers by key, least recently used key first; within a key, newest last.
        self.idle: OrderedDict[ServerKey, list[PytestServer]] = OrderedDict()
        # Started ahead of any batch (`prewarm`): a ready server, or None when none started.
        self.starting: dict[ServerKey, asyncio.Task[PytestServer | None]] = {}
        self.busy: Counter[ServerKey] = Counter()
        self.failed_at: dict[ServerKey, float] = {}
        self.started = 0  # servers started, for tests and logs
        self.cloned = 0  # clones of shared servers taken

    @staticmethod
    def available() -> bool:
        return forking()

    async def run(
        self,
        key: ServerKey,
        spec: BatchSpec,
        *,
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
            server = await self._acquire(key, min(READY_TIMEOUT_S, time_limit))
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

    def prewarm(self, key: ServerKey) -> None:
        """Start a server for `key` now; the first batch for that key waits for it."""
        if not self.available() or key in self.starting or self.idle.get(key):
            return
        self.starting[key] = asyncio.ensure_future(self._start(key, READY_TIMEOUT_S))
        log.info("starting a pytest server for %s ahead of its batches", key.cwd)

    async def _acquire(self, key: ServerKey, wait_s: float) -> PytestServer | None:
        servers = self.idle.get(key, [])
        while servers:
            server = servers.pop()
            if server.usable:
                return server
            server.close()
        starting = self.starting.pop(key, None)
        if starting is not None:
            return await starting
        return await self._start(key, wait_s)

    def _share_paths(self, key: ServerKey) -> SharePaths | None:
        if self.share is False:
            return None
        return SharePaths.of(key, None if self.share is True else self.share)

    async def _start(self, key: ServerKey, wait_s: float) -> PytestServer | None:
        """A ready server for `key`: a clone of the shared one where another process has
        started it (waiting while it warms up), else one of this pool's own, shared in turn."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        paths = self._share_paths(key)
        found = None if paths is None else await clone_or_lock(key, paths, wait_s)
        if isinstance(found, PytestServer):
            self.cloned += 1
            log.info("pytest server %s for %s: a clone of the warm one another process shares", found.pid, key.cwd)
            return found
        if paths is not None and found is None and loop.time() >= deadline:
            return None
        # With the lock, the server started now shares; without it (the sharing server gave
        # no clone), it is this pool's alone.
        try:
            server = PytestServer.spawn(key, None if paths is None or found is None else (paths, found))
        except OSError as exc:  # no such directory or interpreter: the fresh process will say so
            log.debug("cannot start a pytest server for %s: %s", key.cwd, exc)
            return None
        self.started += 1
        if await _ready(server, deadline - loop.time()):
            return server
        log.warning("a pytest server for %s did not start; batches there start fresh processes", key.cwd)
        return None

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
        for starting in self.starting.values():
            if starting.done() and not starting.cancelled() and starting.exception() is None:
                server = starting.result()
                if server is not None:
                    server.close()
            starting.cancel()
        self.starting.clear()
