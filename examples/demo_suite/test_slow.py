"""Slow tests of the demo suite: they sleep and compute, as integration tests do."""

import hashlib
import time

import pytest


@pytest.mark.parametrize("seconds", [0.3, 0.6, 0.9])
def test_waits_for_service(seconds: float) -> None:
    start = time.perf_counter()
    time.sleep(seconds)
    assert time.perf_counter() - start >= seconds


def test_hash_chain() -> None:
    digest = b"seed"
    for _ in range(200_000):
        digest = hashlib.sha256(digest).digest()
    assert len(digest) == 32
