"""Typed access to a task's `parameters` JSON; every complaint names the offending field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dtf_common.errors import InvalidArgument
from dtf_common.pb.dtf.v1 import worker_service_pb2

Command = list[str] | str


class Parameters:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    @classmethod
    def of(cls, task: worker_service_pb2.LeasedTask) -> Parameters:
        text = task.parameters_json or "{}"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"parameters are not valid JSON: {exc}", field="parameters") from None
        if not isinstance(data, dict):
            raise InvalidArgument("parameters must be a JSON object", field="parameters")
        return cls(data)

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
