"""Configuration loading: YAML sections, ${VAR} substitution, environment overrides, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtf_common.config import CoordinatorConfig, WorkerConfig, load_config, parse_config
from dtf_common.errors import ConfigError

OWNER_EXAMPLE = """
server: {host: "0.0.0.0", port: 8080, workers_port: 8081, dashboard_port: 8082}
database: {type: "duckdb", path: "./benchmark_db.duckdb"}
security: {jwt_secret: "${JWT_SECRET}", token_expiry: 86400}
task_scheduler: {max_queue_size: 1000}
dynamic_resource_management: {enabled: true, scale_up_threshold: 0.8, scale_down_threshold: 0.3,
  evaluation_interval: 300}
multi_device_orchestrator: {enabled: true, subtask_timeout: 3600, retry_failed_subtasks: true,
  model_parallel_auto_splitting: true, default_priority: 5, retry_limit: 3}
result_aggregator: {cache_ttl: 300, anomaly_threshold: 2.5, comparative_lookback_days: 7}
health_monitor: {check_interval: 30, failure_threshold: 3, recovery_attempts: 2}
load_balancer: {strategy: "fair_share", worker_cap: 10, task_cap_per_worker: 5}
high_availability:
  enabled: true
  coordinator_id: "coordinator-1"
  peers: [{id: "coordinator-2", host: "coordinator-2.example.com", port: 8080}]
  election_timeout_min: 150
  election_timeout_max: 300
  heartbeat_interval: 50
  state_replication_interval: 1000
  health_check_interval: 5000
  quorum_size: 2
  state_snapshot_interval: 60000
  leader_lease_duration: 10000
"""


def test_owner_example_config_loads_with_secret_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.yaml"
    path.write_text(OWNER_EXAMPLE)
    config = load_config(CoordinatorConfig, path, env={"JWT_SECRET": "s" * 32})
    assert config.security.jwt_secret == "s" * 32
    assert config.task_scheduler.max_queue_size == 1000
    assert config.load_balancer.task_cap_per_worker == 5
    assert config.high_availability.peers[0].host == "coordinator-2.example.com"
    config.check_secret()


def test_unset_variable_without_default_is_left_and_refused_as_secret(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.yaml"
    path.write_text(OWNER_EXAMPLE)
    config = load_config(CoordinatorConfig, path, env={})
    with pytest.raises(ConfigError) as err:
        config.check_secret()
    assert err.value.field == "security.jwt_secret"


def test_local_mode_accepts_an_empty_secret() -> None:
    parse_config(CoordinatorConfig, {"security": {"local_mode": True}}, env={}).check_secret()


def test_variable_default_and_environment_override() -> None:
    config = parse_config(
        CoordinatorConfig,
        {"server": {"port": "${API_PORT:-9000}"}},
        env={"DTF_LOAD_BALANCER__STRATEGY": "least_loaded", "DTF_SERVER__WORKERS_PORT": "9101"},
    )
    assert config.server.port == 9000
    assert config.server.workers_port == 9101
    assert config.load_balancer.strategy == "least_loaded"


def test_overrides_for_the_other_program_are_ignored() -> None:
    env = {"DTF_TASK_SCHEDULER__MAX_QUEUE_SIZE": "5", "DTF_EXECUTION__CONCURRENT_TASKS": "3"}
    assert parse_config(WorkerConfig, {}, env=env).execution.concurrent_tasks == 3
    assert parse_config(CoordinatorConfig, {}, env=env).task_scheduler.max_queue_size == 5


def test_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("execution:\n  concurrent_taks: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(WorkerConfig, path, env={})
    assert "execution.concurrent_taks: unknown key" in err.value.message
    assert str(path) in err.value.message
    assert err.value.field == "execution.concurrent_taks"


def test_invalid_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(CoordinatorConfig, {"load_balancer": {"strategy": "random"}}, env={})
    assert err.value.field == "load_balancer.strategy"
    with pytest.raises(ConfigError) as bad_env:
        parse_config(CoordinatorConfig, {}, env={"DTF_SERVER__PORT": "not-a-port"})
    assert bad_env.value.field == "server.port"


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(CoordinatorConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(CoordinatorConfig, bad)


def test_example_configs_in_the_repository_load() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    load_config(CoordinatorConfig, root / "coordinator.yaml", env={"JWT_SECRET": "x" * 32}).check_secret()
    assert load_config(WorkerConfig, root / "worker.yaml", env={"WORKER_API_KEY": "t"}).coordinator.api_key == "t"


def test_configuration_reference_is_current() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    rc = subprocess.run([sys.executable, str(root / "scripts" / "gen_config_docs.py"), "--check"], check=False)
    assert rc.returncode == 0, "docs/configuration.md is stale: run `make docs`"
