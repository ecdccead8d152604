"""`pytest --dtf N` / `pytest --dtf URL`: this pytest session runs its tests on dtf workers.

Registered through the `pytest11` entry point, so it loads in every pytest run of an
environment where dtf is installed, including the pytest processes that workers start
for batches. It is inert unless `--dtf` is given: it adds its options and nothing else.
With `--dtf`, the session collects as usual and `dtf.run.session` runs the collected
tests on the cluster, reporting them here. `dtf run -n N -- ARGS` is this.

`--dtf` takes a number of local workers, `auto` (one per CPU), a coordinator's URL, or
nothing (`--dtf=`): then pytest-xdist's `-n` where the session has one (in `addopts`,
say), else 2. pytest-xdist's own `-n` and `--dist` never start xdist's workers in a
session run with `--dtf`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from dtf.run.config import (
    DEFAULT_IDLE_TIMEOUT_S,
    HEAD_START_VARIABLE,
    IDLE_VARIABLE,
    RUN_LOG_VARIABLE,
    default_head_start,
    default_idle_timeout,
)

DEFAULT_WORKERS = 2


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dtf", "run the suite on dtf workers")
    group.addoption(
        "--dtf",
        metavar="N|auto|URL",
        default=None,
        help="run on N local dtf workers (auto: one per CPU), or on the dtf coordinator at URL "
        "(token from --dtf-token or DTF_TOKEN)",
    )
    group.addoption("--dtf-data-dir", default=".dtf", help="local cluster data directory (default .dtf)")
    group.addoption("--dtf-token", default=None, help="bearer token for --dtf URL (env DTF_TOKEN)")
    group.addoption("--dtf-connection", default=None, help="run on the cluster of this connection.json")
    group.addoption("--dtf-reruns", type=int, default=0, help="run a failing test up to N more times")
    group.addoption("--dtf-timeout", type=float, default=None, help="seconds each batch may run")
    group.addoption(
        "--dtf-keep", action="store_true", help="leave the local cluster running until `dtf down`, idle or not"
    )
    group.addoption(
        "--dtf-idle-timeout",
        type=float,
        default=default_idle_timeout(),
        help="seconds a local cluster the run starts stays up once idle, for the next run "
        f"(default {DEFAULT_IDLE_TIMEOUT_S:.0f}, env {IDLE_VARIABLE}; 0: stop it with the run)",
    )
    group.addoption(
        "--dtf-no-head-start",
        dest="dtf_head_start",
        action="store_false",
        default=default_head_start(),
        help="run every test on the cluster, none in this session while the cluster it starts "
        f"comes up (env {HEAD_START_VARIABLE}=0)",
    )
    group.addoption(
        "--dtf-no-snapshot",
        action="store_true",
        help="on a remote cluster, do not ship the project: the workers share this filesystem",
    )


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, Any, Any]:
    target = config.getoption("dtf", None)
    if target is not None:
        failed = _activate(config, str(target))
        if failed is not None:
            return failed
    return (yield)


def _activate(config: pytest.Config, target: str) -> int | None:
    """Register the session plugin; pytest's exit code when the options are wrong."""
    from dtf.run.config import RunConfig
    from dtf.run.session import DtfSession
    from dtf_pytest.xdist import disable_xdist, xdist_request

    numprocesses, dist = xdist_request(config.option)
    disable_xdist(config.option)  # before xdist's own hook turns `-n` into its workers
    remote = "://" in target
    if remote:
        workers = 0
    elif target == "auto" or (not target and numprocesses in ("auto", "logical")):
        workers = os.cpu_count() or 1
    elif not target:
        workers = int(numprocesses) if numprocesses else DEFAULT_WORKERS
    elif target.isdigit() and int(target) > 0:
        workers = int(target)
    else:
        raise pytest.UsageError(f"--dtf: expected a number of workers, auto, or a coordinator URL, got {target!r}")
    invocation = config.invocation_params
    connection = config.getoption("dtf_connection")
    run = RunConfig(
        workers=workers,
        pytest_args=list(invocation.args),
        cwd=Path(invocation.dir),
        data_dir=Path(invocation.dir) / config.getoption("dtf_data_dir"),
        timeout=config.getoption("dtf_timeout"),
        keep=config.getoption("dtf_keep"),
        idle_timeout=max(0.0, config.getoption("dtf_idle_timeout")),
        coordinator=target if remote else None,
        token=config.getoption("dtf_token") or os.environ.get("DTF_TOKEN"),
        connection=Path(connection) if connection else None,
        reruns=config.getoption("dtf_reruns"),
        head_start=bool(config.getoption("dtf_head_start")),
        snapshot=False if config.getoption("dtf_no_snapshot") else None,
        dist=dist,
        run_id=uuid.uuid4().hex,
    )
    config.pluginmanager.register(DtfSession(config, run), "dtf-session")
    if os.environ.get(RUN_LOG_VARIABLE):  # `dtf -v run`: say what the run does, on stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("dtf").addHandler(handler)
        logging.getLogger("dtf").setLevel(logging.INFO)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # stop the workers and the cluster as on Ctrl-C
    return None


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt
