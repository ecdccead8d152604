"""A task's live output: read from its log files as they grow, bounded per read and in all."""

from __future__ import annotations

from pathlib import Path

from dtf_pytest.output import OutputTail


def test_each_read_brings_what_was_written_since_the_last_and_keeps_characters_whole(tmp_path: Path) -> None:
    tail = OutputTail(tmp_path)
    assert tail.read() == ("", "")  # nothing written yet: no files
    snowman = "☃".encode()
    with (tmp_path / "stdout.log").open("wb") as out, (tmp_path / "stderr.log").open("wb") as err:
        out.write(b"one\n" + snowman[:1])
        out.flush()
        err.write(b"warning\n")
        err.flush()
        assert tail.read() == ("one\n", "warning\n")
        out.write(snowman[1:] + b" two\n")
        out.flush()
        assert tail.read() == ("☃ two\n", "")
        assert not tail.pending()


def test_reads_are_chunked_and_the_whole_is_capped_with_a_note_saying_where_the_rest_is(tmp_path: Path) -> None:
    (tmp_path / "stdout.log").write_bytes(b"x" * 250)
    (tmp_path / "stderr.log").write_bytes(b"")
    tail = OutputTail(tmp_path, chunk_bytes=100, limit_bytes=200)

    reads = []
    while tail.pending():
        reads.append(tail.read())

    assert [len(out) for out, _ in reads] == [100, 100]
    assert "live output stops" in reads[-1][1] and str(tmp_path / "stdout.log") in reads[-1][1]
    assert tail.read() == ("", "")  # past the cap nothing more is sent
