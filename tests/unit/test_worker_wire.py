"""The WorkerService's messages and the service layer's records convert without loss.

Every message kind makes the round trip through its bytes: a request a worker encodes
reads back as the record it stood for, and an answer the coordinator gives reads back,
on the worker's side of the wire, as the record it came from.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.pb.dtf.v1 import worker_service_pb2 as pb
from dtf_coordinator.rpc import wire
from dtf_coordinator.service import to_log
from dtf_coordinator.service.worker_records import (
    Capabilities,
    Heartbeat,
    HeartbeatAck,
    LeaseGrant,
    OutcomeAck,
    Registered,
    WorkerRegistration,
)

M = TypeVar("M", bound=Message)
text = st.text(max_size=20)
ids = st.tuples(text, text).map(lambda pair: "-".join(pair))
int32 = st.integers(min_value=0, max_value=2**31 - 1)
int64 = st.integers(min_value=0, max_value=2**63 - 1)
seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False)
json_text = st.sampled_from(["", "{}", '{"cpu_percent":12.5}', '{"a":[1,2]}'])
names = st.lists(text, max_size=4).map(tuple)

capabilities = st.builds(
    Capabilities,
    hardware=names,
    gpu_count=int32,
    memory_mb=int64,
    labels=st.dictionaries(text, text, max_size=3),
    slots=int32,
    details_json=json_text,
)
registrations = st.builds(
    WorkerRegistration,
    worker_id=ids,
    name=text,
    hardware_id=text,
    capabilities=capabilities,
    metadata_json=json_text,
)
heartbeats = st.builds(Heartbeat, worker_id=ids, health_json=json_text, performance_json=json_text, lease_ids=names)
registration_answers = st.builds(
    Registered, worker_id=ids, heartbeat_interval_s=seconds, lease_ttl_s=seconds, coordinator_id=ids
)
heartbeat_acks = st.builds(HeartbeatAck, revoked_lease_ids=names, lease_ttl_s=seconds)
grants = st.builds(
    LeaseGrant,
    task_id=ids,
    lease_id=ids,
    type=text,
    parameters_json=json_text,
    attempt=int32,
    timeout_s=seconds,
    lease_expires_ms=int64,
    metadata_json=json_text,
    priority=st.integers(min_value=0, max_value=10),
)
acks = st.builds(OutcomeAck, task_id=ids, lease_id=ids, accepted=st.booleans(), detail=text)


def over_the_wire(message: M) -> M:
    """The message as the other side parses it."""
    return type(message).FromString(message.SerializeToString())


def read_back(cls: type[Any], message: Message) -> Any:
    """A record from the message fields of the same names (repeated fields as tuples)."""
    values = {}
    for f in fields(cls):
        value = getattr(message, f.name)
        values[f.name] = tuple(value) if f.type.startswith("tuple") else value
    return cls(**values)


@given(registrations)
def test_a_registration_reads_as_the_worker_sent_it(registration: WorkerRegistration) -> None:
    sent = pb.RegisterRequest(
        **{**asdict(registration), "capabilities": to_log.capabilities(registration.capabilities)}
    )
    assert wire.registration_from_wire(over_the_wire(sent)) == registration


@given(capabilities)
def test_capabilities_go_into_the_log_as_they_came(caps: Capabilities) -> None:
    logged = over_the_wire(to_log.capabilities(caps))
    assert isinstance(logged, types_pb2.Capabilities)
    assert wire.capabilities_from_wire(logged) == caps


@given(registration_answers)
def test_a_registration_answer_reads_back(answer: Registered) -> None:
    assert read_back(Registered, over_the_wire(wire.registered_to_wire(answer))) == answer


@given(heartbeats)
def test_a_heartbeat_reads_as_the_worker_sent_it(beat: Heartbeat) -> None:
    sent = pb.HeartbeatRequest(**asdict(beat))
    assert wire.heartbeat_from_wire(over_the_wire(sent)) == beat


@given(heartbeat_acks)
def test_a_heartbeat_answer_reads_back(ack: HeartbeatAck) -> None:
    assert read_back(HeartbeatAck, over_the_wire(wire.heartbeat_ack_to_wire(ack))) == ack


@given(st.lists(grants, max_size=4))
def test_leased_tasks_read_back_in_order(leased: list[LeaseGrant]) -> None:
    response = over_the_wire(wire.grants_to_wire(leased))
    assert [read_back(LeaseGrant, task) for task in response.tasks] == leased


@given(st.integers(min_value=0, max_value=2**64 - 1), st.lists(acks, max_size=4))
def test_report_acks_read_back_in_order(batch_id: int, answers: list[OutcomeAck]) -> None:
    response = over_the_wire(wire.acks_to_wire(batch_id, answers))
    assert response.batch_id == batch_id
    assert all(a.status in (pb.OutcomeAck.ACCEPTED, pb.OutcomeAck.STALE) for a in response.acks)
    read = [OutcomeAck(a.task_id, a.lease_id, a.status == pb.OutcomeAck.ACCEPTED, a.detail) for a in response.acks]
    assert read == answers


def test_an_empty_registration_is_all_defaults() -> None:
    """A worker that sends nothing registers with the records' defaults, which the state
    machine reads as one slot of cpu."""
    assert wire.registration_from_wire(pb.RegisterRequest()) == WorkerRegistration(worker_id="")
