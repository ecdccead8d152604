"""Who this worker is: a stable id, and what it tells the coordinator when it registers."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import IO

from dtf_common.config import WorkerConfig
from dtf_common.errors import ConfigError
from dtf_common.pb.dtf.v1 import worker_service_pb2
from dtf_common.private import open_private, private_dir
from dtf_worker.hardware import HardwareProfile

WORKER_ID_FILE = "worker_id"
LOCK_FILE = "worker.lock"
# The worker's own credential, as its first registration returned it (0600).
CREDENTIAL_FILE = "credential"


def lock_working_dir(working_dir: Path) -> IO[bytes]:
    """Hold working_dir for this daemon until the returned file is closed: two workers in one
    directory would share an id and a spool and report each other's outcomes."""
    private_dir(working_dir)  # its spool, its tasks' files and outputs: the worker's user's alone
    handle = (working_dir / LOCK_FILE).open("a+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"execution.working_dir {working_dir} is in use by another running worker; give each worker its own",
            field="execution.working_dir",
        ) from None
    return handle


def resolve_worker_id(config: WorkerConfig, working_dir: Path) -> str:
    """config.worker.id, else the id generated on first start and remembered in working_dir,
    so a restarted daemon rejoins as the same worker and its spooled outcomes still match."""
    if config.worker.id:
        return config.worker.id
    path = working_dir / WORKER_ID_FILE
    try:
        remembered = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        remembered = ""
    if remembered:
        return remembered
    worker_id = str(uuid.uuid4())
    working_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(worker_id + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return worker_id


def read_credential(working_dir: Path) -> str:
    """The credential an earlier registration of this worker returned; "" if none."""
    try:
        return (working_dir / CREDENTIAL_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def keep_credential(working_dir: Path, credential: str) -> None:
    """Keep the worker's credential for its next start, readable by its user only; "" forgets it."""
    path = working_dir / CREDENTIAL_FILE
    if not credential:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    with os.fdopen(open_private(tmp, "wb"), "wb") as f:
        f.write(credential.encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _version() -> str:
    try:
        return metadata.version("dtf")
    except metadata.PackageNotFoundError:
        return "unknown"


def register_request(
    config: WorkerConfig, worker_id: str, hardware: HardwareProfile, hardware_id: str, held: list[str]
) -> worker_service_pb2.RegisterRequest:
    """`held`: the leases this worker holds as it registers (running, or with an outcome
    spooled); the coordinator loses its other running leases at once."""
    return worker_service_pb2.RegisterRequest(
        worker_id=worker_id,
        lease_ids=held,
        reports_leases=True,
        name=config.worker.name or hardware.hostname or socket.gethostname(),
        hardware_id=hardware_id,
        capabilities=hardware.to_capabilities(config.execution.concurrent_tasks, config.worker.labels),
        metadata_json=json.dumps(
            {
                "version": _version(),
                "pid": os.getpid(),
                "hostname": hardware.hostname,
                "started_at_ms": time.time_ns() // 1_000_000,
            }
        ),
    )
