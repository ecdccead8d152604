"""Sends spooled outcomes to the coordinator and forgets them once it has them durably."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dtf_common.errors import InvalidArgument
from dtf_common.pb.dtf.v1 import types_pb2, worker_service_pb2
from dtf_worker.client import CoordinatorClient
from dtf_worker.spool import Spool

log = logging.getLogger("dtf.worker.reporter")
Ack = worker_service_pb2.OutcomeAck
# Half the coordinator's 64 MiB message limit: a batch never fails for its size.
MAX_BATCH_BYTES = 32 * 1024 * 1024


def fit_batch(
    batch: list[tuple[str, types_pb2.TaskOutcome]], limit: int = MAX_BATCH_BYTES
) -> list[tuple[str, types_pb2.TaskOutcome]]:
    """The longest prefix of `batch` within `limit` bytes, and never less than one outcome."""
    total = 0
    for n, (_, outcome) in enumerate(batch):
        total += outcome.ByteSize()
        if total > limit and n > 0:
            return batch[:n]
    return batch


def without_superseded_starts(outcomes: list[types_pb2.TaskOutcome]) -> list[types_pb2.TaskOutcome]:
    """Drop a STARTED outcome whose task's end travels in the same batch: the end implies it,
    and a short task then costs the coordinator one command instead of two."""
    ended = {o.lease_id for o in outcomes if o.kind != types_pb2.TaskOutcome.STARTED}
    return [o for o in outcomes if o.kind != types_pb2.TaskOutcome.STARTED or o.lease_id not in ended]


class ResultSender:
    """One `send_once` sends the oldest `batch_size` outcomes in one ReportResults call.

    The coordinator answers only after the batch is committed, so a successful response
    makes every outcome in it durable there, whether applied (ACCEPTED) or ignored
    because its lease was no longer valid (STALE): both are deleted from the spool. A
    failed call leaves the spool as it was, and the same outcomes go again later.
    """

    def __init__(
        self,
        spool: Spool,
        client: CoordinatorClient,
        worker_id: str,
        batch_size: int,
        on_acknowledged: Callable[[list[types_pb2.TaskOutcome]], None] | None = None,
    ) -> None:
        self.spool = spool
        self.client = client
        self.worker_id = worker_id
        self.batch_size = batch_size
        self.on_acknowledged = on_acknowledged
        self.wake = asyncio.Event()  # set whenever an outcome is spooled
        self._batch_id = 0
        self._one_at_a_time = False

    async def send_once(self) -> int:
        """How many outcomes were sent and acknowledged (0: nothing pending). Raises DtfError."""
        self.wake.clear()  # before reading: an outcome spooled from here on wakes the next round
        await asyncio.to_thread(self.spool.sync)  # one fsync for everything spooled so far
        batch = fit_batch(self.spool.pending(limit=1 if self._one_at_a_time else self.batch_size))
        if not batch:
            return 0
        self._batch_id += 1
        outcomes = without_superseded_starts([outcome for _, outcome in batch])
        try:
            response = await self.client.report_results(
                worker_service_pb2.ReportRequest(worker_id=self.worker_id, batch_id=self._batch_id, outcomes=outcomes)
            )
        except InvalidArgument as exc:
            # One malformed outcome must not wedge every later one behind it: find it by
            # sending singly, and drop it once it is rejected on its own.
            if len(batch) > 1:
                self._one_at_a_time = True
                raise
            log.error("coordinator rejected the outcome for task %s (%s); dropping it", outcomes[0].task_id, exc)
            response = worker_service_pb2.ReportResponse()
        else:
            self._one_at_a_time = False
        for ack in response.acks:
            if ack.status == Ack.STALE:
                log.info("outcome for task %s (lease %s) was stale: %s", ack.task_id, ack.lease_id, ack.detail)
            elif ack.status != Ack.ACCEPTED:
                log.warning("outcome for task %s acknowledged with status %s", ack.task_id, ack.status)
        self.spool.ack([key for key, _ in batch])
        if self.on_acknowledged is not None:
            self.on_acknowledged(outcomes)
        return len(batch)

    async def flush(self) -> None:
        """Send until the spool is empty. Raises DtfError when the coordinator cannot be reached."""
        while await self.send_once():
            pass
