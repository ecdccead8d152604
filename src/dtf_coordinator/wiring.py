"""How a coordinator's parts are put together, in one place: `build_coordinator`.

`CoordinatorRuntime` uses it, and so do the tests that run a coordinator in their own
process, so that they test the wiring users run. It builds no servers and opens no
store: the consensus node (from the configuration, unless the caller passes one), the
dispatcher, the `Coordinator` service, the health monitor, and what a change of leader
sets off (metrics, the monitor's grace period, a `leadership_update` on the hub).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dtf_common.config import CoordinatorConfig
from dtf_common.errors import ConfigError
from dtf_coordinator.consensus import Consensus, RaftNode, RaftSettings, standalone_node
from dtf_coordinator.consensus.raft.transport import Credentials, Transport
from dtf_coordinator.consensus.raft.transport_port import RaftTransport
from dtf_coordinator.consensus.status import LeaderChange
from dtf_coordinator.metrics import Metrics
from dtf_coordinator.scheduling import Planner
from dtf_coordinator.service.coordinator import Coordinator
from dtf_coordinator.service.dispatch import Dispatcher
from dtf_coordinator.service.events import EventHub
from dtf_coordinator.service.loops import HealthMonitor
from dtf_coordinator.service.views import iso_time
from dtf_coordinator.state import StateMachine, StateParams

LeaderChangeHandler = Callable[[LeaderChange], None]
GrantObserver = Callable[[list[tuple[str, str, str]], int], None]


def state_params(config: CoordinatorConfig) -> StateParams:
    ts = config.task_scheduler
    return StateParams(
        max_queue_size=ts.max_queue_size,
        lease_ttl_ms=int(ts.lease_timeout * 1000),
        max_attempts=ts.max_attempts,
        retry_backoff_ms=int(ts.retry_backoff * 1000),
        retry_backoff_max_ms=int(ts.retry_backoff_max * 1000),
    )


def raft_settings(config: CoordinatorConfig) -> RaftSettings:
    ha = config.high_availability
    host = config.server.host
    listed = [p.address for p in ha.peers if p.id == ha.coordinator_id]
    own = listed[0] if listed else f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{ha.raft_port}"
    ticks = ha.tick_ms
    return RaftSettings(
        node_id=ha.coordinator_id,
        bind=f"{host}:{ha.raft_port}",
        peers={ha.coordinator_id: own, **{p.id: p.address for p in ha.other_peers}},
        tick_ms=ticks,
        election_ticks_min=max(2, ha.election_timeout_min // ticks),
        election_ticks_max=max(3, ha.election_timeout_max // ticks),
        heartbeat_ticks=max(1, ha.heartbeat_interval // ticks),
        write_wait_s=ha.leader_lease_duration / 1000,
    )


def raft_credentials(config: CoordinatorConfig) -> Credentials:
    from dtf_common.tls import channel_credentials, load_tls, server_credentials  # only for HA

    tls = config.high_availability.tls
    for name in ("ca_file", "cert_file", "key_file"):
        if not getattr(tls, name):
            raise ConfigError(
                f"high_availability.tls.{name} is required: coordinators talk Raft only over mutual TLS "
                "(`dtf certs create` makes the files)",
                field=f"high_availability.tls.{name}",
            )
    assert tls.ca_file and tls.cert_file and tls.key_file
    material = load_tls(tls.ca_file, tls.cert_file, tls.key_file)
    return Credentials(server=server_credentials(material), channel=channel_credentials(material))


def grpc_transport(config: CoordinatorConfig) -> Transport:
    """The Raft transport between coordinator processes: gRPC with mutual TLS."""
    settings = raft_settings(config)
    return Transport(settings.node_id, settings.bind, settings.peers, raft_credentials(config))


@dataclass
class CoordinatorParts:
    """A coordinator's parts, not started: `node.start(...)`, then the loops' `run()`."""

    config: CoordinatorConfig
    node: Consensus
    metrics: Metrics
    hub: EventHub
    dispatcher: Dispatcher
    coordinator: Coordinator
    monitor: HealthMonitor

    def leader_changed(self, change: LeaderChange) -> None:
        if change.current == self.node.node_id:
            # A new leader gives workers time to find it before counting missed heartbeats.
            self.monitor.leader_since_ms = self.monitor.clock()
            self.dispatcher.kick()
        self.metrics.on_leader_change(change)
        self.hub.publish(
            "leadership_updates",
            {
                "type": "leadership_update",
                "previous_leader_id": change.previous,
                "new_leader_id": change.current,
                "term": change.term,
                "reason": change.reason,
                "timestamp": iso_time(change.time_ms),
            },
        )


def lease_latency(node: Consensus, metrics: Metrics) -> GrantObserver:
    """Records how long each granted task waited, from ready to leased."""

    def observe(granted: list[tuple[str, str, str]], time_ms: int) -> None:
        tasks = node.state.tasks
        for task_id, _worker, _lease in granted:
            task = tasks.get(task_id)
            if task is not None:
                ready_ms = max(task.create_ms, task.not_before_ms)
                metrics.lease_latency.observe(max(0, time_ms - ready_ms) / 1000)

    return observe


def build_node(
    config: CoordinatorConfig,
    *,
    metrics: Metrics,
    on_leader_change: LeaderChangeHandler,
    transport: RaftTransport | None = None,
) -> RaftNode[StateMachine]:
    """The consensus node the configuration asks for, over a fresh state machine: a
    member of the configured Raft cluster (over `transport`, gRPC by default) with high
    availability, else a group of one voter. Its files go under `server.data_dir`."""
    data_dir = Path(config.server.data_dir)
    state = StateMachine(state_params(config))
    if config.high_availability.enabled:
        return RaftNode(
            data_dir / "raft",
            state,
            raft_settings(config),
            transport if transport is not None else grpc_transport(config),
            on_commit=metrics.on_commit,
            on_leader_change=on_leader_change,
        )
    return standalone_node(
        data_dir / "log",
        state,
        node_id=config.high_availability.coordinator_id,
        on_commit=metrics.on_commit,
        on_leader_change=on_leader_change,
    )


def build_coordinator(
    config: CoordinatorConfig,
    node: Consensus | None = None,
    *,
    metrics: Metrics | None = None,
    hub: EventHub | None = None,
    raft_transport: RaftTransport | None = None,
) -> CoordinatorParts:
    """A coordinator's parts from its configuration. `node` replaces the one the
    configuration asks for (its leader changes are then the caller's to report, e.g.
    to `CoordinatorParts.leader_changed`); `raft_transport` replaces gRPC under a
    configured Raft node."""
    metrics = metrics if metrics is not None else Metrics()
    hub = hub if hub is not None else EventHub()
    built: list[CoordinatorParts] = []  # the parts, once they exist, for the node's callback
    if node is None:
        node = build_node(
            config,
            metrics=metrics,
            on_leader_change=lambda change: built[0].leader_changed(change),
            transport=raft_transport,
        )
    lb = config.load_balancer
    planner = Planner(lb.strategy, lb.worker_cap, lb.task_cap_per_worker)
    dispatcher = Dispatcher(node, planner, on_granted=lease_latency(node, metrics))
    hm = config.health_monitor
    parts = CoordinatorParts(
        config=config,
        node=node,
        metrics=metrics,
        hub=hub,
        dispatcher=dispatcher,
        coordinator=Coordinator(
            node,
            dispatcher,
            hub=hub,
            metrics=metrics,
            max_queue_size=config.task_scheduler.max_queue_size,
            heartbeat_interval_s=hm.heartbeat_interval,
            lease_ttl_s=config.task_scheduler.lease_timeout,
        ),
        monitor=HealthMonitor(
            node,
            check_interval=min(hm.check_interval, hm.heartbeat_interval),
            heartbeat_interval=hm.heartbeat_interval,
            failure_threshold=hm.failure_threshold,
            lease_ttl_ms=int(config.task_scheduler.lease_timeout * 1000),
        ),
    )
    built.append(parts)
    return parts
