"""Coordinator client: targets from URLs, and gRPC failures as dtf errors."""

from __future__ import annotations

import asyncio

import pytest

from dtf_common import errors
from dtf_common.pb.dtf.v1 import worker_service_pb2
from dtf_worker.backoff import Backoff
from dtf_worker.client import CoordinatorClient, parse_target


@pytest.mark.parametrize(
    ("url", "target", "secure"),
    [
        ("http://127.0.0.1:8081", "127.0.0.1:8081", False),
        ("https://coordinator.example.com:9443", "coordinator.example.com:9443", True),
        ("https://coordinator.example.com", "coordinator.example.com:8081", True),
        ("localhost:7000", "localhost:7000", False),
        ("grpc://[::1]:8081", "[::1]:8081", False),
    ],
)
def test_parse_target(url: str, target: str, secure: bool) -> None:
    assert parse_target(url) == (target, secure)


@pytest.mark.parametrize("url", ["ftp://host:1", "http://", "http://host:notaport"])
def test_parse_target_rejects_nonsense(url: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        parse_target(url)
    assert caught.value.field == "coordinator.url"


def test_unreachable_coordinator_is_unavailable() -> None:
    async def call() -> None:
        client = CoordinatorClient("http://127.0.0.1:9", call_timeout_s=2)
        try:
            await client.register(worker_service_pb2.RegisterRequest(worker_id="w"))
        finally:
            await client.close()

    with pytest.raises(errors.Unavailable):
        asyncio.run(call())


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    backoff = Backoff(initial=0.2, cap=10.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert 0.1 <= delays[0] <= 0.2
    assert all(5.0 <= d <= 10.0 for d in delays[7:])
    backoff.reset()
    assert backoff.next_delay() <= 0.2
