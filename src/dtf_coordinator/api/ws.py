"""`/ws`: live task updates and cluster queries over one WebSocket.

The client authenticates in the handshake (`?token=<JWT>` or `Authorization: Bearer`),
with any read role; a refused handshake is answered with a 401/403 problem where the
server supports denial responses, else closed with code 1008. Then it sends JSON
messages:

- `{"type": "subscribe", "channel": "task_updates", "filter": {"status": "running"}}`
  -> `{"type": "subscribed", "channel": ..., "filter": ...}`, then every `task_update`
  whose fields equal the filter's. Subscribing again to a channel replaces its filter.
  The `results` channel (filter: `task_id`) carries `{"type": "results", "task_id": ...,
  "results": [...]}` as results are committed, a task's running ones included (each
  result as in `GET /api/results`), and `{"type": "task_output", "task_id": ...,
  "worker_id": ..., "stdout": ..., "stderr": ...}` for what a task run with live output
  printed (`dtf run -s`), each before the results it preceded.
- `{"type": "unsubscribe", "channel": ...}` -> `{"type": "unsubscribed", "channel": ...}`
- `{"type": "get_cluster_status"}` -> `cluster_status_response`
- `{"type": "get_cluster_health", "metrics": ["cpu", "memory"]}` -> `cluster_health_response`
- `{"type": "get_leader_info"}` -> `leader_info_response`

Cluster channels: `cluster_status` carries a `cluster_status_update` every
`state_replication_interval` and `cluster_health` a `cluster_health_update` every
`health_check_interval`, each built only while someone subscribes (a new subscriber
gets one at once); their filter may name a `node_id`, which keeps that node alone in
`nodes`. `leadership_updates` carries a `leadership_update` on every change of leader.

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
from dtf_coordinator.api.cluster_service import CLUSTER_HEALTH, CLUSTER_STATUS, ClusterService, service_of
from dtf_coordinator.api.deps import Context
from dtf_coordinator.api.problems import error_response
from dtf_coordinator.auth import READ, Principal, bearer, require, verify_token
from dtf_coordinator.service.events import EventHub, Message, Subscription

log = logging.getLogger("dtf.api.ws")

TASK_UPDATES = "task_updates"
RESULTS = "results"
LEADERSHIP_UPDATES = "leadership_updates"
# Accepted now so clients can subscribe; the coordinator publishes on it once the
# multi-device orchestrator exists.
RESERVED_CHANNELS = ("orchestrated_task_updates",)
CHANNELS = (TASK_UPDATES, RESULTS, CLUSTER_STATUS, LEADERSHIP_UPDATES, CLUSTER_HEALTH, *RESERVED_CHANNELS)
# Channels whose filter keys are checked: the keys each allows.
FILTER_KEYS = {
    TASK_UPDATES: frozenset({"task_id", "status", "worker_id"}),
    RESULTS: frozenset({"task_id"}),
    CLUSTER_STATUS: frozenset({"node_id"}),
    CLUSTER_HEALTH: frozenset({"node_id"}),
    LEADERSHIP_UPDATES: frozenset({"previous_leader_id", "new_leader_id", "term", "reason"}),
}
# Channels carrying a list of nodes, which a node_id filter narrows rather than matches.
NODE_LIST_CHANNELS = frozenset({CLUSTER_STATUS, CLUSTER_HEALTH})
NOT_YET = frozenset({"get_aggregated_results", "orchestrate_task"})
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
    await Session(websocket, ctx.hub, service_of(websocket.app)).run()


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

    def __init__(self, websocket: WebSocket, hub: EventHub, cluster: ClusterService) -> None:
        self.websocket = websocket
        self.hub = hub
        self.cluster = cluster
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
            status = await self.cluster.status()
            return {"type": "cluster_status_response", **status.model_dump(mode="json")}
        if kind == "get_cluster_health":
            health = await self.cluster.health(metrics=_metrics(request.get("metrics")))
            return {"type": "cluster_health_response", **health.model_dump(mode="json", exclude_none=True)}
        if kind == "get_leader_info":
            return {"type": "leader_info_response", **self.cluster.leader_info().model_dump(mode="json")}
        if not isinstance(kind, str) or not kind:
            raise InvalidArgument("a message needs a string 'type'", field="type")
        if kind in NOT_YET:
            raise InvalidArgument(f"{kind} is not supported by this coordinator yet", field="type")
        raise InvalidArgument(f"unknown message type {kind!r}", field="type")

    def subscribe(self, channel: str, flt: dict[str, Any]) -> None:
        previous = self.subscriptions.pop(channel, None)
        if previous is not None:
            self._drop(*previous)
        node_id = flt.get("node_id") if channel in NODE_LIST_CHANNELS else None
        # The hub matches top-level fields; a node filter narrows `nodes` here instead.
        sub = self.hub.subscribe(channel, {} if channel in NODE_LIST_CHANNELS else flt)
        task = asyncio.create_task(self._forward(sub, node_id), name=f"ws-forward-{channel}")
        self.subscriptions[channel] = (sub, task)
        feed = self.cluster.feed(channel)
        if feed is not None:
            feed.ensure_running()
            feed.kick()  # the new subscriber's first update comes now, not an interval later

    async def unsubscribe(self, channel: str) -> None:
        entry = self.subscriptions.pop(channel, None)
        if entry is not None:
            self._drop(*entry)
            with contextlib.suppress(asyncio.CancelledError):
                await entry[1]

    def _drop(self, sub: Subscription, task: asyncio.Task[None]) -> None:
        self.hub.unsubscribe(sub)
        task.cancel()
        feed = self.cluster.feed(sub.channel)
        if feed is not None:
            feed.kick()  # stops at once if this was its last subscriber

    async def _forward(self, sub: Subscription, node_id: str | None = None) -> None:
        while True:
            message = await sub.queue.get()
            shown = _only_node(message, node_id) if node_id is not None else message
            if shown is None:
                continue
            try:
                await self.send(shown)
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
    allowed = FILTER_KEYS.get(channel)
    if allowed is not None:
        for key, wanted in value.items():
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise InvalidArgument(f"{channel} cannot be filtered on {key!r} ({known})", field=f"filter.{key}")
            if channel == TASK_UPDATES and key == "status" and wanted not in TaskStatus.__members__.values():
                statuses = ", ".join(s.value for s in TaskStatus)
                raise InvalidArgument(f"unknown task status {wanted!r} ({statuses})", field="filter.status")
            if key == "node_id" and not isinstance(wanted, str):
                raise InvalidArgument("node_id must be a string", field="filter.node_id")
    return dict(value)


def _only_node(message: Message, node_id: str) -> Message | None:
    """The message with only `node_id` in its `nodes`; None when it does not list that node."""
    nodes = [n for n in message.get("nodes", ()) if isinstance(n, dict) and n.get("node_id") == node_id]
    return {**message, "nodes": nodes} if nodes else None


def _metrics(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise InvalidArgument("metrics must be a list of names (cpu, memory, disk, network, load)", field="metrics")
    return value
