"""The error vocabulary: every code names one class, and every class survives the trip
through gRPC metadata and through a problem body as itself."""

from __future__ import annotations

import json

import grpc
import pytest

from dtf_common import errors
from dtf_common.grpc_errors import CODE_METADATA, FIELD_METADATA, error_from_rpc, status_of, trailers
from dtf_common.http_errors import error_from_problem
from dtf_coordinator.api.problems import error_response

RETRYABLE = {errors.QueueFull, errors.Unavailable, errors.NotLeader}
# Faults: the API answers a plain 500 whose detail keeps internals in the coordinator log.
FAULTS = {errors.DtfError, errors.ConfigError, errors.DamagedData}


def test_every_code_names_one_class_and_every_class_says_whether_to_retry() -> None:
    assert len(set(errors.REGISTRY.values())) == len(errors.REGISTRY)
    for code, cls in errors.REGISTRY.items():
        assert cls.code == code
        assert cls.retryable is (cls in RETRYABLE), cls
    # A NotLeader is an Unavailable: whoever retries on one retries on the other.
    assert issubclass(errors.NotLeader, errors.Unavailable)


def test_an_unknown_code_decodes_to_the_base_class_keeping_its_code() -> None:
    error = errors.error_from("too_many_cooks", "kitchen full", "chef", {"retry_after": 3})
    assert type(error) is errors.DtfError
    assert (error.code, error.message, error.field, error.context) == (
        "too_many_cooks",
        "kitchen full",
        "chef",
        {"retry_after": 3},
    )
    assert not error.retryable
    assert errors.DtfError.code == "internal"  # the class keeps its own


def sample(cls: type[errors.DtfError]) -> errors.DtfError:
    if cls is errors.NotLeader:
        return cls("not the leader", field="node_id", leader_hint="coordinator-2")
    return cls(f"{cls.__name__} happened", field="body[0].priority")


@pytest.mark.parametrize("cls", list(errors.REGISTRY.values()), ids=list(errors.REGISTRY))
def test_every_error_survives_grpc_metadata(cls: type[errors.DtfError]) -> None:
    sent = sample(cls)
    metadata = trailers(sent, leader_address="10.0.0.2:8081")
    got = error_from_rpc(status_of(sent), sent.message, metadata)
    assert type(got) is cls
    assert (got.code, got.message, got.field, got.retryable) == (sent.code, sent.message, sent.field, sent.retryable)
    if cls is errors.NotLeader:
        assert got.context == {"leader_hint": "coordinator-2", "leader_address": "10.0.0.2:8081"}
    else:
        assert got.context == {}


@pytest.mark.parametrize("cls", list(errors.REGISTRY.values()), ids=list(errors.REGISTRY))
def test_every_error_survives_a_problem_body(cls: type[errors.DtfError]) -> None:
    sent = sample(cls)
    response = error_response(sent)
    body = json.loads(bytes(response.body))
    got = error_from_problem(response.status_code, body)
    if cls in FAULTS:
        assert response.status_code == 500 and type(got) is errors.DtfError and got.code == "internal"
        return
    assert body["type"].endswith("/" + sent.code)
    assert type(got) is cls
    assert (got.code, got.message, got.field) == (sent.code, sent.message, sent.field)
    if cls is errors.NotLeader:
        assert got.context == {"leader_hint": "coordinator-2"}


def test_a_grpc_failure_without_a_code_is_read_from_its_status() -> None:
    down = error_from_rpc(grpc.StatusCode.UNAVAILABLE, "connection refused", None)
    assert type(down) is errors.Unavailable and down.retryable and down.context == {"grpc_code": "UNAVAILABLE"}
    assert type(error_from_rpc(grpc.StatusCode.DEADLINE_EXCEEDED, "", ())) is errors.Unavailable
    assert type(error_from_rpc(grpc.StatusCode.UNAUTHENTICATED, "no", ())) is errors.Unauthenticated
    assert type(error_from_rpc(grpc.StatusCode.FAILED_PRECONDITION, "x", ())) is errors.Conflict
    unknown = error_from_rpc(grpc.StatusCode.INTERNAL, "boom", ())
    assert type(unknown) is errors.DtfError and unknown.context == {"grpc_code": "INTERNAL"}


def test_the_code_wins_over_the_status() -> None:
    """A NotLeader and an Unavailable share UNAVAILABLE; only the code tells them apart."""
    metadata = ((CODE_METADATA, "not_leader"), ("dtf-leader-hint", "c1"))
    got = error_from_rpc(grpc.StatusCode.UNAVAILABLE, "not the leader", metadata)
    assert type(got) is errors.NotLeader and got.context == {"leader_hint": "c1"}


def test_metadata_values_that_grpc_cannot_carry_stay_behind() -> None:
    sent = errors.InvalidArgument("bad", field="body[0].naïve")
    assert dict(trailers(sent)) == {CODE_METADATA: "invalid_argument"}
    assert FIELD_METADATA not in dict(trailers(errors.NotFound("gone")))


def test_an_http_answer_that_is_no_problem_of_ours_is_read_from_its_status() -> None:
    proxy = error_from_problem(503, None, fallback="<html>bad gateway</html>")
    assert type(proxy) is errors.Unavailable and proxy.message == "<html>bad gateway</html>"
    head = error_from_problem(401, None, fallback="HEAD /api/blobs/x: HTTP 401", field="sha256")
    assert type(head) is errors.Unauthenticated and head.field == "sha256"
    assert type(error_from_problem(502, {"message": "no"})) is errors.DtfError
    # Plain HTTP errors the API names but the registry does not: the base class, code kept.
    wrong = error_from_problem(405, {"type": "https://dtf.dev/problems/method_not_allowed", "detail": "no"})
    assert type(wrong) is errors.DtfError and wrong.code == "method_not_allowed"
