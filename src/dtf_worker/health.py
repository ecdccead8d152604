"""The worker's health as a JSON-able dict, sent with heartbeats.

A metric at or above its configured threshold makes the worker "warning". Memory or disk
at or above the midpoint between the threshold and 100 % (95 % for a threshold of 90)
makes it "critical", which the coordinator reads as unable to take work. CPU never does:
a busy CPU is what a worker running tests is for, and one reading is a noisy sample.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

from dtf_common.config import HealthReportConfig


def classify(metrics: dict[str, float], thresholds: HealthReportConfig) -> tuple[str, list[str]]:
    """("healthy" | "warning" | "critical", the reasons). Pure: metrics in, verdict out."""
    limits = {
        "cpu_percent": thresholds.cpu_threshold,
        "memory_percent": thresholds.memory_threshold,
        "disk_percent": thresholds.disk_threshold,
    }
    status, reasons = "healthy", []
    for name, limit in limits.items():
        value = metrics.get(name)
        if value is None or value < limit:
            continue
        critical = name != "cpu_percent" and value >= (limit + 100) / 2
        reasons.append(f"{name} {value:.1f} >= {limit:g}")
        if critical:
            status = "critical"
        elif status == "healthy":
            status = "warning"
    return status, reasons


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def collect_health(working_dir: str | Path, thresholds: HealthReportConfig) -> dict[str, Any]:
    """A snapshot of this machine. cpu_percent is the load since the previous call (0.0 on the first)."""
    net = psutil.net_io_counters()
    metrics: dict[str, float] = {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_percent": psutil.virtual_memory().percent,
        "disk_percent": psutil.disk_usage(str(_existing(Path(working_dir)))).percent,
    }
    status, reasons = classify(metrics, thresholds)
    return {
        **metrics,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "net_bytes_sent": net.bytes_sent if net else 0,
        "net_bytes_recv": net.bytes_recv if net else 0,
        "status": status,
        "reasons": reasons,
        "timestamp_ms": time.time_ns() // 1_000_000,
    }
