"""Minting the JWTs every dtf credential is (HS256 via python-jose): the coordinator
verifies them (`dtf_coordinator.auth`), and whoever holds the cluster's secret makes
them: the coordinator for its peers, `dtf token`, a local cluster for its workers.

Roles: admin (everything), submitter (submit and cancel, plus read), viewer (read) and
worker (the gRPC worker service only). A worker token either enrols workers (a join
token, made by an admin: it may only register) or is one worker's own credential (its
`wid` claim names the worker; the coordinator issues it at registration, and every call
made with it must be that worker's).
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum

from jose import jwt

ALGORITHM = "HS256"


class Role(StrEnum):
    ADMIN = "admin"
    SUBMITTER = "submitter"
    VIEWER = "viewer"
    WORKER = "worker"


WORKER_CLAIM = "wid"


def create_token(
    secret: str,
    role: Role | str,
    *,
    subject: str | None = None,
    expires_in: int = 86400,
    worker_id: str | None = None,
) -> str:
    """A token for `role`, valid `expires_in` seconds (0: never expires); with `worker_id`,
    a worker's own credential."""
    role = Role(role)
    now = int(time.time())
    subject = subject or f"{role.value}-{uuid.uuid4().hex[:8]}"
    claims: dict[str, object] = {"sub": subject, "role": role.value, "iat": now}
    if worker_id is not None:
        if role is not Role.WORKER:
            raise ValueError("only a worker token names a worker")
        claims[WORKER_CLAIM] = worker_id
    if expires_in > 0:
        claims["exp"] = now + expires_in
    token: str = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return token
