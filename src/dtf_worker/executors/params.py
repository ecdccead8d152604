"""Typed access to a task's `parameters` object; every complaint names the offending field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtf_common.errors import InvalidArgument
from dtf_worker.lease import Lease

Command = list[str] | str
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SnapshotRef:
    """`parameters.snapshot`: run in `<snapshot>/<subdir>` (see `dtf_worker.snapshots`)."""

    sha256: str
    subdir: str = ""


class Parameters:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    @classmethod
    def of(cls, lease: Lease) -> Parameters:
        return cls(lease.parameters)

    def _fail(self, key: str, expected: str) -> InvalidArgument:
        got = type(self.data[key]).__name__
        return InvalidArgument(f"parameters.{key} must be {expected}, got {got}", field=f"parameters.{key}")

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string")
        return value

    def str_list(self, key: str) -> list[str]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings")
        return list(value)

    def command(self, key: str = "command") -> Command:
        """An argv list (run directly) or a string (run by the shell)."""
        value = self.optional_command(key)
        if value is None:
            raise InvalidArgument(f"parameters.{key} is required", field=f"parameters.{key}")
        return value

    def optional_command(self, key: str = "command") -> Command | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise self._fail(key, "a non-empty list of strings or a shell string")

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return dict(value)

    def env(self, key: str = "env") -> dict[str, str]:
        """The variables the task adds to its environment (numbers are written as text)."""
        extra = self.mapping(key)
        for name, value in extra.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise InvalidArgument(
                    f"parameters.{key}.{name} must be a string or a number", field=f"parameters.{key}.{name}"
                )
        return {name: str(value) for name, value in extra.items()}

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self._fail(key, f"a number >= {minimum:g}")
        return float(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._fail(key, f"an integer >= {minimum}")
        return value

    def timeout(self, task_timeout_s: float, default: float) -> float:
        """`parameters.timeout`, else the task's own limit, else the worker's default."""
        value = self.data.get("timeout")
        if value is None:
            return task_timeout_s if task_timeout_s > 0 else default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self._fail("timeout", "a number of seconds > 0")
        return float(value)

    def cwd(self, default: Path) -> Path:
        """Relative paths are taken from the worker process's directory, as a shell would."""
        value = self.text("cwd")
        return Path(value).expanduser() if value else default

    def snapshot(self) -> SnapshotRef | None:
        """`{"sha256": "<64 hex>", "subdir": "relative/path"}`, or None when absent."""
        value = self.data.get("snapshot")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._fail("snapshot", "an object")
        sha256 = value.get("sha256")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise InvalidArgument(
                "parameters.snapshot.sha256 must be 64 lowercase hex digits", field="parameters.snapshot.sha256"
            )
        subdir = value.get("subdir") or ""
        if not isinstance(subdir, str):
            raise InvalidArgument("parameters.snapshot.subdir must be a string", field="parameters.snapshot.subdir")
        return SnapshotRef(sha256, _relative(subdir, "snapshot.subdir"))

    def cwd_in(self, base: Path) -> Path:
        """`cwd` under a snapshot: a relative path taken from `base`, or `base` itself."""
        value = self.text("cwd")
        return base / _relative(value, "cwd") if value else base


def _relative(value: str, key: str) -> str:
    """A relative POSIX path that stays inside its base ("" and "." mean the base)."""
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if value.startswith("/") or "\\" in value or ".." in parts:
        raise InvalidArgument(
            f"parameters.{key} must be a relative path inside the snapshot, got {value!r}", field=f"parameters.{key}"
        )
    return "/".join(parts)
