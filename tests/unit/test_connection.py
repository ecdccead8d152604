"""A local cluster's connection.json is read with an admin token made now, from the
secret beside it: the token written in the file expires, one made from it stays valid."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from jose import jwt

from dtf.connection import LOCAL_TOKEN_S, read_connection
from dtf_common.tokens import create_token

SECRET = "a-local-clusters-secret-0123456789"


def write(data_dir: Path, token: str, *, secret: bool = True) -> Path:
    data_dir.mkdir()
    if secret:
        (data_dir / "secret").write_text(SECRET + "\n")
    path = data_dir / "connection.json"
    path.write_text(json.dumps({"api_url": "http://127.0.0.1:1", "admin_token": token}))
    return path


def test_the_admin_token_is_made_now_from_the_secret_and_expires(tmp_path: Path) -> None:
    expired = create_token(SECRET, "admin", subject="local-admin", expires_in=1)
    time.sleep(1.1)
    info = read_connection(write(tmp_path / "data", expired))

    claims = jwt.decode(info["admin_token"], SECRET, algorithms=["HS256"])
    assert claims["role"] == "admin" and claims["sub"] == "local-admin"
    assert abs(claims["exp"] - (time.time() + LOCAL_TOKEN_S)) < 5
    assert info["api_url"] == "http://127.0.0.1:1"


def test_without_the_secret_the_written_token_is_used_as_it_is(tmp_path: Path) -> None:
    written = create_token(SECRET, "admin", expires_in=60)
    assert read_connection(write(tmp_path / "elsewhere", written, secret=False))["admin_token"] == written


def test_asking_whether_a_cluster_runs_imports_no_jwt_code(tmp_path: Path) -> None:
    """`dtf run` asks before it starts its cluster: 0.1 s of JWT imports would delay the start."""
    data = tmp_path / "data"
    write(data, create_token(SECRET, "admin", expires_in=60))
    script = (
        "import sys; from pathlib import Path; from dtf.run.cluster import cluster_alive; "
        f"cluster_alive(Path({str(data)!r})); print('jose' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
