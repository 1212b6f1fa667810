"""GET /v1/jobs/{id}/attempts and a dead letter's attempt history, through a live worker
delivering to a receiver that fails first: the JSON shape (as the OpenAPI document says),
paging, 404 for an unknown job, hostile query parameters refused with a 4xx."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from herald_tools.receiver import Answer, Receiver
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    Worker,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)
from tests.integration.worker.test_api import assert_error, openapi, schema_problems

UNKNOWN_ID = "0190a5b2-0000-7000-8000-000000000000"


@pytest.fixture()
async def rx() -> AsyncIterator[TrackingReceiver]:
    """?flaky: 503 (Retry-After: 0) on the first request of each job, then 200 "thanks";
    ?reject: 400 "no thanks"; ?binary: as ?flaky, with NUL bytes in each answer."""
    seen: collections.Counter[str] = collections.Counter()

    def script(receiver: Receiver, request: Any, body: bytes) -> Answer:
        if request.query.get("reject"):
            return Answer(400, body="no thanks")
        nul = "\x00\x01" if request.query.get("binary") else ""
        seen[request.headers.get("webhook-id", "")] += 1
        if seen[request.headers.get("webhook-id", "")] == 1:
            return Answer(503, headers={"Retry-After": "0"}, body=f"busy{nul}")
        return Answer(body=f"{nul}thanks")

    async with TrackingReceiver(script) as receiver:
        yield receiver


@pytest.fixture()
async def api(db_url: str, tmp_path: Path, rx: TrackingReceiver) -> AsyncIterator[Worker]:
    retry = {"retry": {"maxAttempts": 5, **FAST_RETRY}, "circuitBreaker": NO_BREAKER}
    manifests = write_manifests(
        tmp_path / "targets.yaml",
        [
            target_doc("flaky", rx.url + "?flaky=1", **retry),
            target_doc("reject", rx.url + "?reject=1", **retry),
            target_doc("binary", rx.url + "?binary=1", **retry),
        ],
    )
    async with worker(db_url, manifests) as w:
        yield w


async def test_attempts_of_a_retried_job(api: Worker) -> None:
    doc = await openapi(api)
    _, job = await api.post("/v1/jobs", json={"target": "flaky", "payload": {"a": 1}})
    await wait_state(api.queue, "succeeded", 1, target="flaky")
    path = f"/v1/jobs/{job['id']}/attempts"
    status, body = await api.get(path)
    assert status == 200, body
    assert not schema_problems(doc, "/v1/jobs/{id}/attempts", "GET", status, body)
    assert body["jobId"] == job["id"] and body["nextCursor"] is None
    first, second = body["items"]
    assert (first["attempt"], first["decision"], first["httpStatus"]) == (1, "retry", 503)
    assert (first["errorClass"], first["response"]) == ("transient", "busy")
    assert first["retryAfterSeconds"] == 0 and first["retryAt"] is not None
    assert (second["attempt"], second["decision"], second["httpStatus"]) == (2, "succeeded", 200)
    assert second["response"] == "thanks" and second["retryAt"] is None
    for a in (first, second):
        assert a["worker"] and a["target"] == "default/flaky"
        assert a["durationSeconds"] >= 0 and a["startedAt"] and a["recordedAt"]

    # Paging: one at a time, with the cursor of the page before.
    status, page = await api.get(path, params={"limit": "1"})
    assert status == 200 and [a["attempt"] for a in page["items"]] == [1]
    status, rest = await api.get(path, params={"limit": "1", "cursor": page["nextCursor"]})
    assert status == 200 and [a["attempt"] for a in rest["items"]] == [2]
    assert rest["nextCursor"] is None, "the last page"

    status, body = await api.get(f"/v1/jobs/{UNKNOWN_ID}/attempts")
    assert_error(status, body, 404, "id", "unknown job")
    assert not schema_problems(doc, "/v1/jobs/{id}/attempts", "GET", status, body)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"limit": "9" * 400}, "limit"),
        ({"cursor": "x"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "-1"}, "cursor"),
        ({"cursor": "9" * 19}, "cursor"),
        ({"cursor": "1" * 5000}, "cursor"),
    ],
)
async def test_hostile_query_parameters_are_refused(
    api: Worker, params: dict[str, str], field: str
) -> None:
    _, job = await api.post("/v1/jobs", json={"target": "reject", "payload": 1})
    status, body = await api.get(f"/v1/jobs/{job['id']}/attempts", params=params)
    assert_error(status, body, 400, field, f"{params}")


async def test_bad_ids_in_the_path(api: Worker) -> None:
    for bad in ("not-a-uuid", "0" * 300, "%00"):
        status, body = await api.get(f"/v1/jobs/{bad}/attempts")
        assert 400 <= status < 500 and "error" in body, (bad, status, body)


async def test_a_dead_letter_shows_its_attempts(api: Worker) -> None:
    doc = await openapi(api)
    _, job = await api.post("/v1/jobs", json={"target": "reject", "payload": {"r": 1}})
    await wait_state(api.queue, "dead", 1, target="reject")
    _, page = await api.get("/v1/dead-letters")
    [entry] = page["items"]
    assert "attemptHistory" not in entry, "pages stay small"
    status, body = await api.get(f"/v1/dead-letters/{entry['id']}")
    assert status == 200, body
    assert not schema_problems(doc, "/v1/dead-letters/{id}", "GET", status, body)
    [attempt] = body["attemptHistory"]["items"]
    assert body["attemptHistory"]["jobId"] == job["id"]
    assert (attempt["decision"], attempt["httpStatus"], attempt["errorClass"]) == (
        "dead",
        400,
        "permanent",
    )
    assert attempt["response"] == "no thanks"


async def test_answers_with_nul_bytes_are_recorded(api: Worker) -> None:
    """A binary answer (NUL bytes, which PostgreSQL's text refuses) is kept as its printable
    part; the settle batch is never refused, so the job is settled once and the worker goes
    on delivering."""
    _, job = await api.post("/v1/jobs", json={"target": "binary", "payload": {"a": 1}})
    await wait_state(api.queue, "succeeded", 1, target="binary")
    status, body = await api.get(f"/v1/jobs/{job['id']}/attempts")
    assert status == 200, body
    first, second = body["items"]
    assert (first["decision"], first["httpStatus"]) == ("retry", 503)
    assert first["response"] == "busy\ufffd\x01" and "busy\ufffd" in first["message"]
    assert (second["decision"], second["response"]) == ("succeeded", "\ufffd\x01thanks")
    status, _ = await api.post("/v1/jobs", json={"target": "flaky", "payload": {"b": 2}})
    assert status == 201
    await wait_state(api.queue, "succeeded", 1, target="flaky")
