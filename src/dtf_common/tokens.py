"""Minting the JWTs every dtf credential is (HS256 via python-jose): the coordinator
verifies them (`dtf_coordinator.auth`), and whoever holds the cluster's secret makes
them: the coordinator for its peers, `dtf token`, a local cluster for its workers.

Roles: admin (everything), submitter (submit and cancel, plus read), viewer (read) and
worker (the gRPC worker service only).
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


def create_token(secret: str, role: Role | str, *, subject: str | None = None, expires_in: int = 86400) -> str:
    """A token for `role`, valid `expires_in` seconds (0: never expires)."""
    role = Role(role)
    now = int(time.time())
    subject = subject or f"{role.value}-{uuid.uuid4().hex[:8]}"
    claims: dict[str, object] = {"sub": subject, "role": role.value, "iat": now}
    if expires_in > 0:
        claims["exp"] = now + expires_in
    token: str = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return token
