"""What the cluster remembers of earlier runs: recorded test durations per hardware class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from dtf.run.cluster import LIVE_WORKER


class DurationSource(Protocol):
    def durations(self, test_ids: list[str], *, hardware_id: str | None = None) -> dict[str, float]: ...
    def workers(self) -> list[dict[str, Any]]: ...


def recorded_durations(
    client: DurationSource, node_ids: Sequence[str], hardware_ids: Sequence[str]
) -> dict[str, float]:
    """Recorded seconds per test: on the hardware classes of the run's workers where the
    store has them (the mean over those classes, when there are several), else on any."""
    by_class = [client.durations(list(node_ids), hardware_id=h) for h in hardware_ids]
    found: dict[str, float] = {}
    for node_id in node_ids:
        seen = [d[node_id] for d in by_class if node_id in d]
        if seen:
            found[node_id] = sum(seen) / len(seen)
    rest = [n for n in node_ids if n not in found]
    if rest:
        found.update(client.durations(rest))
    return found


def hardware_classes(client: DurationSource) -> list[str]:
    """The hardware classes of the cluster's live workers (none while no worker has registered)."""
    live = [w for w in client.workers() if w.get("status") in LIVE_WORKER]
    return sorted({str(w["hardware_id"]) for w in live if w.get("hardware_id")})
