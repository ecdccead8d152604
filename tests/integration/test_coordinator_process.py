"""Starting a coordinator process: refused secrets and bad configuration stop it with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def start(
    tmp_path: Path, config: dict[str, object], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "coordinator.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "dtf.cli.main", "coordinator", "--config", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)


def base(tmp_path: Path) -> dict[str, dict[str, object]]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "workers_port": 0, "data_dir": str(tmp_path / "data")},
        "database": {"path": str(tmp_path / "results.duckdb")},
    }


@pytest.mark.parametrize("secret", ["", "changeme", "${JWT_SECRET}", "short"])
def test_refuses_a_placeholder_or_weak_secret(tmp_path: Path, secret: str) -> None:
    config = base(tmp_path) | {"security": {"jwt_secret": secret}}
    result = start(tmp_path, config, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "security.jwt_secret" in result.stderr
    assert not (tmp_path / "data" / "log" / "log.bin").exists()  # nothing was started


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    config = base(tmp_path) | {"load_balancer": {"strategy": "fair_share", "wroker_cap": 3}}
    result = start(tmp_path, config)
    assert result.returncode == 2
    assert "load_balancer.wroker_cap: unknown key" in result.stderr
