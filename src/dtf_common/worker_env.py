"""Environment variables that whoever starts a worker (`dtf up`, `dtf run`) sets for it.

Here, apart from the worker's code, so that the processes starting workers need not
import it (a `dtf run` starts its cluster before anything else, and every import before
that delays its first test)."""

from __future__ import annotations

# The worker's place among the workers of one machine (`dtf up` and `dtf run` number them
# from 0): with its slot, it names a task's slot machine-wide (`ExecutionContext.slot_index`).
INDEX_VARIABLE = "DTF_WORKER_INDEX"
# Set by `dtf run` for the workers it starts: the directory and options of its batches,
# so a worker starts (or clones) their pytest server at once (`task_runner` takes it out
# of the environment its tasks inherit).
PREWARM_VARIABLE = "DTF_PYTEST_PREWARM"
