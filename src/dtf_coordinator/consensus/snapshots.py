"""Durable snapshots of the state machine: written to a temp file, fsynced, renamed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dtf_coordinator.consensus.log_store import fsync_dir

SNAPSHOT_NAME = "snapshot.json"


class SnapshotStore:
    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.path = self.dir / SNAPSHOT_NAME

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        data: dict[str, Any] = json.loads(self.path.read_bytes())
        return data

    def save(self, snapshot: dict[str, Any]) -> int:
        """Write atomically; returns the size in bytes."""
        self.dir.mkdir(parents=True, exist_ok=True)
        body = json.dumps(snapshot, separators=(",", ":")).encode()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.dir)
        return len(body)
