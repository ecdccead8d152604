"""Project snapshots on a worker: fetched once from the coordinator, cached by hash.

A task whose parameters name a snapshot (`{"snapshot": {"sha256": ..., "subdir": ...}}`)
runs inside `<execution.cache_dir>/snapshots/<sha256>/`. `SnapshotCache.ensure` returns
that directory, fetching the archive (`WorkerService.FetchBlob`) only when it is absent:
the download is hashed as it arrives and refused when the hash differs, then extracted
into a temporary directory beside it and renamed into place, so the directory exists
only once it is whole. Concurrent tasks that need the same snapshot wait for one
download. Extraction refuses absolute paths, `..`, links that lead outside the snapshot
and anything but files, directories and links.

Tasks share the directory: they should treat it as read-only (pytest writes only
`__pycache__` there; its cache provider is off).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from dtf_common.errors import DtfError, InvalidArgument

log = logging.getLogger("dtf.worker")
SNAPSHOTS_DIR = "snapshots"


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
    """Refuse a member that would write outside the directory it is extracted into."""
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or posixpath.isabs(name) or ".." in parts or "\\" in name or not name.strip("/"):
        raise UnsafeArchive(f"snapshot member {name!r} has an unsafe path", field="parameters.snapshot")
    if member.issym():
        link = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
        if posixpath.isabs(link) or resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchive(f"snapshot link {name!r} points outside: {link!r}", field="parameters.snapshot")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"snapshot member {name!r} is not a file, directory or link", field="parameters.snapshot")


def extract_safely(archive: Path, into: Path) -> int:
    """Extract a snapshot's tar.gz into `into`; returns the number of members."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                check_member(member)
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise UnsafeArchive(f"snapshot refused: {exc}", field="parameters.snapshot") from None
        raise DtfError(f"cannot extract the snapshot: {exc}") from exc
    return len(members)
