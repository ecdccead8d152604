"""The last collection of a command, kept in the data directory, so that the next run of
the same command can start its batches while pytest collects again.

A command is its directory, pytest's arguments, the interpreter and the environment (less
a few variables a shell changes between commands). Its collection is kept with the
modification time and size of what could change it: each test file; each directory pytest
walked, and each from the test files up to the rootdir and the current directory (adding
or removing a file changes its directory); the conftest.py in each of those directories
(present or not); the configuration file; the interpreter's site-packages (a plugin
installed or removed).
`load` returns the node ids only while all of these are unchanged.

It is a prediction, not a substitute: the run still checks it, by the workers' pytest
collecting the same files or by collecting again and comparing (see
`dtf.run.execution`). What the prediction cannot see (tests generated from data files,
or from the time of day) the check catches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dtf.run.collect import Collection

# Set by shells and terminals, and changing between two runs of the same command.
VOLATILE_VARIABLES = frozenset({"_", "OLDPWD", "SHLVL", "COLUMNS", "LINES", "TERM_SESSION_ID", "WINDOWID"})
KEEP = 32  # commands remembered per data directory
VERSION = 2  # 2: the directories pytest walked are watched


def command_key(cwd: Path, pytest_args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    stable = sorted((k, v) for k, v in env.items() if k not in VOLATILE_VARIABLES)
    text = json.dumps([VERSION, str(cwd.resolve()), list(pytest_args), sys.executable, stable])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Prediction:
    node_ids: list[str]
    arguments: dict[str, str] = field(default_factory=dict)


class CollectionCache:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "collections"

    def load(self, key: str) -> Prediction | None:
        """The node ids last collected for `key`, while nothing they depend on has changed."""
        try:
            body = json.loads((self.dir / f"{key}.json").read_text(encoding="utf-8"))
            stamps = {str(path): stamp for path, stamp in body["stamps"].items()}
            node_ids = [str(n) for n in body["node_ids"]]
            arguments = {str(k): str(v) for k, v in body["arguments"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not node_ids or any(_stamp(Path(path)) != stamp for path, stamp in stamps.items()):
            return None
        return Prediction(node_ids, arguments)

    def store(self, key: str, collection: Collection) -> None:
        """Remember a collection (best effort: a read-only data directory only loses the prediction)."""
        if not collection.node_ids or not collection.files:
            return
        watched = watched_paths(collection)
        body = {
            "node_ids": collection.node_ids,
            "arguments": collection.arguments,
            "stamps": {str(path): _stamp(path) for path in watched},
        }
        with contextlib.suppress(OSError):
            self.dir.mkdir(parents=True, exist_ok=True)
            target = self.dir / f"{key}.json"
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(body), encoding="utf-8")
            partial.replace(target)
            self._prune()

    def _prune(self) -> None:
        kept = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)


def watched_paths(collection: Collection) -> list[Path]:
    """What the collection depends on that a file system can tell changed (see the module doc)."""
    tops = {p for p in (collection.rootdir, collection.cwd) if p is not None}
    dirs: set[Path] = set(collection.dirs)
    for file in collection.files:
        dirs.update(_up_to(file.parent, tops))
    paths: set[Path] = set(collection.files) | dirs | {d / "conftest.py" for d in dirs}
    if collection.inipath is not None:
        paths.add(collection.inipath)
    paths.update(Path(p) for p in _site_dirs())
    return sorted(paths)


def _up_to(start: Path, tops: Iterable[Path]) -> list[Path]:
    """`start` and its parents up to the highest of `tops` above it (only `start` when none is)."""
    above = [top for top in tops if start == top or top in start.parents]
    if not above:
        return [start]
    stop = min(above, key=lambda top: len(top.parts))
    out = [start]
    while out[-1] != stop:
        out.append(out[-1].parent)
    return out


def _site_dirs() -> set[str]:
    paths = sysconfig.get_paths()
    return {paths[name] for name in ("purelib", "platlib") if name in paths}


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]
