"""pytest plugin loaded into every batch's pytest (`-p dtf_pytest.reports`).

It does three things, each keyed by exactly the node ids pytest itself gives its items:

1. **Selects.** With a batch file (`DTF_PYTEST_BATCH`: `{"select": [node ids, ...]}`),
   or the JSON itself in that variable (a warm server's warm-up: `{"select": [],
   "every_file": true}` imports every test module and keeps no test),
   the session runs exactly those tests, in that order, out of what its arguments
   collect. A batch runs with the same arguments, from the same directory, as the
   pytest that collected the ids (`dtf run`'s own session), so each test gets the same
   node id in both and nothing is translated. Files that hold none of the selected
   tests are dropped before they are imported (their collectors are made, then
   discarded), so a batch imports only its own test modules; directories are still
   walked, so every conftest.py loads as in the full session. Selected ids that the
   session does not collect are written as `missing`.
2. **Records.** Per test, one JSON line with every report pytest made for it (setup,
   call, teardown and subtests, through pytest's own `pytest_report_to_serializable`,
   so failure texts, skip reasons, xfail marks and captured output survive exactly) and
   the warnings it raised. Fields the collecting session already knows (node id,
   location, keywords) and default values are left out. The lines go to
   `DTF_PYTEST_REPORTS`; a test's line is written and flushed when the next test starts
   (pytest hands over a test's warnings only after its last report) or the session
   ends, so a test that kills its process loses none of those before it.
3. **Serves a warm session.** A warm server's warm-up session collects every test and
   then forks each batch from inside its run loop; `begin_batch` gives the batch's
   child its state and selection (see `dtf_pytest.server`).
4. **Plays an xdist worker** when the batch file has `workerinput`: `config.workerinput`
   and `config.workeroutput` exist (so pytest's cache, stepwise and junitxml plugins
   leave writing to the collecting session, and plugins that know xdist's workers
   recognise one), `PYTEST_XDIST_WORKER`, `PYTEST_XDIST_WORKER_COUNT` and
   `PYTEST_XDIST_TESTRUNUID` are set, and the `worker_id` and `testrun_uid` fixtures
   exist even where pytest-xdist is not installed.

With `yield_after` (seconds) in the batch file, the batch *yields*: once that long has
passed since its first test started, it stops after the running test and writes
`{"yielded": true}`; the submitter gives the rest to free workers.

The lines: `{"collected": N, "missing": [...]}` once collection ends, `{"collect_error":
{report}}` for a file that failed to collect, `{"id": nodeid, "reports": [...],
"warnings": [...]}` per test, `{"warnings": [...]}` for warnings outside any test,
`{"yielded": true}`, `{"stopped": reason}` when `-x` or `--maxfail` ended the session,
and `{"exitstatus": N}` at the end.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import IO, Any

import pytest
from _pytest.config import create_terminal_writer

from dtf_pytest.xdist import disable_xdist

BATCH_VAR = "DTF_PYTEST_BATCH"
REPORTS_VAR = "DTF_PYTEST_REPORTS"
# Keys of a serialised TestReport that the collecting session fills in from its own item.
KNOWN_KEYS = ("nodeid", "location", "keywords")
_DEFAULTS: dict[str, Any] = {"longrepr": None, "sections": [], "user_properties": [], "$report_type": "TestReport"}


@dataclass
class _State:
    """One session's. A batch's session runs in a child forked from a warm server whose own
    (warm-up) session left its state here: `pytest_configure` starts afresh."""

    select: dict[str, int] | None = None
    files: frozenset[str] = frozenset()
    # The warm-up's: collect (import) every file, keep no test.
    every_file: bool = False
    yield_at: float | None = None
    yield_after: float | None = None
    sink: IO[str] | None = None
    session: pytest.Session | None = None
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The last test's line, written when the next one starts or the session ends.
    pending: dict[str, Any] | None = None
    collect_errors: list[dict[str, Any]] = field(default_factory=list)
    yielded: bool = False
    # The tests' own output is the batch's output (`dtf run -s`): the session prints none.
    live_output: bool = False


_state = _State()


def _write(entry: dict[str, Any], *, flush: bool = False) -> None:
    if _state.sink is None:
        path = os.environ.get(REPORTS_VAR)
        if not path:
            return
        _state.sink = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the session
    _state.sink.write(json.dumps(entry, default=repr, separators=(",", ":")) + "\n")
    if flush:
        _state.sink.flush()


def _load_batch() -> dict[str, Any]:
    """The batch: a file named by BATCH_VAR, or the JSON object itself (the warm-up's)."""
    value = os.environ.get(BATCH_VAR)
    if not value:
        return {}
    if value.startswith("{"):
        batch = json.loads(value)
    else:
        with open(value, encoding="utf-8") as f:
            batch = json.load(f)
    return batch if isinstance(batch, dict) else {}


def file_of(node_id: str) -> str:
    """The node id of the file collector a test belongs to: `a/test_b.py::C::t[x]` -> `a/test_b.py`."""
    return node_id.split("::", 1)[0]


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, Any, Any]:
    if os.environ.get(BATCH_VAR):
        disable_xdist(config.option)  # the batch is a worker: `-n` in addopts must not start more
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _start(config)


def _start(config: pytest.Config) -> None:
    """This session's (or batch's) state, from the batch file."""
    global _state
    _state = _State()
    batch = _load_batch()
    select = batch.get("select")
    if isinstance(select, list):
        _state.select = {}
        for i, node_id in enumerate(select):
            _state.select.setdefault(str(node_id), i)
        _state.files = frozenset(file_of(n) for n in _state.select)
    _state.every_file = bool(batch.get("every_file"))
    after = batch.get("yield_after")
    _state.yield_after = float(after) if isinstance(after, int | float) and after > 0 else None
    _state.live_output = batch.get("live_output") is True
    workerinput = batch.get("workerinput")
    if isinstance(workerinput, dict):
        _play_xdist_worker(config, workerinput)


def begin_batch(session: pytest.Session) -> None:
    """In a batch's child forked from a warm server inside its session, which collected
    every test with the batch's own arguments (`dtf_pytest.server.resume_child`): take up the
    batch's file, and leave in the session exactly the batch's selection, in its order,
    as a session of the batch's own would have after its collection."""
    collected, errors = list(session.items), _state.collect_errors
    _start(session.config)
    _state.session = session
    if _state.live_output:
        _silence_terminal(session.config)
    seed = getattr(session.config, "workerinput", {}).get("randomly_seed")
    if seed is not None and hasattr(session.config.option, "randomly_seed"):
        session.config.option.randomly_seed = seed  # pytest-randomly reseeds each test from it
    select = _state.select or {}
    kept = sorted((item for item in collected if item.nodeid in select), key=lambda item: select[item.nodeid])
    seen = {item.nodeid for item in kept}
    session.items = kept
    session.testscollected = len(kept)
    session.testsfailed = 0  # collection errors of other files are not this batch's
    session.shouldstop = session.shouldfail = False
    missing = [n for n in select if n not in seen]
    files = {file_of(n) for n in missing}
    for error in errors:
        if file_of(str(error.get("nodeid") or "")) in files:
            _write({"collect_error": error})
    _write({"collected": len(kept), "missing": missing, "resumed": True}, flush=True)


def _play_xdist_worker(config: pytest.Config, workerinput: dict[str, Any]) -> None:
    config.workerinput = dict(workerinput)  # type: ignore[attr-defined]
    config.workeroutput = {}  # type: ignore[attr-defined]
    os.environ["PYTEST_XDIST_WORKER"] = str(workerinput.get("workerid", "gw0"))
    os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(workerinput.get("workercount", 1))
    os.environ["PYTEST_XDIST_TESTRUNUID"] = str(workerinput.get("testrunuid", ""))
    if not config.pluginmanager.hasplugin("xdist") and not config.pluginmanager.has_plugin(_FIXTURES):
        config.pluginmanager.register(_XdistFixtures(), _FIXTURES)


_FIXTURES = "dtf-xdist-fixtures"


class _XdistFixtures:
    """pytest-xdist's `worker_id` and `testrun_uid` fixtures, where xdist is not installed."""

    @pytest.fixture(scope="session")
    def worker_id(self, request: pytest.FixtureRequest) -> str:
        return str(request.config.workerinput["workerid"])  # type: ignore[attr-defined]

    @pytest.fixture(scope="session")
    def testrun_uid(self, request: pytest.FixtureRequest) -> str:
        return str(request.config.workerinput["testrunuid"])  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _state.session = session
    if _state.live_output:
        _silence_terminal(session.config)  # before the terminal's header


def _silence_terminal(config: pytest.Config) -> None:
    """Send the session's terminal report nowhere: the collecting session prints its own,
    and the batch's output is what its tests print."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the session
        reporter._tw = create_terminal_writer(config, devnull)


def pytest_runtestloop(session: pytest.Session) -> None:
    # The time to yield counts from the first test, not from the session's start: however
    # long collecting takes, a batch runs tests before it hands any on.
    if _state.yield_after is not None:
        _state.yield_at = time.monotonic() + _state.yield_after


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path: Any, parent: pytest.Collector) -> Generator[None, Any, Any]:
    collectors = yield
    if _state.select is None or _state.every_file or not collectors:
        return collectors
    # Made but not yet collected: a file of none of the batch's tests is never imported.
    return [c for c in collectors if c is not None and c.nodeid in _state.files]


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    yield  # after every other plugin's selection and ordering
    if _state.select is None:
        return
    select = _state.select
    kept = sorted((item for item in items if item.nodeid in select), key=lambda item: select[item.nodeid])
    seen = {item.nodeid for item in kept}
    items[:] = kept
    _write({"collected": len(kept), "missing": [n for n in select if n not in seen]}, flush=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    if _state.select is None:
        _write({"collected": len(session.items), "missing": []}, flush=True)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        config = _state.session.config if _state.session is not None else None
        if config is not None:
            data = config.hook.pytest_report_to_serializable(config=config, report=report)
            _state.collect_errors.append(data)  # a warm server's: told to the batches they concern
            _write({"collect_error": data}, flush=True)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _state.session is None:
        return
    config = _state.session.config
    data = config.hook.pytest_report_to_serializable(config=config, report=report)
    if data is None:
        return
    _state.reports.setdefault(report.nodeid, []).append(compact(data))


def compact(data: dict[str, Any]) -> dict[str, Any]:
    """A serialised report without what the collecting session knows and without defaults."""
    out = {k: v for k, v in data.items() if k not in KNOWN_KEYS and not (k in _DEFAULTS and v == _DEFAULTS[k])}
    for key in ("duration", "start", "stop"):
        if isinstance(out.get(key), float):
            out[key] = round(out[key], 6)
    return out


def pytest_warning_recorded(
    warning_message: warnings.WarningMessage, when: str, nodeid: str, location: tuple[str, int, str] | None
) -> None:
    entry = serialize_warning(warning_message)
    pending = _state.pending
    if when == "runtest" and pending is not None and nodeid == pending["id"]:
        pending.setdefault("warnings", []).append(entry)
    elif when == "runtest" and nodeid:
        _state.warnings.setdefault(nodeid, []).append(entry)
    else:
        _write({"warnings": [entry], "when": when, "nodeid": nodeid})


def serialize_warning(warning_message: warnings.WarningMessage) -> dict[str, Any]:
    message = warning_message.message
    category = warning_message.category
    return {
        "message": str(message),
        "category": f"{category.__module__}:{category.__qualname__}",
        "filename": warning_message.filename,
        "lineno": warning_message.lineno,
    }


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _flush_pending()


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    # Held until the next test starts: pytest hands a test's warnings over only after its
    # last report (`pytest_warning_recorded` runs once the whole protocol has ended).
    entry: dict[str, Any] = {"id": nodeid, "reports": _state.reports.pop(nodeid, [])}
    raised = _state.warnings.pop(nodeid, None)
    if raised:
        entry["warnings"] = raised
    _flush_pending()
    _state.pending = entry
    session = _state.session
    if _state.yield_at is not None and time.monotonic() >= _state.yield_at and session is not None:
        session.shouldstop = "dtf: the batch yields its remaining tests"
        _state.yield_at = None
        _state.yielded = True


def _flush_pending() -> None:
    if _state.pending is not None:
        _write(_state.pending, flush=True)
        _state.pending = None


def yield_now() -> None:
    """Stop after the running test, as `yield_after` does (from a signal handler)."""
    _state.yield_at = 0.0


def end_batch() -> None:
    """The end of a batch that ends without its session's end: the last test's line, and
    whether it yielded."""
    _flush_pending()
    if _state.yielded:
        _write({"yielded": True})
    if _state.sink is not None:
        _state.sink.close()
        _state.sink = None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _flush_pending()
    if _state.yielded:
        _write({"yielded": True})
    elif session.shouldfail:  # -x or --maxfail: the tests not run were not lost
        _write({"stopped": str(session.shouldfail)})
    _write({"exitstatus": int(exitstatus)}, flush=True)
    if _state.sink is not None:
        _state.sink.close()
        _state.sink = None
