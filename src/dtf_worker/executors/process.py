"""Run one subprocess in a process group of its own, measure it, and kill the whole group
on timeout or cancellation.

Output goes to files rather than pipes: nothing has to drain them, a grandchild that
keeps them open cannot hang us, and the full logs stay on disk beside the task. The
child is reaped with `os.wait4` so its CPU time (its own and that of the descendants it
waited for) comes from the kernel. Peak memory comes from a 50 ms poll over the process
tree instead of `ru_maxrss`, which Linux carries across exec: every child would
otherwise report at least the worker's own size. POSIX only (process groups).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

TAIL_BYTES = 8 * 1024
SAMPLE_INTERVAL_S = 0.05
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcessRun:
    """How a process ended. `exit_code` < 0 means killed by that signal (subprocess's convention)."""

    exit_code: int
    timed_out: bool
    cancelled: bool
    timeout_s: float
    wall_time_s: float
    cpu_time_s: float
    peak_memory_mb: float
    stdout_tail: str
    stderr_tail: str

    @property
    def signal_name(self) -> str | None:
        if self.exit_code >= 0:
            return None
        try:
            return signal.Signals(-self.exit_code).name
        except ValueError:
            return f"signal {-self.exit_code}"

    def failure(self) -> str | None:
        """One line saying why the run did not succeed, or None when it exited 0."""
        if self.timed_out:
            return f"timed out after {self.timeout_s}s"
        if self.cancelled:
            return "cancelled"
        if self.signal_name:
            return f"killed by {self.signal_name}"
        if self.exit_code != 0:
            lines = [line for line in self.stderr_tail.splitlines() if line.strip()]
            return f"exit code {self.exit_code}: {lines[-1].strip()}" if lines else f"exit code {self.exit_code}"
        return None

    def measurements(self) -> dict[str, float]:
        return {
            "wall_time_s": round(self.wall_time_s, 6),
            "cpu_time_s": round(self.cpu_time_s, 6),
            "peak_memory_mb": round(self.peak_memory_mb, 3),
        }


async def run_process(
    command: Sequence[str] | str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    time_limit: float,
    cancel: asyncio.Event,
    log_dir: Path,
    kill_grace_s: float = 2.0,
) -> ProcessRun:
    """Start `command` (argv, or a shell string), wait for it, and return what it did.

    Raises OSError when the process cannot be started (missing executable or cwd).
    """
    proc = _spawn(command, cwd=cwd, env=env, log_dir=log_dir)
    started = time.monotonic()
    tree = TreeSampler(proc.pid)
    sampling = asyncio.create_task(tree.run())
    timed_out = cancelled = False
    try:
        ended = await _exit_cancel_or_time_limit(proc.pid, cancel, time_limit)
        wall = time.monotonic() - started
        if ended != "exited":
            timed_out, cancelled = ended == "timeout", ended == "cancel"
            await _terminate_group(proc.pid, kill_grace_s)
    finally:
        sampling.cancel()
        # The leader has exited (or is killed here if we are being cancelled) but is not
        # reaped yet, so its pid still names the group: nothing left in it outlives the task.
        signal_group(proc.pid, signal.SIGKILL)
        usage = _reap(proc)
        tree.kill_escaped()
    return ProcessRun(
        exit_code=proc.returncode,
        timed_out=timed_out,
        cancelled=cancelled,
        timeout_s=time_limit,
        wall_time_s=wall,
        cpu_time_s=usage.ru_utime + usage.ru_stime,
        peak_memory_mb=tree.peak_bytes / _MIB,
        stdout_tail=read_tail(log_dir / "stdout.log"),
        stderr_tail=read_tail(log_dir / "stderr.log"),
    )


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _spawn(
    command: Sequence[str] | str, *, cwd: Path, env: Mapping[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "stdout.log").open("wb") as out, (log_dir / "stderr.log").open("wb") as err:
        return subprocess.Popen(
            command if isinstance(command, str) else list(command),
            shell=isinstance(command, str),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def _reap(proc: subprocess.Popen[bytes]) -> resource.struct_rusage:
    """Collect the exited child's status and rusage (immediate: it has exited or been SIGKILLed)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never tries to reap it itself
    return usage


async def _exit_cancel_or_time_limit(pid: int, cancel: asyncio.Event, time_limit: float) -> str:
    exited = asyncio.create_task(_wait_for_exit(pid))
    cancelled = asyncio.create_task(cancel.wait())
    try:
        done, _ = await asyncio.wait({exited, cancelled}, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (exited, cancelled):
            waiter.cancel()
        await asyncio.gather(exited, cancelled, return_exceptions=True)
    if exited in done:
        return "exited"
    return "cancel" if cancelled in done else "timeout"


async def _terminate_group(pid: int, grace_s: float) -> None:
    """SIGTERM the group, give it `grace_s` to exit, then SIGKILL it."""
    signal_group(pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(_wait_for_exit(pid), grace_s)
    except TimeoutError:
        signal_group(pid, signal.SIGKILL)
        await _wait_for_exit(pid)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already empty
        os.killpg(pgid, sig)


async def _wait_for_exit(pid: int) -> None:
    """Return once the child has exited, without reaping it: `wait4` reaps it later for its rusage."""
    pidfd_open = getattr(os, "pidfd_open", None)
    fd = None
    if pidfd_open is not None:
        try:
            fd = pidfd_open(pid)
        except OSError:
            fd = None
    if fd is None:
        while True:
            if has_exited(pid):
                return
            await asyncio.sleep(SAMPLE_INTERVAL_S)
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:  # a pidfd becomes readable when the process exits
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await readable
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def has_exited(pid: int) -> bool:
    """Whether `pid` has exited (a zombie has)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class TreeSampler:
    """Polls the process tree's summed peak RSS and remembers every descendant seen."""

    def __init__(self, pid: int) -> None:
        self.peak_bytes = 0
        self.seen: dict[int, psutil.Process] = {}
        try:
            self.root: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self.root = None

    async def run(self) -> None:
        while self.root is not None:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def sample(self) -> None:
        assert self.root is not None
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            try:
                total += peak_rss_bytes(proc)
            except psutil.Error:
                continue
            if proc.pid != self.root.pid:
                self.seen.setdefault(proc.pid, proc)
        self.peak_bytes = max(self.peak_bytes, total)

    def kill_escaped(self) -> None:
        """Kill descendants that left the process group (setsid) and so escaped killpg."""
        for proc in self.seen.values():
            try:
                if proc.is_running():
                    proc.kill()
            except psutil.Error:
                pass


def peak_rss_bytes(proc: psutil.Process) -> int:
    """The process's own high-water RSS where Linux keeps it (VmHWM, reset at exec), so a
    spike between two polls still counts; its current RSS elsewhere."""
    try:
        with open(f"/proc/{proc.pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return int(proc.memory_info().rss)
