"""`/ws` over a real uvicorn server: subscriptions, filters, cluster queries, errors, auth."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

if TYPE_CHECKING:
    from conftest import ApiHarness

pytestmark = pytest.mark.anyio

CMD = {"type": "command", "parameters": {"command": ["true"]}}


async def ask(ws: ClientConnection, message: dict[str, Any] | str) -> dict[str, Any]:
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    return await receive(ws)


async def receive(ws: ClientConnection) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
    return reply


def url(api_server: str, api: ApiHarness, role: str = "viewer") -> str:
    return f"ws://{api_server}/ws?token={api.tokens[role]}"


async def test_subscriber_gets_matching_task_updates_only(api: ApiHarness, api_server: str) -> None:
    async with connect(url(api_server, api)) as pending_ws, connect(url(api_server, api)) as running_ws:
        subscribe = {"type": "subscribe", "channel": "task_updates", "filter": {"status": "pending"}}
        assert await ask(pending_ws, subscribe | {"request_id": "r1"}) == {
            "type": "subscribed",
            "channel": "task_updates",
            "filter": {"status": "pending"},
            "request_id": "r1",
        }
        running = {"type": "subscribe", "channel": "task_updates", "filter": {"status": "running"}}
        assert (await ask(running_ws, running))["type"] == "subscribed"

        (task_id,) = await api.submit(CMD)

        update = await receive(pending_ws)
        assert update["type"] == "task_update"
        assert update["task_id"] == task_id
        assert update["status"] == "pending"
        assert update["worker_id"] is None
        assert update["timestamp"].endswith("Z")
        # The running-only subscriber was sent nothing: its next message is the reply.
        assert (await ask(running_ws, {"type": "get_leader_info"}))["type"] == "leader_info_response"


async def test_filter_on_task_id_and_unsubscribe(api: ApiHarness, api_server: str) -> None:
    wanted, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with connect(url(api_server, api)) as ws:
        sub = {"type": "subscribe", "channel": "task_updates", "filter": {"task_id": wanted}}
        await ask(ws, sub)
        await api.submit(CMD | {"task_id": other})
        await api.submit(CMD | {"task_id": wanted})
        assert (await receive(ws))["task_id"] == wanted

        assert await ask(ws, {"type": "unsubscribe", "channel": "task_updates"}) == {
            "type": "unsubscribed",
            "channel": "task_updates",
        }
        assert not api.ctx.hub.has_subscribers("task_updates")
        await api.client.post(f"/api/tasks/{wanted}/cancel", headers=api.auth())
        assert (await ask(ws, {"type": "get_cluster_status"}))["type"] == "cluster_status_response"


async def test_cluster_status_and_leader_info(api: ApiHarness, api_server: str) -> None:
    node_id = api.node.node_id
    async with connect(f"ws://{api_server}/ws", additional_headers=api.auth("admin")) as ws:
        status = await ask(ws, {"type": "get_cluster_status", "request_id": "req-9012"})
        assert status["type"] == "cluster_status_response"
        assert status["request_id"] == "req-9012"
        assert status["leader_id"] == node_id
        assert status["current_term"] == api.node.term
        assert status["quorum_size"] == 1
        assert status["cluster_health"] == "healthy"
        assert [(n["node_id"], n["state"], n["term"]) for n in status["nodes"]] == [(node_id, "leader", api.node.term)]
        leader = await ask(ws, {"type": "get_leader_info", "request_id": 7})
        assert leader["type"] == "leader_info_response"
        assert leader["request_id"] == 7
        assert leader["leader_id"] == node_id
        assert leader["current_term"] == api.node.term
        assert leader["uptime_seconds"] >= 0
        assert leader["term_start_time"]
        # A cluster of one elected itself when it started.
        (elected,) = leader["leadership_history"]
        assert elected["previous_leader_id"] is None
        assert elected["new_leader_id"] == elected["leader_id"] == node_id
        assert elected["reason"] == "elected"
        assert elected["timestamp"] == leader["term_start_time"]


async def test_channels_are_accepted(api: ApiHarness, api_server: str) -> None:
    async with connect(url(api_server, api)) as ws:
        for channel, flt in [
            ("orchestrated_task_updates", {"status": "in_progress"}),
            ("cluster_status", {"node_id": "coordinator-1"}),
            ("leadership_updates", None),
            ("cluster_health", None),
        ]:
            reply = await ask(ws, {"type": "subscribe", "channel": channel, "filter": flt})
            while reply["type"].startswith("cluster_"):  # the cluster channels' updates interleave
                reply = await receive(ws)
            assert reply == {"type": "subscribed", "channel": channel, "filter": flt or {}}


BAD_MESSAGES: list[tuple[dict[str, Any] | str, str | None]] = [
    ("{not json", None),
    ("[1, 2]", None),
    ({"type": "dance"}, "type"),
    ({"no_type": True}, "type"),
    ({"type": "get_cluster_health", "metrics": "cpu"}, "metrics"),
    ({"type": "get_cluster_health", "metrics": ["cpu", "temperature"]}, "metrics"),
    ({"type": "subscribe", "channel": "cluster_status", "filter": {"state": "leader"}}, "filter.state"),
    ({"type": "subscribe", "channel": "cluster_status", "filter": {"node_id": 1}}, "filter.node_id"),
    ({"type": "subscribe", "channel": "leadership_updates", "filter": {"colour": "red"}}, "filter.colour"),
    ({"type": "subscribe", "channel": "gossip"}, "channel"),
    ({"type": "unsubscribe"}, "channel"),
    ({"type": "subscribe", "channel": "task_updates", "filter": ["running"]}, "filter"),
    ({"type": "subscribe", "channel": "task_updates", "filter": {"colour": "red"}}, "filter.colour"),
    ({"type": "subscribe", "channel": "task_updates", "filter": {"status": "sleeping"}}, "filter.status"),
]


async def test_bad_messages_get_an_error_and_the_socket_stays_open(api: ApiHarness, api_server: str) -> None:
    async with connect(url(api_server, api)) as ws:
        for message, field in BAD_MESSAGES:
            error = await ask(ws, message)
            assert error["type"] == "error", message
            assert error["message"]
            assert error["field"] == field, message
        await ws.send(b'{"type": "get_leader_info"}')  # a binary frame holding JSON is read too
        assert (await receive(ws))["type"] == "leader_info_response"
        assert not api.ctx.hub.has_subscribers("task_updates")


async def test_error_echoes_request_id(api: ApiHarness, api_server: str) -> None:
    async with connect(url(api_server, api)) as ws:
        error = await ask(ws, {"type": "dance", "request_id": "abc"})
        assert error == {
            "type": "error",
            "message": "unknown message type 'dance'",
            "field": "type",
            "request_id": "abc",
        }


@pytest.mark.parametrize(("query", "status"), [("", 401), ("?token=garbage", 401), ("?token={worker}", 403)])
async def test_handshake_without_a_read_role_is_refused(
    api: ApiHarness, api_server: str, query: str, status: int
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{api_server}/ws" + query.format(worker=api.tokens["worker"])):
            pass
    response = refused.value.response
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.body)["status"] == status


async def test_disconnect_leaves_no_subscription_or_task_behind(api: ApiHarness, api_server: str) -> None:
    before = {t for t in asyncio.all_tasks() if t.get_name().startswith("ws-forward")}
    async with connect(url(api_server, api)) as ws:
        await ask(ws, {"type": "subscribe", "channel": "task_updates"})
        await ask(ws, {"type": "subscribe", "channel": "cluster_status"})
        assert api.ctx.hub.has_subscribers("task_updates")
    for _ in range(200):
        forwarders = {t for t in asyncio.all_tasks() if t.get_name().startswith("ws-forward")} - before
        if not forwarders and not api.ctx.hub.has_subscribers("task_updates"):
            break
        await asyncio.sleep(0.01)
    assert not api.ctx.hub.has_subscribers("task_updates")
    assert not api.ctx.hub.has_subscribers("cluster_status")
    assert not forwarders
    # Publishing after the client left is harmless.
    await api.submit(CMD)
