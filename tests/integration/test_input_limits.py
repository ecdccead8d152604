"""Input the coordinator accepts can always be read back.

A real API over a real coordinator (and its WorkerService over a real gRPC socket):
JSON nested too deep, over its size, holding a lone surrogate, NaN or an integer out of
range is refused at the door (a 422 naming the field, or INVALID_ARGUMENT naming it),
and every listing still answers 200 afterwards, with the earlier valid input intact.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from dtf_common.grpc_errors import FIELD_METADATA
from dtf_common.json_limits import KiB, MiB
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.pb.dtf.v1 import worker_service_pb2 as pb
from dtf_common.pb.dtf.v1 import worker_service_pb2_grpc as pb_grpc
from dtf_common.schemas import MAX_JSON_DEPTH, MAX_METADATA_BYTES, MAX_PARAMETERS_BYTES
from dtf_coordinator.auth import create_token
from dtf_coordinator.rpc.worker_service import add_worker_service

if TYPE_CHECKING:
    from conftest import ApiHarness

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
CMD = {"type": "command", "parameters": {"command": ["true"]}}
Kind = types_pb2.TaskOutcome


def nested(levels: int) -> str:
    """A JSON object `levels` objects deep (the outermost one counts), as text: json.dumps
    itself gives up near 1000 levels."""
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


def refused(response: httpx.Response, field: str) -> dict[str, Any]:
    """Assert a 422 validation problem naming `field`; return its body."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == "https://dtf.dev/problems/validation_error"
    assert body["field"] == field, body
    assert body["detail"].startswith(field), body
    return body


async def post_raw(api: ApiHarness, body: str) -> httpx.Response:
    """POST the body's bytes as they are: httpx's `json=` would re-encode (and refuse) them."""
    headers = api.auth() | {"content-type": "application/json"}
    return await api.client.post("/api/tasks", content=body.encode("utf-8", "surrogatepass"), headers=headers)


async def assert_tasks_readable(api: ApiHarness, expected: list[str]) -> None:
    """Every page that includes the tasks answers 200 and lists exactly the valid ones."""
    viewer = api.auth("viewer")
    page = await api.client.get("/api/tasks", headers=viewer)
    assert page.status_code == 200, page.text
    assert sorted(t["task_id"] for t in page.json()["data"]) == sorted(expected)
    for task_id in expected:
        assert (await api.client.get(f"/api/tasks/{task_id}", headers=viewer)).status_code == 200
    assert (await api.client.get("/api/dashboard", headers=viewer)).status_code == 200


# ---------------------------------------------------------------- REST: parameters and metadata


@pytest.mark.parametrize(
    ("levels", "field"),
    [
        (MAX_JSON_DEPTH + 1, "body[0].parameters"),
        (300, "body[0].parameters"),
        # Past about 1000 levels the JSON parser itself gives up: no field can be named.
        (1000, "body"),
        (100_000, "body"),
    ],
)
async def test_deeply_nested_parameters_are_refused(api: ApiHarness, levels: int, field: str) -> None:
    valid = await api.submit(CMD)
    response = await post_raw(api, '{"type": "command", "parameters": ' + nested(levels) + "}")
    body = refused(response, field)
    assert "deep" in body["detail"]
    assert body["errors"][0]["type"] == "json_too_deep"
    await assert_tasks_readable(api, valid)


@pytest.mark.parametrize(
    ("raw", "field", "where"),
    [
        ('{"type": "command", "parameters": {"x": "\\ud800"}}', "body[0].parameters", "parameters.x"),
        ('{"type": "command", "parameters": {"\\ud800": 1}}', "body[0].parameters", "a key of parameters"),
        ('{"type": "command", "parameters": {"x": ["ok", "\\udfff"]}}', "body[0].parameters", "parameters.x[1]"),
        ('{"type": "command", "metadata": {"x": "\\ud800"}}', "body[0].metadata", "metadata.x"),
        ('{"type": "command", "requirements": {"labels": {"gpu": "\\ud800"}}}', "body[0].requirements.labels.gpu", ""),
        (
            '{"type": "command", "requirements": {"exclude_workers": ["\\ud800"]}}',
            "body[0].requirements.exclude_workers[0]",
            "",
        ),
    ],
)
async def test_a_lone_surrogate_is_refused(api: ApiHarness, raw: str, field: str, where: str) -> None:
    valid = await api.submit(CMD)
    body = refused(await post_raw(api, raw), field)
    assert "Unicode" in body["detail"] or "unicode" in body["detail"]
    assert where in body["detail"]
    await assert_tasks_readable(api, valid)


async def test_a_lone_surrogate_as_raw_utf8_bytes_is_refused(api: ApiHarness) -> None:
    """The surrogate's own (invalid) UTF-8 bytes rather than its escape: the JSON parser
    decodes them into the same unencodable string."""
    valid = await api.submit(CMD)
    body = b'{"type": "command", "parameters": {"x": "\xed\xa0\x80"}}'
    headers = api.auth() | {"content-type": "application/json"}
    response = await api.client.post("/api/tasks", content=body, headers=headers)
    assert "Unicode" in refused(response, "body[0].parameters")["detail"]
    await assert_tasks_readable(api, valid)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"type": "command", "parameters": {"x": NaN}}', "body[0].parameters"),
        ('{"type": "command", "parameters": {"x": [Infinity]}}', "body[0].parameters"),
        ('{"type": "command", "parameters": {"x": 1e999}}', "body[0].parameters"),
        ('{"type": "command", "metadata": {"x": -Infinity}}', "body[0].metadata"),
    ],
)
async def test_a_number_that_is_not_finite_is_refused(api: ApiHarness, raw: str, field: str) -> None:
    valid = await api.submit(CMD)
    body = refused(await post_raw(api, raw), field)
    assert "not a finite number" in body["detail"]
    await assert_tasks_readable(api, valid)


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({"requirements": {"min_memory_mb": 2**63}}, "body[0].requirements.min_memory_mb"),
        ({"requirements": {"min_memory_mb": 2**40 + 1}}, "body[0].requirements.min_memory_mb"),
        ({"parameters": {"n": 2**63}}, "body[0].parameters"),
        ({"parameters": {"n": -(2**63) - 1}}, "body[0].parameters"),
    ],
)
async def test_an_integer_out_of_range_is_refused(api: ApiHarness, task: dict[str, Any], field: str) -> None:
    valid = await api.submit(CMD)
    response = await api.client.post("/api/tasks", json={"type": "command"} | task, headers=api.auth())
    refused(response, field)
    await assert_tasks_readable(api, valid)


@pytest.mark.parametrize(("name", "limit"), [("parameters", MAX_PARAMETERS_BYTES), ("metadata", MAX_METADATA_BYTES)])
async def test_json_over_its_size_limit_is_refused(api_factory: Any, name: str, limit: int) -> None:
    api = await api_factory(max_body_bytes=4 * MiB)
    valid = await api.submit(CMD)
    over = {"x": "y" * (limit - len('{"x":""}') + 1)}
    assert len(json.dumps(over, separators=(",", ":"))) == limit + 1
    response = await api.client.post("/api/tasks", json={"type": "command", name: over}, headers=api.auth())
    body = refused(response, f"body[0].{name}")
    assert body["errors"][0]["type"] == "json_too_large"
    await assert_tasks_readable(api, valid)


async def test_a_task_at_the_limits_is_accepted_and_reads_back_identical(api_factory: Any) -> None:
    api = await api_factory(max_body_bytes=4 * MiB)
    deep: dict[str, Any] = {}
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = {"a": deep}
    parameters: dict[str, Any] = {
        "deep": deep["a"],  # one level less: "deep" sits inside the parameters object itself
        "ints": [2**63 - 1, -(2**63), 0],
        "floats": [1.5, -0.0, 1e308],
        "text": "caf\u00e9 \U0001f600 \u4e2d",  # a surrogate pair in JSON: valid
        "\U0001f511": True,
    }
    filler = MAX_PARAMETERS_BYTES - len(json.dumps(parameters | {"pad": ""}, separators=(",", ":")))
    parameters["pad"] = "p" * filler
    assert len(json.dumps(parameters, separators=(",", ":"))) == MAX_PARAMETERS_BYTES
    metadata = {"branch": "main", "pad": ""}
    metadata["pad"] = "m" * (MAX_METADATA_BYTES - len(json.dumps(metadata, separators=(",", ":"))))
    task = {
        "type": "command",
        "parameters": parameters,
        "metadata": metadata,
        "requirements": {"min_memory_mb": 2**40, "labels": {"zone": "\u00e9u-west"}},
    }
    (task_id,) = await api.submit(task)

    read = (await api.client.get(f"/api/tasks/{task_id}", headers=api.auth("viewer"))).json()
    assert read["parameters"] == parameters
    assert {k: v for k, v in read["metadata"].items() if k != "dtf"} == metadata
    assert read["metadata"]["dtf"]["requirements"]["min_memory_mb"] == 2**40
    await assert_tasks_readable(api, [task_id])


async def test_a_lone_surrogate_in_a_durations_query_is_refused(api: ApiHarness) -> None:
    headers = api.auth("viewer") | {"content-type": "application/json"}
    body = b'{"test_ids": ["tests/test_x.py::test_ok", "\\ud800"]}'
    refused(await api.client.post("/api/results/durations", content=body, headers=headers), "body.test_ids[1]")


@pytest.mark.parametrize("path", ["/api/tasks", "/api/results", "/api/workers"])
async def test_a_page_offset_past_2_to_the_53_is_refused(api: ApiHarness, path: str) -> None:
    response = await api.client.get(path, params={"offset": 2**63}, headers=api.auth("viewer"))
    refused(response, "offset")


async def test_the_openapi_schema_documents_the_limits(api: ApiHarness) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    task_create = spec["components"]["schemas"]["TaskCreate"]["properties"]
    assert task_create["parameters"]["x-max-depth"] == MAX_JSON_DEPTH
    assert task_create["parameters"]["x-max-bytes"] == MAX_PARAMETERS_BYTES
    assert task_create["metadata"]["x-max-bytes"] == MAX_METADATA_BYTES
    requirements = spec["components"]["schemas"]["Requirements"]["properties"]
    assert requirements["min_memory_mb"]["maximum"] == 2**40


# ---------------------------------------------------------------- gRPC: worker-supplied JSON


@pytest.fixture
async def worker_stub(api: ApiHarness) -> AsyncIterator[tuple[pb_grpc.WorkerServiceStub, list[tuple[str, str]]]]:
    """The WorkerService of `api`'s coordinator on a real socket, a stub for it, and the
    credential of worker w1 (which registers w1 as a restarted worker would; other ids
    enrol with a join token, `join_token`)."""
    server = grpc.aio.server()
    add_worker_service(server, api.coordinator, api.ctx.secret)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            own = create_token(api.ctx.secret, "worker", expires_in=0, worker_id="w1")
            yield pb_grpc.WorkerServiceStub(channel), [("authorization", f"Bearer {own}")]
    finally:
        await server.stop(0)


def registration(worker_id: str, *, metadata_json: str = "", details_json: str = "") -> pb.RegisterRequest:
    caps = types_pb2.Capabilities(hardware=["cpu"], memory_mb=4096, slots=1, details_json=details_json)
    return pb.RegisterRequest(
        worker_id=worker_id, name=worker_id, hardware_id="cpu-test", capabilities=caps, metadata_json=metadata_json
    )


async def invalid_argument(call: Any, field: str) -> str:
    """Await a gRPC call that must fail with INVALID_ARGUMENT naming `field`; its details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert dict(error.trailing_metadata() or ()).get(FIELD_METADATA) == field
    details = error.details() or ""
    assert field in details
    return details


async def assert_workers_readable(api: ApiHarness, expected: list[str]) -> None:
    viewer = api.auth("viewer")
    page = await api.client.get("/api/workers", headers=viewer)
    assert page.status_code == 200, page.text
    assert sorted(w["worker_id"] for w in page.json()["data"]) == sorted(expected)
    for worker_id in expected:
        assert (await api.client.get(f"/api/workers/{worker_id}", headers=viewer)).status_code == 200
    assert (await api.client.get("/api/status", headers=viewer)).status_code == 200


MALFORMED_OBJECTS = {
    "not JSON": "{not json",
    "nested 1000 deep": nested(1000),
    "nested 100000 deep": "[" * 100_000 + "]" * 100_000,
    "not an object": "[1, 2]",
    "a lone surrogate": '{"x": "\\ud800"}',
    "NaN": '{"x": NaN}',
    "out of range": '{"x": 99999999999999999999}',
    "over 64 KiB": json.dumps({"x": "y" * (64 * KiB)}),
}


@pytest.mark.parametrize("text", MALFORMED_OBJECTS.values(), ids=MALFORMED_OBJECTS.keys())
async def test_register_with_malformed_metadata_json_is_refused(
    api: ApiHarness, worker_stub: tuple[pb_grpc.WorkerServiceStub, list[tuple[str, str]]], text: str
) -> None:
    stub, _ = worker_stub
    md = [("authorization", f"Bearer {api.tokens['worker']}")]  # a join token: enrols any new id
    await stub.Register(registration("good", metadata_json='{"pool": "a"}'), metadata=md)
    await invalid_argument(stub.Register(registration("bad", metadata_json=text), metadata=md), "metadata_json")
    await invalid_argument(
        stub.Register(registration("bad", details_json=text), metadata=md), "capabilities.details_json"
    )
    await assert_workers_readable(api, ["good"])


@pytest.mark.parametrize("field", ["health_json", "performance_json"])
async def test_heartbeat_with_malformed_json_is_refused(
    api: ApiHarness, worker_stub: tuple[pb_grpc.WorkerServiceStub, list[tuple[str, str]]], field: str
) -> None:
    stub, md = worker_stub
    await stub.Register(registration("w1"), metadata=md)
    for text in ("{not json", nested(1000), '{"cpu_percent": NaN}', '"critical"'):
        beat = pb.HeartbeatRequest(worker_id="w1", **{field: text})
        await invalid_argument(stub.Heartbeat(beat, metadata=md), field)
    await stub.Heartbeat(pb.HeartbeatRequest(worker_id="w1", health_json='{"status": "healthy"}'), metadata=md)
    await assert_workers_readable(api, ["w1"])


async def leased_task(api: ApiHarness, stub: pb_grpc.WorkerServiceStub, md: list[tuple[str, str]]) -> pb.LeasedTask:
    await api.submit(CMD)
    await stub.Register(registration("w1"), metadata=md)
    leased = await stub.LeaseTasks(pb.LeaseRequest(worker_id="w1", max_tasks=1, wait_ms=5000), metadata=md)
    (task,) = leased.tasks
    return task


def record(task_id: str, **json_fields: str) -> types_pb2.ResultRecord:
    return types_pb2.ResultRecord(
        result_id=str(uuid.uuid4()),
        task_id=task_id,
        worker_id="w1",
        test_id="tests/test_x.py::test_x",
        timestamp_ms=int(time.time() * 1000),
        status="success",
        execution_time=0.1,
        **json_fields,
    )


@pytest.mark.parametrize(
    ("outcome_fields", "field"),
    [
        ({"results_json": "{not json"}, "outcomes[0].results_json"),
        ({"results_json": '{"exit_code": NaN}'}, "outcomes[0].results_json"),
        ({"results_json": nested(300)}, "outcomes[0].results_json"),
        ({"record": {"metrics_json": '{"latency": Infinity}'}}, "outcomes[0].results[1].metrics_json"),
        ({"record": {"raw_data_json": '{"longrepr": "\\udc80"}'}}, "outcomes[0].results[1].raw_data_json"),
        ({"record": {"environment_json": "[]"}}, "outcomes[0].results[1].environment_json"),
    ],
)
async def test_report_with_malformed_json_is_refused_whole(
    api: ApiHarness,
    worker_stub: tuple[pb_grpc.WorkerServiceStub, list[tuple[str, str]]],
    outcome_fields: dict[str, Any],
    field: str,
) -> None:
    stub, md = worker_stub
    task = await leased_task(api, stub, md)
    good = record(task.task_id, metrics_json='{"latency": 1.5}')
    bad_record = record(task.task_id, **outcome_fields.get("record", {}))
    done = Kind(
        task_id=task.task_id,
        lease_id=task.lease_id,
        kind=Kind.COMPLETED,
        results_json=outcome_fields.get("results_json", '{"exit_code": 0}'),
        results=[good, bad_record],
    )
    report = pb.ReportRequest(worker_id="w1", batch_id=1, outcomes=[done])
    await invalid_argument(stub.ReportResults(report, metadata=md), field)

    # Nothing of the refused report was applied: the task still runs, its results are not stored.
    await api.sync.flush()
    viewer = api.auth("viewer")
    read = await api.client.get(f"/api/tasks/{task.task_id}", headers=viewer)
    assert read.status_code == 200, read.text
    assert read.json()["status"] == "assigned"
    results = await api.client.get("/api/results", headers=viewer)
    assert results.status_code == 200, results.text
    assert results.json()["count"] == 0
    await assert_tasks_readable(api, [task.task_id])

    # The same report made well formed is accepted and reads back.
    fixed = Kind(
        task_id=task.task_id,
        lease_id=task.lease_id,
        kind=Kind.COMPLETED,
        results_json='{"exit_code": 0}',
        results=[good, record(task.task_id)],
    )
    report = pb.ReportRequest(worker_id="w1", batch_id=2, outcomes=[fixed])
    (ack,) = (await stub.ReportResults(report, metadata=md)).acks
    assert ack.status == pb.OutcomeAck.ACCEPTED
    await api.sync.flush()
    results = await api.client.get("/api/results", headers=viewer)
    assert results.status_code == 200, results.text
    assert results.json()["count"] == 2


async def test_a_streamed_report_with_malformed_json_ends_the_stream(
    api: ApiHarness, worker_stub: tuple[pb_grpc.WorkerServiceStub, list[tuple[str, str]]]
) -> None:
    stub, md = worker_stub
    task = await leased_task(api, stub, md)
    done = Kind(task_id=task.task_id, lease_id=task.lease_id, kind=Kind.COMPLETED, results_json='{"x": NaN}')
    stream = stub.StreamResults(iter([pb.ReportRequest(worker_id="w1", batch_id=1, outcomes=[done])]), metadata=md)

    async def drain() -> None:
        async for _ in stream:
            pass

    await invalid_argument(drain(), "outcomes[0].results_json")
    await assert_tasks_readable(api, [task.task_id])
