"""Tests the run's own session runs while the cluster it started comes up.

A run that starts its cluster would otherwise wait a second or two, on a small machine
more, for the coordinator and workers to start, with every test collected and nothing
running. Instead the session forks a child right after its collection, and the child
runs the tests from the first, as a batch forked from a warm server does (the
`dtf_pytest.reports` plugin writes each test's reports; `begin_batch` takes the session as
it stands): a process of its own, so a test that crashes or hangs it costs the run
nothing but that child. The session plays each finished test's reports as it comes.
Once the cluster is up the child is told to stop after its running test (SIGUSR1, as
`yield_after` would), and the tests it did not finish go to the cluster. On a small
suite the child runs them all before the cluster is up.

The child does not end its session as pytest does: no `pytest_sessionfinish`, so no
JUnit XML, cache or terminal summary of its own (the session writes those from every
test's reports); only its fixtures are torn down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from dtf_pytest import reports as pytest_reports
from dtf_pytest.cases import Case, ReportTail
from dtf_pytest.output import OutputTail
from dtf_pytest.server import REPORTS_PLUGIN, redirect_output

SESSION_PLUGIN = "dtf-session"
# How long a stopped child may take to finish its running test before it is killed; the
# test then runs on the cluster with the rest.
HANDOFF_WAIT_S = 5.0


@dataclass
class LocalLane:
    pid: int
    directory: Path
    reports: ReportTail
    output: OutputTail | None
    exited: bool = False
    finished: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, session: pytest.Session, workerinput: dict[str, Any], *, live_output: bool) -> LocalLane | None:
        """Fork the child that runs `session.items` in order; None where there is no fork."""
        if not hasattr(os, "fork"):
            return None
        directory = Path(tempfile.mkdtemp(prefix="dtf-run-here-"))
        batch = {"select": [item.nodeid for item in session.items], "workerinput": workerinput}
        (directory / "batch.json").write_text(json.dumps(batch), encoding="utf-8")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            pid = os.fork()
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
            return None
        if pid == 0:
            _child(session, directory)
        return cls(
            pid, directory, ReportTail(directory / "reports.jsonl"), OutputTail(directory) if live_output else None
        )

    def take(self) -> tuple[list[Case], str, str]:
        """The tests the child finished since the last call, and (with live output) what it
        printed meanwhile."""
        stdout, stderr = self.output.read() if self.output is not None else ("", "")
        cases = self.reports.new_cases()
        self.finished.update(c.node_id for c in cases)
        return cases, stdout, stderr

    def running(self) -> bool:
        if not self.exited:
            try:
                self.exited = os.waitpid(self.pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                self.exited = True
        return not self.exited

    def stop(self, wait_s: float = HANDOFF_WAIT_S) -> None:
        """Ask the child to stop after its running test; kill it if that takes over `wait_s`."""
        if not self.running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + wait_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.kill()

    def kill(self) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.exited = True

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _child(session: pytest.Session, directory: Path) -> NoReturn:
    """The forked child: run the session's tests until told to stop. Never returns."""
    code = 3
    try:
        config = session.config
        plugins = config.pluginmanager
        if plugins.has_plugin(SESSION_PLUGIN):
            plugins.unregister(name=SESSION_PLUGIN)  # the cluster is the parent's business
        os.environ[pytest_reports.BATCH_VAR] = str(directory / "batch.json")
        os.environ[pytest_reports.REPORTS_VAR] = str(directory / "reports.jsonl")
        redirect_output(config, str(directory / "stdout.log"), str(directory / "stderr.log"))
        if not plugins.has_plugin(REPORTS_PLUGIN):
            plugins.register(pytest_reports, REPORTS_PLUGIN)
        signal.signal(signal.SIGUSR1, lambda _signum, _frame: pytest_reports.yield_now())
        pytest_reports.begin_batch(session)
        items = session.items
        for i, item in enumerate(items):
            nextitem = items[i + 1] if i + 1 < len(items) else None
            config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail or session.shouldstop:
                break
        with contextlib.suppress(Exception):
            session._setupstate.teardown_exact(None)  # the fixtures still set up, as the session's end would
        pytest_reports.end_batch()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
