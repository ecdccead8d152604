"""Collect a pytest suite once, on the client, as node ids.

Runs `pytest --collect-only` in a subprocess with the user's arguments, so plugins,
conftest files, `--pyargs` and `-k`/`-m` selection behave exactly as in a plain run. The
ids come from `dtf.run.collect_plugin`, which writes them as JSON to a file: exact, and
untouched by warnings or summary lines in pytest's output. `PendingCollection` runs it
in the background, so that a run can start its cluster, or its batches, meanwhile; in a
child of a warm pytest server where the run has one (`dtf.run.warm_pytest`), else in a
fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dtf.run.collect_plugin import OUTPUT_ENV
from dtf_common.errors import InvalidArgument

if TYPE_CHECKING:
    from dtf.run.warm_pytest import WarmPytest

# pytest's exit codes.
NO_TESTS_COLLECTED = 5
# How long a collection in a warm server may take.
WARM_TIMEOUT_S = 600.0


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
    `start=False`, when `start` is called), read with `result`. With `warm`, it runs in a
    child of that warm server, or in a fresh process where the server cannot run it."""

    def __init__(
        self, pytest_args: list[str], cwd: Path, *, start: bool = True, warm: WarmPytest | None = None
    ) -> None:
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
        self.warm = warm
        self._tmp = tempfile.TemporaryDirectory(prefix="dtf-collect-")
        self._target = Path(self._tmp.name) / "collected.json"
        self._output = Path(self._tmp.name) / "output.txt"
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._warm_exit: int | None = None  # pytest's exit code, when the warm server ran it
        self._result: Collection | CollectionError | None = None
        if start:
            self.start()

    @property
    def started(self) -> bool:
        return self._proc is not None or self._thread is not None

    def start(self) -> None:
        if self.started:
            return
        if self.warm is None:
            self._spawn()
            return
        self._thread = threading.Thread(target=self._run_warm, name="dtf-collect", daemon=True)
        self._thread.start()

    def _spawn(self) -> None:
        env = {**os.environ, OUTPUT_ENV: str(self._target)}
        with self._output.open("wb") as output:
            self._proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )

    def _run_warm(self) -> None:
        assert self.warm is not None
        try:
            code = self.warm.run(self.argv[3:], {OUTPUT_ENV: str(self._target)}, Path(self._tmp.name), WARM_TIMEOUT_S)
        except Exception:  # the warm server is an optimisation: a fresh process will say what is wrong
            code = None
        if code is None:
            self._spawn()
        else:
            self._warm_exit = code

    def done(self) -> bool:
        if self._result is not None:
            return True
        if self._thread is not None and self._thread.is_alive():
            return False
        return self._warm_exit is not None or (self._proc is not None and self._proc.poll() is not None)

    def result(self, timeout: float | None = None) -> Collection:
        """The collection, waiting for it. Raises `CollectionError` when pytest failed, and
        subprocess.TimeoutExpired after `timeout` seconds (pytest is then stopped)."""
        if self._result is None:
            self.start()
            deadline = None if timeout is None else time.monotonic() + timeout
            if self._thread is not None:
                self._thread.join(timeout)
                if self._thread.is_alive():
                    self.cancel()
                    raise subprocess.TimeoutExpired(self.argv, timeout or 0.0)
            if self._proc is not None:
                try:
                    self._proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.cancel()
                    raise
            self._result = self._read()
            self._tmp.cleanup()
        if isinstance(self._result, CollectionError):
            raise self._result
        return self._result

    def cancel(self) -> None:
        if self._thread is not None and self.warm is not None:
            self.warm.cancel()
            self._thread.join(5)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._tmp.cleanup()

    def _read(self) -> Collection | CollectionError:
        if self._warm_exit is not None:
            code = self._warm_exit
            logs = [Path(self._tmp.name) / name for name in ("stdout.log", "stderr.log")]
            output = "".join(p.read_text(encoding="utf-8", errors="replace") for p in logs if p.exists())
        else:
            assert self._proc is not None
            code = self._proc.returncode
            output = self._output.read_text(encoding="utf-8", errors="replace")
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
