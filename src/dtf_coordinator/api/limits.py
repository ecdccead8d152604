"""Refuse request bodies over a size limit before they are parsed.

A declared `Content-Length` over the limit is answered with 413 at once, without
reading the body. A body without one (chunked) is counted as it streams in; the
first chunk past the limit ends the request with 413 too. Blob uploads (`/api/blobs/`)
stream to disk and are capped by the blob store instead.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dtf_coordinator.api.problems import problem_response

BLOB_PATH = "/api/blobs/"  # uploads stream to disk under their own limit (dtf_coordinator.blobs)


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the streamed body passes the limit.

    An HTTPException, so FastAPI's body parsing passes it on unchanged to the
    exception handlers (which answer with a 413 problem).
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


class BodySizeLimit:
    """Pure ASGI middleware; WebSocket and lifespan traffic pass through untouched."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(BLOB_PATH):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = problem_response(413, BodyTooLarge(self.max_bytes).detail, field="body")
            await response(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            # Reached here only where no exception handler answered (a raw ASGI route).
            if started:
                raise
            await problem_response(413, exc.detail, field="body")(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
