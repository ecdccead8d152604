"""Prometheus metrics of one coordinator, on its own registry (served at /metrics)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks = Gauge("dtf_tasks", "Tasks by status", ["status"], registry=r)
        self.queue_depth = Gauge("dtf_queue_depth", "Tasks pending (waiting for a worker)", registry=r)
        self.workers = Gauge("dtf_workers", "Workers by status", ["status"], registry=r)
        self.commit_latency = Histogram(
            "dtf_commit_latency_seconds",
            "Time to make a batch durable",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "dtf_commit_batch_size",
            "Commands per durable write",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 8192),
            registry=r,
        )
        self.lease_latency = Histogram(
            "dtf_lease_latency_seconds",
            "Time from a task becoming ready to its lease being granted",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commands = Counter("dtf_commands_total", "Commands applied", registry=r)
        self.results = Counter("dtf_results_total", "Results recorded", registry=r)
        self.applied_index = Gauge("dtf_applied_index", "Last applied log index", registry=r)
        self.store_lag = Gauge("dtf_store_pending_rows", "Rows waiting to be written to the results store", registry=r)

        self.raft_term = Gauge("dtf_raft_term", "Current Raft term", registry=r)
        self.raft_commit_index = Gauge("dtf_raft_commit_index", "Highest log index known committed", registry=r)
        self.raft_is_leader = Gauge("dtf_raft_is_leader", "1 while this coordinator leads", registry=r)
        self.leader_changes = Counter("dtf_raft_leader_changes_total", "Leaders seen by this node", registry=r)
        self.election_duration = Histogram(
            "dtf_raft_election_duration_seconds",
            "From this node noticing the leader gone to a leader being known",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def on_leader_change(self, change: Any) -> None:
        if change.current is not None:
            self.leader_changes.inc()
        if change.election_seconds is not None:
            self.election_duration.observe(change.election_seconds)
        self.raft_term.set(change.term)

    def on_commit(self, batch: int, seconds: float) -> None:
        self.commit_latency.observe(seconds)
        self.commit_batch.observe(batch)
        self.commands.inc(batch)
