"""Workers' test reports played into the run's own pytest session.

A batch's pytest serialises every report it makes (`dtf_pytest.reports`)
with pytest's own `pytest_report_to_serializable`; here the run's session turns each one
back into a report with `pytest_report_from_serializable`, fills in what it knows of its
own item (node id, location, keywords) and calls the hooks a test's run calls:
`pytest_runtest_logstart`, `pytest_runtest_logreport` per report, `pytest_warning_recorded`
per warning, `pytest_runtest_logfinish`. So everything that listens to them works as in
a plain run: the terminal's progress, `-v` lines, `-r` summary, `--durations`, the
summary line and exit status, `-x`/`--maxfail`, `--junitxml`, pytest's cache (`--lf`),
and other plugins. pytest-xdist's controller replays its workers' reports the same way.

Tests that never produced reports (a crash, a missing result) get a failed report built
the same way, from data.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

# pytest-rerunfailures' word for a failed attempt that runs again: its summary line
# counts them (`1 failed, 9 passed, 3 rerun`) and the terminal shows `R`.
RERUN = "rerun"


def keywords_of(item: pytest.Item) -> dict[str, int]:
    return dict.fromkeys(item.keywords, 1)


def rebuild(
    config: pytest.Config, item: pytest.Item, data: Mapping[str, Any], keywords: dict[str, int] | None = None
) -> pytest.TestReport:
    """One report as the worker serialised it, completed from the session's own item
    (`keywords`: the item's, when the caller has them already)."""
    full: dict[str, Any] = {
        "nodeid": item.nodeid,
        "location": item.location,
        "keywords": keywords if keywords is not None else keywords_of(item),
        "longrepr": None,
        "sections": [],
        "user_properties": [],
        **data,
    }
    if "_report_type" not in full:
        full.setdefault("$report_type", "TestReport")
    if isinstance(full["longrepr"], list):  # a skip's (path, line, reason), a list after JSON
        full["longrepr"] = tuple(full["longrepr"])
    report: pytest.TestReport = config.hook.pytest_report_from_serializable(config=config, data=full)
    report.location = tuple(item.location)  # type: ignore[assignment]
    return report


def failure_report(item: pytest.Item, message: str, details: str = "") -> pytest.TestReport:
    """A failed call of `item` that pytest did not report: the short summary shows
    `message`, the failures section `details` beneath it."""
    path, lineno, _ = item.location
    data = {
        "outcome": "failed",
        "when": "call",
        "longrepr": {
            "reprcrash": {"path": str(path), "lineno": (lineno or 0) + 1, "message": message},
            "reprtraceback": {"reprentries": [], "extraline": None, "style": "long"},
            "sections": [("dtf", f"{message}\n\n{details}".rstrip())],
            "chain": None,
        },
    }
    return rebuild(item.config, item, data)


def replay(
    item: pytest.Item,
    reports: Sequence[pytest.TestReport],
    warnings_raised: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Play one test's reports into the session, as running it would have."""
    hook = item.ihook
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for entry in warnings_raised:
        item.config.hook.pytest_warning_recorded.call_historic(
            kwargs={"warning_message": warning_of(entry), "when": "runtest", "nodeid": item.nodeid, "location": None}
        )
    for report in reports:
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def reports_of(item: pytest.Item, raw: Mapping[str, Any], *, rerun: bool = False) -> list[pytest.TestReport]:
    """The reports of a stored result. For a failed attempt that runs again, the reports
    up to the failing one, which becomes a `rerun` (as pytest-rerunfailures reports)."""
    keywords = keywords_of(item)
    out = [rebuild(item.config, item, data, keywords) for data in raw.get("reports") or ()]
    if not rerun:
        return out
    for i, report in enumerate(out):
        if report.failed:
            report.outcome = RERUN  # type: ignore[assignment]
            return out[: i + 1]
    return out


def warning_of(entry: Mapping[str, Any]) -> warnings.WarningMessage:
    """A warning as the worker serialised it; its category is imported where it can be."""
    category: type[Warning] = UserWarning
    module, _, name = str(entry.get("category") or "").partition(":")
    try:
        found = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
        if isinstance(found, type) and issubclass(found, Warning):
            category = found
    except (ImportError, AttributeError, ValueError):
        pass
    message = str(entry.get("message") or "")
    try:
        instance: Warning = category(message)
    except Exception:  # a category whose constructor wants more than a message
        instance = UserWarning(message)
    return warnings.WarningMessage(
        instance, type(instance), str(entry.get("filename") or ""), int(entry.get("lineno") or 0)
    )
