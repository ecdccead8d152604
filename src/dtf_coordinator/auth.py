"""JWT authentication and role checks (HS256 via python-jose).

Roles: admin (everything), submitter (submit and cancel, plus read), viewer (read) and
worker (the gRPC worker service only).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from enum import StrEnum

from jose import JWTError, jwt

from dtf_common.errors import PermissionDenied, Unauthenticated

ALGORITHM = "HS256"


class Role(StrEnum):
    ADMIN = "admin"
    SUBMITTER = "submitter"
    VIEWER = "viewer"
    WORKER = "worker"


READ = frozenset({Role.ADMIN, Role.SUBMITTER, Role.VIEWER})
SUBMIT = frozenset({Role.ADMIN, Role.SUBMITTER})
ADMIN = frozenset({Role.ADMIN})
WORKER = frozenset({Role.ADMIN, Role.WORKER})


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role


def create_token(secret: str, role: Role | str, *, subject: str | None = None, expires_in: int = 86400) -> str:
    role = Role(role)
    now = int(time.time())
    claims = {"sub": subject or f"{role.value}-{uuid.uuid4().hex[:8]}", "role": role.value, "iat": now}
    if expires_in > 0:
        claims["exp"] = now + expires_in
    token: str = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return token


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM])
    except JWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}", field="authorization") from None
    try:
        return Principal(subject=str(claims.get("sub", "")), role=Role(str(claims.get("role"))))
    except ValueError:
        raise Unauthenticated("token has no valid role", field="authorization") from None


def bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing bearer token", field="authorization")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <token>'", field="authorization")
    return token.strip()


def require(principal: Principal, allowed: frozenset[Role]) -> Principal:
    if principal.role not in allowed:
        needed = " or ".join(sorted(r.value for r in allowed))
        raise PermissionDenied(f"role {principal.role.value} may not do this (needs {needed})", field="authorization")
    return principal
