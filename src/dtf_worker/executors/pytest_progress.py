"""pytest plugin loaded into the pytest executor's subprocess
(`-p dtf_worker.executors.pytest_progress`).

pytest writes its JUnit XML only when the session ends, so a run killed by a timeout
would otherwise leave no trace of the tests it did finish. This plugin appends one JSON
line per test phase to the file named by DTF_PYTEST_PROGRESS as each phase ends, after
a first line naming pytest's rootdir (node ids are relative to it).
"""

from __future__ import annotations

import json
import os
from typing import IO, Any

ENV_VAR = "DTF_PYTEST_PROGRESS"
_MAX_MESSAGE_CHARS = 4096

_sink: IO[str] | None = None


def _write(entry: dict[str, Any]) -> None:
    global _sink
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    if _sink is None:
        _sink = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the session
    _sink.write(json.dumps(entry) + "\n")


def pytest_sessionstart(session: Any) -> None:
    _write({"rootdir": str(session.config.rootpath)})


def pytest_runtest_logreport(report: Any) -> None:
    entry: dict[str, Any] = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": report.duration,
    }
    if report.failed or report.skipped:
        entry["message"] = report.longreprtext[-_MAX_MESSAGE_CHARS:]
    _write(entry)
