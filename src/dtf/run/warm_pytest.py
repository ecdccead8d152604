"""The run's collection in a warm pytest server, shared with the local workers.

A run collects its suite with pytest on the client, and each local worker warms a pytest
server for the same suite (`dtf_worker.executors.pytest_pool`): on a first run that is
three pytest start-ups, plugins and conftest files included, competing for the CPU with
the coordinator's start. When the run starts a cluster of its own, it starts that server
itself, before the workers (`launch`); once warm, the server shares itself
(`dtf_worker.executors.pytest_share`): the workers take clones of it instead of warming
their own, and the collection runs in a child forked from it. On a cluster already
running, the collection runs in a clone of the workers' shared server where one is
listening (`find`).

Either way this is only faster: where no server can run the collection, `run` answers
None and the caller collects in a fresh pytest process, as it always could.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dtf_worker.executors.pytest_share import ServerKey, SharePaths, batch_key, forking, spawn_server

if TYPE_CHECKING:  # asyncio and the pool only once a collection runs: `launch` is on the critical path
    import asyncio

    from dtf_worker.executors.pytest_pool import PytestServer

# How long the server may take to warm up, and the collection to be over.
READY_TIMEOUT_S = 300.0
KILL_GRACE_S = 1.0


class WarmPytest:
    """A warm server for the suite in `key.cwd`: this process's own (`proc`), or the
    shared one of whoever holds the key's lock, cloned when needed."""

    def __init__(self, key: ServerKey, paths: SharePaths, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.key = key
        self.paths = paths
        self.proc = proc
        self._own: PytestServer | None = None
        self._cancel: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._lock = threading.Lock()

    @classmethod
    def launch(cls, cwd: Path, batch_args: Sequence[str]) -> WarmPytest | None:
        """Start the shared server for batches of `batch_args` in `cwd`, unless one is
        already warming up or listening (then `run` clones that one)."""
        if not forking():
            return None
        key = batch_key(cwd, batch_args)
        paths = SharePaths.of(key)
        if paths is None:
            return None
        lock = paths.try_lock()
        if lock is None:
            return cls(key, paths)
        try:
            return cls(key, paths, spawn_server(key, ["."], (paths, lock)))
        except OSError:
            return None

    @classmethod
    def find(cls, cwd: Path, batch_args: Sequence[str]) -> WarmPytest | None:
        """The shared server of a running cluster's workers, where one listens."""
        if not forking():
            return None
        key = batch_key(cwd, batch_args)
        paths = SharePaths.of(key)
        return cls(key, paths) if paths is not None and paths.socket_path.exists() else None

    def run(self, argv: list[str], env: dict[str, str], log_dir: Path, time_limit: float) -> int | None:
        """pytest's exit code for `pytest <argv>` run in a child of the warm server, with
        `env` (dtf's own variables only: see `pytest_share.BATCH_VARIABLES`) added and its
        output in `log_dir`; None when no server could run it. Blocks: call it from a
        thread of its own, and `cancel` from another."""
        import asyncio

        return asyncio.run(self._run(argv, env, log_dir, time_limit))

    async def _run(self, argv: list[str], env: dict[str, str], log_dir: Path, time_limit: float) -> int | None:
        import asyncio

        from dtf_worker.executors.pytest_pool import BatchSpec, PytestServer

        cancel = asyncio.Event()
        with self._lock:
            self._cancel = (asyncio.get_running_loop(), cancel)
        try:
            if self.proc is not None:
                server = self._own = self._own or PytestServer.of(self.key, self.proc)
                if server.ready is None and not await server.wait_ready(READY_TIMEOUT_S):
                    return None
            else:
                clone = await self._clone(time_limit)
                if clone is None:
                    return None
                server = clone
            try:
                run = await server.run(
                    BatchSpec(argv, Path(self.key.cwd), env, log_dir),
                    time_limit=time_limit,
                    cancel=cancel,
                    kill_grace_s=KILL_GRACE_S,
                )
            finally:
                if server is not self._own:
                    server.close()
            if run is None or run.cancelled:
                return None
            return run.exit_code
        finally:
            with self._lock:
                self._cancel = None

    async def _clone(self, wait_s: float) -> PytestServer | None:
        """A clone of the shared server, waiting while its owner warms it up."""
        from dtf_worker.executors.pytest_pool import clone_or_lock

        found = await clone_or_lock(self.key, self.paths, min(wait_s, READY_TIMEOUT_S))
        if isinstance(found, int):  # no one shares one after all
            os.close(found)
            return None
        return found

    def cancel(self) -> None:
        """Stop a `run` in progress (from another thread)."""
        with self._lock:
            if self._cancel is not None:
                loop, event = self._cancel
                with contextlib.suppress(RuntimeError):  # its loop just closed
                    loop.call_soon_threadsafe(event.set)

    def close(self) -> None:
        """Stop this process's own server: it stops sharing, and its clones carry on."""
        if self.proc is not None:
            from dtf_worker.executors.pytest_pool import PytestServer

            (self._own or PytestServer.of(self.key, self.proc)).close()
