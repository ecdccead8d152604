"""The outcome spool: order, acknowledgement, restart, and kill -9 durability."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_worker.reporter import fit_batch
from dtf_worker.spool import Spool
from dtf_worker.task_runner import split_outcome


def outcome(task_id: str, kind: int = types_pb2.TaskOutcome.COMPLETED) -> types_pb2.TaskOutcome:
    return types_pb2.TaskOutcome(task_id=task_id, lease_id=f"lease-{task_id}", worker_id="w1", kind=kind)


def test_pending_in_write_order_until_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    keys = [spool.put(outcome(f"t{i}")) for i in range(12)]
    spool.sync()
    assert [o.task_id for _, o in spool.pending()] == [f"t{i}" for i in range(12)]
    assert [k for k, _ in spool.pending(limit=3)] == keys[:3]
    spool.ack(keys[:10])
    assert [o.task_id for _, o in spool.pending()] == ["t10", "t11"]
    spool.ack(keys[:10])  # acknowledging twice is harmless
    assert len(spool) == 2


def test_only_synced_outcomes_are_offered(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(outcome("a"))
    assert spool.pending() == []
    spool.sync()
    spool.put(outcome("b"))
    assert [o.task_id for _, o in spool.pending()] == ["a"]
    spool.sync()
    assert [o.task_id for _, o in spool.pending()] == ["a", "b"]


def test_reopened_spool_keeps_order_and_forgets_acknowledged(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.put(outcome("a"))
    first.put(outcome("b"))
    acked = first.put(outcome("gone"))
    first.sync()
    first.ack([acked])
    first.close()
    second = Spool(tmp_path)
    second.put(outcome("c"))
    second.sync()
    assert [o.task_id for _, o in second.pending()] == ["a", "b", "c"]


def test_torn_tail_is_dropped_and_earlier_outcomes_survive(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.put(outcome("a"))
    first.put(outcome("b"))
    first.close()
    path = tmp_path / "outcomes.spool"
    path.write_bytes(path.read_bytes()[:-3])  # the last record cut short, as by a crash mid-write
    second = Spool(tmp_path)
    assert [o.task_id for _, o in second.pending()] == ["a"]
    second.put(outcome("c"))
    second.close()
    assert [o.task_id for _, o in Spool(tmp_path).pending()] == ["a", "c"]


def test_file_is_emptied_once_everything_is_acknowledged(tmp_path: Path) -> None:
    from dtf_worker import spool as spool_module

    spool = Spool(tmp_path)
    big = outcome("t")
    big.error = "x" * 100_000
    keys = [spool.put(big) for _ in range(60)]
    spool.sync()
    assert (tmp_path / spool_module.FILE_NAME).stat().st_size > spool_module.ROTATE_BYTES
    spool.ack(keys)
    assert (tmp_path / spool_module.FILE_NAME).stat().st_size == 0
    assert len(Spool(tmp_path)) == 0


def test_outcome_survives_kill_9_right_after_sync(tmp_path: Path) -> None:
    writer = textwrap.dedent(
        f"""
        import sys, time
        from dtf_common.pb.dtf.v1 import types_pb2
        from dtf_worker.spool import Spool
        spool = Spool({str(tmp_path)!r})
        outcome = types_pb2.TaskOutcome(task_id="t-9", lease_id="l-9", kind=types_pb2.TaskOutcome.FAILED, error="x")
        key = spool.put(outcome)
        spool.sync()
        print(key, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        key = proc.stdout.readline().strip()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    [(got_key, got)] = Spool(tmp_path).pending()
    assert got_key == key
    assert (got.task_id, got.lease_id, got.kind, got.error) == ("t-9", "l-9", types_pb2.TaskOutcome.FAILED, "x")


def test_an_outcome_too_large_for_one_message_goes_in_pieces_and_loses_nothing() -> None:
    big = outcome("t")
    big.results_json = '{"passed": 2000}'
    for i in range(2000):
        big.results.add(test_id=f"tests/test_mod.py::test_case_{i}", status="success", raw_data_json="x" * 100)
    assert split_outcome(big, limit=10_000_000) == [big]

    pieces = split_outcome(big, limit=20_000)

    assert all(p.ByteSize() <= 20_000 for p in pieces) and len(pieces) > 10
    assert [p.kind for p in pieces] == [types_pb2.TaskOutcome.PROGRESS] * (len(pieces) - 1) + [
        types_pb2.TaskOutcome.COMPLETED
    ]
    assert {(p.task_id, p.lease_id) for p in pieces} == {("t", "lease-t")}
    assert [r.test_id for p in pieces for r in p.results] == [f"tests/test_mod.py::test_case_{i}" for i in range(2000)]
    assert pieces[-1].results_json == '{"passed": 2000}' and not any(p.results_json for p in pieces[:-1])
    assert all(r.raw_data_json == "x" * 100 for p in pieces for r in p.results)  # nothing cut


def test_a_record_too_large_on_its_own_keeps_its_test_and_says_it_was_cut() -> None:
    big = outcome("t")
    big.results.add(test_id="t.py::huge", status="failure", raw_data_json="x" * 50_000)
    big.results.add(test_id="t.py::small", status="success", raw_data_json="{}")

    pieces = split_outcome(big, limit=10_000)

    records = [r for p in pieces for r in p.results]
    assert [(r.test_id, r.status) for r in records] == [("t.py::huge", "failure"), ("t.py::small", "success")]
    assert json.loads(records[0].raw_data_json) == {"truncated": True, "bytes": 50_000}


def test_batches_stay_under_the_message_limit() -> None:
    batch = [(str(i), outcome("t" + "x" * 100)) for i in range(10)]
    size = batch[0][1].ByteSize()
    assert len(fit_batch(batch, limit=size * 3)) == 3
    assert len(fit_batch(batch, limit=1)) == 1  # never empty
    assert len(fit_batch(batch)) == 10
