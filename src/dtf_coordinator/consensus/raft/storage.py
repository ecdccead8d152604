"""A Raft node's durable state: hard state, the checksummed log, and the snapshot.

Hard state (term, vote, commit) is written to a temp file, fsynced and renamed, and only
when term or vote change: those must be durable before the node votes or campaigns. The
commit index rides along but is not synced on its own, since a restarted node learns it
again from the leader. Log entries go through `LogStore` (CRC-checked records, torn
tail truncated on open, damage refused). Snapshots are JSON `{index, term, conf, state}`;
the same bytes are what InstallSnapshot streams to a lagging peer.

Both files carry a CRC-32 (the hard state as a field, the snapshot in a one-line header
before its JSON), and being written atomically they are never torn: one that does not
parse or fails its checksum is damage, and loading raises `DamagedData` rather than
start from less than the node had. Files from before the checksums are read as they are.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtf_common.errors import DamagedData
from dtf_common.pb.dtf.v1 import commands_pb2, raft_pb2
from dtf_coordinator.consensus.log_store import LogStore, fsync_dir

HARD_STATE = "hardstate.json"
SNAPSHOT = "snapshot.json"
SNAPSHOT_MAGIC = b"DTFSNAP1"
WAY_OUT = (
    "Restore the data directory from a backup; in a cluster, remove this node, move its data "
    "directory aside, start it empty and add it again: the leader rebuilds it by snapshot."
)


def _checksum(body: dict[str, Any]) -> int:
    return zlib.crc32(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def encode_hard_state(hard: raft_pb2.HardState) -> bytes:
    body: dict[str, Any] = {"term": hard.term, "vote": hard.vote, "commit": hard.commit}
    return json.dumps({**body, "crc32": _checksum(body)}).encode()


def decode_hard_state(raw: bytes, path: Path) -> raft_pb2.HardState:
    try:
        body = json.loads(raw)
        crc = body.pop("crc32", None)
        if crc is not None and crc != _checksum(body):
            raise ValueError("it fails its checksum")
        return raft_pb2.HardState(
            term=int(body.get("term", 0)), vote=str(body.get("vote") or ""), commit=int(body.get("commit", 0))
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise DamagedData(f"the hard state {path} is damaged ({exc}). {WAY_OUT}", field="hard_state") from None


def frame_snapshot(data: bytes) -> bytes:
    """The snapshot file's bytes: a header line with the JSON's checksum and length, then the JSON."""
    return b"%s %08x %d\n" % (SNAPSHOT_MAGIC, zlib.crc32(data), len(data)) + data


def unframe_snapshot(raw: bytes, path: Path) -> bytes:
    """The snapshot's JSON from its file's bytes, checked."""
    if not raw.startswith(SNAPSHOT_MAGIC):
        return raw  # written before snapshots carried a checksum
    header, _, data = raw.partition(b"\n")
    try:
        _magic, crc, length = header.split()
        intact = int(length) == len(data) and int(crc, 16) == zlib.crc32(data)
    except ValueError:
        intact = False
    if not intact:
        raise DamagedData(f"the snapshot {path} is damaged (it fails its checksum). {WAY_OUT}", field="snapshot")
    return data


@dataclass
class Loaded:
    hard_state: raft_pb2.HardState
    snapshot: raft_pb2.SnapshotMeta | None
    state: dict[str, Any] | None
    entries: list[commands_pb2.LogEntry]
    truncated_bytes: int


def encode_snapshot(meta: raft_pb2.SnapshotMeta, state: dict[str, Any], extra: dict[str, Any] | None = None) -> bytes:
    """`extra` carries what the state machine does not hold but a new node needs (the
    results store's rows)."""
    body = {
        "index": meta.index,
        "term": meta.term,
        "conf": {
            "voters": list(meta.conf.voters),
            "disabled": list(meta.conf.disabled),
            "addresses": dict(meta.conf.addresses),
        },
        "state": state,
        "extra": extra or {},
    }
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def decode_snapshot(data: bytes) -> tuple[raft_pb2.SnapshotMeta, dict[str, Any], dict[str, Any]]:
    """The snapshot's position, membership, state and extra. A single coordinator's
    snapshot from before it ran Raft (`{term, state}`) reads as one at the state's applied
    index with no membership, which the node then takes from its configuration."""
    body = json.loads(data)
    if "index" not in body:
        body["index"] = body["state"]["applied_index"]
    raw = body.get("conf") or {}
    conf = raft_pb2.ConfState(
        voters=raw.get("voters", []), disabled=raw.get("disabled", []), addresses=raw.get("addresses", {})
    )
    meta = raft_pb2.SnapshotMeta(index=int(body["index"]), term=int(body["term"]), conf=conf)
    return meta, body["state"], body.get("extra") or {}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class RaftStorage:
    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.log = LogStore(self.dir)
        self._hard = raft_pb2.HardState()
        self.snapshot_bytes: bytes | None = None

    def load(self) -> Loaded:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / HARD_STATE
        if path.exists():
            self._hard = decode_hard_state(path.read_bytes(), path)
        meta: raft_pb2.SnapshotMeta | None = None
        state: dict[str, Any] | None = None
        snap = self.dir / SNAPSHOT
        if snap.exists():
            self.snapshot_bytes = unframe_snapshot(snap.read_bytes(), snap)
            try:
                meta, state, _extra = decode_snapshot(self.snapshot_bytes)
            except (ValueError, KeyError, TypeError) as exc:
                raise DamagedData(f"the snapshot {snap} is damaged ({exc!r}). {WAY_OUT}", field="snapshot") from None
        entries = self.log.open()
        base = meta.index if meta is not None else 0
        self.log.base_index = base
        entries = [e for e in entries if e.index > base]
        if entries and entries[0].index != base + 1:
            # Compaction drops only what a durable snapshot covers: a gap is damage.
            raise DamagedData(
                f"the log in {self.dir} starts at entry {entries[0].index} but the snapshot ends at {base}: "
                f"entries {base + 1} to {entries[0].index - 1} are missing. {WAY_OUT}",
                field="log",
            )
        hard = raft_pb2.HardState()
        hard.CopyFrom(self._hard)
        hard.commit = max(min(hard.commit, entries[-1].index if entries else base), base)
        return Loaded(hard, meta, state, entries, self.log.truncated_bytes)

    def persist(self, hard_state: raft_pb2.HardState | None, entries: list[commands_pb2.LogEntry]) -> None:
        """Make entries and a changed term/vote durable (called off the event loop)."""
        if entries:
            if entries[0].index <= self.log.last_index:
                self.log.truncate_from(entries[0].index)
            self.log.append(entries)
            self.log.sync()
        if hard_state is not None:
            changed = hard_state.term != self._hard.term or hard_state.vote != self._hard.vote
            self._hard.CopyFrom(hard_state)
            if changed:
                self._save_hard_state()

    def _save_hard_state(self) -> None:
        _write_atomic(self.dir / HARD_STATE, encode_hard_state(self._hard))

    def save_snapshot(self, data: bytes, index: int) -> None:
        """Make a snapshot durable, then drop the log it covers."""
        _write_atomic(self.dir / SNAPSHOT, frame_snapshot(data))
        self.snapshot_bytes = data
        self.log.compact(index)

    def install_snapshot(self, data: bytes, index: int) -> None:
        """A snapshot from the leader replaces this node's log wholesale."""
        _write_atomic(self.dir / SNAPSHOT, frame_snapshot(data))
        self.snapshot_bytes = data
        self.log.reset(index)

    def close(self) -> None:
        self.log.close()
