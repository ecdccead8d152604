"""Benchmark entry points for the demo (`type: benchmark`, `entry: benchmarks:<name>`)."""

from __future__ import annotations

import random


def python_sort(n: int = 50_000) -> dict[str, int]:
    """Sort n random floats; returns the item count so throughput is items per second."""
    data = [random.random() for _ in range(n)]
    data.sort()
    return {"items": n}


def numpy_matmul(size: int = 128) -> dict[str, int]:
    """One size x size matrix product with numpy (installed with pandas)."""
    import numpy as np

    a = np.random.default_rng(0).random((size, size))
    (a @ a).sum()
    return {"items": 1}
