"""What a worker does to keep the code it runs away from its own secrets, where the
platform allows it (Linux; elsewhere nothing, and `docs/security.md` says so).

- `PR_SET_DUMPABLE` 0: the worker's /proc entries (`environ`, `mem`, `fd`, ...) belong
  to root, so a task running as the same user cannot read the worker's environment or
  memory, where its tokens are. (It also turns off the worker's core dumps and ptrace.)
- `PR_SET_NO_NEW_PRIVS` 1, inherited by every task: no setuid or file-capability
  program a task runs gains privileges.
- Known credentials are replaced in whatever a task reports (`redact`), so a task that
  prints a token it found does not put it in the results store.

What it does not stop: a task runs as the worker's user, so it can read that user's
files, the worker's configuration and stored credential included. Run workers as a
user of their own, holding nothing else.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Iterable

from dtf_common.pb.dtf.v1 import types_pb2

log = logging.getLogger("dtf.worker")

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
REDACTED = "[redacted]"
# Shorter strings are not credentials, and replacing them would mangle ordinary output.
MIN_SECRET_LENGTH = 16


def harden_process() -> list[str]:
    """Apply what this platform allows; returns what was applied."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return []
    applied = []
    for name, option, value in (("not dumpable", PR_SET_DUMPABLE, 0), ("no new privileges", PR_SET_NO_NEW_PRIVS, 1)):
        if libc.prctl(option, value, 0, 0, 0) == 0:
            applied.append(name)
        else:
            log.warning(
                "prctl(%s) failed (errno %d): tasks are less isolated from the worker", name, ctypes.get_errno()
            )
    return applied


def redact(outcome: types_pb2.TaskOutcome, secrets: Iterable[str]) -> None:
    """Replace every known credential in the outcome's text fields and result records."""
    known = [s for s in secrets if len(s) >= MIN_SECRET_LENGTH]
    if known:
        _scrub(outcome, known)


def _scrub(message: types_pb2.TaskOutcome | types_pb2.ResultRecord, secrets: list[str]) -> None:
    for field, value in message.ListFields():
        if isinstance(value, str):
            if any(secret in value for secret in secrets):
                for secret in secrets:
                    value = value.replace(secret, REDACTED)
                setattr(message, field.name, value)
        elif field.name == "results":
            for record in value:
                _scrub(record, secrets)
