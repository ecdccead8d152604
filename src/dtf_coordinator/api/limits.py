"""Limits applied before a request's body is read.

`AuthenticateFirst`: a request to `/api/` that may carry a body (POST, PUT, PATCH,
DELETE) without a valid token is answered 401 at once; its body is never read, so
unauthenticated traffic costs a header check, not a parse of up to
`security.max_body_bytes`. (The route then checks the token's role, as for any request.)

`BodySizeLimit`: a declared `Content-Length` over the limit is answered with 413 at
once, without reading the body. A body without one (chunked) is counted as it streams
in; the first chunk past the limit ends the request with 413 too. Blob uploads
(`/api/blobs/`) stream to disk and are capped by the blob store instead.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dtf_common.errors import Unauthenticated
from dtf_coordinator.api.problems import error_response, problem_response
from dtf_coordinator.auth import bearer, verify_token

BLOB_PATH = "/api/blobs/"  # uploads stream to disk under their own limit (dtf_coordinator.blobs)


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuthenticateFirst:
    """Pure ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS and scope["path"].startswith("/api/"):
            try:
                verify_token(self.secret, bearer(_header(scope, b"authorization")))
            except Unauthenticated as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
