"""What the code a task runs can get at of its worker's credentials: not the worker's
environment or memory, and a token it finds anyway does not reach the results store
through what it prints."""

from __future__ import annotations

import os
import sys

import pytest

from tests.e2e.e2e_harness import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")]

PROBE = """
import os, re, sys
worker = os.getppid()
try:
    open(f"/proc/{worker}/environ", "rb").read()
    print("environ: read")
except PermissionError:
    print("environ: denied")
try:
    open(f"/proc/{worker}/mem", "rb").read(1)
    print("mem: read")
except (PermissionError, OSError):
    print("mem: denied")
# What a hostile task does next: find the worker's configuration and print its token.
argv = open(f"/proc/{worker}/cmdline", "rb").read().split(b"\\0")
config = argv[argv.index(b"--config") + 1].decode()
token = re.search(r"api_key: (\\S+)", open(config).read()).group(1)
print("token:", token)
print("token:", token, file=sys.stderr)
status = open("/proc/self/status").read()
print("no_new_privs:", re.search(r"NoNewPrivs:\\s+(\\d)", status).group(1))
"""


def probe(cluster: Cluster) -> tuple[str, str, str]:
    """Run the hostile task; its stdout, its stderr, and the worker's join token."""
    cluster.start_coordinator()
    worker = cluster.start_worker("worker-a")
    client = cluster.client()
    cluster.wait_workers("worker-a")
    [task_id] = client.submit({"type": "command", "parameters": {"command": [sys.executable, "-c", PROBE]}})
    done = cluster.wait_final([task_id])[task_id]
    assert done["status"] == "completed", done
    join_token = worker.config["coordinator"]["api_key"]
    assert join_token not in str(client.task(task_id)) + str(client.results(task_id=task_id))
    return done["results"]["stdout_tail"], done["results"]["stderr_tail"], join_token


def test_a_token_a_task_prints_is_redacted_and_it_gains_no_privileges(cluster: Cluster) -> None:
    out, err, join_token = probe(cluster)
    assert join_token not in out + err
    assert "token: [redacted]" in out and "token: [redacted]" in err
    assert "no_new_privs: 1" in out
    assert "mem: denied" in out


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every process's /proc entries, dumpable or not")
def test_a_task_cannot_read_its_workers_environment(cluster: Cluster) -> None:
    out, _err, _token = probe(cluster)
    assert "environ: denied" in out
