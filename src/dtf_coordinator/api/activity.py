"""Counting the API's use, for a coordinator that stops itself once idle
(`dtf_coordinator.service.idle`): every HTTP request touches the clock, and a WebSocket
counts as a client for as long as it is open."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from dtf_coordinator.service.idle import Activity


class ActivityTracker:
    """Pure ASGI middleware."""

    def __init__(self, app: ASGIApp, activity: Activity) -> None:
        self.app = app
        self.activity = activity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.activity.touch()
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            self.activity.sockets += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.activity.sockets -= 1
                self.activity.touch()
        else:
            await self.app(scope, receive, send)
