"""Fixtures of the end-to-end tests: real coordinator and worker processes over loopback.

`cluster` gives a test its own `Cluster` (see e2e_harness.py) rooted in tmp_path. Every
process it started is killed when the test ends, whatever happened; when a test fails,
the tail of each process's log is added to the report.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e.e2e_harness import Cluster

CLUSTER_KEY = pytest.StashKey[Cluster]()

# A cluster that `dtf run` starts stops with the run in these tests (none is left to idle
# for 15 minutes); the idle timeout has a test of its own.
os.environ.setdefault("DTF_IDLE_TIMEOUT", "0")
# Every test runs on the cluster (where a run's session may run the first tests itself
# while its cluster starts, which test goes where would depend on timing); the head start
# has tests of its own.
os.environ.setdefault("DTF_HEAD_START", "0")


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
