"""A leased task as the worker sees it, read from the wire once (`client.lease_from_wire`).

`Lease` is what executors run: its parameters and metadata are already JSON objects.
A lease whose parameters cannot be read becomes an `UnreadableLease` instead; the task
runner fails it at once as not retryable, since every worker would read it the same way.
Executors never see one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dtf_common.errors import InvalidArgument


@dataclass(frozen=True)
class Lease:
    """One task this worker holds a lease on. `timeout_s` 0 means the task set no limit;
    `expires_ms` is when the lease runs out unless heartbeats renew it (ms since the epoch)."""

    task_id: str
    lease_id: str
    type: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    timeout_s: float = 0.0
    priority: int = 0
    expires_ms: int = 0


@dataclass(frozen=True)
class UnreadableLease:
    """A lease whose task cannot run as sent: `problem` says what is wrong with it."""

    task_id: str
    lease_id: str
    type: str
    problem: InvalidArgument
    attempt: int = 1


AnyLease = Lease | UnreadableLease


def parameters_from_json(text: str) -> dict[str, Any]:
    """A task's parameters: a JSON object ("" is {}). Raises InvalidArgument naming `parameters`."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"parameters are not valid JSON: {exc}", field="parameters") from None
    if not isinstance(value, dict):
        raise InvalidArgument("parameters must be a JSON object", field="parameters")
    return value


def metadata_from_json(text: str) -> dict[str, Any]:
    """A task's metadata object; anything unreadable counts as empty (it is informative only)."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
