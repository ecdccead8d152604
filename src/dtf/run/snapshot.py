"""A content-addressed snapshot of a project, so that remote workers need no checkout.

`build_snapshot(root, cache_dir=...)` packs the project's files into a gzipped tar whose
bytes depend only on the files' paths, contents and executable bits: the same tree gives
the same SHA-256, on any machine. Which files:

- in a git work tree, `git ls-files -co --exclude-standard`: tracked files and untracked
  ones that are not ignored, as they are on disk now (uncommitted edits are tested);
- elsewhere, every file under `root` less common junk (`JUNK_DIRS`, `*.pyc`).

Symbolic links are stored as links (a worker refuses any that points outside the
snapshot); submodules and other nested repositories are left out in a git work tree.
The archive is kept in `cache_dir` as `<sha256>.tar.gz`, with an index of every file's
(path, size, mtime_ns, mode): when nothing in it changed, the archive is not rebuilt.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JUNK_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".dtf", "node_modules", ".tox"})
JUNK_SUFFIXES = (".pyc", ".pyo")
_INDEX_VERSION = 1


@dataclass(frozen=True)
class Snapshot:
    """`bytes` is the archive's size (what an upload sends); `files` counts its members."""

    sha256: str
    archive: Path
    files: int
    bytes: int

    def parameter(self, subdir: str = "") -> dict[str, str]:
        """The task parameter `snapshot`: run in `<snapshot>/<subdir>` on the worker."""
        return {"sha256": self.sha256, "subdir": subdir}


def list_files(root: Path) -> list[str]:
    """The project's files under `root`, as sorted POSIX paths relative to it."""
    names = _git_files(root)
    if names is None:
        names = _walk_files(root)
    return sorted(set(names))


def _git_files(root: Path) -> list[str] | None:
    try:
        inside = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:  # no git on this machine
        return None
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return None
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
        capture_output=True,
        check=True,
    )
    names = []
    for raw in listed.stdout.split(b"\0"):
        if not raw:
            continue
        name = os.fsdecode(raw)
        path = root / name
        # Deleted but still tracked files are gone; a submodule is a directory.
        if path.is_symlink() or path.is_file():
            names.append(name)
    return names


def _walk_files(root: Path) -> list[str]:
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in JUNK_DIRS]
        base = Path(folder).relative_to(root)
        for name in files:
            if not name.endswith(JUNK_SUFFIXES):
                names.append((base / name).as_posix())
    return names


def _index(root: Path, names: list[str]) -> list[list[Any]]:
    entries: list[list[Any]] = []
    for name in names:
        info = (root / name).lstat()
        entries.append([name, info.st_size, info.st_mtime_ns, info.st_mode])
    return entries


def build_snapshot(root: Path, *, cache_dir: Path) -> Snapshot:
    """The snapshot of the project at `root`, built (or reused) in `cache_dir`."""
    root = root.resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir.resolve()
    names = [n for n in list_files(root) if not _is_inside(root / n, cache)]
    entries = _index(root, names)
    index_path = cache / f"index-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json"
    cached = _cached(index_path, entries)
    if cached is not None:
        return cached

    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix="snapshot.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            write_archive(root, names, raw)
        digest = _sha256_file(Path(tmp_name))
        archive = cache / f"{digest}.tar.gz"
        os.replace(tmp_name, archive)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    snapshot = Snapshot(sha256=digest, archive=archive, files=len(names), bytes=archive.stat().st_size)
    index = {"version": _INDEX_VERSION, "sha256": digest, "files": len(names), "entries": entries}
    index_path.write_text(json.dumps(index))
    return snapshot


def write_archive(root: Path, names: list[str], out: Any) -> None:
    """A deterministic tar.gz of `names` (relative to `root`) into the binary file `out`:
    sorted members, mtime 0, owner 0:0, mode 0644 or 0755, a gzip header without a time."""
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(names):
            path = root / name
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                info.mode = 0o777
                tar.addfile(info)
                continue
            info.mode = 0o755 if mode & stat.S_IXUSR else 0o644
            with path.open("rb") as data:
                info.size = os.fstat(data.fileno()).st_size
                tar.addfile(info, data)


def _cached(index_path: Path, entries: list[list[Any]]) -> Snapshot | None:
    try:
        index = json.loads(index_path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if index.get("version") != _INDEX_VERSION or index.get("entries") != entries:
        return None
    archive = index_path.parent / f"{index['sha256']}.tar.gz"
    if not archive.is_file():
        return None
    return Snapshot(sha256=index["sha256"], archive=archive, files=index["files"], bytes=archive.stat().st_size)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents
