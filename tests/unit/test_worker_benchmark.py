"""The benchmark executor and its runner's statistics."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from dtf_worker.executors.bench_runner import latency_summary, percentile
from tests.unit.test_worker_executors import context, leased, run

MODULE = """
import time

def work(n):
    return sum(range(n))

def batch(size=10):
    time.sleep(0.001)
    return {"items": size}

def broken():
    raise ValueError("no good")
"""


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert math.isclose(percentile(values, 90), 3.7)
    assert percentile([7.0], 99) == 7.0
    summary = latency_summary([0.001, 0.002, 0.003])
    assert summary["p50"] == 2.0 and summary["min"] == 1.0 and summary["max"] == 3.0


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    (tmp_path / "benchmod.py").write_text(MODULE)
    return tmp_path


def test_benchmark_of_a_function(bench_dir: Path) -> None:
    params = {
        "entry": "benchmod:work",
        "args": {"n": 1000},
        "warmup": 2,
        "repetitions": 30,
        "pythonpath": [str(bench_dir)],
    }
    result = run(leased("benchmark", params), context(bench_dir))
    assert result.ok, result.error
    [record] = result.records
    assert record.test_id == "benchmod:work" and record.status == "success"
    metrics = json.loads(record.metrics_json)
    latency = metrics["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert metrics["repetitions"] == 30 and metrics["throughput_per_s"] > 0
    assert metrics["peak_memory_mb"] >= 0 and metrics["max_rss_mb"] > 0
    assert result.results["latency_ms"] == latency


def test_throughput_counts_returned_items(bench_dir: Path) -> None:
    params = {
        "entry": "benchmod:batch",
        "repetitions": 5,
        "warmup": 0,
        "functions": ["throughput"],
        "cwd": str(bench_dir),
        "test_id": "batch-throughput",
    }
    result = run(leased("benchmark", params), context(bench_dir))
    assert result.ok, result.error
    metrics = json.loads(result.records[0].metrics_json)
    assert result.records[0].test_id == "batch-throughput"
    assert metrics["throughput_unit"] == "items" and "latency_ms" not in metrics
    assert 1000 < metrics["throughput_per_s"] < 10 * 1000  # ten items per call of a little over 1 ms


def test_benchmark_of_a_command(tmp_path: Path) -> None:
    result = run(leased("benchmark", {"command": [sys.executable, "-c", "pass"], "repetitions": 2}), context(tmp_path))
    assert result.ok, result.error
    assert json.loads(result.records[0].metrics_json)["latency_ms"]["p50"] > 0


def test_errors_of_the_benchmarked_code_are_reported(bench_dir: Path) -> None:
    result = run(leased("benchmark", {"entry": "benchmod:broken", "cwd": str(bench_dir)}), context(bench_dir))
    assert not result.ok and not result.non_retryable
    assert result.error == "ValueError: no good"
    assert result.records[0].status == "failure"
    assert "Traceback" in json.loads(result.records[0].raw_data_json)["traceback"]


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({}, "parameters.entry"),
        ({"entry": "mod:f", "command": "true"}, "parameters.entry"),
        ({"entry": "no_colon"}, "parameters.entry"),
        ({"entry": "mod:f", "repetitions": 0}, "parameters.repetitions"),
        ({"entry": "mod:f", "functions": ["speed"]}, "parameters.functions"),
    ],
)
def test_invalid_benchmark_parameters(tmp_path: Path, parameters: dict[str, object], field: str) -> None:
    result = run(leased("benchmark", parameters), context(tmp_path))
    assert not result.ok and result.non_retryable
    assert result.error is not None and field in result.error
