"""Snapshots on the worker: safe extraction, a verified download, one fetch per hash."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtf.run.snapshot import build_snapshot
from dtf_common.errors import DtfError, InvalidArgument, NotFound
from dtf_worker.executors.params import Parameters
from dtf_worker.snapshots import SnapshotCache, UnsafeArchive, extract_safely


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def link(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def directory(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info, b""


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def refused_untouched(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], match: str) -> Path:
    """Extract `members` into `tmp_path/into`, expecting a refusal before anything is written
    there and nothing new beside it."""
    archive = tar_gz(tmp_path / "bad.tar.gz", members)
    into = tmp_path / "into"
    into.mkdir()
    before = sorted(tmp_path.iterdir())
    with pytest.raises(UnsafeArchive, match=match):
        extract_safely(archive, into)
    assert sorted(tmp_path.iterdir()) == before
    assert list(into.iterdir()) == []
    return into


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "/etc/escape.txt"])
def test_members_leaving_the_directory_are_refused(tmp_path: Path, name: str) -> None:
    archive = tar_gz(tmp_path / "bad.tar.gz", [(tarfile.TarInfo("ok.txt"), b"ok"), (tarfile.TarInfo(name), b"bad")])
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(UnsafeArchive):
        extract_safely(archive, into)
    assert not (tmp_path / "escape.txt").exists()
    assert list(into.iterdir()) == []  # checked before anything is written


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "a/../../../outside"])
def test_links_leading_outside_are_refused(tmp_path: Path, target: str) -> None:
    archive = tar_gz(tmp_path / "bad.tar.gz", [link("sub/l", target)])
    with pytest.raises(UnsafeArchive):
        extract_safely(archive, tmp_path / "into")


def path_max_chain(into: Path) -> tuple[list[tuple[tarfile.TarInfo, bytes]], str, str]:
    """Nested directories and links whose resolved path outgrows PATH_MAX, as in the public
    proof of concept for CVE-2025-4517: `os.path.realpath` stops resolving there and reads
    the rest lexically, so a `..` past the last link looks inside when it is not. Returns the
    members, the path through the links and the innermost real directory."""
    steps = "abcdefghijklmnop"
    component = "d" * ((os.pathconf(into.parent, "PC_PATH_MAX") - len(str(into)) - 1) // (len(steps) + 1))
    members, real = [], ""
    for step in steps:
        members.append(directory(posixpath.join(real, component), mode=0o777))
        members.append(link(posixpath.join(real, step), component))
        real = posixpath.join(real, component)
    return members, "/".join(steps), real


def test_a_link_chain_past_path_max_cannot_write_outside(tmp_path: Path) -> None:
    members, through_links, _real = path_max_chain(tmp_path / "into")
    last = posixpath.join(through_links, "l" * 254)
    members += [
        link(last, "/".join([".."] * len(through_links.split("/")))),  # back to the top
        link("escape", last + "/.."),  # lexically inside; really the parent of `into`
        file("escape/newfile", b"written outside"),
    ]
    refused_untouched(tmp_path, members, "lies under the link")
    assert not (tmp_path / "newfile").exists()


def test_a_link_chain_past_path_max_that_climbs_out_is_refused(tmp_path: Path) -> None:
    members, through_links, real = path_max_chain(tmp_path / "into")
    last = "l" * 100  # enough to outgrow PATH_MAX, short enough for a member's name
    members += [
        link(posixpath.join(real, last), "/".join([".."] * len(real.split("/")))),  # the top, placed without links
        link("escape", posixpath.join(through_links, last, "..")),
    ]
    refused_untouched(tmp_path, members, "'escape' points outside")


def test_a_link_whose_target_climbs_out_through_another_link_is_refused(tmp_path: Path) -> None:
    # `d1/d2/up/..` is `d1/d2` to a lexical check, but `up` leads to the top and `..` above it.
    members = [directory("d1/d2"), link("d1/d2/up", "../.."), link("escape", "d1/d2/up/..")]
    refused_untouched(tmp_path, members, "'escape' points outside")


@pytest.mark.parametrize("target", ["../outside", "inside"])
def test_nothing_is_written_through_a_link_even_one_that_stays_inside(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside").mkdir()
    members = [directory("inside"), link("link", target), file("link/evil.txt", b"evil")]
    refused_untouched(tmp_path, members, "unsafe|outside|under the link")
    assert list((tmp_path / "outside").iterdir()) == []


@pytest.mark.parametrize(
    "members",
    [
        [link("a", "a")],
        [link("a", "b"), link("b", "a")],
        [directory("c"), link("a", "c/../b/x"), link("b", "a")],
    ],
)
def test_link_loops_are_refused(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    refused_untouched(tmp_path, members, "loop")


def test_links_through_links_that_stay_inside_are_kept(tmp_path: Path) -> None:
    members = [
        directory("."),  # `tar -C project .` starts with the directory itself
        file("./pkg/deep/mod.py", b"X = 1\n"),
        link("pkg/up", ".."),
        link("alias", "pkg/up/pkg/deep/mod.py"),
        link("pkg/dangling", "missing/file"),
    ]
    into = tmp_path / "into"
    assert extract_safely(tar_gz(tmp_path / "ok.tar.gz", members), into) == 5
    assert (into / "alias").read_text() == "X = 1\n"
    assert os.readlink(into / "pkg/dangling") == "missing/file"


def test_a_hard_link_is_refused(tmp_path: Path) -> None:
    members = [file("real.txt"), special("alias.txt", tarfile.LNKTYPE, "real.txt")]
    refused_untouched(tmp_path, members, "'alias.txt' is a hard link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(tmp_path: Path, kind: bytes) -> None:
    refused_untouched(tmp_path, [special("dev", kind)], "not a file, directory or link")


@pytest.mark.parametrize("second", [file("a.txt", b"again"), link("a.txt", "b.txt"), directory("a.txt")])
def test_a_member_named_twice_is_refused(tmp_path: Path, second: tuple[tarfile.TarInfo, bytes]) -> None:
    refused_untouched(tmp_path, [file("a.txt"), second], "appears twice")


def test_a_member_below_a_file_is_refused(tmp_path: Path) -> None:
    refused_untouched(tmp_path, [file("a"), file("a/b")], "under the file 'a'")


def test_modes_lose_setuid_setgid_sticky_and_write_bits_for_others(tmp_path: Path) -> None:
    members = [
        directory("shared", mode=0o1777),
        file("shared/run.sh", b"#!/bin/sh\n", mode=0o6777),
        file("shared/data.txt", b"data", mode=0o2666),
    ]
    into = tmp_path / "into"
    extract_safely(tar_gz(tmp_path / "modes.tar.gz", members), into)
    assert stat.S_IMODE((into / "shared/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((into / "shared/data.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((into / "shared").stat().st_mode) & ~0o755 == 0


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "many.tar.gz", [file(f"f{i}.txt") for i in range(4)])
    with pytest.raises(UnsafeArchive, match="more than 3 members"):
        extract_safely(archive, tmp_path / "into", max_members=3)
    assert extract_safely(archive, tmp_path / "into4", max_members=4) == 4


def test_too_many_bytes_are_refused(tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "big.tar.gz", [file("a.bin", b"\0" * 600), file("b.bin", b"\0" * 600)])
    with pytest.raises(UnsafeArchive, match="more than 1000 bytes"):
        extract_safely(archive, tmp_path / "into", max_bytes=1000)
    assert extract_safely(archive, tmp_path / "into2", max_bytes=1200) == 2


@pytest.mark.parametrize(("name", "match"), [("a" * 5000, "unsafe path"), ("a/" * 600_000 + "a", "larger than")])
def test_overlong_names_are_refused(tmp_path: Path, name: str, match: str) -> None:
    with pytest.raises(UnsafeArchive, match=match):
        extract_safely(tar_gz(tmp_path / "long.tar.gz", [file(name)]), tmp_path / "into")


def test_a_directory_that_is_not_empty_is_not_extracted_into(tmp_path: Path) -> None:
    into = tmp_path / "into"
    into.mkdir()
    (into / "old.txt").write_text("old")
    with pytest.raises(DtfError, match="is not empty"):
        extract_safely(tar_gz(tmp_path / "ok.tar.gz", [file("new.txt")]), into)


def test_a_link_inside_the_snapshot_is_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg/real.py").write_text("X = 1\n")
    (src / "pkg/alias.py").symlink_to("real.py")
    snapshot = build_snapshot(src, cache_dir=tmp_path / "cache")
    into = tmp_path / "into"
    assert extract_safely(snapshot.archive, into) == 2
    assert (into / "pkg/alias.py").is_symlink() and (into / "pkg/alias.py").read_text() == "X = 1\n"


class FakeSource:
    def __init__(self, blobs: dict[str, bytes], chunk: int = 100) -> None:
        self.blobs = blobs
        self.chunk = chunk
        self.calls = 0

    async def fetch_blob(self, sha256: str) -> AsyncIterator[bytes]:
        self.calls += 1
        if sha256 not in self.blobs:
            raise NotFound(f"blob {sha256} not found", field="sha256")
        data = self.blobs[sha256]
        for start in range(0, len(data), self.chunk):
            await asyncio.sleep(0)
            yield data[start : start + self.chunk]


def project_snapshot(tmp_path: Path) -> tuple[str, bytes]:
    src = tmp_path / "project"
    (src / "tests").mkdir(parents=True)
    (src / "tests/test_x.py").write_text("def test_x():\n    pass\n")
    snapshot = build_snapshot(src, cache_dir=tmp_path / "client-cache")
    return snapshot.sha256, snapshot.archive.read_bytes()


def test_concurrent_tasks_share_one_download_and_later_ones_reuse_it(tmp_path: Path) -> None:
    sha256, data = project_snapshot(tmp_path)
    source = FakeSource({sha256: data})
    cache = SnapshotCache(source, tmp_path / "worker-cache")

    async def main() -> list[Path]:
        return await asyncio.gather(*(cache.ensure(sha256) for _ in range(5)))

    paths = asyncio.run(main())
    assert set(paths) == {tmp_path / "worker-cache" / "snapshots" / sha256}
    assert (paths[0] / "tests/test_x.py").is_file()
    assert source.calls == 1 and cache.fetches == 1
    again = SnapshotCache(source, tmp_path / "worker-cache")  # a restarted worker
    assert asyncio.run(again.ensure(sha256)) == paths[0] and source.calls == 1
    assert sorted(p.name for p in paths[0].parent.iterdir()) == [sha256]  # no temporary leftovers


def test_a_download_with_another_hash_is_refused_and_not_cached(tmp_path: Path) -> None:
    _sha256, data = project_snapshot(tmp_path)
    wrong = hashlib.sha256(b"something else").hexdigest()
    cache = SnapshotCache(FakeSource({wrong: data}), tmp_path / "worker-cache")
    with pytest.raises(InvalidArgument, match="arrived with SHA-256"):
        asyncio.run(cache.ensure(wrong))
    assert list((tmp_path / "worker-cache" / "snapshots").iterdir()) == []


def test_an_unknown_blob_is_not_found(tmp_path: Path) -> None:
    cache = SnapshotCache(FakeSource({}), tmp_path / "worker-cache")
    with pytest.raises(NotFound):
        asyncio.run(cache.ensure("0" * 64))


@pytest.mark.parametrize(
    ("snapshot", "field"),
    [
        ("abc", "parameters.snapshot"),
        ({"sha256": "XYZ"}, "parameters.snapshot.sha256"),
        ({"sha256": "a" * 64, "subdir": "../up"}, "parameters.snapshot.subdir"),
        ({"sha256": "a" * 64, "subdir": "/abs"}, "parameters.snapshot.subdir"),
        ({"sha256": "a" * 64, "subdir": 3}, "parameters.snapshot.subdir"),
    ],
)
def test_bad_snapshot_parameters_name_their_field(snapshot: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Parameters({"snapshot": snapshot}).snapshot()
    assert caught.value.field == field


def test_cwd_under_a_snapshot_is_relative_to_it() -> None:
    params = Parameters({"snapshot": {"sha256": "a" * 64, "subdir": "./pkg/"}, "cwd": "tests"})
    ref = params.snapshot()
    assert ref is not None and ref.subdir == "pkg"
    assert params.cwd_in(Path("/snap") / ref.subdir) == Path("/snap/pkg/tests")
    with pytest.raises(InvalidArgument) as caught:
        Parameters({"cwd": "/elsewhere"}).cwd_in(Path("/snap"))
    assert caught.value.field == "parameters.cwd"
