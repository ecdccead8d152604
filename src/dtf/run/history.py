"""What earlier runs left: test durations the cluster recorded per hardware class, and
those of tests a run's own session ran (its head start), kept in the data directory."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dtf.run.cluster import LIVE_WORKER
from dtf.run.plan import estimate_durations


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


HERE_FILE = "durations-here.json"


def estimates_for(
    node_ids: Sequence[str], recorded: Mapping[str, float], ran_here: Mapping[str, float]
) -> dict[str, float]:
    """Each test's expected seconds (`plan.estimate_durations`), where the tests this
    session ran itself meanwhile are evidence too: a first run's head start has measured
    their siblings' files, which the default guess (50 ms a test) would overrate a
    hundredfold on a suite of trivial tests, and cut into needless tail batches."""
    return estimate_durations(node_ids, {**ran_here, **recorded})


def durations_here(data_dir: Path, node_ids: Sequence[str]) -> dict[str, float]:
    """Seconds per test, of the tests earlier runs' sessions ran themselves."""
    try:
        kept = json.loads((data_dir / HERE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(kept, dict):
        return {}
    return {n: float(kept[n]) for n in node_ids if isinstance(kept.get(n), int | float)}


def remember_here(data_dir: Path, durations: Mapping[str, float]) -> None:
    """Keep the durations of tests this session ran itself, for the next run's plan (the
    cluster records only what its workers ran)."""
    if not durations or not data_dir.is_dir():
        return
    path = data_dir / HERE_FILE
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}
    if not isinstance(kept, dict):
        kept = {}
    kept.update({n: round(float(s), 6) for n, s in durations.items()})
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(kept), encoding="utf-8")
    os.replace(temporary, path)  # whole or not at all: a run killed meanwhile leaves the last one


def hardware_classes(client: DurationSource) -> list[str]:
    """The hardware classes of the cluster's live workers (none while no worker has registered)."""
    live = [w for w in client.workers() if w.get("status") in LIVE_WORKER]
    return sorted({str(w["hardware_id"]) for w in live if w.get("hardware_id")})
