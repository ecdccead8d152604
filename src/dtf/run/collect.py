"""Collect a pytest suite once, on the client, as node ids.

Runs `pytest --collect-only` in a subprocess with the user's arguments, so plugins,
conftest files, `--pyargs` and `-k`/`-m` selection behave exactly as in a plain run. The
ids come from `dtf.run.collect_plugin`, which writes them as JSON to a file: exact, and
untouched by warnings or summary lines in pytest's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dtf.run.collect_plugin import OUTPUT_ENV
from dtf_common.errors import InvalidArgument

# pytest's exit codes.
NO_TESTS_COLLECTED = 5


class CollectionError(InvalidArgument):
    """pytest could not collect the suite; `output` is what it printed, `exit_code` its status."""

    def __init__(self, message: str, *, output: str, exit_code: int) -> None:
        super().__init__(message, field="pytest_args")
        self.output = output
        self.exit_code = exit_code


@dataclass(frozen=True)
class Collection:
    """Node ids in collection order, as pytest names them in its reports: relative to
    `rootdir`, which is `cwd` unless an ini file or `--rootdir` puts it elsewhere.

    `arguments` maps the node ids that are not valid pytest arguments from `cwd` (tests
    below a rootdir above `cwd`, `--pyargs` packages elsewhere) to ones that are."""

    node_ids: list[str]
    cwd: Path
    rootdir: Path | None = None
    arguments: dict[str, str] = field(default_factory=dict)

    def argument(self, node_id: str) -> str:
        """What to pass to pytest, started in `cwd`, to run `node_id`."""
        return self.arguments.get(node_id, node_id)


def collect(pytest_args: list[str], cwd: Path, *, timeout: float = 600) -> Collection:
    """The node ids `pytest <pytest_args>` would run from `cwd`; an empty list when the
    selection matches nothing. Raises `CollectionError` when pytest fails to collect."""
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "dtf.run.collect_plugin",
        *pytest_args,
    ]
    with tempfile.TemporaryDirectory(prefix="dtf-collect-") as tmp:
        target = Path(tmp) / "collected.json"
        env = {**os.environ, OUTPUT_ENV: str(target)}
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        output = proc.stdout + proc.stderr
        if proc.returncode not in (0, NO_TESTS_COLLECTED):
            raise CollectionError(
                f"pytest could not collect the suite (exit code {proc.returncode})",
                output=output,
                exit_code=proc.returncode,
            )
        if not target.exists():
            raise CollectionError("pytest ended without reporting what it collected", output=output, exit_code=3)
        body = json.loads(target.read_text(encoding="utf-8"))
    return Collection(
        node_ids=[str(n) for n in body["node_ids"]],
        cwd=cwd,
        rootdir=Path(body["rootdir"]),
        arguments={str(k): str(v) for k, v in body["arguments"].items()},
    )
