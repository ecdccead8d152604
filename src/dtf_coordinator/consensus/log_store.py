"""A durable, checksummed, append-only log of `LogEntry` records.

Record layout: 4-byte little-endian payload length, 4-byte CRC-32 of the payload, the
payload (a serialized `LogEntry`, never empty: an entry has an index). `sync()` fsyncs;
an fsync error is fatal (`OSError` propagates and the node stops) because carrying on
after a failed fsync can silently lose acknowledged entries.

Opening the log verifies every record, and tells a torn tail from damage:

- **torn tail**: bad records with no intact record after them, what a crash during the
  last append leaves (a header or record cut short, a record half written, blocks
  allocated but never written). Its fsync never returned, so nothing in it was
  acknowledged: it is truncated, with a warning.
- **damage**: a bad record with an intact one after it (a length field that broke
  counts, though it seems to run past the end), or an intact record out of sequence.
  Truncating there would silently drop acknowledged entries, so opening raises
  `DamagedData`, naming the offset and the way out.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

from dtf_common.errors import DamagedData
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


def read_record(data: bytes, pos: int) -> tuple[commands_pb2.LogEntry | None, str]:
    """The entry of the record at `pos`, or None and why not."""
    if pos + HEADER.size > len(data):
        return None, "a record header cut short"
    length, crc = HEADER.unpack_from(data, pos)
    end = pos + HEADER.size + length
    if end > len(data):
        return None, f"a record of {length} bytes runs past the end of the file"
    payload = data[pos + HEADER.size : end]
    if not payload:
        return None, "an empty record"
    if zlib.crc32(payload) != crc:
        return None, "a record that fails its checksum"
    entry = commands_pb2.LogEntry()
    try:
        entry.ParseFromString(payload)
    except Exception:  # protobuf raises its DecodeError, or others, on garbage
        return None, "a record that does not parse"
    if entry.index <= 0:
        return None, "a record that does not hold an entry"
    return entry, ""


def torn_tail(data: bytes, pos: int) -> bool:
    """Whether the stop at `pos` is what a crash during the last append leaves: a bad
    record with nothing intact after it (an intact record there was written, and synced,
    after the spot went bad)."""
    if not data[pos:].strip(b"\0"):
        return True  # allocated, never written
    return read_record(data, pos)[0] is None and intact_record_after(data, pos) is None


def intact_record_after(data: bytes, pos: int) -> int | None:
    """The offset of the first record after `pos` that passes every check. A serialized
    entry starts with its term's tag (field 1, varint), which keeps the search cheap."""
    at = data.find(b"\x08", pos + 1 + HEADER.size)
    while at != -1:
        start = at - HEADER.size
        entry, _ = read_record(data, start)
        if entry is not None:
            return start
        at = data.find(b"\x08", at + 1)
    return None


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
        """Load and verify the log, truncating a torn tail; return its entries. Raises
        `DamagedData` where the log is damaged before its end (see the module's docstring)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        pos, entries, offsets = 0, list[commands_pb2.LogEntry](), list[int]()
        why = ""
        while pos < len(data):
            entry, why = read_record(data, pos)
            if entry is None:
                break
            if entries and entry.index != entries[-1].index + 1:
                why = f"entry {entry.index} follows entry {entries[-1].index}"
                break
            entries.append(entry)
            offsets.append(pos)
            pos += HEADER.size + HEADER.unpack_from(data, pos)[0]
        if pos < len(data):
            if not torn_tail(data, pos):
                last = f"entry {entries[-1].index}" if entries else "the start of the log"
                raise DamagedData(
                    f"the command log {self.path} is damaged at byte {pos} of {len(data)} ({why}, after {last}). "
                    "It is not a torn write, so the coordinator will not drop the entries after it. Restore the "
                    "data directory from a backup; in a cluster, remove this node, move its data directory aside, "
                    "start it empty and add it again: the leader rebuilds it by snapshot; or, accepting the loss of "
                    f"every entry "
                    f"after {last}, keep the log up to there with: truncate -s {pos} {self.path}",
                    field="log",
                )
            self.truncated_bytes = len(data) - pos
            log.warning("log %s: dropping %d bytes of torn tail (%s)", self.path, self.truncated_bytes, why)
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
