"""Health snapshots and their verdict against the configured thresholds."""

from __future__ import annotations

import json
from pathlib import Path

from dtf_common.config import HealthReportConfig
from dtf_worker.health import classify, collect_health

THRESHOLDS = HealthReportConfig(cpu_threshold=80, memory_threshold=90, disk_threshold=90)


def test_classify_against_thresholds() -> None:
    assert classify({"cpu_percent": 10, "memory_percent": 20, "disk_percent": 30}, THRESHOLDS) == ("healthy", [])
    status, reasons = classify({"cpu_percent": 85, "memory_percent": 20, "disk_percent": 30}, THRESHOLDS)
    assert status == "warning" and reasons == ["cpu_percent 85.0 >= 80"]
    status, reasons = classify({"cpu_percent": 85, "memory_percent": 96, "disk_percent": 30}, THRESHOLDS)
    assert status == "critical" and len(reasons) == 2
    assert classify({"disk_percent": 95}, THRESHOLDS)[0] == "critical"  # midpoint of 90 and 100
    assert classify({"cpu_percent": 100}, THRESHOLDS)[0] == "warning"  # busy, not broken


def test_collect_health_snapshot(tmp_path: Path) -> None:
    snapshot = collect_health(tmp_path / "not-yet-created", THRESHOLDS)
    json.dumps(snapshot)
    for key in ("cpu_percent", "memory_percent", "disk_percent"):
        assert 0 <= snapshot[key] <= 100
    assert snapshot["status"] in {"healthy", "warning", "critical"}
    assert len(snapshot["load_average"]) == 3
    assert snapshot["net_bytes_sent"] >= 0 and snapshot["net_bytes_recv"] >= 0
