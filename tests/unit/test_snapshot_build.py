"""Project snapshots on the client: which files, and the same bytes for the same tree."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from dtf.run.snapshot import build_snapshot, list_files


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def git_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    return root


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


PROJECT = {"pkg/__init__.py": "", "pkg/mod.py": "X = 1\n", "tests/test_a.py": "def test_a():\n    pass\n"}


def test_the_same_tree_gives_the_same_hash_wherever_it_lies(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    write(one, PROJECT)
    write(two, dict(reversed(PROJECT.items())))  # other creation order, other mtimes
    a = build_snapshot(one, cache_dir=tmp_path / "cache-a")
    b = build_snapshot(two, cache_dir=tmp_path / "cache-b")
    assert a.sha256 == b.sha256
    assert a.archive.read_bytes() == b.archive.read_bytes()
    assert a.files == 3 and a.bytes == a.archive.stat().st_size
    assert a.archive.name == f"{a.sha256}.tar.gz"


def test_a_changed_file_gives_a_new_hash_and_a_reverted_one_the_old(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write(root, PROJECT)
    cache = tmp_path / "cache"
    first = build_snapshot(root, cache_dir=cache)
    assert build_snapshot(root, cache_dir=cache) == first  # reused from the index
    (root / "pkg/mod.py").write_text("X = 2\n")
    second = build_snapshot(root, cache_dir=cache)
    assert second.sha256 != first.sha256
    (root / "pkg/mod.py").write_text("X = 1\n")
    assert build_snapshot(root, cache_dir=cache).sha256 == first.sha256


def test_executable_bit_is_kept_and_metadata_is_zeroed(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write(root, {"run.sh": "#!/bin/sh\necho hi\n", "data.txt": "x"})
    (root / "run.sh").chmod(0o755)
    found = members(build_snapshot(root, cache_dir=tmp_path / "cache").archive)
    assert found["run.sh"].mode == 0o755 and found["data.txt"].mode == 0o644
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in found.values()} == {(0, 0, 0, "", "")}
    before = build_snapshot(root, cache_dir=tmp_path / "cache").sha256
    (root / "run.sh").chmod(0o644)
    assert build_snapshot(root, cache_dir=tmp_path / "cache").sha256 != before


def test_outside_git_junk_is_left_out(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write(
        root,
        {
            **PROJECT,
            "pkg/__pycache__/mod.cpython-311.pyc": "junk",
            "pkg/stale.pyc": "junk",
            ".venv/lib/x.py": "junk",
            "node_modules/a/index.js": "junk",
            ".dtf/state": "junk",
            ".git/HEAD": "junk",
        },
    )
    assert list_files(root) == sorted(PROJECT)


@pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0, reason="no git")
def test_in_git_tracked_and_untracked_files_count_but_ignored_ones_do_not(tmp_path: Path) -> None:
    root = git_repo(tmp_path / "repo")
    write(root, {**PROJECT, ".gitignore": "*.log\nbuild/\n"})
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    write(root, {"pkg/mod.py": "X = 'edited, not committed'\n", "pkg/new.py": "Y = 1\n"})
    write(root, {"run.log": "ignored", "build/out.txt": "ignored"})
    (root / "tests/test_a.py").unlink()  # deleted, still tracked
    snapshot = build_snapshot(root, cache_dir=root / ".dtf-cache")  # the cache itself is not ignored
    found = members(snapshot.archive)
    assert sorted(found) == [".gitignore", "pkg/__init__.py", "pkg/mod.py", "pkg/new.py"]
    with tarfile.open(snapshot.archive, "r:gz") as tar:
        extracted = tar.extractfile("pkg/mod.py")
        assert extracted is not None and b"edited" in extracted.read()
    assert build_snapshot(root, cache_dir=root / ".dtf-cache").sha256 == snapshot.sha256


@pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0, reason="no git")
def test_a_subdirectory_of_a_repository_snapshots_only_its_files(tmp_path: Path) -> None:
    root = git_repo(tmp_path / "repo")
    write(root, {"top.txt": "t", "sub/a.py": "", "sub/inner/b.py": ""})
    assert list_files(root / "sub") == ["a.py", "inner/b.py"]
