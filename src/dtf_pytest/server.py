"""A long-lived pytest process that runs each batch in a child forked from it.

`pytest_pool` starts one per worker slot and project as `python <this file> CONFIG`,
in the batches' directory and environment. It runs as a script, not as a module of its
package, and imports nothing but the standard library before pytest: pytest warns about
(and under `filterwarnings = error` fails on) a module of a plugin's distribution that is
imported before it can rewrite its asserts, and dtf is such a distribution.

The server imports pytest and runs a warm-up session once: a pytest session of the
batches' own arguments (the pool's `warm_env` selects every file and keeps every test),
which loads the plugins, runs their `pytest_configure`, imports the conftest files and
the test modules, and collects every test. Then, from inside that session's run loop
(`pytest_runtestloop`), it waits for batches.

Each batch is a `fork()` of this process: the child gets a process group of its own,
points stdout and stderr at the batch's log files (and the copies pytest's capturing and
faulthandler keep), and adds the batch's own variables to the environment. A batch that
selects tests by node id with the server's own arguments (`"resume": true`, as every
batch of `dtf run` does) then *resumes* the warm session: the reports plugin narrows
`session.items` to the batch's selection (`dtf_pytest.reports.begin_batch`), and the child
runs pytest's own run loop over them and ends the session as pytest does
(`pytest_sessionfinish`, unconfigure). Nothing is imported or collected again: a batch
starts running tests within milliseconds. Any other batch runs `pytest.main` on its own
arguments, with everything the warm-up imported already in memory. The child exits
with pytest's exit code; the parent reaps it and reports the exit code and CPU time. So
every batch has a process of its own: module state cannot leak from one batch to the
next, and a test that segfaults or calls `os._exit` ends only its batch's child.

Before each fork the server checks that no module it imported has changed on disk
(modification time and size), nor any project directory holding one (a file added or
removed). If one has, it answers `stale` and exits: the pool starts a fresh server.

The protocol is JSON lines. The server moves its stdin and stdout to private
descriptors at once, so nothing printed by plugins or conftest files can corrupt it.

- server: `{"ready": true, "pid": N, "warm_exit": N, "seconds": S, "output": "...", "collected": N}`
- pool: `{"run": {"argv": [...], "cwd": "...", "env": {the batch's own variables}, "stdout": "path",
  "stderr": "path", "resume": bool}}`
- server: `{"started": PID}` or `{"stale": "why"}`, then `{"exited": PID, "exit_code": N, "cpu_time_s": S}`

With `"share": {"socket": PATH, "lock": PATH, "lock_fd": N}` in its configuration, the
server holds the lock it inherits and, once warm, also accepts on a Unix socket at PATH:
each connection gets a clone of the server, forked from it and cut loose (a session of
its own, reparented to init), which speaks the same protocol over the connection,
`ready` first (see `pytest_share`). A server that finds its modules changed stops sharing; an idle
clone whose origin stopped sharing takes over within a second.

End of input (the worker exited or was killed) makes the server kill the running
child's process group and exit. POSIX only (fork, sessions).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

# How often to look for the child's exit where pidfd_open is missing.
POLL_S = 0.02
# The plugin every batch runs with; in a resumed session it selects the batch's tests.
REPORTS_PLUGIN = "dtf_pytest.reports"
# How often an idle clone looks whether its origin stopped sharing (see `take_over`).
TAKE_OVER_S = 1.0
_OUTPUT_TAIL_CHARS = 4000


def main(argv: list[str]) -> int:
    # As for `python -m pytest`: imports resolve from the working directory, not from here.
    sys.path[0] = os.getcwd()
    config: dict[str, Any] = json.loads(argv[0])
    commands, replies = _take_protocol_fds()
    server = Server(commands, replies)
    share = config.get("share")
    if isinstance(share, dict):
        server.share_as(str(share["socket"]), str(share["lock"]), int(share["lock_fd"]))
    return server.serve(list(config["warm_argv"]), dict(config.get("warm_env") or {}))


def _take_protocol_fds() -> tuple[int, int]:
    """Move stdin and stdout (the pool's pipes) to private descriptors; /dev/null in their place."""
    commands, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return commands, replies


class Server:
    def __init__(self, commands: int, replies: int) -> None:
        self.commands = commands
        self.replies = replies
        self.buffer = b""
        self.stamps: dict[str, tuple[int, int]] = {}
        self.warm_exit = 0
        self.started = time.monotonic()
        # The warm-up's session, once it has collected (its run loop serves the batches).
        self.session: Any = None
        self.served = False
        # Sharing (see the module's docstring): where to accept clones, and the lock held meanwhile.
        self.socket_path: str | None = None
        self.lock_path: str | None = None
        self.lock_fd: int | None = None
        self.listener: socket.socket | None = None

    def share_as(self, path: str, lock_path: str, lock_fd: int) -> None:
        os.set_inheritable(lock_fd, False)  # nothing this server starts may hold it
        self.socket_path, self.lock_path, self.lock_fd = path, lock_path, lock_fd

    def serve(self, warm_argv: list[str], warm_env: dict[str, str]) -> int:
        """Run the warm-up session; once it has collected, serve batches from inside its
        run loop (`serve_warm`). A warm-up that never reaches its run loop (a usage error,
        an interrupted collection) leaves a server that runs each batch's own pytest."""
        self.started = time.monotonic()
        code, output = warm_up(warm_argv, warm_env, self)
        if self.served:
            return 0
        self.warm_exit = code
        return self.serve_warm(output)

    def serve_warm(self, output: str) -> int:
        self.stamps = stamps(project_dirs())
        # What the warm-up built is shared by every batch: out of the collector's reach, a
        # child's collections (pytest runs two at the end of a session) neither walk it nor
        # copy its pages.
        gc.collect()
        gc.freeze()
        self.served = True
        self.send(
            {
                "ready": True,
                "pid": os.getpid(),
                "warm_exit": self.warm_exit,
                "seconds": round(time.monotonic() - self.started, 3),
                "output": output,
                "collected": None if self.session is None else len(self.session.items),
            }
        )
        try:
            self.listen()
            return self.loop()
        finally:
            self.stop_sharing()

    def loop(self) -> int:
        while True:
            command = self.next_command()
            if command is None:
                return 0
            spec = command.get("run")
            if not isinstance(spec, dict):
                continue
            changed = self.changed()
            if changed:
                self.send({"stale": changed})
                return 0
            if not self.run(spec):
                return 0

    # -- sharing ----------------------------------------------------------------

    def listen(self) -> None:
        if self.socket_path is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)  # a server killed before it could remove it
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.socket_path)
            listener.listen(16)
        except OSError:
            self.stop_sharing()
            return
        self.listener = listener

    def stop_sharing(self) -> None:
        """Remove the socket and release the lock, so the next process starts a server of its own."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if self.socket_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.socket_path)
        if self.lock_fd is not None:
            if self.lock_path is not None:
                # Lock files would pile up, one per key. A process that opened this one just
                # before may still lock it after: at worst a second server, never a wrong one.
                with contextlib.suppress(OSError):
                    os.unlink(self.lock_path)
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None
        self.socket_path = self.lock_path = None

    def accept(self) -> None:
        """Give a connection on the shared socket a clone of this server."""
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        if self.changed():
            conn.close()  # the caller sees end of input and starts a fresh server
            self.stop_sharing()
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        origin = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                if os.fork() == 0:
                    self.become_clone(conn, origin)
            finally:
                os._exit(0)
        conn.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def become_clone(self, conn: socket.socket, origin: int) -> None:
        """In the clone: serve the connection, as this server serves its pool. Never returns."""
        code = 1
        try:
            os.setsid()  # its own group, as a server the pool started: the pool kills it by it
            for fd in {self.commands, self.replies}:
                os.close(fd)
            if self.lock_fd is not None:
                os.close(self.lock_fd)
            if self.listener is not None:
                self.listener.close()
            # It keeps the paths: should its origin stop sharing, it takes over (`take_over`).
            self.listener, self.lock_fd = None, None
            fd = conn.detach()
            os.set_blocking(fd, True)
            self.commands = self.replies = fd
            self.buffer = b""
            self.send(
                {"ready": True, "pid": os.getpid(), "warm_exit": self.warm_exit, "seconds": 0.0, "clone_of": origin}
            )
            try:
                code = self.loop()
            finally:
                self.stop_sharing()
        finally:
            os._exit(code)

    def take_over(self) -> None:
        """Share this server in place of the one that did, if it stopped (a clone whose
        origin exited): a cluster kept running still has a server to clone."""
        if self.listener is not None or self.socket_path is None or self.lock_path is None:
            return
        fd = try_lock(self.lock_path)
        if fd is None:
            return  # it still shares, or another clone took over first
        self.lock_fd = fd
        if self.changed():
            self.stop_sharing()  # stale: the next process starts a fresh server
        else:
            self.listen()

    def private_fds(self) -> tuple[int, ...]:
        """What a batch's child must not keep: the protocol, the socket, the lock."""
        fds = {self.commands, self.replies}
        if self.listener is not None:
            fds.add(self.listener.fileno())
        if self.lock_fd is not None:
            fds.add(self.lock_fd)
        return tuple(fds)

    def readable(self, fds: list[int], timeout: float | None) -> list[int]:
        """Which of `fds` are readable, accepting on the shared socket meanwhile."""
        while True:
            watched = fds if self.listener is None else [*fds, self.listener.fileno()]
            ready, _, _ = select.select(watched, [], [], timeout)
            if self.listener is not None and self.listener.fileno() in ready:
                self.accept()
                ready = [fd for fd in ready if fd in fds]
                if not ready and timeout is None:
                    continue
            return ready

    # -- the protocol -----------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.replies, data) :]

    def next_command(self) -> dict[str, Any] | None:
        """The next command, waiting for it; None at end of input."""
        while b"\n" not in self.buffer:
            may_take_over = self.listener is None and self.socket_path is not None
            while not self.readable([self.commands], TAKE_OVER_S if may_take_over else None):
                self.take_over()
                may_take_over = self.listener is None and self.socket_path is not None
            chunk = os.read(self.commands, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            command = json.loads(line)
        except ValueError:
            return {}
        return command if isinstance(command, dict) else {}

    # -- batches ----------------------------------------------------------------

    def run(self, spec: dict[str, Any]) -> bool:
        """Fork the batch's child, report it, wait for it. False when the pool went away."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            if spec.get("resume") and self.session is not None:
                resume_child(self.session, spec, close=self.private_fds())  # never returns
            run_child(spec, close=self.private_fds())  # never returns
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # as the child does: whichever runs first, it has its group
        self.send({"started": pid})
        ended = self.wait(pid)
        if ended is None:
            return False
        exit_code, cpu = ended
        self.send({"exited": pid, "exit_code": exit_code, "cpu_time_s": round(cpu, 6)})
        return True

    def wait(self, pid: int) -> tuple[int, float] | None:
        """The child's exit code and CPU time once it has exited; None (the child killed)
        when the pool's end of the pipe closes first."""
        pidfd = _pidfd(pid)
        try:
            while True:
                watched = [self.commands] if pidfd is None else [self.commands, pidfd]
                readable = self.readable(watched, POLL_S if pidfd is None else None)
                if self.commands in readable:
                    chunk = os.read(self.commands, 65536)
                    if not chunk:
                        _kill_group(pid)
                        os.waitpid(pid, 0)
                        return None
                    self.buffer += chunk
                if _has_exited(pid):
                    # Leftovers in its group (background processes the tests started) go
                    # with it, while the group id still names them.
                    _kill_group(pid)
                    _, status, usage = os.wait4(pid, 0)
                    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def changed(self) -> str | None:
        """Why the modules in memory no longer match the disk, or None when they do."""
        for path, stamp in self.stamps.items():
            if _stamp(path) != stamp:
                return f"{path} changed"
        return None


def try_lock(path: str) -> int | None:
    """The lock file at `path`, opened and held (flock), when no one else holds it; else None."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def warm_up(argv: list[str], env: dict[str, str], server: Server) -> tuple[int, str]:
    """Run the warm-up session, with `env` set for it alone, its output in a sink; its
    exit code and the end of what it printed. Once it has collected, the session's run
    loop belongs to `server` (`_serve_from_run_loop`)."""
    os.environ.update(env)
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            import pytest

            code = int(pytest.main(argv, plugins=[_run_loop_plugin(server, env, sink.fileno())]))
        except BaseException as exc:  # a plugin or conftest that raises must not take the server down
            print(f"warm-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = -1
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for name in env:
                os.environ.pop(name, None)
        output = _tail(sink.fileno())
    return code, output


def _tail(fd: int) -> str:
    size = os.fstat(fd).st_size
    data = os.pread(fd, _OUTPUT_TAIL_CHARS, max(0, size - _OUTPUT_TAIL_CHARS))
    return data.decode("utf-8", errors="replace")


def _run_loop_plugin(server: Server, env: dict[str, str], sink: int) -> object:
    """The warm-up's plugin: when its session reaches the run loop, with every test
    collected, the server serves batches from there; each batch's child, forked there,
    runs its selection of those tests (`resume_child`) and never comes back."""
    import pytest

    class ServeFromRunLoop:
        @pytest.hookimpl(tryfirst=True)
        def pytest_runtestloop(self, session: Any) -> object:
            if server.served:
                return None  # a batch's child, running its tests (`resume_child`)
            for name in env:
                os.environ.pop(name, None)  # the warm-up's own: batches bring theirs
            server.session = session
            server.serve_warm(_tail(sink))
            return True  # the server is done: the session runs nothing

    return ServeFromRunLoop()


def resume_child(session: Any, spec: dict[str, Any], *, close: tuple[int, ...]) -> None:
    """The forked child of a server inside its warm session: become the batch's process
    and run the batch's selection of the tests the session collected, then end the
    session as pytest does. Never returns."""

    def run() -> int:
        redirect_output(session.config, spec["stdout"], spec["stderr"])
        os.chdir(spec["cwd"])
        os.environ.update(spec["env"])
        _reseed()
        begin = getattr(session.config.pluginmanager.get_plugin(REPORTS_PLUGIN), "begin_batch", None)
        if begin is None:
            raise RuntimeError(f"the session has no {REPORTS_PLUGIN} plugin to select the batch's tests")
        begin(session)
        return _run_session(session)

    _as_batch_process(run, close)


def _as_batch_process(run: Callable[[], int], close: tuple[int, ...]) -> None:
    """In a forked child: become the batch's process (a process group of its own, none of
    the server's descriptors, default signals), call `run`, and exit with its code (3,
    pytest's internal error, when it raises). Never returns."""
    code = 3
    try:
        os.setpgid(0, 0)
        for fd in close:
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        code = run()
        _run_exit_functions()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def redirect_output(config: Any, stdout: str, stderr: str) -> None:
    """Point fds 1 and 2 at the batch's log files, and with them the copies pytest keeps:
    the originals its capturing restores after each test."""
    import faulthandler

    capman = config.pluginmanager.get_plugin("capturemanager")
    capturing = getattr(capman, "_global_capturing", None)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        capture = getattr(capturing, "out" if fd == 1 else "err", None)
        saved = getattr(capture, "targetfd_save", None)
        if isinstance(saved, int):
            os.dup2(target, saved)
        if fd == 2:
            # A crash's traceback goes to the log, on a descriptor of its own: while a test
            # runs, pytest's capturing holds fd 2.
            faulthandler.enable(file=os.dup(target), all_threads=True)
        os.close(target)


def _run_session(session: Any) -> int:
    """pytest's own run loop over `session.items`, then the session's end: its exit code."""
    import pytest

    config = session.config
    try:
        config.hook.pytest_runtestloop(session=session)
        code = 1 if session.testsfailed else 5 if not session.testscollected else 0
    except session.Failed:
        code = 1
    except (KeyboardInterrupt, session.Interrupted):
        code = 2
    except pytest.exit.Exception as exc:
        code = exc.returncode if exc.returncode is not None else 2
    session.exitstatus = code
    config.hook.pytest_sessionfinish(session=session, exitstatus=code)
    unconfigure = getattr(config, "_ensure_unconfigure", None)
    if callable(unconfigure):
        unconfigure()
    return int(code)


def run_child(spec: dict[str, Any], *, close: tuple[int, ...]) -> None:
    """The forked child: become the batch's process and run pytest in it. Never returns."""

    def run() -> int:
        for fd, path in ((1, spec["stdout"]), (2, spec["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        os.chdir(spec["cwd"])
        # The server's environment is the batch's less its own variables (task id, progress
        # file), plus what the warm-up's imports set: keep that, as a fresh process would.
        os.environ.update(spec["env"])
        argv = [str(arg) for arg in spec["argv"]]
        import pytest

        sys.argv = [os.path.join(os.path.dirname(pytest.__file__), "__main__.py"), *argv]
        _reseed()
        return int(pytest.main(argv))

    _as_batch_process(run, close)


def _run_exit_functions() -> None:
    """What an interpreter runs at exit (atexit), which `os._exit` skips."""
    import atexit

    atexit._run_exitfuncs()


def _reseed() -> None:
    """Fresh random state, as a new process would have. `random` reseeds itself after a fork;
    numpy's global generator, when the warm-up imported it, does not."""
    numpy_random = sys.modules.get("numpy.random")
    seed = getattr(numpy_random, "seed", None)
    if callable(seed):
        seed()


# -- what the warm-up imported -----------------------------------------------------


def project_dirs() -> Iterator[str]:
    """Every module file in memory, and the directories of those outside the interpreter's
    installation (the project's own: a file added there may change what an import finds)."""
    installed = tuple(
        os.path.join(os.path.realpath(p), "") for p in {sys.prefix, sys.base_prefix, sys.exec_prefix} if p
    )
    dirs: set[str] = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not os.path.isabs(path):
            continue
        yield path
        if not os.path.realpath(path).startswith(installed):
            dirs.add(os.path.dirname(path))
    yield from sorted(dirs)


def stamps(paths: Iterator[str]) -> dict[str, tuple[int, int]]:
    return {path: _stamp(path) for path in paths}


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


# -- processes -------------------------------------------------------------------------


def _pidfd(pid: int) -> int | None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return None
    return fd


def _has_exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (its group id stays valid)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
