"""Snapshots on the worker: safe extraction, a verified download, one fetch per hash."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtf.run.snapshot import build_snapshot
from dtf_common.errors import InvalidArgument, NotFound
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
