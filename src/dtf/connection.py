"""The `connection.json` a local cluster (`dtf up`, a `dtf run`) writes in its data
directory, read with an admin token made now.

The token written there expires (`LOCAL_TOKEN_S`), so one copied out of the file into a
shell history or a CI log stops working. Whoever reads the file from the data directory
can read the cluster's secret beside it (both are its user's alone) and so mints a fresh
token each time instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONNECTION_FILE = "connection.json"
SECRET_FILE = "secret"
LOCAL_TOKEN_S = 86_400
LOCAL_ADMIN = "local-admin"


def local_admin_token(secret: str) -> str:
    from dtf_common.tokens import Role, create_token  # here: JWT code is not worth importing before a run starts

    return create_token(secret, Role.ADMIN, subject=LOCAL_ADMIN, expires_in=LOCAL_TOKEN_S)


def read_connection(path: Path, *, fresh_token: bool = True) -> dict[str, Any]:
    """The connection at `path`, its `admin_token` made now where the cluster's secret is
    beside it (unless `fresh_token` is False: a caller that needs no token spares the
    JWT import). Raises OSError or ValueError as reading the file does."""
    info: dict[str, Any] = json.loads(path.read_text())
    if not fresh_token:
        return info
    try:
        secret = (path.parent / SECRET_FILE).read_text().strip()
    except OSError:
        return info
    if secret and isinstance(info, dict):
        info["admin_token"] = local_admin_token(secret)
    return info
