"""The encodings the wire, the command log and the results store share: JSON objects
carried as text, and times as milliseconds since the epoch.

Structured conversions live where their boundary is: `dtf_coordinator.rpc.wire` (the
WorkerService's messages), `dtf_coordinator.service.to_log` (into commands) and
`dtf_coordinator.service.views` (out of the state and the log).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def loads_obj(text: str | None) -> dict[str, Any]:
    """Parse a JSON object field; empty text is {}; a non-object is wrapped as {"value": ...}."""
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)
