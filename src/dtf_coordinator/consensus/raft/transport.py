"""Raft messages between coordinators over gRPC (RaftService), with mutual TLS.

Sending is one way and never blocks the node: each peer has a bounded queue drained by
one long-lived AppendEntries stream; votes go as unary RequestVote calls; a snapshot
is streamed in chunks by InstallSnapshot. Raft tolerates lost messages, so a broken
stream drops what was queued, tells the core the peer is unreachable (it goes back to
probing) and reconnects with backoff. Every message travels in an envelope carrying
its CRC-32, checked on receipt; with mutual TLS the sender's certificate must name the
node the message claims to come from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from dtf_common import errors
from dtf_common.grpc_errors import abort, error_from_rpc
from dtf_common.pb.dtf.v1 import raft_pb2, raft_pb2_grpc
from dtf_coordinator.consensus.raft.transport_port import Deliver, ForwardHandler, Receiver, SnapshotReceived

log = logging.getLogger("dtf.raft.transport")

SNAPSHOT_CHUNK = 1024 * 1024
QUEUE_LIMIT = 4096
FORWARD_TIMEOUT_S = 10.0
VOTE_TYPES = frozenset({raft_pb2.MSG_PRE_VOTE, raft_pb2.MSG_VOTE, raft_pb2.MSG_PRE_VOTE_RESP, raft_pb2.MSG_VOTE_RESP})
_MAX_MESSAGE = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
]

Ctx = grpc.aio.ServicerContext[Any, Any]


class IntegrityError(ValueError):
    pass


def seal(msg: raft_pb2.RaftMessage) -> raft_pb2.RaftEnvelope:
    body = msg.SerializeToString()
    return raft_pb2.RaftEnvelope(message=body, crc32=zlib.crc32(body))


def unseal(envelope: raft_pb2.RaftEnvelope) -> raft_pb2.RaftMessage:
    if zlib.crc32(envelope.message) != envelope.crc32:
        raise IntegrityError("raft message failed its CRC-32 check")
    msg = raft_pb2.RaftMessage()
    msg.ParseFromString(envelope.message)
    return msg


@dataclass
class Credentials:
    server: grpc.ServerCredentials
    channel: grpc.ChannelCredentials
    check_peer: bool = True  # the sender's certificate must name the message's `from`


class RaftServicer(raft_pb2_grpc.RaftServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        node_id: str,
        deliver: Deliver,
        on_snapshot: SnapshotReceived,
        forward: ForwardHandler,
        *,
        check_peer: bool,
        on_dropped: Callable[[str], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self._deliver = deliver
        self._on_snapshot = on_snapshot
        self._forward = forward
        self._check_peer = check_peer
        if check_peer:
            from dtf_common.tls import peer_node_id  # cryptography: only where peers are checked

            self._peer_node_id = peer_node_id
        self._on_dropped = on_dropped or (lambda _reason: None)

    async def _accept(self, envelope: raft_pb2.RaftEnvelope, context: Ctx) -> None:
        try:
            msg = unseal(envelope)
        except (IntegrityError, ValueError) as exc:
            self._on_dropped("integrity")
            await context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
        if msg.to != self.node_id:
            self._on_dropped("misaddressed")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"message for {msg.to!r} reached {self.node_id!r}")
        if self._check_peer:
            sender = self._peer_node_id(context)
            if sender != getattr(msg, "from"):
                self._on_dropped("impersonation")
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate of {sender!r} sent a message claiming to be from {getattr(msg, 'from')!r}",
                )
        self._deliver(msg)

    async def RequestVote(self, request: raft_pb2.RaftEnvelope, context: Ctx) -> raft_pb2.RaftAck:
        await self._accept(request, context)
        return raft_pb2.RaftAck()

    async def AppendEntries(
        self, request_iterator: AsyncIterator[raft_pb2.RaftEnvelope], context: Ctx
    ) -> raft_pb2.RaftAck:
        async for envelope in request_iterator:
            await self._accept(envelope, context)
        return raft_pb2.RaftAck()

    async def InstallSnapshot(
        self, request_iterator: AsyncIterator[raft_pb2.SnapshotChunk], context: Ctx
    ) -> raft_pb2.RaftAck:
        header: raft_pb2.RaftMessage | None = None
        parts: list[bytes] = []
        size = 0
        async for chunk in request_iterator:
            if header is None:
                header = unseal(chunk.header)
                if self._check_peer and self._peer_node_id(context) != getattr(header, "from"):
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "snapshot sender does not match certificate")
            if chunk.offset != size or zlib.crc32(chunk.data) != chunk.crc32:
                self._on_dropped("integrity")
                await context.abort(grpc.StatusCode.DATA_LOSS, f"snapshot chunk at offset {chunk.offset} is corrupt")
            parts.append(chunk.data)
            size += len(chunk.data)
            if chunk.last:
                break
        if header is None or header.to != self.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "snapshot stream without a header for this node")
        assert header is not None
        self._on_snapshot(header, b"".join(parts))
        return raft_pb2.RaftAck()

    async def Forward(self, request: raft_pb2.ForwardRequest, context: Ctx) -> raft_pb2.ForwardReply:
        try:
            term, index = await self._forward(request.command)
        except errors.DtfError as exc:  # NotLeader names the leader in metadata, as to workers
            await abort(context, exc)
        return raft_pb2.ForwardReply(term=term, index=index)


@dataclass
class Peer:
    node_id: str
    address: str
    queue: asyncio.Queue[raft_pb2.RaftEnvelope] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    channel: grpc.aio.Channel | None = None
    stub: raft_pb2_grpc.RaftServiceStub | None = None
    stream_task: asyncio.Task[None] | None = None
    snapshot_task: asyncio.Task[None] | None = None


class Transport:
    """Owns the Raft server and one channel per peer (the `RaftTransport` port over gRPC)."""

    def __init__(self, node_id: str, bind: str, peers: dict[str, str], credentials: Credentials) -> None:
        self.node_id = node_id
        self.bind = bind
        self.credentials = credentials
        self.peers: dict[str, Peer] = {}
        self.port = 0
        self.dropped: dict[str, int] = {}
        # The node's side, given to `start`.
        self._on_unreachable: Callable[[str], None] = lambda _peer: None
        self._on_snapshot_sent: Callable[[str, bool], None] = lambda _peer, _ok: None
        self._snapshot_source: Callable[[], bytes | None] = lambda: None
        self._server: grpc.aio.Server | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Task[None]] = set()  # peers being closed: awaited, never cancelled
        self._wanted = dict(peers)

    async def start(self, receiver: Receiver) -> None:
        self._on_unreachable = receiver.unreachable
        self._on_snapshot_sent = receiver.snapshot_sent
        self._snapshot_source = receiver.snapshot_source
        self._server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.so_reuseport", 0)]
        )
        servicer = RaftServicer(
            self.node_id,
            receiver.deliver,
            receiver.snapshot_arrived,
            receiver.forwarded,
            check_peer=self.credentials.check_peer,
            on_dropped=self._count_drop,
        )
        raft_pb2_grpc.add_RaftServiceServicer_to_server(servicer, self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_secure_port(self.bind, self.credentials.server)
        if self.port == 0:
            raise OSError(f"cannot bind the Raft port {self.bind}")
        await self._server.start()
        self.set_peers(self._wanted)

    def _count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def set_peers(self, addresses: dict[str, str]) -> None:
        """Follow membership: open channels to new peers, close removed ones."""
        self._wanted = {k: v for k, v in addresses.items() if k != self.node_id and v}
        for node_id in list(self.peers):
            if node_id not in self._wanted or self.peers[node_id].address != self._wanted[node_id]:
                self._close_peer(self.peers.pop(node_id))
        for node_id, address in self._wanted.items():
            if node_id not in self.peers:
                self.peers[node_id] = self._open_peer(node_id, address)

    def _open_peer(self, node_id: str, address: str) -> Peer:
        options = [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", node_id)]
        channel = grpc.aio.secure_channel(address, self.credentials.channel, options)
        peer = Peer(node_id, address, channel=channel, stub=raft_pb2_grpc.RaftServiceStub(channel))
        peer.stream_task = asyncio.create_task(self._stream(peer), name=f"raft-stream-{node_id}")
        # Connect (and finish the TLS handshake) now, not on the first message a new
        # leader has to send: that first append is on the failover's critical path.
        # (get_state starts connecting without leaving a watch pending that a closed event
        # loop would be called back on, as an abandoned channel_ready() would.)
        channel.get_state(try_to_connect=True)
        return peer

    def _close_peer(self, peer: Peer) -> None:
        task = asyncio.create_task(self._retire(peer), name=f"raft-retire-{peer.node_id}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _retire(peer: Peer) -> None:
        tasks = [t for t in (peer.stream_task, peer.snapshot_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if peer.channel is not None:
            await peer.channel.close(grace=None)

    def _spawn(self, coro: Awaitable[object]) -> None:
        async def run() -> None:
            with contextlib.suppress(Exception):
                await coro

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ sending

    def send(self, messages: list[raft_pb2.RaftMessage]) -> None:
        for msg in messages:
            peer = self.peers.get(msg.to)
            if peer is None:
                continue
            if msg.type == raft_pb2.MSG_SNAP:
                self._send_snapshot(peer, msg)
            elif msg.type in VOTE_TYPES:
                self._spawn(self._send_vote(peer, msg))
            else:
                try:
                    peer.queue.put_nowait(seal(msg))
                except asyncio.QueueFull:
                    self._count_drop("queue_full")
                    self._on_unreachable(peer.node_id)

    async def _send_vote(self, peer: Peer, msg: raft_pb2.RaftMessage) -> None:
        assert peer.stub is not None
        try:
            await peer.stub.RequestVote(seal(msg), timeout=1.0)
        except grpc.aio.AioRpcError:
            self._count_drop("vote_undelivered")

    async def _stream(self, peer: Peer) -> None:
        """Drain the peer's queue into one AppendEntries stream, reconnecting as needed."""
        assert peer.stub is not None
        backoff = 0.02
        while True:
            first = await peer.queue.get()
            call = peer.stub.AppendEntries()
            try:
                await call.write(first)
                while True:
                    envelope = await peer.queue.get()
                    await call.write(envelope)
                    backoff = 0.02
            except asyncio.CancelledError:
                call.cancel()
                raise
            except Exception as exc:  # any failure of the call: drop it and start a new one
                log.debug("stream to %s broke: %r", peer.node_id, exc)
                call.cancel()
                self._drain(peer)
                self._on_unreachable(peer.node_id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)

    def _drain(self, peer: Peer) -> None:
        while not peer.queue.empty():
            peer.queue.get_nowait()
            self._count_drop("stream_broken")

    def _send_snapshot(self, peer: Peer, msg: raft_pb2.RaftMessage) -> None:
        if peer.snapshot_task is not None and not peer.snapshot_task.done():
            return  # one at a time; the core asks again after report_snapshot
        data = self._snapshot_source()
        if data is None:
            self._on_snapshot_sent(peer.node_id, False)
            return
        peer.snapshot_task = asyncio.create_task(
            self._stream_snapshot(peer, msg, data), name=f"raft-snap-{peer.node_id}"
        )

    async def _stream_snapshot(self, peer: Peer, msg: raft_pb2.RaftMessage, data: bytes) -> None:
        assert peer.stub is not None

        async def chunks() -> AsyncIterator[raft_pb2.SnapshotChunk]:
            offsets = range(0, max(len(data), 1), SNAPSHOT_CHUNK)
            for n, offset in enumerate(offsets):
                part = data[offset : offset + SNAPSHOT_CHUNK]
                yield raft_pb2.SnapshotChunk(
                    header=seal(msg) if n == 0 else None,
                    data=part,
                    offset=offset,
                    last=offset + SNAPSHOT_CHUNK >= len(data),
                    crc32=zlib.crc32(part),
                )

        ok = False
        try:
            await peer.stub.InstallSnapshot(chunks(), timeout=300)
            ok = True
        except grpc.aio.AioRpcError as exc:
            log.warning("snapshot to %s failed: %s", peer.node_id, exc.details())
        finally:
            self._on_snapshot_sent(peer.node_id, ok)

    async def forward(self, leader_id: str, command: bytes) -> tuple[int, int]:
        peer = self.peers.get(leader_id)
        if peer is None or peer.stub is None:
            raise errors.Unavailable(f"no route to the leader {leader_id!r}")
        try:
            reply = await peer.stub.Forward(
                raft_pb2.ForwardRequest(command=command, **{"from": self.node_id}), timeout=FORWARD_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc.code(), exc.details() or "", exc.trailing_metadata())  # type: ignore[arg-type]
            if isinstance(error, errors.NotLeader):
                raise error from None
            raise errors.Unavailable(f"forwarding to the leader {leader_id!r} failed: {error.message}") from None
        return reply.term, reply.index

    async def stop(self) -> None:
        # Background calls first (connects, votes, closes), awaited: gRPC must not call
        # back into this event loop once it is gone.
        background = list(self._background)
        for pending in background:
            pending.cancel()
        await asyncio.gather(*background, *self._retiring, return_exceptions=True)
        for peer in self.peers.values():
            for task in (peer.stream_task, peer.snapshot_task):
                if task is not None:
                    task.cancel()
        for peer in self.peers.values():
            for task in (peer.stream_task, peer.snapshot_task):
                if task is not None:
                    with contextlib.suppress(BaseException):
                        await task
            if peer.channel is not None:
                await peer.channel.close(grace=None)
        self.peers.clear()
        if self._server is not None:
            await self._server.stop(grace=0.5)
        leftover = list(self._background)
        for pending in leftover:
            pending.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
