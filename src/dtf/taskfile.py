"""Task files: a YAML list of tasks whose dependencies refer to each other by name.

`${VAR}` and `${VAR:-default}` are substituted from the environment, as in config files.

tasks:
  - name: build
    type: command
    parameters: {command: "python -c 'print(1)'"}
  - name: unit-tests
    type: pytest
    parameters: {args: ["tests/"]}
    dependencies: [build]
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dtf_common.config import substitute_env
from dtf_common.errors import InvalidArgument
from dtf_common.schemas import TaskCreate


def load_taskfile(path: str | Path) -> list[dict[str, Any]]:
    """Parse and validate a task file; returns task bodies ready for `POST /api/tasks`."""
    try:
        doc = substitute_env(yaml.safe_load(Path(path).read_text()), os.environ)
    except FileNotFoundError:
        raise InvalidArgument(f"task file not found: {path}", field="file") from None
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"{path} is not valid YAML: {exc}", field="file") from None
    items = doc.get("tasks") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise InvalidArgument(f"{path}: expected a non-empty list under 'tasks'", field="tasks")
    ids: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidArgument(f"{path}: tasks[{i}] must be a mapping", field=f"tasks[{i}]")
        name = str(item.get("name") or f"task-{i}")
        if name in ids:
            raise InvalidArgument(f"{path}: duplicate task name {name!r}", field=f"tasks[{i}].name")
        ids[name] = str(item.get("task_id") or uuid.uuid4())
    bodies = []
    for i, item in enumerate(items):
        body = {k: v for k, v in item.items() if k != "name"}
        name = str(item.get("name") or f"task-{i}")
        body["task_id"] = ids[name]
        deps = []
        for dep in body.get("dependencies", []) or []:
            if dep not in ids:
                raise InvalidArgument(
                    f"{path}: tasks[{i}] depends on unknown task {dep!r}", field=f"tasks[{i}].dependencies"
                )
            deps.append(ids[dep])
        body["dependencies"] = deps
        body.setdefault("metadata", {})["name"] = name
        try:
            TaskCreate.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidArgument(f"{path}: tasks[{i}].{where}: {err['msg']}", field=f"tasks[{i}].{where}") from None
        bodies.append(body)
    return bodies
