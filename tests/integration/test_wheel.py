"""The installed package is whole: a wheel built from this tree migrates a store by itself."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dtf_coordinator.store import migrate

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (built,) = out.glob("dtf-*.whl")
    return built


def test_the_wheel_carries_every_migration(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {p.relative_to(ROOT / "alembic").as_posix() for p in (ROOT / "alembic").rglob("*") if p.is_file()}
    scripts = {s for s in scripts if "__pycache__" not in s}
    assert scripts and {f"dtf_coordinator/migrations/{s}" for s in scripts} <= names


def test_an_installed_coordinator_migrates_a_store_without_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    store = tmp_path / "store.duckdb"
    # Alembic runs from the installed scripts (not the create-at-head shortcut): a store at an
    # older revision is upgraded, as after `pip install --upgrade dtf`.
    script = f"""
import dtf_coordinator
from pathlib import Path
assert Path(dtf_coordinator.__file__).is_relative_to({str(site)!r}), dtf_coordinator.__file__
from alembic import command
from dtf_coordinator.store import migrate
command.upgrade(migrate.alembic_config("duckdb:///{store}"), "0001")
migrate.upgrade("duckdb:///{store}")
from sqlalchemy import create_engine
engine = create_engine("duckdb:///{store}")
print(migrate.current_revision(engine), migrate.SCRIPT_LOCATION)
"""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    revision, location = done.stdout.split()
    assert revision == migrate.HEAD_REVISION
    assert Path(location) == site / "dtf_coordinator" / "migrations"
