"""Durable on-disk spool of task outcomes awaiting the coordinator's acknowledgement.

One file per outcome, named by a sequence number so a directory listing gives write
order. `put` writes a temporary file, fsyncs it, renames it into place and fsyncs the
directory: once it returns, the outcome survives kill -9 and power loss, and a reader
never sees a half-written file. Calls are synchronous: an fsync of a small file costs
well under a millisecond, less than handing it to a thread.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dtf_common.pb.dtf.v1 import types_pb2

log = logging.getLogger("dtf.worker.spool")

_SUFFIX = ".outcome"
_TMP_PREFIX = ".tmp-"
_CORRUPT_SUFFIX = ".corrupt"


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(_TMP_PREFIX + "*"):
            leftover.unlink(missing_ok=True)  # a put that crashed before its rename never returned
        keys = self._keys()
        self._next = int(keys[-1]) + 1 if keys else 1

    def put(self, outcome: types_pb2.TaskOutcome) -> str:
        key = f"{self._next:020d}"
        self._next += 1
        tmp = self.directory / f"{_TMP_PREFIX}{key}"
        with tmp.open("wb") as f:
            f.write(outcome.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(self._path(key))
        self._sync_directory()
        return key

    def pending(self, limit: int | None = None) -> list[tuple[str, types_pb2.TaskOutcome]]:
        """Unacknowledged outcomes, oldest first."""
        out: list[tuple[str, types_pb2.TaskOutcome]] = []
        for key in self._keys():
            if limit is not None and len(out) >= limit:
                break
            try:
                outcome = types_pb2.TaskOutcome.FromString(self._path(key).read_bytes())
            except FileNotFoundError:
                continue  # acknowledged meanwhile
            except Exception:
                # Renames are atomic, so this is damage from outside; set it aside rather than
                # block every later outcome behind it.
                log.error("spooled outcome %s is unreadable; moved aside as %s%s", key, key, _CORRUPT_SUFFIX)
                self._path(key).rename(self.directory / f"{key}{_CORRUPT_SUFFIX}")
                continue
            out.append((key, outcome))
        return out

    def ack(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        if keys:
            self._sync_directory()

    def __len__(self) -> int:
        return len(self._keys())

    def _keys(self) -> list[str]:
        return sorted(p.name.removesuffix(_SUFFIX) for p in self.directory.glob("*" + _SUFFIX))

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{_SUFFIX}"

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
