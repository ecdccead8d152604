"""Benchmark runner, executed as `python -m dtf_worker.executors.bench_runner SPEC.json`
inside the benchmark task's process group.

The spec names either an entry point ("module:function", called with `args` as keyword
arguments; coroutine functions are awaited) or a command (argv or shell string, timed
as a whole per repetition). After `warmup` untimed calls it times `repetitions` calls
and writes one JSON line to the spec's `output` path: latency percentiles in ms,
throughput, and memory. A file rather than stdout because the benchmarked code may
print. Standard library only, so the measured process carries nothing of the worker.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import math
import subprocess
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

_MIB = 1024 * 1024
ALL_FUNCTIONS = ("latency", "throughput", "memory")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "mean": sum(ms) / len(ms),
        "min": ms[0],
        "max": ms[-1],
    }


def load_entry(entry: str) -> Callable[..., Any]:
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"entry {entry!r} must look like 'package.module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"entry {entry!r} is not callable")
    return target  # type: ignore[no-any-return]


def entry_call(function: Callable[..., Any], kwargs: dict[str, Any]) -> Callable[[], Any]:
    if inspect.iscoroutinefunction(function):
        loop = asyncio.new_event_loop()  # one loop for all calls: its start-up is not the function's cost
        return lambda: loop.run_until_complete(function(**kwargs))
    return lambda: function(**kwargs)


def command_call(command: list[str] | str) -> Callable[[], Any]:
    def call() -> None:
        done = subprocess.run(command, shell=isinstance(command, str), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"command exited with code {done.returncode}")

    return call


def measure(call: Callable[[], Any], *, warmup: int, repetitions: int, functions: Sequence[str]) -> dict[str, Any]:
    for _ in range(warmup):
        call()
    out: dict[str, Any] = {"warmup": warmup, "repetitions": repetitions}
    if "latency" in functions or "throughput" in functions:
        latencies: list[float] = []
        items, counted = 0.0, False
        began = time.perf_counter()
        for _ in range(repetitions):
            start = time.perf_counter()
            value = call()
            latencies.append(time.perf_counter() - start)
            if isinstance(value, dict) and isinstance(value.get("items"), int | float):
                items, counted = items + value["items"], True
        total = time.perf_counter() - began
        out["total_time_s"] = total
        if "latency" in functions:
            out["latency_ms"] = latency_summary(latencies)
        if "throughput" in functions:
            out["throughput_per_s"] = (items if counted else repetitions) / total if total > 0 else None
            out["throughput_unit"] = "items" if counted else "calls"
    if "memory" in functions:
        # A separate traced call: tracemalloc slows allocation-heavy code, which would skew latency.
        tracemalloc.start()
        try:
            call()
            out["peak_memory_mb"] = tracemalloc.get_traced_memory()[1] / _MIB
        finally:
            tracemalloc.stop()
        out["max_rss_mb"] = _max_rss_mb()
    return out


def _max_rss_mb() -> float | None:
    """This process's peak RSS. Linux's VmHWM starts afresh at exec; ru_maxrss would also
    count the worker this process was forked from."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    try:
        import resource
    except ImportError:
        return None
    unit = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / _MIB


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("entry"):
        call = entry_call(load_entry(spec["entry"]), spec.get("args") or {})
    else:
        call = command_call(spec["command"])
    return measure(
        call,
        warmup=int(spec.get("warmup", 3)),
        repetitions=int(spec.get("repetitions", 20)),
        functions=spec.get("functions") or ALL_FUNCTIONS,
    )


def main(argv: Sequence[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        result: dict[str, Any] = {"ok": True, **run_spec(spec)}
    except BaseException as exc:  # report anything the benchmarked code raises, even SystemExit
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    with open(spec["output"], "w", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
