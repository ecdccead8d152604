"""The `dtf` command as a user runs it: task files with dependencies, and `dtf up`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from jose import jwt

from dtf.client import DtfClient
from tests.e2e.e2e_harness import TRANSIENT, Cluster, all_pages, command_task, wait_until

pytestmark = pytest.mark.e2e


def _command(code: str) -> dict[str, Any]:
    return {"command": [sys.executable, "-c", code]}


def test_dependencies_and_failure_propagation(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_coordinator()
    cluster.start_worker("worker-a", concurrent_tasks=2)
    connection = cluster.write_connection()
    cluster.wait_workers("worker-a")

    taskfile = tmp_path / "tasks.yaml"
    taskfile.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {"name": "a", "type": "command", "parameters": _command("import sys; sys.exit(1)")},
                    {"name": "b", "type": "command", "parameters": _command("print('b')"), "dependencies": ["a"]},
                    {"name": "c", "type": "command", "parameters": _command("print('c')"), "dependencies": ["b"]},
                    {"name": "d", "type": "command", "parameters": _command("print('d')")},
                ]
            }
        )
    )
    # Options go before the kind: after it they are taken for the command's own arguments
    # (see test_submit_file_options_after_the_file).
    options = ["--wait", "--json", "--connection", str(connection)]
    done = cluster.cli("submit-failing", "submit", *options, "file", str(taskfile))
    assert done.returncode == 1, done.stderr
    reported = {t["metadata"]["name"]: t for t in json.loads(done.stdout)}
    assert sorted(reported) == ["a", "b", "c", "d"]

    # What the CLI printed is what the coordinator holds.
    client = cluster.client()
    tasks = {name: client.task(t["task_id"]) for name, t in reported.items()}
    assert {n: t["status"] for n, t in tasks.items()} == {"a": "failed", "b": "failed", "c": "failed", "d": "completed"}
    assert {n: t["status"] for n, t in reported.items()} == {n: t["status"] for n, t in tasks.items()}
    assert tasks["a"]["results"]["exit_code"] == 1
    assert tasks["b"]["dependencies"] == [tasks["a"]["task_id"]]
    assert tasks["c"]["dependencies"] == [tasks["b"]["task_id"]]
    assert "dependency" in tasks["b"]["error"] and tasks["a"]["task_id"] in tasks["b"]["error"]
    assert "dependency" in tasks["c"]["error"] and tasks["b"]["task_id"] in tasks["c"]["error"]
    for name in ("b", "c"):  # never ran anywhere
        assert tasks[name]["metadata"]["dtf"]["attempts"] == 0
        assert tasks[name]["worker_id"] is None
        assert client.results(task_id=tasks[name]["task_id"])["count"] == 0

    # The same command exits 0 when everything completes.
    ok_file = tmp_path / "ok.yaml"
    ok_file.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {"name": "first", "type": "command", "parameters": _command("print(1)")},
                    {
                        "name": "second",
                        "type": "command",
                        "parameters": _command("print(2)"),
                        "dependencies": ["first"],
                    },
                ]
            }
        )
    )
    ok = cluster.cli("submit-passing", "submit", *options, "file", str(ok_file))
    assert ok.returncode == 0, ok.stderr
    ok_tasks = {t["metadata"]["name"]: t for t in json.loads(ok.stdout)}
    assert {t["status"] for t in ok_tasks.values()} == {"completed"}
    assert ok_tasks["second"]["start_time"] >= ok_tasks["first"]["end_time"]


def test_submit_file_options_after_the_file(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_coordinator()
    connection = cluster.write_connection()
    taskfile = tmp_path / "tasks.yaml"
    taskfile.write_text(
        yaml.safe_dump({"tasks": [{"name": "only", "type": "command", "parameters": _command("pass")}]})
    )

    done = cluster.cli(
        "submit-readme-order", "submit", "file", str(taskfile), "--json", "--connection", str(connection)
    )
    assert done.returncode == 0, done.stderr
    [task_id] = json.loads(done.stdout)["task_ids"]
    assert cluster.client().task(task_id)["metadata"]["name"] == "only"


def _wait_up(up_pid: int, connection: Path) -> dict[str, Any]:
    """Until `dtf up` has written a connection.json naming a coordinator it started."""

    def ready() -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = json.loads(connection.read_text())
            children = {p.pid for p in psutil.Process(up_pid).children()}
        except (FileNotFoundError, ValueError):
            return None
        return info if info["coordinators"][0]["pid"] in children else None

    return wait_until(ready, 90, "dtf up to be ready")


def _children_of_up(info: dict[str, Any]) -> list[int]:
    return [info["coordinators"][0]["pid"], *(w["pid"] for w in info["workers"])]


def test_dtf_up_resumes(cluster: Cluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "dtf-data"
    connection = data_dir / "connection.json"
    args = [
        "-m",
        "dtf.cli.main",
        "up",
        "--workers",
        "2",
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        "--grpc-port",
        "0",
    ]

    up = cluster.procs.new("dtf-up", args).start()
    info = _wait_up(up.pid, connection)
    assert len(info["workers"]) == 2
    with DtfClient.from_connection(connection) as client:
        ids = client.submit([command_task(f"print({i})") for i in range(20)])
        wait_until(lambda: client.status()["tasks"]["completed"] == 20, 60, "20 tasks to complete")
        first_tasks = {t["task_id"]: t for t in all_pages(client.tasks)}
        wait_until(lambda: client.results(limit=1)["count"] >= 20, 30, "20 results in the store")

    up.terminate()
    assert up.wait() == 0, up.tail()
    left = [pid for pid in _children_of_up(info) if psutil.pid_exists(pid)]
    assert left == [], "dtf up must stop every process it started"

    # Again, on the same data directory: everything done before is still there.
    up = cluster.procs.new("dtf-up-again", args).start()
    info = _wait_up(up.pid, connection)
    with DtfClient.from_connection(connection) as client:
        page = wait_until(lambda: client.tasks(limit=1000), 30, "the task list", ignore=TRANSIENT)
        assert page["count"] == 20
        assert {t["task_id"] for t in page["data"]} == set(ids)
        assert {t["task_id"]: t for t in page["data"]} == first_tasks
        results = all_pages(client.results)
        assert sorted(r["task_id"] for r in results) == sorted(ids)

        more = client.submit([command_task(f"print({i})") for i in range(20, 25)])
        wait_until(lambda: client.status()["tasks"]["completed"] == 25, 60, "the new tasks to complete")
        assert {client.task(t)["status"] for t in more} == {"completed"}

    up.terminate()
    assert up.wait() == 0, up.tail()
    assert [pid for pid in _children_of_up(info) if psutil.pid_exists(pid)] == []


@pytest.mark.parametrize(("flags", "lifetime"), [([], 7200), (["--expires-in", "60"], 60)])
def test_token_create_takes_its_lifetime_from_the_configuration_unless_told(
    tmp_path: Path, flags: list[str], lifetime: int
) -> None:
    secret = "a-real-secret-of-enough-length"
    config = tmp_path / "coordinator.yaml"
    config.write_text(yaml.safe_dump({"security": {"jwt_secret": secret, "token_expiry": 7200}}))
    made = subprocess.run(
        [sys.executable, "-m", "dtf.cli.main", "token", "create", "--role", "viewer", "--config", str(config), *flags],
        capture_output=True,
        text=True,
        check=True,
    )
    claims = jwt.decode(made.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["role"] == "viewer" and claims["exp"] - claims["iat"] == lifetime


def test_token_create_reads_the_secret_from_a_file_or_stdin_never_the_command_line(tmp_path: Path) -> None:
    secret = "a-real-secret-of-enough-length"
    holder = tmp_path / "secret"
    holder.write_text(secret + "\n")
    base = [sys.executable, "-m", "dtf.cli.main", "token", "create", "--role", "viewer"]
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    for args, stdin in (([f"--secret-file={holder}"], None), (["--secret-file", "-"], secret)):
        made = subprocess.run([*base, *args], input=stdin, capture_output=True, text=True, check=True, env=env)
        assert jwt.decode(made.stdout.strip(), secret, algorithms=["HS256"])["role"] == "viewer"
    refused = subprocess.run([*base, "--secret", secret], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and secret not in refused.stdout
    missing = subprocess.run([*base, "--secret-file", str(tmp_path / "none")], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "secret_file" in missing.stderr
