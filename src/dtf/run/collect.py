"""Collect a pytest suite once, on the client, as node ids.

Runs `pytest --collect-only` in a subprocess with the user's arguments, so plugins,
conftest files, `--pyargs` and `-k`/`-m` selection behave exactly as in a plain run. The
ids come from `dtf.run.collect_plugin`, which writes them as JSON to a file: exact, and
untouched by warnings or summary lines in pytest's output. `PendingCollection` runs it
in the background, so that a run can start its cluster, or its batches, meanwhile.
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
    # The test files and the directories pytest walked (absolute), and the configuration
    # file pytest read, when known.
    files: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    inipath: Path | None = None

    def argument(self, node_id: str) -> str:
        """What to pass to pytest, started in `cwd`, to run `node_id`."""
        return self.arguments.get(node_id, node_id)


def collect(pytest_args: list[str], cwd: Path, *, timeout: float = 600) -> Collection:
    """The node ids `pytest <pytest_args>` would run from `cwd`; an empty list when the
    selection matches nothing. Raises `CollectionError` when pytest fails to collect."""
    return PendingCollection(pytest_args, cwd).result(timeout)


class PendingCollection:
    """`pytest --collect-only` running in the background: started at once (or, with
    `start=False`, when `start` is called), read with `result`."""

    def __init__(self, pytest_args: list[str], cwd: Path, *, start: bool = True) -> None:
        self.argv = [
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
        self.cwd = cwd
        self._tmp = tempfile.TemporaryDirectory(prefix="dtf-collect-")
        self._target = Path(self._tmp.name) / "collected.json"
        self._output = Path(self._tmp.name) / "output.txt"
        self._proc: subprocess.Popen[bytes] | None = None
        self._result: Collection | CollectionError | None = None
        if start:
            self.start()

    @property
    def started(self) -> bool:
        return self._proc is not None

    def start(self) -> None:
        if self._proc is not None:
            return
        env = {**os.environ, OUTPUT_ENV: str(self._target)}
        with self._output.open("wb") as output:
            self._proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )

    def done(self) -> bool:
        return self._result is not None or (self._proc is not None and self._proc.poll() is not None)

    def result(self, timeout: float | None = None) -> Collection:
        """The collection, waiting for it. Raises `CollectionError` when pytest failed, and
        subprocess.TimeoutExpired after `timeout` seconds (pytest is then stopped)."""
        if self._result is None:
            self.start()
            assert self._proc is not None
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.cancel()
                raise
            self._result = self._read()
            self._tmp.cleanup()
        if isinstance(self._result, CollectionError):
            raise self._result
        return self._result

    def cancel(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._tmp.cleanup()

    def _read(self) -> Collection | CollectionError:
        assert self._proc is not None
        output = self._output.read_text(encoding="utf-8", errors="replace")
        code = self._proc.returncode
        if code not in (0, NO_TESTS_COLLECTED):
            return CollectionError(
                f"pytest could not collect the suite (exit code {code})", output=output, exit_code=code
            )
        if not self._target.exists():
            return CollectionError("pytest ended without reporting what it collected", output=output, exit_code=3)
        body = json.loads(self._target.read_text(encoding="utf-8"))
        return Collection(
            node_ids=[str(n) for n in body["node_ids"]],
            cwd=self.cwd,
            rootdir=Path(body["rootdir"]),
            arguments={str(k): str(v) for k, v in body["arguments"].items()},
            files=[Path(f) for f in body.get("files", [])],
            dirs=[Path(d) for d in body.get("dirs", [])],
            inipath=Path(body["inipath"]) if body.get("inipath") else None,
        )
