"""Warm pytest servers shared between the processes of one user on one machine.

A pytest server's warm-up (pytest, its plugins, the conftest files) costs about a second
of CPU, and every local worker of a `dtf run -n N`, and the run's own collection, would
pay it again for the same project. Instead, the first server for a key (`ServerKey`)
listens on a Unix socket once warm, and whoever needs a server for the same key connects
to it: the server forks a *clone*, a server of its own for that connection, in the state
the warm-up left. A clone is cut loose from its origin (a session of its own, reparented
to init), so either may exit first.

Per key, in a directory only this user can enter (`share_dir`):

- `<digest>.lock`: held (flock) by the process that starts the key's first server, and
  from then on by that server, for as long as it shares. Whoever finds it held waits for
  the socket instead of starting a second server.
- `<digest>.sock`: where the warm server accepts; a connection gets a clone whose first
  line is its `ready` message.

A server that exits, or finds its files changed since its warm-up (`stale`), stops
sharing: it releases the lock and removes the socket. An idle clone of it that is not
stale takes over within a second (so a cluster kept after the run that started the
first server still shares one); else the next process starts a fresh one.
Sharing is an optimisation only: whatever goes wrong with it, the caller starts a
server of its own. `DTF_PYTEST_SHARE=0` switches it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

from dtf_pytest import reports as pytest_reports
from dtf_pytest import server as pytest_server
from dtf_worker.executors.environment import inherited

# "0" switches warm servers off altogether: every batch starts a fresh pytest.
FORK_VARIABLE = "DTF_PYTEST_FORK"
SHARE_VARIABLE = "DTF_PYTEST_SHARE"
# Variables the worker sets for each batch: they do not name a server (its warm-up runs
# without them), and each batch's child gets its own.
BATCH_VARIABLES = frozenset(
    {
        "DTF_TASK_ID",
        "DTF_WORKER_ID",
        "DTF_HARDWARE_ID",
        "DTF_CACHE_DIR",
        pytest_reports.BATCH_VAR,
        pytest_reports.REPORTS_VAR,
    }
)


def warm_up_env(key: ServerKey) -> dict[str, str]:
    """The warm-up's batch: every file, no selection (see `dtf_pytest.server`)."""
    batch: dict[str, object] = {"every_file": True}
    if key.xdist:
        # Each batch's child sets its own; pytest-randomly reads a seed from it.
        batch["workerinput"] = {"workercount": 1, "testrunuid": "", "randomly_seed": 0}
    return {pytest_reports.BATCH_VAR: json.dumps(batch)}


# sockaddr_un's limit on a socket's path, less its terminating NUL.
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class ServerKey:
    """What a server's warm state depends on."""

    python: str
    cwd: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    # Its batches play xdist workers (`dtf run`'s): the warm-up does too.
    xdist: bool = False

    @classmethod
    def of(
        cls, cwd: Path, args: Sequence[str], env: Mapping[str, str], python: str | None = None, *, xdist: bool = False
    ) -> ServerKey:
        stable = sorted((k, v) for k, v in env.items() if k not in BATCH_VARIABLES)
        return cls(python or sys.executable, str(cwd), tuple(args), tuple(stable), xdist)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(astuple(self)).encode()).hexdigest()[:24]


def batch_options(args: Sequence[str], *, xdist: bool) -> list[str]:
    """A batch's pytest arguments: the reports plugin, then the task's own, unchanged (a
    test's failure text depends on options such as -v and --tb, so they must be the
    collecting session's). A batch that plays an xdist worker (`dtf run`'s) keeps pytest's
    cache plugin, which leaves writing to the collecting session; others run without it,
    so that batches never write the cache of the directory they run in."""
    own = ["-p", pytest_reports.__name__]
    return [*own, *args] if xdist else [*own, "-p", "no:cacheprovider", *args]


def batch_key(cwd: Path, args: Sequence[str], env: Mapping[str, str] | None = None, *, xdist: bool) -> ServerKey:
    """The server for batches of a suite in `cwd` with the pytest arguments `args`, run by
    a worker whose environment is `env` (this process's by default)."""
    return ServerKey.of(
        cwd, batch_options(args, xdist=xdist), inherited(os.environ if env is None else env), xdist=xdist
    )


@dataclass(frozen=True)
class SharePaths:
    lock_path: Path
    socket_path: Path

    @classmethod
    def of(cls, key: ServerKey, directory: Path | None = None) -> SharePaths | None:
        """Where `key`'s shared server is found; None when sharing is off or impossible here."""
        directory = directory if directory is not None else share_dir()
        if directory is None:
            return None
        digest = key.digest()
        paths = cls(directory / f"{digest}.lock", directory / f"{digest}.sock")
        return paths if len(os.fsencode(paths.socket_path)) <= _MAX_SOCKET_PATH else None

    def try_lock(self) -> int | None:
        """The lock's descriptor, held, when no one else holds it; else None. (The server
        takes the lock over in the same way, and must run without dtf importable.)"""
        return pytest_server.try_lock(str(self.lock_path))

    def connect(self) -> socket.socket | None:
        """A connection to the warm server, which forks a clone for it; None when none listens."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            return None
        return sock


def forking(env: Mapping[str, str] | None = None) -> bool:
    """Whether batches may run in children forked from warm servers here."""
    env = os.environ if env is None else env
    return hasattr(os, "fork") and env.get(FORK_VARIABLE, "1") != "0"


def share_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """This user's directory of shared servers, made private; None when sharing is off."""
    env = os.environ if env is None else env
    if env.get(SHARE_VARIABLE, "1") == "0" or not forking(env):
        return None
    directory = Path(tempfile.gettempdir()) / f"dtf-pytest-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    try:
        st = directory.lstat()
    except OSError:
        return None
    # Another user's directory, or one others may enter, is not ours to trust.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return directory


def spawn_server(key: ServerKey, share: tuple[SharePaths, int] | None = None) -> subprocess.Popen[bytes]:
    """Start a `dtf_pytest.server` for `key`. Its warm-up is a pytest session of the batches'
    own arguments that collects every test and then serves batches from inside its run
    loop (see `dtf_pytest.server`). With `share`
    (where, and the lock held for it), it takes the lock over and shares itself once
    warm; the lock is released here either way."""
    config: dict[str, object] = {"warm_argv": list(key.args), "warm_env": warm_up_env(key)}
    if share is not None:
        paths, lock_fd = share
        config["share"] = {"socket": str(paths.socket_path), "lock": str(paths.lock_path), "lock_fd": lock_fd}
    try:
        return subprocess.Popen(
            [key.python, pytest_server.__file__, json.dumps(config)],
            cwd=key.cwd,
            env=dict(key.env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=() if share is None else (share[1],),
        )
    finally:
        if share is not None:
            os.close(share[1])  # the server holds it now (or, failing to start, no one)
