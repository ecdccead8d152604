"""`/ws`: live task updates and cluster queries over one WebSocket.

The client authenticates in the handshake (`?token=<JWT>` or `Authorization: Bearer`),
with any read role; a refused handshake is answered with a 401/403 problem where the
server supports denial responses, else closed with code 1008. Then it sends JSON
messages:

- `{"type": "subscribe", "channel": "task_updates", "filter": {"status": "running"}}`
  -> `{"type": "subscribed", "channel": ..., "filter": ...}`, then every `task_update`
  whose fields equal the filter's. Subscribing again to a channel replaces its filter.
- `{"type": "unsubscribe", "channel": ...}` -> `{"type": "unsubscribed", "channel": ...}`
- `{"type": "get_cluster_status"}` -> `cluster_status_response`
- `{"type": "get_leader_info"}` -> `leader_info_response`

A reply carries the request's `request_id` when it had one. Anything else (malformed
JSON, an unknown type or channel, a bad filter) is answered with
`{"type": "error", "message": ..., "field": ...}` and the connection stays open.

Each subscription has a bounded queue in the event hub and one task forwarding it to
the socket; a client too slow to read loses the oldest updates, never slows the
coordinator. Disconnecting (or any failure) cancels the forwarders and unsubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from dtf_common.errors import DtfError, InvalidArgument, Unauthenticated
from dtf_common.schemas import TaskStatus
from dtf_coordinator.api.cluster import cluster_status, leader_info
from dtf_coordinator.api.deps import Context
from dtf_coordinator.api.problems import error_response
from dtf_coordinator.auth import READ, Principal, bearer, require, verify_token
from dtf_coordinator.service.coordinator import Coordinator
from dtf_coordinator.service.events import EventHub, Subscription

log = logging.getLogger("dtf.api.ws")

TASK_UPDATES = "task_updates"
# Accepted now so clients can subscribe; the coordinator publishes on these once high
# availability and the multi-device orchestrator exist.
RESERVED_CHANNELS = ("orchestrated_task_updates", "cluster_status", "leadership_updates")
CHANNELS = (TASK_UPDATES, *RESERVED_CHANNELS)
TASK_UPDATE_FILTER_KEYS = frozenset({"task_id", "status", "worker_id"})
NOT_YET = frozenset({"get_aggregated_results", "orchestrate_task", "get_cluster_health"})
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011

router = APIRouter(tags=["websocket"])


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket, ctx: Context) -> None:
    try:
        _authenticate(websocket, ctx.secret)
    except DtfError as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept()
    await Session(websocket, ctx.hub, ctx.coordinator).run()


def _authenticate(websocket: WebSocket, secret: str) -> Principal:
    token = websocket.query_params.get("token")
    if token is None:
        header = websocket.headers.get("authorization")
        if header is None:
            raise Unauthenticated("missing token: pass ?token=<JWT> or 'Authorization: Bearer <JWT>'", field="token")
        token = bearer(header)
    return require(verify_token(secret, token), READ)


async def _deny(websocket: WebSocket, error: DtfError) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(error))
    else:
        await websocket.close(code=POLICY_VIOLATION, reason=error.message[:120])


class Session:
    """One connected client: its subscriptions and their forwarding tasks."""

    def __init__(self, websocket: WebSocket, hub: EventHub, coordinator: Coordinator) -> None:
        self.websocket = websocket
        self.hub = hub
        self.coordinator = coordinator
        self.subscriptions: dict[str, tuple[Subscription, asyncio.Task[None]]] = {}
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None:
                    raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
                await self.handle(raw)
        except WebSocketDisconnect:
            pass  # a send found the client gone
        except Exception:
            ws = self.websocket
            if ws.application_state is WebSocketState.CONNECTED and ws.client_state is WebSocketState.CONNECTED:
                log.exception("WebSocket session failed")
                with contextlib.suppress(Exception):
                    await ws.close(code=INTERNAL_ERROR)
        finally:
            await self.close()

    async def handle(self, raw: str) -> None:
        try:
            request = json.loads(raw)
        except ValueError as exc:
            await self.send({"type": "error", "message": f"malformed JSON: {exc}", "field": None})
            return
        if not isinstance(request, dict):
            await self.send({"type": "error", "message": "a message must be a JSON object", "field": None})
            return
        reply: dict[str, Any]
        try:
            reply = await self.dispatch(request)
        except DtfError as exc:
            reply = {"type": "error", "message": exc.message, "field": exc.field}
        request_id = request.get("request_id")
        if request_id is not None:
            reply["request_id"] = request_id
        await self.send(reply)

    async def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("type")
        if kind == "subscribe":
            channel = _channel(request)
            flt = _filter(channel, request.get("filter"))
            self.subscribe(channel, flt)
            return {"type": "subscribed", "channel": channel, "filter": flt}
        if kind == "unsubscribe":
            channel = _channel(request)
            await self.unsubscribe(channel)
            return {"type": "unsubscribed", "channel": channel}
        if kind == "get_cluster_status":
            return {"type": "cluster_status_response", **cluster_status(self.coordinator).model_dump(mode="json")}
        if kind == "get_leader_info":
            return {"type": "leader_info_response", **leader_info(self.coordinator).model_dump(mode="json")}
        if not isinstance(kind, str) or not kind:
            raise InvalidArgument("a message needs a string 'type'", field="type")
        if kind in NOT_YET:
            raise InvalidArgument(f"{kind} is not supported by this coordinator yet", field="type")
        raise InvalidArgument(f"unknown message type {kind!r}", field="type")

    def subscribe(self, channel: str, flt: dict[str, Any]) -> None:
        previous = self.subscriptions.pop(channel, None)
        if previous is not None:
            self._drop(*previous)
        sub = self.hub.subscribe(channel, flt)
        task = asyncio.create_task(self._forward(sub), name=f"ws-forward-{channel}")
        self.subscriptions[channel] = (sub, task)

    async def unsubscribe(self, channel: str) -> None:
        entry = self.subscriptions.pop(channel, None)
        if entry is not None:
            self._drop(*entry)
            with contextlib.suppress(asyncio.CancelledError):
                await entry[1]

    def _drop(self, sub: Subscription, task: asyncio.Task[None]) -> None:
        self.hub.unsubscribe(sub)
        task.cancel()

    async def _forward(self, sub: Subscription) -> None:
        while True:
            message = await sub.queue.get()
            try:
                await self.send(message)
            except Exception:
                return  # the client went away; the receive loop sees the disconnect and cleans up

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(message))

    async def close(self) -> None:
        entries = list(self.subscriptions.values())
        self.subscriptions.clear()
        for sub, task in entries:
            self._drop(sub, task)
        await asyncio.gather(*(task for _sub, task in entries), return_exceptions=True)


def _channel(request: dict[str, Any]) -> str:
    channel = request.get("channel")
    if channel not in CHANNELS:
        raise InvalidArgument(f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}", field="channel")
    return str(channel)


def _filter(channel: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument("filter must be an object", field="filter")
    if channel == TASK_UPDATES:
        for key, wanted in value.items():
            if key not in TASK_UPDATE_FILTER_KEYS:
                known = ", ".join(sorted(TASK_UPDATE_FILTER_KEYS))
                raise InvalidArgument(f"task_updates cannot be filtered on {key!r} ({known})", field=f"filter.{key}")
            if key == "status" and wanted not in TaskStatus.__members__.values():
                statuses = ", ".join(s.value for s in TaskStatus)
                raise InvalidArgument(f"unknown task status {wanted!r} ({statuses})", field="filter.status")
    return dict(value)
