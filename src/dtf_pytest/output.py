"""What a running task prints, read from its log files as it grows, for whoever follows
the task live (`dtf run -s`, pytest's `-s` across machines).

The output travels in the task's outcomes and so through the coordinator's command log:
each read is bounded (CHUNK_BYTES a stream), and a task's whole live output too
(LIMIT_BYTES); past it the follower is told where the rest is, and the log files keep
everything.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path

CHUNK_BYTES = 256 * 1024
LIMIT_BYTES = 16 * 1024 * 1024


@dataclass
class _Stream:
    path: Path
    offset: int = 0
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    def read(self, limit: int) -> str:
        """Up to `limit` bytes written since the last read, decoded (a character cut at the
        end waits for the next read)."""
        if limit <= 0:
            return ""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(limit)
        except FileNotFoundError:
            return ""
        self.offset += len(data)
        return self.decoder.decode(data)

    def unread(self) -> int:
        try:
            return max(0, self.path.stat().st_size - self.offset)
        except FileNotFoundError:
            return 0


class OutputTail:
    """The task's stdout and stderr logs (`stdout.log`, `stderr.log` in `log_dir`) from where
    the last read ended."""

    def __init__(self, log_dir: Path, *, chunk_bytes: int = CHUNK_BYTES, limit_bytes: int = LIMIT_BYTES) -> None:
        self.stdout = _Stream(log_dir / "stdout.log")
        self.stderr = _Stream(log_dir / "stderr.log")
        self.chunk_bytes = chunk_bytes
        self.limit_bytes = limit_bytes
        self.cut = False

    def read(self) -> tuple[str, str]:
        """What each stream gained since the last read, at most `chunk_bytes` of each."""
        if self.cut:
            return "", ""
        out = self.stdout.read(min(self.chunk_bytes, self._room()))
        err = self.stderr.read(min(self.chunk_bytes, self._room()))
        if self._room() <= 0 and (self.stdout.unread() or self.stderr.unread()):
            self.cut = True
            err += (
                f"\n[dtf: this task's live output stops at {self.limit_bytes // (1024 * 1024)} MiB; "
                f"the rest is in {self.stdout.path} and {self.stderr.path} on its worker]\n"
            )
        return out, err

    def _room(self) -> int:
        return self.limit_bytes - self.stdout.offset - self.stderr.offset

    def pending(self) -> bool:
        return not self.cut and bool(self.stdout.unread() or self.stderr.unread())
