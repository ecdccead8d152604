"""A pytest plugin, loaded with `-p dtf.run.collect_plugin`, that writes the collected
node ids, after `-k`/`-m` selection, as JSON to the file named by `DTF_COLLECT_OUTPUT`.

Node ids are relative to pytest's rootdir, or to nothing in particular for `--pyargs`
packages outside it, so they are not always valid arguments from the directory pytest
was started in. For those that are not, `arguments` gives one that is: the item's file,
relative to that directory when under it, else absolute, followed by the rest of the id.

It also lists the test files, every directory pytest walked and the configuration file,
which `dtf.run.collection_cache` watches to tell whether the collection still holds: a
test file added anywhere pytest looks changes one of those directories.

Reading ids from a file rather than from pytest's output keeps warnings, summaries and
other plugins' printing out of them. Writes nothing when the variable is unset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runner imports this module for OUTPUT_ENV without paying for pytest
    import pytest

OUTPUT_ENV = "DTF_COLLECT_OUTPUT"

_walked: set[str] = set()


def pytest_collectstart(collector: Any) -> None:
    # Directories pytest looks into (not those it only passes by, as a data directory
    # beside the tests it was pointed at).
    path = getattr(collector, "path", None)
    if isinstance(path, Path) and path.is_dir():
        _walked.add(str(path))


def pytest_collection_finish(session: pytest.Session) -> None:
    target = os.environ.get(OUTPUT_ENV)
    if not target:
        return
    invocation_dir = session.config.invocation_params.dir
    arguments: dict[str, str] = {}
    for item in session.items:
        argument = _argument(item.nodeid, item.path, invocation_dir)
        if argument != item.nodeid:
            arguments[item.nodeid] = argument
    inipath = session.config.inipath
    body = {
        "rootdir": str(session.config.rootpath),
        "node_ids": [item.nodeid for item in session.items],
        "arguments": arguments,
        "files": sorted({str(item.path) for item in session.items}),
        "dirs": sorted(_walked),
        "inipath": str(inipath) if inipath else None,
    }
    Path(target).write_text(json.dumps(body), encoding="utf-8")


def _argument(node_id: str, path: Path, invocation_dir: Path) -> str:
    _, sep, rest = node_id.partition("::")
    where = path.relative_to(invocation_dir).as_posix() if path.is_relative_to(invocation_dir) else str(path)
    return where + sep + rest
