"""A durable, checksummed, append-only log of `LogEntry` records.

Record layout: 4-byte little-endian payload length, 4-byte CRC-32 of the payload, the
payload (a serialized `LogEntry`). Opening the log verifies every record and truncates
a torn or corrupt tail, so a half-written entry is never applied. `sync()` fsyncs; an
fsync error is fatal (`OSError` propagates and the node stops) because carrying on
after a failed fsync can silently lose acknowledged entries.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from dtf_common.pb.dtf.v1 import commands_pb2

log = logging.getLogger("dtf.log")
HEADER = struct.Struct("<II")
LOG_NAME = "log.bin"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode(entry: commands_pb2.LogEntry) -> bytes:
    payload: bytes = entry.SerializeToString()
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class LogStore:
    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LOG_NAME
        self.entries: list[commands_pb2.LogEntry] = []  # entries after the last snapshot
        self._offsets: list[int] = []  # file offset of each entry's record, for truncation
        self._size = 0
        self.base_index = 0  # index of the last entry compacted away (covered by a snapshot)
        self.truncated_bytes = 0
        self._fh: BinaryIO | None = None

    def open(self) -> list[commands_pb2.LogEntry]:
        """Load and verify the log, truncating any torn tail; return its entries."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        pos, entries, offsets = 0, list[commands_pb2.LogEntry](), list[int]()
        while pos + HEADER.size <= len(data):
            length, crc = HEADER.unpack_from(data, pos)
            payload = data[pos + HEADER.size : pos + HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            entry = commands_pb2.LogEntry()
            try:
                entry.ParseFromString(payload)
            except Exception:  # a checksum collision on garbage; treat as torn
                break
            if entries and entry.index != entries[-1].index + 1:
                break
            entries.append(entry)
            offsets.append(pos)
            pos += HEADER.size + length
        if pos < len(data):
            self.truncated_bytes = len(data) - pos
            log.warning("log %s: dropping %d bytes of torn or corrupt tail", self.path, self.truncated_bytes)
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
        self.entries, self._offsets, self._size = entries, offsets, pos
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for the node's lifetime
        fsync_dir(self.dir)
        return entries

    def _handle(self) -> BinaryIO:
        if self._fh is None:
            raise RuntimeError("log is not open")
        return self._fh

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.base_index

    def append(self, entries: list[commands_pb2.LogEntry]) -> None:
        """Write entries (not yet durable: call `sync`)."""
        records = [encode(e) for e in entries]
        for record in records:
            self._offsets.append(self._size)
            self._size += len(record)
        self._handle().write(b"".join(records))
        self.entries.extend(entries)

    def truncate_from(self, index: int) -> None:
        """Drop entries at `index` and after (a follower's conflicting, uncommitted tail)."""
        first = self.entries[0].index if self.entries else self.base_index + 1
        at = max(0, index - first)
        if at >= len(self.entries):
            return
        fh = self._handle()
        fh.flush()
        self._size = self._offsets[at]
        fh.truncate(self._size)
        del self.entries[at:], self._offsets[at:]

    def reset(self, base_index: int) -> None:
        """Empty the log after installing a snapshot at `base_index`."""
        self.compact(max(base_index, self.last_index))
        self.base_index = base_index

    def sync(self) -> None:
        fh = self._handle()
        fh.flush()
        os.fsync(fh.fileno())

    def compact(self, upto_index: int) -> None:
        """Drop entries up to `upto_index` (covered by a durable snapshot)."""
        keep = [e for e in self.entries if e.index > upto_index]
        records = [encode(e) for e in keep]
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(records))
            f.flush()
            os.fsync(f.fileno())
        self._handle().close()
        os.replace(tmp, self.path)
        fsync_dir(self.dir)
        self._fh = open(self.path, "ab")  # noqa: SIM115
        self.entries = keep
        self._offsets, self._size = [], 0
        for record in records:
            self._offsets.append(self._size)
            self._size += len(record)
        self.base_index = max(self.base_index, upto_index)

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
