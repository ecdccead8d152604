"""The outcome spool: order, acknowledgement, restart, and kill -9 durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_worker.reporter import fit_batch
from dtf_worker.spool import Spool
from dtf_worker.task_runner import fit_outcome


def outcome(task_id: str, kind: int = types_pb2.TaskOutcome.COMPLETED) -> types_pb2.TaskOutcome:
    return types_pb2.TaskOutcome(task_id=task_id, lease_id=f"lease-{task_id}", worker_id="w1", kind=kind)


def test_pending_in_write_order_until_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    keys = [spool.put(outcome(f"t{i}")) for i in range(12)]
    assert [o.task_id for _, o in spool.pending()] == [f"t{i}" for i in range(12)]
    assert [k for k, _ in spool.pending(limit=3)] == keys[:3]
    spool.ack(keys[:10])
    assert [o.task_id for _, o in spool.pending()] == ["t10", "t11"]
    spool.ack(keys[:10])  # acknowledging twice is harmless
    assert len(spool) == 2


def test_reopened_spool_keeps_order_after_existing_entries(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.put(outcome("a"))
    first.put(outcome("b"))
    (tmp_path / ".tmp-00000000000000000099").write_bytes(b"torn")
    second = Spool(tmp_path)
    second.put(outcome("c"))
    assert [o.task_id for _, o in second.pending()] == ["a", "b", "c"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_unreadable_entry_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    bad = spool.put(outcome("a"))
    spool.put(outcome("b"))
    (tmp_path / f"{bad}.outcome").write_bytes(b"\xff\xff\xff")
    assert [o.task_id for _, o in spool.pending()] == ["b"]
    assert (tmp_path / f"{bad}.corrupt").exists()


def test_outcome_survives_kill_9_right_after_put(tmp_path: Path) -> None:
    writer = textwrap.dedent(
        f"""
        import sys, time
        from dtf_common.pb.dtf.v1 import types_pb2
        from dtf_worker.spool import Spool
        spool = Spool({str(tmp_path)!r})
        outcome = types_pb2.TaskOutcome(task_id="t-9", lease_id="l-9", kind=types_pb2.TaskOutcome.FAILED, error="x")
        print(spool.put(outcome), flush=True)
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


def test_oversized_outcomes_shed_raw_data_then_records() -> None:
    big = outcome("t")
    for i in range(50):
        big.results.add(test_id=f"test_{i}", raw_data_json="x" * 1000)
    assert fit_outcome(big, limit=1_000_000) is big and len(big.results) == 50
    fit_outcome(big, limit=10_000)
    assert all(r.raw_data_json == '{"truncated":true}' for r in big.results) and len(big.results) == 50
    fit_outcome(big, limit=500)
    assert big.ByteSize() <= 500 and len(big.results) < 50
    assert "results dropped" in big.error


def test_batches_stay_under_the_message_limit() -> None:
    batch = [(str(i), outcome("t" + "x" * 100)) for i in range(10)]
    size = batch[0][1].ByteSize()
    assert len(fit_batch(batch, limit=size * 3)) == 3
    assert len(fit_batch(batch, limit=1)) == 1  # never empty
    assert len(fit_batch(batch)) == 10


def test_shedding_records_lands_just_under_the_limit() -> None:
    big = outcome("t")
    for i in range(2000):
        big.results.add(test_id=f"tests/test_mod.py::test_case_{i}", status="success", metrics_json='{"d":0.1}')
    fit_outcome(big, limit=20_000)
    assert 19_000 < big.ByteSize() <= 20_000
