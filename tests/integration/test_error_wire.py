"""Errors over real gRPC sockets: what a servicer aborts with reaches the client as the
same dtf error, and a NotLeader says where the leader is, to workers and to Raft peers
alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from dtf_common import errors
from dtf_common.grpc_errors import abort, error_from_rpc
from dtf_common.pb.dtf.v1 import raft_pb2, raft_pb2_grpc
from dtf_common.pb.dtf.v1 import worker_service_pb2 as pb
from dtf_common.pb.dtf.v1 import worker_service_pb2_grpc as pb_grpc
from dtf_coordinator.consensus.raft.transport import RaftServicer
from dtf_worker.client import CoordinatorClient

Ctx = grpc.aio.ServicerContext[Any, Any]


class Follower(pb_grpc.WorkerServiceServicer):  # type: ignore[misc]
    """Refuses every registration, naming the leader's worker address."""

    def __init__(self, leader_address: str) -> None:
        self.leader_address = leader_address

    async def Register(self, request: pb.RegisterRequest, context: Ctx) -> pb.RegisterResponse:
        error = errors.NotLeader("not the leader", leader_hint="coordinator-2")
        await abort(context, error, leader_address=self.leader_address)


class Leader(pb_grpc.WorkerServiceServicer):  # type: ignore[misc]
    async def Register(self, request: pb.RegisterRequest, context: Ctx) -> pb.RegisterResponse:
        if not request.worker_id:
            await abort(context, errors.InvalidArgument("worker_id is required", field="worker_id"))
        return pb.RegisterResponse(coordinator_id="coordinator-2")


async def serve(add: Any) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    add(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[str, str]]:
    leader, leader_at = await serve(lambda s: pb_grpc.add_WorkerServiceServicer_to_server(Leader(), s))
    follower, follower_at = await serve(lambda s: pb_grpc.add_WorkerServiceServicer_to_server(Follower(leader_at), s))
    yield follower_at, leader_at
    await follower.stop(0)
    await leader.stop(0)


@pytest.mark.anyio
async def test_a_worker_told_not_leader_goes_to_the_leader_it_names(servers: tuple[str, str]) -> None:
    follower_at, leader_at = servers
    client = CoordinatorClient(f"http://{follower_at}")
    try:
        with pytest.raises(errors.NotLeader) as refused:
            await client.register(pb.RegisterRequest(worker_id="w1"))
        assert refused.value.retryable
        assert refused.value.context == {"leader_hint": "coordinator-2", "leader_address": leader_at}
        assert client.target == leader_at
        response = await client.register(pb.RegisterRequest(worker_id="w1"))
        assert response.coordinator_id == "coordinator-2"
        # Not retryable: the worker stays where it is and learns which field is wrong.
        with pytest.raises(errors.InvalidArgument) as invalid:
            await client.register(pb.RegisterRequest(worker_id=""))
        assert (invalid.value.message, invalid.value.field, invalid.value.retryable) == (
            "worker_id is required",
            "worker_id",
            False,
        )
        assert client.target == leader_at
    finally:
        await client.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "raised",
    [
        errors.NotLeader("not the leader", leader_hint="coordinator-3"),
        errors.Unavailable("node is not running"),
    ],
    ids=["not_leader", "unavailable"],
)
async def test_a_raft_peers_forward_refusal_travels_as_metadata(raised: errors.DtfError) -> None:
    async def forward(_command: bytes) -> tuple[int, int]:
        raise raised

    servicer = RaftServicer("coordinator-1", lambda _m: None, lambda _m, _d: None, forward, check_peer=False)
    server, address = await serve(lambda s: raft_pb2_grpc.add_RaftServiceServicer_to_server(servicer, s))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = raft_pb2_grpc.RaftServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Forward(raft_pb2.ForwardRequest(command=b"x"))
        call = failed.value
        assert call.code() == grpc.StatusCode.UNAVAILABLE
        assert call.details() == raised.message  # no protocol hidden in the text
        got = error_from_rpc(call.code(), call.details() or "", call.trailing_metadata())  # type: ignore[arg-type]
        assert type(got) is type(raised) and got.context == {
            k: v for k, v in raised.context.items() if k == "leader_hint"
        }
    finally:
        await server.stop(0)
