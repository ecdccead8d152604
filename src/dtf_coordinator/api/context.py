"""What the HTTP layer needs from the running coordinator, in one object."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dtf_common.config import CoordinatorConfig
from dtf_coordinator.blobs import BlobStore
from dtf_coordinator.metrics import Metrics
from dtf_coordinator.service.coordinator import Coordinator
from dtf_coordinator.service.events import EventHub
from dtf_coordinator.service.idle import Activity


class ResultsReader(Protocol):
    def get_result(self, result_id: str) -> dict[str, Any] | None: ...

    def list_results(
        self,
        *,
        task_id: str | None = None,
        worker_id: str | None = None,
        test_id: str | None = None,
        status: str | None = None,
        since: Any = None,
        until: Any = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int]: ...

    def summary(self) -> dict[str, Any]: ...

    def test_durations(
        self, test_ids: Sequence[str] | None = None, hardware_id: str | None = None, last_n: int = 5
    ) -> dict[str, float]: ...


@dataclass
class ApiContext:
    config: CoordinatorConfig
    coordinator: Coordinator
    results: ResultsReader
    hub: EventHub
    metrics: Metrics
    secret: str
    blobs: BlobStore | None = None  # project snapshots; None: /api/blobs answers 503
    # Brings the results store up to the applied log before a read (None: it may lag by a flush).
    catch_up_store: Callable[[], Awaitable[object]] | None = None
    # Where the API counts its use, for a coordinator that stops itself once idle.
    activity: Activity | None = None
