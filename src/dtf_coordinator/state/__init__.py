"""The deterministic state machine: `apply(index, command) -> outcome`.

It imports nothing of ours but `dtf_common`, reads no clock, random source or disk, so
every replica that applies the same log reaches the same state.
"""

from dtf_coordinator.state.machine import StateMachine, StateParams
from dtf_coordinator.state.model import TaskState, WorkerState
from dtf_coordinator.state.outcomes import (
    Assigned,
    Cancelled,
    Done,
    Effect,
    LeasesReleased,
    Outcome,
    Rejected,
    ReportAcks,
    ResultsRecorded,
    Submitted,
    TaskOutput,
    TaskTransition,
    WorkerChanged,
)

__all__ = [
    "Assigned",
    "Cancelled",
    "Done",
    "Effect",
    "LeasesReleased",
    "Outcome",
    "Rejected",
    "ReportAcks",
    "ResultsRecorded",
    "StateMachine",
    "StateParams",
    "Submitted",
    "TaskOutput",
    "TaskState",
    "TaskTransition",
    "WorkerChanged",
    "WorkerState",
]
