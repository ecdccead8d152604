"""A Raft node's files: hard state and snapshot carry checksums, and damage to either,
or a gap between the snapshot and the log, refuses to load instead of starting from less."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtf_common.errors import DamagedData
from dtf_common.pb.dtf.v1 import commands_pb2, raft_pb2
from dtf_coordinator.consensus.log_store import LogStore
from dtf_coordinator.consensus.raft.storage import HARD_STATE, SNAPSHOT, RaftStorage, encode_snapshot


def entry(index: int, term: int = 1) -> commands_pb2.LogEntry:
    return commands_pb2.LogEntry(term=term, index=index, command=b"command-%d" % index)


def stored(directory: Path, *, snapshot_at: int = 0, last: int = 6) -> None:
    """Hard state at term 3, a snapshot at `snapshot_at` (none at 0), entries up to `last`."""
    storage = RaftStorage(directory)
    storage.load()
    storage.persist(raft_pb2.HardState(term=3, vote="a", commit=last), [entry(i) for i in range(1, last + 1)])
    if snapshot_at:
        meta = raft_pb2.SnapshotMeta(index=snapshot_at, term=1, conf=raft_pb2.ConfState(voters=["a"]))
        storage.save_snapshot(encode_snapshot(meta, {"applied_index": snapshot_at}), snapshot_at)
    storage.close()


def loaded(directory: Path) -> tuple[raft_pb2.HardState, int, list[int]]:
    storage = RaftStorage(directory)
    try:
        got = storage.load()
    finally:
        storage.close()
    return got.hard_state, got.snapshot.index if got.snapshot else 0, [e.index for e in got.entries]


def damaged(directory: Path, name: str) -> DamagedData:
    with pytest.raises(DamagedData) as caught:
        loaded(directory)
    assert str(directory / name) in caught.value.message or str(directory) in caught.value.message
    return caught.value


def test_what_was_stored_loads_back(tmp_path: Path) -> None:
    stored(tmp_path, snapshot_at=4)
    hard, snapshot, entries = loaded(tmp_path)
    assert (hard.term, hard.vote) == (3, "a")
    assert snapshot == 4 and entries == [5, 6]


def test_a_changed_digit_in_the_hard_state_is_caught_by_its_checksum(tmp_path: Path) -> None:
    stored(tmp_path)
    path = tmp_path / HARD_STATE
    path.write_text(path.read_text().replace('"term": 3', '"term": 2'))
    assert "checksum" in damaged(tmp_path, HARD_STATE).message


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '{"term": "three"}'])
def test_a_hard_state_that_does_not_parse_is_damage(tmp_path: Path, text: str) -> None:
    stored(tmp_path)
    (tmp_path / HARD_STATE).write_text(text)
    damaged(tmp_path, HARD_STATE)


def test_a_flipped_byte_in_the_snapshot_is_caught_by_its_checksum(tmp_path: Path) -> None:
    stored(tmp_path, snapshot_at=4)
    path = tmp_path / SNAPSHOT
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    assert "checksum" in damaged(tmp_path, SNAPSHOT).message


def test_a_snapshot_cut_short_is_damage(tmp_path: Path) -> None:
    stored(tmp_path, snapshot_at=4)
    path = tmp_path / SNAPSHOT
    path.write_bytes(path.read_bytes()[:-10])
    damaged(tmp_path, SNAPSHOT)


def test_files_from_before_the_checksums_load_as_they_are(tmp_path: Path) -> None:
    stored(tmp_path, snapshot_at=4)
    (tmp_path / HARD_STATE).write_text(json.dumps({"term": 3, "vote": "a"}))
    body = (tmp_path / SNAPSHOT).read_bytes().partition(b"\n")[2]
    (tmp_path / SNAPSHOT).write_bytes(body)  # plain JSON, as written before
    hard, snapshot, entries = loaded(tmp_path)
    assert (hard.term, snapshot, entries) == (3, 4, [5, 6])


def test_a_gap_between_the_snapshot_and_the_log_is_damage_not_a_fresh_start(tmp_path: Path) -> None:
    stored(tmp_path, snapshot_at=4, last=8)
    assert loaded(tmp_path)[2] == [5, 6, 7, 8]
    # Entries 5 and 6 go missing from the log: nothing can replay the state past 4.
    log = LogStore(tmp_path)
    log.open()
    log.compact(6)
    log.close()
    error = damaged(tmp_path, "log.bin")
    assert "starts at entry 7" in error.message and "snapshot ends at 4" in error.message
