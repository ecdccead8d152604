"""What `dtf run` tells people: failures, pytest's summary line, one merged JUnit XML.

Per-test outcomes come from the results store (the pytest executor's `raw_data`: outcome,
message, details, file, line) or, for a test whose process died, from the runner.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

# pytest's exit codes.
EXIT_OK = 0
EXIT_TESTS_FAILED = 1
EXIT_INTERRUPTED = 2
EXIT_NO_TESTS = 5

FAILED_OUTCOMES = frozenset({"failed", "error"})


@dataclass(frozen=True)
class TestOutcome:
    """One test's result. `outcome`: passed, failed, error (outside the test body) or skipped."""

    __test__ = False  # not a pytest test class

    node_id: str
    outcome: str
    duration: float = 0.0
    message: str = ""
    details: str = ""
    file: str = ""
    line: int | None = None
    worker_id: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES


_OUTCOME_OF_STATUS = {"success": "passed", "failure": "failed", "partial": "skipped"}


def outcome_from_result(result: Mapping[str, Any]) -> TestOutcome:
    """A results-store row of a `pytest` task as a TestOutcome."""
    raw = result.get("raw_data") or {}
    outcome = raw.get("outcome") or _OUTCOME_OF_STATUS.get(str(result.get("status")), "failed")
    line = raw.get("line")
    return TestOutcome(
        node_id=str(result["test_id"]),
        outcome=str(outcome),
        duration=float(result.get("execution_time") or 0.0),
        message=str(raw.get("message") or ""),
        details=str(raw.get("details") or ""),
        file=str(raw.get("file") or ""),
        line=line if isinstance(line, int) else None,
        worker_id=str(result.get("worker_id") or ""),
    )


def counts(outcomes: Iterable[TestOutcome]) -> Counter[str]:
    return Counter(o.outcome for o in outcomes)


def exit_code(outcomes: Sequence[TestOutcome], missing: Sequence[str]) -> int:
    if missing or any(o.failed for o in outcomes):
        return EXIT_TESTS_FAILED
    return EXIT_OK


def summary_text(tally: Mapping[str, int], seconds: float, *, missing: int = 0, rerun: int = 0) -> str:
    """pytest's wording and order: "3 failed, 120 passed, 2 skipped, 1 error in 4.21s";
    reruns as pytest-rerunfailures counts them: "1 failed, 9 passed, 3 rerun in 2.10s"."""
    parts = []
    for outcome in ("failed", "passed", "skipped"):
        if tally.get(outcome):
            parts.append(f"{tally[outcome]} {outcome}")
    errors = tally.get("error", 0)
    if errors:
        parts.append(f"{errors} error" + ("s" if errors > 1 else ""))
    if missing:
        parts.append(f"{missing} missing")
    if rerun:
        parts.append(f"{rerun} rerun")
    return f"{', '.join(parts) or 'no tests ran'} in {seconds:.2f}s"


def _rule(title: str, char: str = "=", width: int = 80) -> str:
    title = f" {title} "
    if len(title) >= width - 2:
        return f"{char}{char}{title}{char}{char}"
    left = (width - len(title)) // 2
    return char * left + title + char * (width - len(title) - left)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def write_report(
    out: TextIO,
    outcomes: Sequence[TestOutcome],
    missing: Sequence[str],
    seconds: float,
    *,
    width: int = 80,
    attempts: Mapping[str, Sequence[TestOutcome]] | None = None,
    why_missing: Mapping[str, str] | None = None,
) -> None:
    """Failures with their text, the short summary, then pytest's summary line.
    `attempts`: the failed earlier attempts of tests that were run again;
    `why_missing`: what is known of why a test has no result."""
    attempts = attempts or {}
    why_missing = why_missing or {}
    failed = [o for o in outcomes if o.failed]
    flaky = [o for o in outcomes if not o.failed and attempts.get(o.node_id)]
    if failed:
        out.write(_rule("FAILURES", width=width) + "\n")
        for o in failed:
            out.write(_rule(o.node_id, "_", width) + "\n\n")
            out.write((o.details or o.message).rstrip() + "\n\n")
    if failed or missing or flaky:
        out.write(_rule("short test summary info", width=width) + "\n")
        for o in flaky:
            earlier = attempts[o.node_id]
            first = _first_line(earlier[0].message)
            out.write(
                f"FLAKY {o.node_id} - passed on attempt {len(earlier) + 1} after {len(earlier)} failed"
                + (f": {first}" if first else "")
                + "\n"
            )
        for o in failed:
            label = "FAILED" if o.outcome == "failed" else "ERROR"
            first = _first_line(o.message)
            tries = len(attempts.get(o.node_id, ()))
            suffix = f" (failed all {tries + 1} attempts)" if tries else ""
            out.write(f"{label} {o.node_id}" + (f" - {first}" if first else "") + suffix + "\n")
        for node_id in missing:
            why = why_missing.get(node_id, "collected but no result was recorded")
            out.write(f"MISSING {node_id} - {why}\n")
    rerun = sum(len(a) for a in attempts.values())
    out.write(_rule(summary_text(counts(outcomes), seconds, missing=len(missing), rerun=rerun), width=width) + "\n")


def _classname_and_name(node_id: str) -> tuple[str, str]:
    """As pytest's xunit reports: "pkg/test_m.py::Cls::test_x[1]" -> ("pkg.test_m.Cls", "test_x[1]")."""
    path, _, rest = node_id.partition("::")
    parts = rest.split("::") if rest else []
    module = path.removesuffix(".py").replace("\\", "/").replace("/", ".")
    name = parts[-1] if parts else module
    return ".".join([module, *parts[:-1]]), name


def junit_xml(
    outcomes: Sequence[TestOutcome],
    missing: Sequence[str],
    seconds: float,
    attempts: Mapping[str, Sequence[TestOutcome]] | None = None,
) -> ET.Element:
    """One <testsuite> with a <testcase> per collected node id; a missing test is an <error>.
    Earlier failed attempts of a rerun test are <flakyFailure> (it passed in the end) or
    <rerunFailure> elements, as Maven Surefire writes them."""
    attempts = attempts or {}
    tally = counts(outcomes)
    suite = ET.Element(
        "testsuite",
        {
            "name": "dtf",
            "tests": str(len(outcomes) + len(missing)),
            "failures": str(tally["failed"]),
            "errors": str(tally["error"] + len(missing)),
            "skipped": str(tally["skipped"]),
            "time": f"{seconds:.3f}",
        },
    )
    for o in outcomes:
        classname, name = _classname_and_name(o.node_id)
        attrs = {"classname": classname, "name": name, "file": o.file or o.node_id.split("::", 1)[0]}
        if o.line is not None:
            attrs["line"] = str(o.line)
        attrs["time"] = f"{o.duration:.3f}"
        case = ET.SubElement(suite, "testcase", attrs)
        if o.outcome in ("failed", "error", "skipped"):
            tag = {"failed": "failure", "error": "error", "skipped": "skipped"}[o.outcome]
            kind = "pytest.skip" if o.outcome == "skipped" else ""
            detail = ET.SubElement(case, tag, {"message": o.message, **({"type": kind} if kind else {})})
            detail.text = o.details or o.message
        for earlier in attempts.get(o.node_id, ()):
            tag = "rerunFailure" if o.failed else "flakyFailure"
            rerun = ET.SubElement(case, tag, {"message": earlier.message})
            rerun.text = earlier.details or earlier.message
    for node_id in missing:
        classname, name = _classname_and_name(node_id)
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": name, "time": "0.000"})
        ET.SubElement(case, "error", {"message": "collected but no result was recorded"})
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return root


def write_junit(
    path: Path,
    outcomes: Sequence[TestOutcome],
    missing: Sequence[str],
    seconds: float,
    *,
    attempts: Mapping[str, Sequence[TestOutcome]] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    root = junit_xml(outcomes, missing, seconds, attempts)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
