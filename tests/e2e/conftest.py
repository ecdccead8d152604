"""Fixtures of the end-to-end tests: real coordinator and worker processes over loopback.

`cluster` gives a test its own `Cluster` (see e2e_harness.py) rooted in tmp_path. Every
process it started is killed when the test ends, whatever happened; when a test fails,
the tail of each process's log is added to the report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from e2e_harness import Cluster

CLUSTER_KEY = pytest.StashKey[Cluster]()


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    request.node.stash[CLUSTER_KEY] = c
    try:
        yield c
    finally:
        c.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    c = item.stash.get(CLUSTER_KEY, None)
    if c is not None and report.failed and report.when in ("setup", "call"):
        report.sections.append(("dtf process logs", c.procs.logs()))
    return report
