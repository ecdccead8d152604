"""What of the worker's environment reaches the tasks it runs."""

from __future__ import annotations

from collections.abc import Mapping

# Variables that carry a worker's or coordinator's credentials: never passed on to tasks.
CREDENTIAL_VARIABLES = frozenset(
    {
        "WORKER_API_KEY",
        "JWT_SECRET",
        "DTF_JWT_SECRET",
        "DTF_COORDINATOR__API_KEY",
        "DTF_SECURITY__JWT_SECRET",
        "DTF_TOKEN",
    }
)


# The worker's own settings, of no use to a task (and that would tell apart the warm pytest
# servers of workers that could share one).
WORKER_VARIABLES = frozenset({"DTF_WORKER_INDEX", "DTF_PYTEST_PREWARM"})


def inherited(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less the credentials in it and the worker's own settings: what a task
    inherits. Tasks run code the worker does not trust with its token."""
    return {k: v for k, v in env.items() if k not in CREDENTIAL_VARIABLES and k not in WORKER_VARIABLES}
