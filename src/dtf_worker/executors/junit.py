"""Per-test outcomes from pytest's JUnit XML (xunit1) or from the progress lines of
`pytest_progress`. Pure functions: text in, outcomes out."""

from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtf_common.schemas import ResultStatus

_STATUS = {
    "passed": ResultStatus.SUCCESS,
    "failed": ResultStatus.FAILURE,
    "error": ResultStatus.FAILURE,
    "skipped": ResultStatus.PARTIAL,
}


@dataclass(frozen=True)
class CaseResult:
    """One test. `outcome` is "passed", "failed", "error" (outside the test body) or "skipped"."""

    node_id: str
    outcome: str
    duration: float
    message: str = ""
    details: str = ""
    kind: str = ""
    file: str = ""
    line: int | None = None

    @property
    def status(self) -> str:
        return _STATUS[self.outcome].value

    def rebased(self, rootdir: str | Path, cwd: str | Path) -> CaseResult:
        """The same test with its node id relative to `cwd` instead of pytest's rootdir, so the
        id reported is one that can be passed back as a node id in a task with that cwd.
        Tests outside `cwd` keep their rootdir-relative id."""
        if not self.file:
            return self
        try:
            path = Path(os.path.normpath(Path(rootdir, self.file).absolute())).relative_to(Path(cwd).absolute())
        except ValueError:
            return self
        rest = self.node_id[len(self.file) :] if self.node_id.startswith(self.file) else ""
        return dataclasses.replace(self, node_id=path.as_posix() + rest, file=path.as_posix())


def node_id(classname: str, name: str, file: str) -> str:
    """Rebuild pytest's node id: xunit1 gives `classname` as "pkg.module.Class.Inner" and the
    file path separately, so whatever follows the file's dotted module name is the class chain."""
    if file:
        if not classname:
            return file  # a collection error reports the module itself
        module = file.removesuffix(".py").replace("\\", "/").replace("/", ".")
        if classname == module:
            return f"{file}::{name}"
        if classname.startswith(module + "."):
            return "::".join([file, *classname[len(module) + 1 :].split("."), name])
    return "::".join(part for part in (classname, name) if part)


def parse_junit_xml(text: str | bytes) -> list[CaseResult]:
    """Every <testcase>, in document order. Raises ET.ParseError on malformed XML."""
    root = ET.fromstring(text)
    return [_case(element) for element in root.iter("testcase")]


def _case(element: ET.Element) -> CaseResult:
    attrs = element.attrib
    file = attrs.get("file", "")
    line = attrs.get("line")
    outcome, detail = "passed", None
    for child_tag, child_outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        detail = element.find(child_tag)
        if detail is not None:
            outcome = child_outcome
            break
    return CaseResult(
        node_id=node_id(attrs.get("classname", ""), attrs.get("name", ""), file),
        outcome=outcome,
        duration=_float(attrs.get("time")),
        message=detail.get("message", "") if detail is not None else "",
        details=(detail.text or "") if detail is not None else "",
        kind=detail.get("type", "") if detail is not None else "",
        file=file,
        line=int(line) if line and line.isdigit() else None,
    )


def _float(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def progress_rootdir(lines: Iterable[str]) -> str | None:
    """The rootdir that `pytest_progress` writes first."""
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        rootdir = entry.get("rootdir") if isinstance(entry, dict) else None
        if isinstance(rootdir, str):
            return rootdir
    return None


def parse_progress(lines: Iterable[str]) -> list[CaseResult]:
    """Fold the per-phase lines (setup, call, teardown) into one result per test that got
    as far as its teardown; a test cut off mid-run is not reported. Torn last lines are skipped."""
    phases: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("nodeid"), str):
            phases.setdefault(entry["nodeid"], []).append(entry)
    results = []
    for nodeid, entries in phases.items():
        if not any(e.get("when") == "teardown" for e in entries):
            continue
        failed = next((e for e in entries if e.get("outcome") == "failed"), None)
        skipped = next((e for e in entries if e.get("outcome") == "skipped"), None)
        if failed is not None:
            outcome, detail = ("failed" if failed.get("when") == "call" else "error"), failed
        elif skipped is not None:
            outcome, detail = "skipped", skipped
        else:
            outcome, detail = "passed", None
        text = str(detail.get("message", "")) if detail else ""
        results.append(
            CaseResult(
                node_id=nodeid,
                outcome=outcome,
                duration=sum(float(e.get("duration") or 0.0) for e in entries),
                message=text.strip().splitlines()[-1] if text.strip() else "",
                details=text,
                file=nodeid.split("::", 1)[0],
            )
        )
    return results
