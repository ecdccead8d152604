"""JWT authentication and role checks: tokens are made by `dtf_common.tokens` (roles
there) and verified here.
"""

from __future__ import annotations

from dataclasses import dataclass

from jose import JWTError, jwt

from dtf_common.errors import PermissionDenied, Unauthenticated
from dtf_common.tokens import ALGORITHM, WORKER_CLAIM, Role, create_token

__all__ = [
    "ADMIN",
    "ALGORITHM",
    "READ",
    "SUBMIT",
    "WORKER",
    "Principal",
    "Role",
    "bearer",
    "create_token",
    "require",
    "verify_token",
]

READ = frozenset({Role.ADMIN, Role.SUBMITTER, Role.VIEWER})
SUBMIT = frozenset({Role.ADMIN, Role.SUBMITTER})
ADMIN = frozenset({Role.ADMIN})
WORKER = frozenset({Role.ADMIN, Role.WORKER})


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role
    # The worker a worker's own credential belongs to; None for a join token and other roles.
    worker_id: str | None = None


def verify_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM])
    except JWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}", field="authorization") from None
    try:
        role = Role(str(claims.get("role")))
    except ValueError:
        raise Unauthenticated("token has no valid role", field="authorization") from None
    worker_id = claims.get(WORKER_CLAIM)
    if worker_id is not None and (role is not Role.WORKER or not isinstance(worker_id, str) or not worker_id):
        raise Unauthenticated("token names a worker but is not a worker's credential", field="authorization")
    return Principal(subject=str(claims.get("sub", "")), role=role, worker_id=worker_id)


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
