"""A thin grpc.aio client for the coordinator's WorkerService.

Every call carries the worker's bearer token and a deadline; gRPC failures come back as
`dtf_common.errors`, read by `dtf_common.grpc_errors.error_from_rpc` (the code the
coordinator sent, or gRPC's own status), so callers decide on retries by type and its
`retryable` flag, never by message text. Leased tasks are read into the worker's own
`Lease` here (`lease_from_wire`), so nothing past the client reads a `LeasedTask`.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from dtf_common import errors
from dtf_common.config import CoordinatorEndpoint
from dtf_common.grpc_errors import error_from_rpc
from dtf_common.pb.dtf.v1 import worker_service_pb2, worker_service_pb2_grpc
from dtf_worker.lease import AnyLease, Lease, UnreadableLease, metadata_from_json, parameters_from_json

DEFAULT_PORT = 8081
CALL_TIMEOUT_S = 10.0
FETCH_BLOB_DEADLINE_S = 1800.0  # a whole snapshot download (up to 1 GiB)
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_SECURE_SCHEMES = {"https": True, "grpcs": True, "http": False, "grpc": False}


def parse_target(url: str) -> tuple[str, bool]:
    """("host:port", secure) from "http://host:port", "https://host:port" or a bare "host:port"."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    secure = _SECURE_SCHEMES.get(parsed.scheme.lower())
    if secure is None or not parsed.hostname:
        raise errors.ConfigError(
            f"coordinator.url must look like http://host:port or https://host:port, got {url!r}",
            field="coordinator.url",
        )
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError:
        raise errors.ConfigError(f"coordinator.url has an invalid port: {url!r}", field="coordinator.url") from None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port}", secure


def lease_from_wire(message: worker_service_pb2.LeasedTask) -> AnyLease:
    """The worker's own lease for a leased task; an `UnreadableLease` where its parameters
    are not a JSON object."""
    try:
        parameters = parameters_from_json(message.parameters_json)
    except errors.InvalidArgument as exc:
        return UnreadableLease(message.task_id, message.lease_id, message.type, exc, attempt=message.attempt)
    return Lease(
        task_id=message.task_id,
        lease_id=message.lease_id,
        type=message.type,
        parameters=parameters,
        metadata=metadata_from_json(message.metadata_json),
        attempt=message.attempt,
        timeout_s=message.timeout_s,
        priority=message.priority,
        expires_ms=message.lease_expires_ms,
    )


def _cut_off() -> errors.Unavailable | None:
    """What a cancelled call raises instead of CancelledError; None when its task is
    itself being cancelled (it keeps the CancelledError).

    gRPC cancels every call of a channel that is closed, and `_retarget` closes the old
    channel as soon as one loop (leasing, say) moves to the leader, while the other loops
    (heartbeat, report) may have a call in flight on it. For them that is a failed call to
    retry, not the end of the loop: a CancelledError would end the loop silently."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return None
    return errors.Unavailable("the call was cut off: the worker moved to another coordinator")


class CoordinatorClient:
    """Talks to one coordinator at a time and follows the leader of an HA cluster: a
    follower's NOT_LEADER answer names the leader's worker address, and a coordinator
    that cannot be reached makes the next call go to the next known address."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str = "",
        tls_ca: str | None = None,
        call_timeout_s: float = CALL_TIMEOUT_S,
        fallback_urls: Sequence[str] = (),
    ) -> None:
        targets = [parse_target(u) for u in [url, *fallback_urls]]
        self.targets = list(dict.fromkeys(target for target, _ in targets))
        self._secure = targets[0][1]
        self._root = Path(tls_ca).read_bytes() if tls_ca and self._secure else None
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = call_timeout_s
        self._closing: set[asyncio.Future[None]] = set()
        self._connect(self.targets[0])

    def use_token(self, token: str) -> None:
        """Send `token` with every call from now on (the worker's own credential, once it has one)."""
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _connect(self, target: str) -> None:
        self.target = target
        options = [
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            # Reconnect promptly after a coordinator restart instead of backing off for minutes.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000),
            # A channel of its own, so that `redial` really dials (see there).
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self._secure:
            self._channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(self._root), options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options)
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(self._channel)

    def redial(self) -> None:
        """A new channel to the same address. gRPC waits out its reconnect backoff before
        dialling a refused address again, however often it is called meanwhile; a new
        channel dials at once."""
        old = self._channel
        self._connect(self.target)
        closing = asyncio.ensure_future(old.close(grace=None))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def _failed(self, exc: grpc.aio.AioRpcError) -> errors.DtfError:
        """The dtf error of a failed call; after a retryable one the next call goes where
        it may succeed."""
        error = error_from_rpc(exc.code(), exc.details() or "", exc.trailing_metadata())  # type: ignore[arg-type]
        if error.retryable:
            self._retarget(error)
        return error

    def _retarget(self, error: errors.DtfError) -> None:
        """Go to the leader the error names, or else, when this coordinator cannot serve
        (not merely busy: QueueFull), to the next address."""
        leader = error.context.get("leader_address")
        if isinstance(leader, str) and leader:
            target = leader
        elif isinstance(error, errors.Unavailable) and len(self.targets) > 1:
            at = self.targets.index(self.target) if self.target in self.targets else -1
            target = self.targets[(at + 1) % len(self.targets)]
        else:
            return
        if target == self.target:
            return
        old = self._channel
        self._connect(target)
        closing = asyncio.ensure_future(old.close(grace=None))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    @classmethod
    def from_config(cls, endpoint: CoordinatorEndpoint) -> CoordinatorClient:
        return cls(endpoint.url, api_key=endpoint.api_key, tls_ca=endpoint.tls_ca, fallback_urls=endpoint.fallback_urls)

    async def register(self, request: worker_service_pb2.RegisterRequest) -> worker_service_pb2.RegisterResponse:
        response: worker_service_pb2.RegisterResponse = await self._call(self._stub.Register, request)
        return response

    async def heartbeat(self, request: worker_service_pb2.HeartbeatRequest) -> worker_service_pb2.HeartbeatResponse:
        response: worker_service_pb2.HeartbeatResponse = await self._call(self._stub.Heartbeat, request)
        return response

    async def lease_tasks(self, request: worker_service_pb2.LeaseRequest) -> list[AnyLease]:
        """The tasks leased to this worker, as its own leases."""
        # A long poll: the deadline covers the server's wait plus an ordinary call.
        response: worker_service_pb2.LeaseResponse = await self._call(
            self._stub.LeaseTasks, request, deadline_s=request.wait_ms / 1000 + self._timeout
        )
        return [lease_from_wire(task) for task in response.tasks]

    async def report_results(self, request: worker_service_pb2.ReportRequest) -> worker_service_pb2.ReportResponse:
        response: worker_service_pb2.ReportResponse = await self._call(self._stub.ReportResults, request)
        return response

    async def deregister(
        self, request: worker_service_pb2.DeregisterRequest, *, deadline_s: float | None = None
    ) -> worker_service_pb2.DeregisterResponse:
        response: worker_service_pb2.DeregisterResponse = await self._call(
            self._stub.Deregister, request, deadline_s=deadline_s
        )
        return response

    async def fetch_blob(self, sha256: str) -> AsyncIterator[bytes]:
        """The bytes of a blob (a project snapshot), chunk by chunk; NotFound when the
        coordinator holds none with that hash."""
        call = self._stub.FetchBlob(
            worker_service_pb2.FetchBlobRequest(sha256=sha256), timeout=FETCH_BLOB_DEADLINE_S, metadata=self._metadata
        )
        try:
            async for chunk in call:
                yield chunk.data
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc) from None
        except asyncio.CancelledError:
            if (error := _cut_off()) is None:
                raise
            raise error from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def _call(self, method: Any, request: Any, *, deadline_s: float | None = None) -> Any:
        try:
            return await method(request, timeout=deadline_s or self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc) from None
        except asyncio.CancelledError:
            if (error := _cut_off()) is None:
                raise
            raise error from None
