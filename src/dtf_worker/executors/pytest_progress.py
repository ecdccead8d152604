"""pytest plugin loaded into the pytest executor's subprocess
(`-p dtf_worker.executors.pytest_progress`).

pytest writes its JUnit XML only when the session ends, so a run killed by a timeout
would otherwise leave no trace of the tests it did finish. This plugin appends one JSON
line per test phase to the file named by DTF_PYTEST_PROGRESS as each phase ends, after
a first line naming pytest's rootdir (node ids are relative to it) and one saying how
many tests the session collected (after selection). The lines reach the file at the end
of each test, so a test that kills its process loses none of those before it.

With DTF_PYTEST_YIELD_AFTER (seconds), the batch *yields*: once that long has passed
since the session started, it stops after the test that is running, writes
`{"yielded": true}`, and ends as an interrupted session does (exit code 2), JUnit XML
included. The worker reports which tests ran; the runner gives the rest to free workers.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any

ENV_VAR = "DTF_PYTEST_PROGRESS"
YIELD_VAR = "DTF_PYTEST_YIELD_AFTER"
YIELDED = "dtf: the batch yields its remaining tests"
_MAX_MESSAGE_CHARS = 4096


class _State:
    sink: IO[str] | None = None
    session: Any = None
    yield_at: float | None = None


_state = _State()


def _write(entry: dict[str, Any], *, flush: bool = False) -> None:
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    if _state.sink is None:
        _state.sink = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the session
    _state.sink.write(json.dumps(entry) + "\n")
    if flush:
        _state.sink.flush()


def pytest_sessionstart(session: Any) -> None:
    _state.session = session
    try:
        after = float(os.environ.get(YIELD_VAR) or "")
    except ValueError:
        after = None
    _state.yield_at = None if after is None else time.monotonic() + after
    _write({"rootdir": str(session.config.rootpath)}, flush=True)


def pytest_collection_finish(session: Any) -> None:
    # With the tests that reported, this tells whether every collected test ran: a
    # batch naming whole files so confirms what those files hold (`dtf run`).
    _write({"collected": len(session.items)}, flush=True)


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    if _state.yield_at is not None and time.monotonic() >= _state.yield_at and _state.session is not None:
        _state.session.shouldstop = YIELDED
        _state.yield_at = None
        _write({"yielded": True})
    if _state.sink is not None:
        _state.sink.flush()


def pytest_runtest_logreport(report: Any) -> None:
    entry: dict[str, Any] = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": report.duration,
        "stop": report.stop,
    }
    if report.failed or report.skipped:
        entry["message"] = report.longreprtext[-_MAX_MESSAGE_CHARS:]
    _write(entry)
