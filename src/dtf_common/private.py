"""Data only its owner reads: directories 0700, files 0600.

A coordinator's data directory holds the command log (task environments included), the
results store and its tokens' secret; a worker's holds its spool and its tasks' files.
Other users of the machine must read none of it. A coordinator creates nothing anyone
else needs, so it simply sets its umask; a worker sets the mode of what it writes itself
and leaves its tasks' own umask alone.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_files() -> None:
    """Everything this process creates from now on is its user's alone."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner may enter, made so if it was not (a directory
    created by an earlier version, or by hand)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o777 != PRIVATE_DIR:
        path.chmod(PRIVATE_DIR)
    return path


def open_private(path: Path, mode: str = "ab") -> int:
    """A file descriptor for `path`, created 0600 (an existing file keeps its contents)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE)
    if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE:
        os.fchmod(fd, PRIVATE_FILE)
    return fd
