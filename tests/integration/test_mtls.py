"""Mutual TLS on a real Raft port: a grpc.aio server on 127.0.0.1 with `server_credentials`,
clients with and without a certificate of the cluster CA, and files made by `dtf certs create`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from dtf_common import tls
from dtf_common.pb.dtf.v1 import raft_pb2, raft_pb2_grpc

pytestmark = pytest.mark.anyio

CALL_TIMEOUT_S = 5.0


class RecordingRaft(raft_pb2_grpc.RaftServiceServicer):  # type: ignore[misc]
    """Answers RequestVote and remembers which node's certificate sent each one."""

    def __init__(self) -> None:
        self.senders: list[str | None] = []

    async def RequestVote(
        self, request: raft_pb2.RaftEnvelope, context: grpc.aio.ServicerContext[Any, Any]
    ) -> raft_pb2.RaftAck:
        self.senders.append(tls.peer_node_id(context))
        return raft_pb2.RaftAck()


@asynccontextmanager
async def raft_server(material: tls.TlsMaterial) -> AsyncIterator[tuple[int, RecordingRaft]]:
    server = grpc.aio.server()
    servicer = RecordingRaft()
    raft_pb2_grpc.add_RaftServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(material))
    await server.start()
    try:
        yield port, servicer
    finally:
        await server.stop(None)


async def request_vote(port: int, credentials: grpc.ChannelCredentials, server_node_id: str) -> None:
    options = [tls.target_name_override(server_node_id)]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        stub = raft_pb2_grpc.RaftServiceStub(channel)
        await stub.RequestVote(raft_pb2.RaftEnvelope(message=b"vote"), timeout=CALL_TIMEOUT_S)


Material = Callable[[str], tls.TlsMaterial]


@pytest.fixture
def cluster(tmp_path: Path) -> Material:
    """Node material of one cluster CA, issued on demand."""
    directory = tmp_path / "cluster"
    tls.create_ca(directory)

    def issue(node_id: str) -> tls.TlsMaterial:
        paths = tls.create_node_cert(directory, node_id, ["127.0.0.1", "localhost"])
        return tls.load_tls(paths.ca, paths.cert, paths.key)

    return issue


async def test_a_peer_of_the_same_ca_is_served_and_identified(cluster: Material) -> None:
    async with raft_server(cluster("coordinator-1")) as (port, servicer):
        await request_vote(port, tls.channel_credentials(cluster("coordinator-2")), "coordinator-1")
        await request_vote(port, tls.channel_credentials(cluster("coordinator-3")), "coordinator-1")
    assert servicer.senders == ["coordinator-2", "coordinator-3"]


async def test_a_client_without_a_certificate_fails_the_handshake(cluster: Material) -> None:
    server = cluster("coordinator-1")
    async with raft_server(server) as (port, servicer):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await request_vote(port, grpc.ssl_channel_credentials(root_certificates=server.ca), "coordinator-1")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.senders == []


async def test_a_client_of_another_ca_fails_the_handshake(cluster: Material, tmp_path: Path) -> None:
    tls.create_ca(tmp_path / "other")
    paths = tls.create_node_cert(tmp_path / "other", "coordinator-2", ["127.0.0.1"])
    server = cluster("coordinator-1")
    # the client trusts the server's CA; only its own certificate is foreign
    stranger = grpc.ssl_channel_credentials(
        root_certificates=server.ca, private_key=paths.key.read_bytes(), certificate_chain=paths.cert.read_bytes()
    )
    async with raft_server(server) as (port, servicer):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await request_vote(port, stranger, "coordinator-1")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.senders == []


async def test_a_client_checks_the_server_is_the_node_it_dials(cluster: Material) -> None:
    async with raft_server(cluster("coordinator-1")) as (port, servicer):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await request_vote(port, tls.channel_credentials(cluster("coordinator-2")), "coordinator-3")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.senders == []


async def test_an_insecure_connection_gets_no_node_id(cluster: Material) -> None:
    server = grpc.aio.server()
    servicer = RecordingRaft()
    raft_pb2_grpc.add_RaftServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await raft_pb2_grpc.RaftServiceStub(channel).RequestVote(raft_pb2.RaftEnvelope(), timeout=CALL_TIMEOUT_S)
    finally:
        await server.stop(None)
    assert servicer.senders == [None]


# ---------------------------------------------------------------- files from `dtf certs create`


@pytest.fixture
def cli_sections(tmp_path: Path) -> dict[str, dict[str, str]]:
    """Run `dtf certs create` as a process; return each node's `high_availability.tls` as printed."""
    out = tmp_path / "certs"
    argv = ["certs", "create", "--out", str(out), "--nodes", "coordinator-1,coordinator-2", "--hosts", "127.0.0.1"]
    done = subprocess.run(
        [sys.executable, "-m", "dtf.cli.main", *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "CA (created)" in done.stdout
    sections: dict[str, dict[str, str]] = {}
    for block in done.stdout.split("\n# ")[1:]:
        node, _, snippet = block.partition("\n")
        sections[node] = yaml.safe_load(snippet)["high_availability"]["tls"]
    assert set(sections) == {"coordinator-1", "coordinator-2"}
    assert sorted(p.name for p in out.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "coordinator-1-key.pem",
        "coordinator-1.pem",
        "coordinator-2-key.pem",
        "coordinator-2.pem",
    ]
    return sections


async def test_files_of_dtf_certs_create_secure_the_raft_port(cli_sections: dict[str, dict[str, str]]) -> None:
    one, two = (
        tls.load_tls(section["ca_file"], section["cert_file"], section["key_file"])
        for section in (cli_sections["coordinator-1"], cli_sections["coordinator-2"])
    )
    assert (one.node_id, two.node_id) == ("coordinator-1", "coordinator-2")
    async with raft_server(one) as (port, servicer):
        await request_vote(port, tls.channel_credentials(two), "coordinator-1")
    assert servicer.senders == ["coordinator-2"]
