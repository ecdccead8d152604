"""The checksummed append-only log: what survives a reopen, a torn write and compaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtf_common.errors import DamagedData
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_coordinator.consensus.log_store import HEADER, LOG_NAME, LogStore, encode
from tests.unit.commands import spec, submit


def entry(index: int, term: int = 1) -> commands_pb2.LogEntry:
    command = submit(spec(f"task-{index}"), at=index)
    return commands_pb2.LogEntry(term=term, index=index, command=command.SerializeToString())


def entries(first: int, last: int) -> list[commands_pb2.LogEntry]:
    return [entry(i) for i in range(first, last + 1)]


def written(directory: Path, count: int) -> Path:
    store = LogStore(directory)
    store.open()
    store.append(entries(1, count))
    store.sync()
    store.close()
    return directory / LOG_NAME


def reopen(directory: Path) -> tuple[LogStore, list[commands_pb2.LogEntry]]:
    store = LogStore(directory)
    loaded = store.open()
    return store, loaded


def test_a_new_log_is_empty(tmp_path: Path) -> None:
    store, loaded = reopen(tmp_path / "fresh")
    assert loaded == [] and store.last_index == 0 and store.truncated_bytes == 0
    assert (tmp_path / "fresh" / LOG_NAME).exists()
    store.close()


def test_appended_entries_survive_a_reopen(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.open()
    store.append(entries(1, 3))
    store.append(entries(4, 10))
    store.sync()
    assert store.last_index == 10
    store.close()

    store, loaded = reopen(tmp_path)
    assert loaded == entries(1, 10)
    assert store.entries == loaded and store.last_index == 10 and store.truncated_bytes == 0
    # Appending after a reopen continues the same file.
    store.append(entries(11, 12))
    store.sync()
    store.close()
    assert reopen(tmp_path)[1] == entries(1, 12)


def test_entries_keep_their_term_and_command(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.open()
    store.append([entry(1, term=3), entry(2, term=4)])
    store.sync()
    store.close()
    loaded = reopen(tmp_path)[1]
    assert [e.term for e in loaded] == [3, 4]
    command = commands_pb2.Command()
    command.ParseFromString(loaded[1].command)
    assert command.submit_tasks.tasks[0].task_id == "task-2"


@pytest.mark.parametrize("chop", [1, 3, HEADER.size, len(encode(entry(5))) - 1])
def test_a_torn_last_record_is_dropped_and_earlier_ones_survive(tmp_path: Path, chop: int) -> None:
    path = written(tmp_path, 5)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - chop)
    store, loaded = reopen(tmp_path)
    assert loaded == entries(1, 4)
    assert store.truncated_bytes == len(encode(entry(5))) - chop
    assert path.stat().st_size == size - len(encode(entry(5)))
    store.close()


@pytest.mark.parametrize("garbage", [b"\x00", b"\x07\x00\x00", b"\xff" * 9, b"\x10\x00\x00\x00\x00\x00\x00\x00junk"])
def test_garbage_after_the_last_record_is_dropped(tmp_path: Path, garbage: bytes) -> None:
    path = written(tmp_path, 3)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(garbage)
    store, loaded = reopen(tmp_path)
    assert loaded == entries(1, 3)
    assert store.truncated_bytes == len(garbage)
    assert path.stat().st_size == size
    store.close()


def refused(directory: Path) -> DamagedData:
    """Opening refuses the damaged log, leaving its file exactly as it was."""
    path = directory / LOG_NAME
    before = path.read_bytes()
    store = LogStore(directory)
    with pytest.raises(DamagedData) as caught:
        store.open()
    assert path.read_bytes() == before
    assert str(path) in caught.value.message and "truncate -s" in caught.value.message
    return caught.value


def offset_of(index: int) -> int:
    return sum(len(encode(entry(i))) for i in range(1, index))


def flip(path: Path, offset: int, mask: int = 0x20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def test_a_record_cut_short_by_its_length_field_at_the_end_reads_as_torn(tmp_path: Path) -> None:
    path = written(tmp_path, 4)
    flip(path, offset_of(4) + 1, 0x01)  # the length now runs 256 bytes past the end
    store, loaded = reopen(tmp_path)
    assert loaded == entries(1, 3)
    assert path.stat().st_size == offset_of(4)
    store.close()


@pytest.mark.parametrize("where", ["checksum", "payload-first", "payload-last"])
def test_a_flipped_byte_in_the_last_record_drops_only_that_record(tmp_path: Path, where: str) -> None:
    """Nothing intact follows it: a crash may have left it half written, never acknowledged."""
    path = written(tmp_path, 4)
    start = offset_of(4)
    last = path.stat().st_size - 1
    flip(path, {"checksum": start + 4, "payload-first": start + HEADER.size, "payload-last": last}[where])
    store, loaded = reopen(tmp_path)
    assert loaded == entries(1, 3)
    assert path.stat().st_size == start
    store.close()


@pytest.mark.parametrize("share", [0.1, 0.5, 0.85])
def test_a_flipped_byte_inside_the_log_refuses_to_open_it(tmp_path: Path, share: float) -> None:
    path = written(tmp_path, 60)
    spot = int(path.stat().st_size * share)
    flip(path, spot, 0x01)
    error = refused(tmp_path)
    # The offset named is the damaged record's, before the flipped byte.
    named = int(error.message.split("at byte ")[1].split()[0])
    assert named <= spot < named + len(encode(entry(60)))


def test_a_damaged_length_field_inside_the_log_is_not_taken_for_a_torn_tail(tmp_path: Path) -> None:
    path = written(tmp_path, 10)
    flip(path, offset_of(5) + 2, 0x40)  # entry 5 now claims megabytes, past the end of the file
    error = refused(tmp_path)
    assert f"byte {offset_of(5)}" in error.message and "after entry 4" in error.message


def test_zeroed_first_bytes_refuse_to_open_instead_of_starting_empty(tmp_path: Path) -> None:
    path = written(tmp_path, 10)
    data = bytearray(path.read_bytes())
    data[:64] = bytes(64)
    path.write_bytes(bytes(data))
    error = refused(tmp_path)
    assert "byte 0" in error.message and "the start of the log" in error.message


def test_a_record_out_of_sequence_refuses_to_open(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.open()
    store.append([entry(1), entry(2), entry(4), entry(5)])
    store.sync()
    store.close()
    assert "entry 4 follows entry 2" in refused(tmp_path).message


def test_the_way_out_named_keeps_the_entries_before_the_damage(tmp_path: Path) -> None:
    path = written(tmp_path, 8)
    flip(path, offset_of(6) + HEADER.size + 3)
    message = refused(tmp_path).message
    size = int(message.split("truncate -s ")[1].split()[0])
    with open(path, "r+b") as f:
        f.truncate(size)
    store, loaded = reopen(tmp_path)
    assert loaded == entries(1, 5)
    store.close()


def test_after_dropping_a_torn_tail_the_log_takes_new_entries(tmp_path: Path) -> None:
    path = written(tmp_path, 3)
    with open(path, "ab") as f:
        f.write(b"\x99\x00")
    store, _ = reopen(tmp_path)
    store.append(entries(4, 5))
    store.sync()
    store.close()
    store, loaded = reopen(tmp_path)
    assert loaded == entries(1, 5) and store.truncated_bytes == 0
    store.close()


def test_compact_drops_covered_entries_and_keeps_the_rest(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.open()
    store.append(entries(1, 10))
    store.sync()
    store.compact(6)
    assert store.entries == entries(7, 10)
    # The file holds exactly the kept records, and appends continue after them.
    assert (tmp_path / LOG_NAME).read_bytes() == b"".join(encode(e) for e in entries(7, 10))
    store.append(entries(11, 12))
    store.sync()
    store.close()
    store, loaded = reopen(tmp_path)
    assert loaded == entries(7, 12) and store.last_index == 12
    assert not (tmp_path / "log.tmp").exists()
    store.close()


def test_compact_keeps_entries_appended_but_not_yet_synced(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.open()
    store.append(entries(1, 4))
    store.compact(2)
    store.close()
    assert reopen(tmp_path)[1] == entries(3, 4)


def test_an_unopened_log_refuses_writes(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    with pytest.raises(RuntimeError):
        store.append(entries(1, 1))
    with pytest.raises(RuntimeError):
        store.sync()


def test_a_conflicting_tail_is_replaced_and_stays_replaced_after_reopen(tmp_path: Path) -> None:
    # Raft §5.3: a follower drops its uncommitted entries from the first conflict on.
    written(tmp_path, 10)
    store, _ = reopen(tmp_path)
    store.truncate_from(6)
    store.append([entry(i, term=2) for i in range(6, 9)])
    store.sync()
    store.close()
    _, loaded = reopen(tmp_path)
    assert [(e.index, e.term) for e in loaded] == [(i, 1) for i in range(1, 6)] + [(i, 2) for i in range(6, 9)]


def test_truncating_after_compaction_keeps_the_compacted_base(tmp_path: Path) -> None:
    written(tmp_path, 10)
    store, _ = reopen(tmp_path)
    store.compact(4)
    store.truncate_from(8)
    assert store.last_index == 7 and store.entries[0].index == 5
    store.reset(20)
    assert store.entries == [] and store.last_index == 20
    store.close()
