"""Configuration for coordinator and worker: YAML files with the owner's sections.

Loading order: model defaults, then the YAML file (with `${VAR}` and `${VAR:-default}`
substituted from the environment), then environment overrides named
`DTF_<SECTION>__<KEY>` (for example `DTF_SERVER__PORT=9090`). Unknown or invalid keys
raise `ConfigError` naming the key's dotted path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dtf_common.errors import ConfigError

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "${JWT_SECRET}", "placeholder"})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- coordinator


class ServerConfig(Section):
    host: str = Field(default="0.0.0.0", description="address the API and worker ports bind to")
    port: int = Field(default=8080, ge=0, le=65535, description="REST, WebSocket and Swagger UI (0 = any free port)")
    workers_port: int = Field(default=8081, ge=0, le=65535, description="gRPC worker service")
    dashboard_port: int | None = Field(
        default=8082,
        ge=0,
        le=65535,
        description="reserved for the dashboard's own port (the dashboard issue builds it); "
        "until then the dashboard is served on `port`",
    )
    data_dir: str = Field(default="./dtf-data", description="command log, snapshots, coordinator.json")
    idle_shutdown: float = Field(
        default=0,
        ge=0,
        description="stop after this many seconds without an API request, a WebSocket client or an unfinished "
        "task (0 = never; the clusters `dtf run` starts use it)",
    )


class DatabaseConfig(Section):
    type: Literal["duckdb", "postgresql", "sqlite"] = Field(default="duckdb", description="results store engine")
    path: str = Field(default="./benchmark_db.duckdb", description="database file for duckdb and sqlite")
    url: str | None = Field(default=None, description="SQLAlchemy URL; overrides type and path")
    flush_interval: float = Field(default=0.2, gt=0, description="seconds between batched writes to the store")
    batch_size: int = Field(default=5000, ge=1, description="rows per write, at most")

    def sqlalchemy_url(self) -> str:
        if self.url:
            return self.url
        if self.type == "duckdb":
            return f"duckdb:///{self.path}"
        if self.type == "sqlite":
            return f"sqlite:///{self.path}"
        raise ConfigError("database.url is required when database.type is postgresql", field="database.url")


class SecurityConfig(Section):
    jwt_secret: str = Field(default="", description="HS256 signing secret for tokens (16+ characters)")
    token_expiry: int = Field(
        default=86400, gt=0, description="seconds a token made by `dtf token create --config` lives by default"
    )
    local_mode: bool = Field(default=False, description="allow an empty or placeholder secret (loopback use only)")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="largest request body (413 above)")


class TaskSchedulerConfig(Section):
    max_queue_size: int = Field(default=10_000, ge=1, description="most pending tasks; more is HTTP 429")
    lease_timeout: float = Field(default=30.0, gt=0, description="seconds a lease lives without a heartbeat")
    max_attempts: int = Field(default=3, ge=1, description="leases a task may lose (worker lost) before it fails")
    retry_backoff: float = Field(default=1.0, ge=0, description="first retry delay, doubled per attempt")
    retry_backoff_max: float = Field(default=60.0, ge=0, description="longest retry delay, seconds")
    snapshot_every: int = Field(default=10_000, ge=10, description="log entries between snapshots")


# Sections of components that open issues build: accepted, validated, and doing nothing
# yet; each key says so (docs/configuration.md).
RESERVED_RESOURCES = "reserved: dynamic resource management, built by the resources and orchestration issue"
RESERVED_ORCHESTRATOR = "reserved: the multi-device orchestrator, built by the resources and orchestration issue"
RESERVED_AGGREGATOR = "reserved: the result aggregator, built by the results insight issue"


class DynamicResourceManagementConfig(Section):
    enabled: bool = Field(default=True, description=RESERVED_RESOURCES)
    scale_up_threshold: float = Field(default=0.8, ge=0, le=1, description=RESERVED_RESOURCES)
    scale_down_threshold: float = Field(default=0.3, ge=0, le=1, description=RESERVED_RESOURCES)
    evaluation_interval: float = Field(default=300, gt=0, description=RESERVED_RESOURCES)


class MultiDeviceOrchestratorConfig(Section):
    enabled: bool = Field(default=True, description=RESERVED_ORCHESTRATOR)
    subtask_timeout: float = Field(default=3600, gt=0, description=RESERVED_ORCHESTRATOR)
    retry_failed_subtasks: bool = Field(default=True, description=RESERVED_ORCHESTRATOR)
    model_parallel_auto_splitting: bool = Field(default=True, description=RESERVED_ORCHESTRATOR)
    default_priority: int = Field(default=5, ge=0, le=10, description=RESERVED_ORCHESTRATOR)
    retry_limit: int = Field(default=3, ge=0, description=RESERVED_ORCHESTRATOR)


class ResultAggregatorConfig(Section):
    cache_ttl: float = Field(default=300, ge=0, description=RESERVED_AGGREGATOR)
    anomaly_threshold: float = Field(default=2.5, gt=0, description=RESERVED_AGGREGATOR)
    comparative_lookback_days: int = Field(default=7, ge=1, description=RESERVED_AGGREGATOR)


class HealthMonitorConfig(Section):
    check_interval: float = Field(default=30, gt=0, description="seconds between health checks")
    failure_threshold: int = Field(default=3, ge=1, description="missed heartbeats before a worker is offline")
    recovery_attempts: int = Field(
        default=2, ge=0, description="reserved: restarts of a dead local worker (the resources issue builds it)"
    )
    heartbeat_interval: float = Field(default=5.0, gt=0, description="seconds between worker heartbeats")


class LoadBalancerConfig(Section):
    strategy: Literal["fair_share", "round_robin", "least_loaded", "performance_weighted"] = "fair_share"
    worker_cap: int = Field(default=0, ge=0, description="most workers given work at once; 0 = no cap")
    task_cap_per_worker: int = Field(default=0, ge=0, description="most tasks one worker holds; 0 = its slots")


class PeerConfig(Section):
    id: str
    host: str
    port: int = Field(ge=1, le=65535, description="the peer's Raft port")
    api_url: str | None = Field(default=None, description="the peer's REST API, for clients following the leader")
    grpc_address: str | None = Field(default=None, description="the peer's worker gRPC host:port")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class RaftTlsConfig(Section):
    ca_file: str | None = Field(default=None, description="CA that signed every coordinator's certificate")
    cert_file: str | None = Field(default=None, description="this coordinator's certificate (`dtf certs create`)")
    key_file: str | None = Field(default=None, description="this coordinator's private key")


class HighAvailabilityConfig(Section):
    enabled: bool = False
    coordinator_id: str = "coordinator-1"
    peers: list[PeerConfig] = Field(default_factory=list)
    election_timeout_min: int = Field(default=150, gt=0, description="milliseconds")
    election_timeout_max: int = Field(default=300, gt=0)
    heartbeat_interval: int = Field(default=50, gt=0, description="milliseconds between leader heartbeats")
    state_replication_interval: int = Field(default=1000, gt=0, description="ms between cluster_status broadcasts")
    health_check_interval: int = Field(default=5000, gt=0, description="ms between per-node health samples")
    quorum_size: int | None = Field(default=None, ge=1, description="must be a majority of the coordinators")
    state_snapshot_interval: int = Field(default=60000, gt=0, description="ms between snapshots (if the log grew)")
    leader_lease_duration: int = Field(default=10000, gt=0, description="ms a write waits for a leader")
    raft_port: int = Field(default=8083, ge=0, le=65535, description="this coordinator's Raft port (mutual TLS)")
    tls: RaftTlsConfig = Field(default_factory=RaftTlsConfig)

    @model_validator(mode="after")
    def _check(self) -> HighAvailabilityConfig:
        if self.election_timeout_max < self.election_timeout_min:
            raise ValueError("election_timeout_max must be at least election_timeout_min")
        if self.heartbeat_interval * 2 > self.election_timeout_min:
            raise ValueError("heartbeat_interval must be at most half of election_timeout_min")
        # The peer list may name this coordinator too (one list for every replica of a StatefulSet).
        ids = [self.coordinator_id, *(p.id for p in self.peers if p.id != self.coordinator_id)]
        if len(set(ids)) != len(ids):
            raise ValueError(f"peers repeat a coordinator id: {ids}")
        majority = len(ids) // 2 + 1
        if self.quorum_size is not None and self.quorum_size != majority:
            # Raft's safety rests on majorities; any other size either splits the brain or stalls.
            raise ValueError(f"quorum_size must be a majority of the {len(ids)} coordinators: {majority}")
        return self

    @property
    def other_peers(self) -> list[PeerConfig]:
        return [p for p in self.peers if p.id != self.coordinator_id]

    @property
    def tick_ms(self) -> int:
        """Raft's clock: five ticks per heartbeat."""
        return max(1, self.heartbeat_interval // 5)


class CoordinatorConfig(Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    task_scheduler: TaskSchedulerConfig = Field(default_factory=TaskSchedulerConfig)
    dynamic_resource_management: DynamicResourceManagementConfig = Field(
        default_factory=DynamicResourceManagementConfig
    )
    multi_device_orchestrator: MultiDeviceOrchestratorConfig = Field(default_factory=MultiDeviceOrchestratorConfig)
    result_aggregator: ResultAggregatorConfig = Field(default_factory=ResultAggregatorConfig)
    health_monitor: HealthMonitorConfig = Field(default_factory=HealthMonitorConfig)
    load_balancer: LoadBalancerConfig = Field(default_factory=LoadBalancerConfig)
    high_availability: HighAvailabilityConfig = Field(default_factory=HighAvailabilityConfig)

    def check_secret(self) -> None:
        """Refuse a placeholder secret unless explicitly in local mode."""
        secret = self.security.jwt_secret
        if not self.security.local_mode and (secret.strip().lower() in PLACEHOLDER_SECRETS or len(secret) < 16):
            raise ConfigError(
                "security.jwt_secret is empty, a placeholder or shorter than 16 characters; "
                "set a real secret (e.g. JWT_SECRET) or security.local_mode: true for loopback use",
                field="security.jwt_secret",
            )


# ---------------------------------------------------------------- worker


class WorkerIdentity(Section):
    id: str | None = Field(default=None, description="stable id; generated and remembered in working_dir when absent")
    name: str | None = None
    hardware_id: str | None = Field(default=None, description="hardware class; detected when absent")
    labels: dict[str, str] = Field(default_factory=dict)


class CoordinatorEndpoint(Section):
    url: str = "http://127.0.0.1:8081"
    fallback_urls: list[str] = Field(
        default_factory=list, description="the other coordinators of an HA cluster, tried when `url` is unreachable"
    )
    api_key: str = ""
    tls_ca: str | None = None
    exit_when_lost: float = Field(
        default=0,
        ge=0,
        description="exit after failing to reach a coordinator it had registered with for this many seconds "
        "(0 = keep trying; the workers of the clusters `dtf run` starts use it)",
    )


class ExecutionConfig(Section):
    concurrent_tasks: int = Field(default=1, ge=1, le=1024)
    timeout: float = Field(default=3600, gt=0)
    working_dir: str = Field(default="./tasks", description="per-task directories, the spool, the worker id")
    cache_dir: str = Field(default="./cache", description="shared across tasks (DTF_CACHE_DIR): models, datasets")
    shutdown_grace: float = Field(default=30, ge=0, description="seconds running tasks get to finish on SIGTERM")


class ReportingConfig(Section):
    metrics_interval: float = Field(
        default=15, gt=0, description="seconds between the performance figures a heartbeat carries (tasks run, slots)"
    )
    result_batch_size: int = Field(default=100, ge=1, le=10_000, description="most outcomes per report call")
    spool_dir: str | None = Field(default=None, description="durable result spool; <working_dir>/spool when absent")


class HealthReportConfig(Section):
    report_interval: float = Field(default=30, gt=0)
    cpu_threshold: float = Field(default=90, gt=0, le=100)
    memory_threshold: float = Field(default=90, gt=0, le=100)
    disk_threshold: float = Field(default=90, gt=0, le=100)


class WorkerConfig(Section):
    worker: WorkerIdentity = Field(default_factory=WorkerIdentity)
    coordinator: CoordinatorEndpoint = Field(default_factory=CoordinatorEndpoint)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    reporting: ReportingConfig = Field(default_factory=ReportingConfig)
    health: HealthReportConfig = Field(default_factory=HealthReportConfig)


# ---------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
M = TypeVar("M", bound=BaseModel)


def substitute_env(value: Any, env: Mapping[str, str]) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; an unset VAR without default stays as written."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1), m.group(2) if m.group(2) is not None else m.group(0)), value)
    if isinstance(value, list):
        return [substitute_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute_env(v, env) for k, v in value.items()}
    return value


def apply_env_overrides(
    data: dict[str, Any], env: Mapping[str, str], sections: set[str] | None = None, prefix: str = "DTF_"
) -> dict[str, Any]:
    """`DTF_SECTION__KEY=value` sets data[section][key] (values parsed as YAML scalars).

    Only sections in `sections` are taken (when given): the coordinator and the worker
    share an environment, and each ignores the other's sections.
    """
    for name, raw in env.items():
        if not name.startswith(prefix) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(prefix) :].split("__")]
        if sections is not None and path[0] not in sections:
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment override {name} targets a non-section", field=".".join(path))
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return data


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {what}")
    return "; ".join(parts)


def parse_config(model: type[M], data: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> M:
    env = os.environ if env is None else env
    merged = apply_env_overrides(substitute_env(dict(data or {}), env), env, set(model.model_fields))
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]["loc"]
        raise ConfigError(f"invalid configuration: {_format_errors(exc)}", field=".".join(map(str, first))) from None


def load_config(model: type[M], path: str | Path | None, env: Mapping[str, str] | None = None) -> M:
    data: Any = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}", field="config") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}", field="config") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of sections", field="config")
    try:
        return parse_config(model, data, env)
    except ConfigError as exc:
        raise ConfigError(f"{path or 'configuration'}: {exc.message}", field=exc.field) from None
