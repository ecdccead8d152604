"""Project snapshots on a worker: fetched once from the coordinator, cached by hash.

A task whose parameters name a snapshot (`{"snapshot": {"sha256": ..., "subdir": ...}}`)
runs inside `<execution.cache_dir>/snapshots/<sha256>/`. `SnapshotCache.ensure` returns
that directory, fetching the archive (`WorkerService.FetchBlob`) only when it is absent:
the download is hashed as it arrives and refused when the hash differs, then extracted
into a temporary directory beside it and renamed into place, so the directory exists
only once it is whole. Concurrent tasks that need the same snapshot wait for one
download.

Extraction does not rely on `tarfile`'s extraction filters (some Python releases let a
chain of links past them). Every member is checked before anything is written: no
absolute path, `..`, backslash or empty name; only files, directories and symbolic
links (no hard links, devices or fifos); no member below a link, even one that stays
inside; and every link's target is followed through the archive's own tree the way the
kernel will follow it, so that a `..` after a link climbs from where the link leads; a
link that ends outside the snapshot is refused. Then this module writes the members
itself: directories, then files (each created new, never through a link, below a
parent checked to resolve to itself), then links, each checked once more with
`os.path.realpath`. Files get mode 0755 or 0644; directories 0755. The archive may hold
at most `MAX_SNAPSHOT_MEMBERS` members and `MAX_SNAPSHOT_BYTES` bytes of files.

Tasks share the directory: they should treat it as read-only (pytest writes only
`__pycache__` there; its cache provider is off).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import itertools
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dtf_common.errors import DtfError, InvalidArgument

log = logging.getLogger("dtf.worker")
SNAPSHOTS_DIR = "snapshots"

# Generous bounds against a decompression bomb: a project's tests rarely need a tenth of this.
MAX_SNAPSHOT_MEMBERS = 100_000
MAX_SNAPSHOT_BYTES = 2 * 1024**3  # the files' sizes added up
MAX_PATH_BYTES = 4096  # a member's name or a link's target (Linux's PATH_MAX)
MAX_LINK_DEPTH = 40  # links followed within one link's target, as the kernel allows
_HEADER_ALLOWANCE = 4096  # per member, beyond file data: tar headers, pax records, padding
_MAX_READ = 1024 * 1024  # one read of the decompressed archive
_COPY_CHUNK = 256 * 1024
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class BlobSource(Protocol):
    """Where blobs come from: `CoordinatorClient` (gRPC FetchBlob) or a test's stand-in."""

    def fetch_blob(self, sha256: str) -> AsyncIterator[bytes]: ...


class UnsafeArchive(InvalidArgument):
    """A snapshot member that would land outside the snapshot directory."""


class SnapshotCache:
    def __init__(self, source: BlobSource, cache_dir: Path) -> None:
        self.source = source
        self.root = cache_dir / SNAPSHOTS_DIR
        self.fetches = 0  # downloads started, for tests and logs
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    async def ensure(self, sha256: str) -> Path:
        """The snapshot's directory, fetched and extracted first when absent."""
        target = self.path(sha256)
        if target.is_dir():
            return target
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            if target.is_dir():  # another task fetched it while this one waited
                return target
            await self._fetch(sha256, target)
        self._locks.pop(sha256, None)
        return target

    async def _fetch(self, sha256: str, target: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.fetches += 1
        fd, download = tempfile.mkstemp(dir=self.root, prefix=f"{sha256[:16]}.", suffix=".download")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in self.source.fetch_blob(sha256):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            if digest.hexdigest() != sha256:
                raise InvalidArgument(
                    f"snapshot {sha256} arrived with SHA-256 {digest.hexdigest()}", field="parameters.snapshot.sha256"
                )
            await asyncio.to_thread(_install, Path(download), target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(download)
        log.info("snapshot %s fetched (%d bytes) into %s", sha256[:12], size, target)


async def ensure_snapshot(source: BlobSource, sha256: str, cache_dir: Path) -> Path:
    """`SnapshotCache(source, cache_dir).ensure(sha256)`, for a caller without a cache
    object (concurrent callers then share the filesystem's atomic rename, not a download)."""
    return await SnapshotCache(source, cache_dir).ensure(sha256)


def _install(archive: Path, target: Path) -> None:
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name[:16]}.", suffix=".partial"))
    try:
        extract_safely(archive, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not a concurrent worker that got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse a member that could lead outside the directory it is extracted into, judged
    on its own: an absolute or `..` path, a backslash, an empty name, a link whose target
    leaves lexically, and anything but a file, a directory or a symbolic link."""
    _member_parts(member)
    if member.issym():
        link = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), link))
        if not link or len(link.encode()) > MAX_PATH_BYTES:
            raise _unsafe(f"snapshot link {member.name!r} has an empty or overlong target")
        if posixpath.isabs(link) or resolved == ".." or resolved.startswith("../"):
            raise _unsafe(f"snapshot link {member.name!r} points outside: {link!r}")
    elif member.islnk():
        raise _unsafe(f"snapshot member {member.name!r} is a hard link: snapshots hold files, directories and links")
    elif not (member.isfile() or member.isdir()):
        raise _unsafe(f"snapshot member {member.name!r} is not a file, directory or link")


def extract_safely(
    archive: Path, into: Path, *, max_members: int = MAX_SNAPSHOT_MEMBERS, max_bytes: int = MAX_SNAPSHOT_BYTES
) -> int:
    """Extract a snapshot's tar.gz into `into` (absent or empty); returns the number of members.

    Every member is checked before anything is written; then directories, files and,
    last, links are created by this module (not `TarFile.extractall`), each file through
    a parent that is verified to be a real directory inside `into`."""
    try:
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise DtfError(f"cannot extract the snapshot: {into} is not empty")
        root = Path(os.path.realpath(into))
        with gzip.open(archive, "rb") as unzipped:
            stream = _BoundedStream(unzipped, limit=max_bytes + max_members * _HEADER_ALLOWANCE)
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                plan = _plan(tar, max_members=max_members, max_bytes=max_bytes)
                _write(tar, plan, root)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DtfError(f"cannot extract the snapshot: {exc}") from exc
    return plan.members


@dataclass
class _Plan:
    """An archive's members, checked and sorted by kind; paths are tuples of components."""

    members: int = 0
    dirs: set[tuple[str, ...]] = field(default_factory=set)
    files: dict[tuple[str, ...], tarfile.TarInfo] = field(default_factory=dict)
    links: dict[tuple[str, ...], str] = field(default_factory=dict)


def _unsafe(message: str) -> UnsafeArchive:
    return UnsafeArchive(message, field="parameters.snapshot")


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    """The member's path as components below the snapshot directory (`.` and empty ones dropped)."""
    name = member.name
    parts = name.split("/")
    if (
        name.startswith("/")
        or posixpath.isabs(name)
        or ".." in parts
        or "\\" in name
        or not name.strip("/")
        or len(name.encode()) > MAX_PATH_BYTES
    ):
        raise _unsafe(f"snapshot member {name!r} has an unsafe path")
    kept = tuple(part for part in parts if part not in ("", "."))
    if not kept and not member.isdir():  # only a directory may name the snapshot directory itself
        raise _unsafe(f"snapshot member {name!r} has an unsafe path")
    return kept


def _plan(tar: tarfile.TarFile, *, max_members: int, max_bytes: int) -> _Plan:
    plan, size = _Plan(), 0
    for member in tar:
        plan.members += 1
        if plan.members > max_members:
            raise _unsafe(f"snapshot holds more than {max_members} members")
        check_member(member)
        parts = _member_parts(member)
        if member.isfile():
            size += member.size
            if size > max_bytes:
                raise _unsafe(f"snapshot expands to more than {max_bytes} bytes")
        _add(plan, parts, member)
    _check_parents(plan)
    _check_links(plan)
    return plan


def _add(plan: _Plan, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
    if not parts:
        return  # `.`: the snapshot directory itself
    if member.isdir() and parts in plan.dirs:
        return
    if parts in plan.dirs or parts in plan.files or parts in plan.links:
        raise _unsafe(f"snapshot member {member.name!r} appears twice")
    if member.isdir():
        plan.dirs.add(parts)
    elif member.issym():
        plan.links[parts] = member.linkname
    else:
        plan.files[parts] = member


def _check_parents(plan: _Plan) -> None:
    """Nothing is extracted through a link or below a file, even a link that stays inside:
    a member's every parent is a directory that this extraction creates."""
    for parts in itertools.chain(plan.dirs, plan.files, plan.links):
        for end in range(1, len(parts)):
            parent = parts[:end]
            if parent in plan.links:
                raise _unsafe(f"snapshot member {'/'.join(parts)!r} lies under the link {'/'.join(parent)!r}")
            if parent in plan.files:
                raise _unsafe(f"snapshot member {'/'.join(parts)!r} lies under the file {'/'.join(parent)!r}")


class _Escape(Exception):
    """A link's target climbed above the snapshot directory."""


class _TooDeep(Exception):
    """A link's target went through more than `MAX_LINK_DEPTH` links: a loop, or a chain."""


def _check_links(plan: _Plan) -> None:
    """Follow every link through the archive's own tree the way the kernel will: a `..`
    after a link climbs from where that link leads, which a lexical check cannot see."""
    resolved: dict[tuple[str, ...], tuple[str, ...]] = {}
    for parts, target in plan.links.items():
        try:
            _follow(parts, plan.links, resolved, depth=0)
        except _Escape:
            raise _unsafe(f"snapshot link {'/'.join(parts)!r} points outside: {target!r}") from None
        except _TooDeep:
            raise _unsafe(f"snapshot link {'/'.join(parts)!r} is part of a loop or too long a chain of links") from None


def _follow(
    link: tuple[str, ...],
    links: dict[tuple[str, ...], str],
    resolved: dict[tuple[str, ...], tuple[str, ...]],
    depth: int,
) -> tuple[str, ...]:
    """Where `link` leads, as components below the snapshot directory."""
    if link in resolved:
        return resolved[link]
    if depth > MAX_LINK_DEPTH:
        raise _TooDeep
    path = list(link[:-1])
    for part in links[link].split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not path:
                raise _Escape
            path.pop()
            continue
        path.append(part)
        if tuple(path) in links:
            path = list(_follow(tuple(path), links, resolved, depth + 1))
    resolved[link] = tuple(path)
    return resolved[link]


def _write(tar: tarfile.TarFile, plan: _Plan, root: Path) -> None:
    """Directories, then files, then links: while files are written there is no link
    under `root` at all, and each link is checked once more where the kernel resolves it."""
    for parts in sorted(_directories(plan)):  # a parent sorts before its children
        _make_dir(root, parts)
    for parts, member in plan.files.items():
        _write_file(tar, member, _parent_inside(root, parts) / parts[-1])
    for parts, target in plan.links.items():
        os.symlink(target, _parent_inside(root, parts) / parts[-1])
    for parts, target in plan.links.items():
        if not _is_inside(os.path.realpath(root.joinpath(*parts)), str(root)):
            raise _unsafe(f"snapshot link {'/'.join(parts)!r} points outside: {target!r}")


def _directories(plan: _Plan) -> set[tuple[str, ...]]:
    """The directories named in the archive and those its members imply."""
    implied = {parts[:end] for parts in itertools.chain(plan.files, plan.links) for end in range(1, len(parts))}
    return plan.dirs | implied


def _is_inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _make_dir(root: Path, parts: tuple[str, ...]) -> None:
    path = root.joinpath(*parts)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise _unsafe(f"snapshot directory {'/'.join(parts)!r} is already something else") from None


def _parent_inside(root: Path, parts: tuple[str, ...]) -> Path:
    """The member's parent directory, once it is known to resolve to itself inside `root`."""
    parent = root.joinpath(*parts[:-1])
    if os.path.realpath(parent) != str(parent):
        raise _unsafe(f"snapshot member {'/'.join(parts)!r} would be written through a link")
    return parent


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    """Create the file itself (never through a link already at its name) with sane permissions:
    0755 when its owner may run it, 0644 otherwise; no setuid, setgid or sticky bit."""
    source = tar.extractfile(member)
    if source is None:
        raise DtfError(f"cannot extract the snapshot: no data for {member.name!r}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, source:
        shutil.copyfileobj(source, out, _COPY_CHUNK)
        os.fchmod(out.fileno(), 0o755 if member.mode & stat.S_IXUSR else 0o644)
        mtime = int(member.mtime) if 0 <= member.mtime < 2**32 else 0  # as the archive says, if sane
        os.utime(out.fileno(), (mtime, mtime))


class _BoundedStream:
    """The decompressed archive, read by `tarfile` no further than `limit` bytes and in
    reads of at most `_MAX_READ` bytes: an oversized header (a long name or pax record)
    would otherwise be read into memory whole."""

    def __init__(self, raw: gzip.GzipFile, *, limit: int) -> None:
        self.raw = raw
        self.limit = limit

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > _MAX_READ:
            raise _unsafe(f"snapshot has a header or record larger than {_MAX_READ} bytes")
        if self.raw.tell() + size > self.limit:
            raise _unsafe(f"snapshot expands to more than {self.limit} bytes")
        return self.raw.read(size)

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0 and pos > self.limit:
            raise _unsafe(f"snapshot expands to more than {self.limit} bytes")
        return self.raw.seek(pos, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("read-only")

    def close(self) -> None:
        pass  # the gzip file is closed by its own `with`
