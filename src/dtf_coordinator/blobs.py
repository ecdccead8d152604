"""Content-addressed blobs on the coordinator's disk: project snapshots that clients
upload (`PUT /api/blobs/{sha256}`) and workers fetch (`WorkerService.FetchBlob`).

A blob lives at `<server.data_dir>/blobs/<sha256>` and its name is the SHA-256 of its
bytes, so a blob never changes once stored and storing it twice is harmless. `put`
writes to a temporary file while hashing, refuses bytes whose hash differs from the name,
fsyncs and renames into place: a reader sees a whole blob or none.

Blobs are not part of the command log: they live only on the node that received them
(a follower cannot serve a blob uploaded to the leader yet). The size of one blob is
capped at `MAX_BLOB_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from dtf_common.errors import InvalidArgument, NotFound

MAX_BLOB_BYTES = 1024**3  # 1 GiB: a project snapshot, not a data set
CHUNK_BYTES = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobTooLarge(InvalidArgument):
    """The blob is over `MAX_BLOB_BYTES` (HTTP 413)."""


def check_sha256(value: str, field: str = "sha256") -> str:
    if not _SHA256.fullmatch(value):
        raise InvalidArgument(f"{field} must be 64 lowercase hex digits, got {value[:80]!r}", field=field)
    return value


class BlobStore:
    def __init__(self, directory: Path, *, max_bytes: int = MAX_BLOB_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._tmp = directory / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():  # uploads cut short when the node last stopped
            leftover.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        return self.directory / check_sha256(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} not found", field="sha256") from None

    async def put(self, sha256: str, stream: AsyncIterable[bytes]) -> int:
        """Store the bytes of `stream` as blob `sha256`; returns its size. Raises
        InvalidArgument (field `sha256`) when the bytes hash to something else, and
        BlobTooLarge (field `body`) past the size limit."""
        target = self.path(sha256)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix=sha256[:16] + ".")
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in stream:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise BlobTooLarge(f"blob is larger than the limit of {self.max_bytes} bytes", field="body")
                    digest.update(chunk)
                    out.write(chunk)
                actual = digest.hexdigest()
                if actual != sha256:
                    raise InvalidArgument(
                        f"sha256 does not match the body: the body's SHA-256 is {actual}", field="sha256"
                    )
                out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            os.replace(name, target)
            await asyncio.to_thread(_fsync_dir, self.directory)
            return size
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def open(self, sha256: str) -> BinaryIO:
        """The blob for reading; NotFound (field `sha256`) when absent."""
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} not found on this coordinator", field="sha256") from None

    async def read(self, sha256: str, chunk_bytes: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; NotFound (field `sha256`) when absent."""
        with self.open(sha256) as handle:
            while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
                yield chunk


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
