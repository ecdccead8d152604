"""What a batch's pytest reported, read from the lines `dtf_pytest.reports` wrote (pure).

Each test's line carries pytest's own serialised reports; here they are only summed up
for the store: one outcome word (pytest's: passed, failed, error, skipped, xfailed,
xpassed), the test's duration and a one-line message. The reports themselves travel on
untouched, for the session that collected the tests to replay.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtf_common.schemas import ResultStatus

STATUS = {
    "passed": ResultStatus.SUCCESS,
    "xpassed": ResultStatus.SUCCESS,
    "failed": ResultStatus.FAILURE,
    "error": ResultStatus.FAILURE,
    "skipped": ResultStatus.PARTIAL,
    "xfailed": ResultStatus.PARTIAL,
}
MESSAGE_CHARS = 500
SUBTEST = "SubTestReport"


@dataclass(frozen=True)
class Case:
    """One test as its batch ran it."""

    node_id: str
    reports: list[dict[str, Any]]
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return outcome_of(self.reports)

    @property
    def status(self) -> str:
        return STATUS[self.outcome].value

    @property
    def duration(self) -> float:
        """Setup, call and teardown together, as pytest's JUnit XML counts a test's time."""
        return sum(float(r.get("duration") or 0.0) for r in self.reports if r.get("_report_type") != SUBTEST)

    @property
    def ended_at(self) -> float | None:
        stops = [float(r["stop"]) for r in self.reports if isinstance(r.get("stop"), int | float)]
        return max(stops) if stops else None

    def raw_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"outcome": self.outcome, "reports": self.reports}
        if self.warnings:
            data["warnings"] = self.warnings
        message = message_of(self.reports)
        if message:
            data["message"] = message
        return data


@dataclass
class BatchReport:
    """Everything a batch's lines say, in the order they were written."""

    cases: list[Case] = field(default_factory=list)
    collected: int | None = None
    missing: list[str] = field(default_factory=list)
    # The batch ran in its warm server's own session, without collecting (`begin_batch`).
    resumed: bool = False
    collect_errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    yielded: bool = False
    stopped: str = ""  # why the session stopped early (-x, --maxfail), when it did
    exitstatus: int | None = None


class ReportTail:
    """A running batch's report file (`path`), read as it grows: each `new_cases` call
    returns the tests whose lines were completed since the last one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_cases(self) -> list[Case]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        return read_lines(data[:end].decode("utf-8", errors="replace").splitlines()).cases


def read_lines(lines: Iterable[str]) -> BatchReport:
    """Parse the plugin's lines; a torn last line (the process died writing it) is skipped."""
    batch = BatchReport()
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if "id" in entry:
            batch.cases.append(
                Case(str(entry["id"]), list(entry.get("reports") or []), list(entry.get("warnings") or []))
            )
        elif "collected" in entry:
            batch.collected = int(entry["collected"])
            batch.missing = [str(n) for n in entry.get("missing") or []]
            batch.resumed = bool(entry.get("resumed"))
        elif "collect_error" in entry:
            batch.collect_errors.append(entry["collect_error"])
        elif "warnings" in entry:
            batch.warnings.extend(entry["warnings"])
        elif entry.get("yielded"):
            batch.yielded = True
        elif "stopped" in entry:
            batch.stopped = str(entry["stopped"])
        elif "exitstatus" in entry:
            batch.exitstatus = int(entry["exitstatus"])
    return batch


def outcome_of(reports: Sequence[Mapping[str, Any]]) -> str:
    """pytest's word for a test from its reports: a failed setup or teardown is an error,
    a failed call (or subtest) a failure; xfail marks turn skips and passes into xfailed
    and xpassed."""
    word = "passed"
    for report in reports:
        outcome, when = report.get("outcome"), report.get("when")
        if report.get("_report_type") == SUBTEST:
            if outcome == "failed" and word == "passed":
                word = "failed"
            continue
        if outcome == "failed":
            return "failed" if when == "call" else "error"
        if outcome == "skipped":
            word = "xfailed" if "wasxfail" in report else "skipped"
        elif when == "call" and "wasxfail" in report:
            word = "xpassed"
    return word


def message_of(reports: Sequence[Mapping[str, Any]]) -> str:
    """One line on why a test did not pass: the exception line, the skip reason, or the
    xfail mark's reason."""
    for report in reports:
        if report.get("wasxfail"):
            return str(report["wasxfail"])[:MESSAGE_CHARS]  # pytest's XFAIL line shows the reason
        if report.get("outcome") == "passed":
            continue
        longrepr = report.get("longrepr")
        text = ""
        if isinstance(longrepr, dict):
            crash = longrepr.get("reprcrash") or {}
            text = str(crash.get("message") or "")
        elif isinstance(longrepr, list) and len(longrepr) == 3:
            text = str(longrepr[2])  # a skip: (path, line, reason)
        elif isinstance(longrepr, str):
            text = longrepr.strip().splitlines()[-1] if longrepr.strip() else ""
        if text:
            return text[:MESSAGE_CHARS]
    return ""
