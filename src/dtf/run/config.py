"""What one `dtf run` was asked to do."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_IDLE_TIMEOUT_S = 900.0
IDLE_VARIABLE = "DTF_IDLE_TIMEOUT"
# "0": the run's session never runs tests itself while its cluster starts.
HEAD_START_VARIABLE = "DTF_HEAD_START"
# Set by `dtf -v run` for the pytest session it becomes: log what the run does on stderr.
RUN_LOG_VARIABLE = "DTF_RUN_LOG"


def default_idle_timeout() -> float:
    """`--idle-timeout`'s default: DTF_IDLE_TIMEOUT, else 15 minutes."""
    try:
        return max(0.0, float(os.environ.get(IDLE_VARIABLE) or DEFAULT_IDLE_TIMEOUT_S))
    except ValueError:
        return DEFAULT_IDLE_TIMEOUT_S


def default_head_start() -> bool:
    """`--no-head-start`'s default: on unless DTF_HEAD_START is 0."""
    return os.environ.get(HEAD_START_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class RunConfig:
    workers: int
    pytest_args: list[str]
    cwd: Path
    data_dir: Path
    timeout: float | None = None
    poll_s: float = 0.05
    # A cluster the run starts stays up this long once idle, for the next run (0: it stops
    # with the run); `keep` leaves it up until `dtf down`.
    idle_timeout: float = 900.0
    keep: bool = False
    coordinator: str | None = None
    token: str | None = None
    connection: Path | None = None
    reruns: int = 0
    # While the cluster it starts comes up, the session runs tests itself (`local_lane`).
    head_start: bool = True
    # Ship a snapshot of the project to the workers: None = on a remote cluster, when
    # snapshots are available; False = workers share this filesystem (batches get `cwd`).
    snapshot: bool | None = None
    # pytest-xdist's `--dist` (load, loadscope, loadfile, loadgroup, worksteal; "no" when not given).
    dist: str = "no"
    # This run's id: pytest-xdist's `testrun_uid`.
    run_id: str = ""
    # What one batch costs before its first test runs. Workers fork each batch from a pytest
    # process that has loaded pytest, its plugins and the conftest files, which costs about
    # 0.1 s on a 2-core machine (a fresh pytest process costs about 1.4 s; a worker's first
    # batch pays that once).
    batch_startup_s: float = 0.15
    # What pytest spends on each test besides the test itself (collection, reports): about
    # 1 ms on a 2-core machine. It decides the batches of a suite of thousands of trivial
    # tests, whose recorded durations are near zero.
    per_test_s: float = 0.001
