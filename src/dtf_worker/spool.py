"""Durable on-disk spool of task outcomes awaiting the coordinator's acknowledgement.

One append-only file of checksummed records: a put (key and outcome) or an ack (key).
`put` only appends; `sync` makes every put so far durable with one fsync (group commit:
the sender syncs once per batch, not once per outcome), and only durable outcomes are
offered by `pending`, so nothing is reported that a crash could take back. Acks are not
fsynced: an ack lost to a crash just means the outcome is sent again, and the
coordinator answers a repeat as STALE. Opening the spool truncates a torn tail. When
nothing is pending and the file has grown, it is emptied.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.private import open_private, private_dir

log = logging.getLogger("dtf.worker.spool")

FILE_NAME = "outcomes.spool"
HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
ENTRY = struct.Struct("<cQ")  # kind (b"P" put, b"A" ack), key
ROTATE_BYTES = 4 * 1024 * 1024


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        private_dir(self.directory)
        self.path = self.directory / FILE_NAME
        self._pending: OrderedDict[int, types_pb2.TaskOutcome] = OrderedDict()
        self._lock = threading.Lock()
        self._next = 1
        self._written = 0  # highest key written
        self._durable = 0  # highest key fsynced
        self._recover()
        self._fh: BinaryIO = os.fdopen(open_private(self.path), "ab")  # open for the spool's lifetime
        self._durable = self._written

    def _recover(self) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        pos = 0
        while pos + HEADER.size <= len(data):
            length, crc = HEADER.unpack_from(data, pos)
            payload = data[pos + HEADER.size : pos + HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc or length < ENTRY.size:
                break
            kind, key = ENTRY.unpack_from(payload)
            if kind == b"P":
                try:
                    self._pending[key] = types_pb2.TaskOutcome.FromString(payload[ENTRY.size :])
                except Exception:
                    log.error("spooled outcome %d is unreadable; skipped", key)
            else:
                self._pending.pop(key, None)
            self._next = max(self._next, key + 1)
            pos += HEADER.size + length
        if pos < len(data):
            log.warning("spool %s: dropping %d bytes of torn tail", self.path, len(data) - pos)
            with open(self.path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
        self._written = self._next - 1

    def _append(self, kind: bytes, key: int, body: bytes = b"") -> None:
        payload = ENTRY.pack(kind, key) + body
        self._fh.write(HEADER.pack(len(payload), zlib.crc32(payload)) + payload)

    def put(self, outcome: types_pb2.TaskOutcome) -> str:
        """Append an outcome; durable (and offered by `pending`) after the next `sync`."""
        with self._lock:
            key = self._next
            self._next += 1
            self._append(b"P", key, outcome.SerializeToString())
            self._pending[key] = outcome
            self._written = key
        return str(key)

    def sync(self) -> None:
        """Make every outcome put so far durable: one flush and one fsync."""
        with self._lock:
            if self._durable == self._written:
                return
            self._fh.flush()
            upto = self._written
            fd = self._fh.fileno()
        os.fsync(fd)
        with self._lock:
            self._durable = max(self._durable, upto)

    def pending(self, limit: int | None = None) -> list[tuple[str, types_pb2.TaskOutcome]]:
        """Durable, unacknowledged outcomes, oldest first."""
        out: list[tuple[str, types_pb2.TaskOutcome]] = []
        with self._lock:
            for key, outcome in self._pending.items():
                if key > self._durable or (limit is not None and len(out) >= limit):
                    break
                out.append((str(key), outcome))
        return out

    def ack(self, keys: list[str]) -> None:
        with self._lock:
            for raw in keys:
                key = int(raw)
                if self._pending.pop(key, None) is not None:
                    self._append(b"A", key)
            self._fh.flush()
            if not self._pending and self._fh.tell() > ROTATE_BYTES:
                # Everything is acknowledged: start the file afresh so it cannot grow forever.
                self._fh.truncate(0)
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()

    def __len__(self) -> int:
        return len(self._pending)
