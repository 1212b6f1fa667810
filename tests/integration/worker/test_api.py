"""The worker's HTTP API, every endpoint: happy paths, the rejection of bad input (a 4xx
JSON error naming the field, for every field), fuzzing (nothing ever answers 500), the
bearer token, the probes, and the OpenAPI document (valid, in step with the routes, and
describing what the server really answers)."""

from __future__ import annotations

import io
import json
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from herald_queue.settings import QueueSettings
from herald_tools.receiver import Answer, Receiver
from herald_worker.api.app import PUBLIC
from herald_worker.api.routes import ROUTES
from tests.helpers import sql_value, wait_until
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    Worker,
    states,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

MAX_PAYLOAD = 1024
TOKEN = "s3cret-api-token"
UNKNOWN_ID = "0190a5b2-0000-7000-8000-000000000000"


@pytest.fixture()
async def rx() -> AsyncIterator[TrackingReceiver]:
    def script(receiver: Receiver, request: Any, body: bytes) -> Answer:
        if request.query.get("reject"):
            return Answer(400, body="no thanks")
        return Answer()

    async with TrackingReceiver(script) as receiver:
        yield receiver


def api_manifests(tmp_path: Path, url: str) -> Path:
    retry = {"retry": {"maxAttempts": 5, **FAST_RETRY}, "circuitBreaker": NO_BREAKER}
    return write_manifests(
        tmp_path / "targets.yaml",
        [
            target_doc("hook", url, **retry),
            target_doc("held", url, paused=True, **retry),  # its jobs stay queued
            target_doc("reject", url + "?reject=1", **retry),  # its jobs die (400)
            target_doc("elsewhere", url, namespace="team-b", **retry),
        ],
    )


@pytest.fixture()
async def api(db_url: str, tmp_path: Path, rx: TrackingReceiver) -> AsyncIterator[Worker]:
    async with worker(
        db_url,
        api_manifests(tmp_path, rx.url),
        queue_settings=QueueSettings(max_payload_bytes=MAX_PAYLOAD),
    ) as w:
        yield w


def assert_error(
    status: int, body: Any, expected_status: int | tuple[int, int], field: str | None, what: str
) -> None:
    low, high = (
        (expected_status, expected_status) if isinstance(expected_status, int) else expected_status
    )
    assert low <= status <= high, f"{what}: got {status} {body}"
    assert isinstance(body, dict) and "error" in body, f"{what}: not a JSON error: {body!r}"
    error = body["error"]
    assert error["status"] == status, f"{what}: {body}"
    assert isinstance(error["message"], str) and error["message"], f"{what}: {body}"
    if field is not None:
        assert error["field"] == field, f"{what}: field {error['field']!r}, not {field!r}"


# -- jobs ---------------------------------------------------------------------------------


async def test_submit_one_many_and_duplicates(api: Worker, rx: TrackingReceiver) -> None:
    status, one = await api.post("/v1/jobs", json={"target": "hook", "payload": {"a": 1}})
    assert status == 201, one
    assert one["target"] == "default/hook"
    assert one["state"] == "queued"
    assert one["duplicate"] is False
    uuid.UUID(one["id"])

    status, many = await api.post(
        "/v1/jobs",
        json=[
            {"target": "held", "payload": i, "priority": p}
            for i, p in enumerate(["high", "medium", "low"])
        ],
    )
    assert status == 201, many
    assert [j["state"] for j in many["jobs"]] == ["queued"] * 3
    assert len({j["id"] for j in many["jobs"]}) == 3

    keyed = {"target": "held", "payload": {"k": 1}, "idempotencyKey": "order-42"}
    status, first = await api.post("/v1/jobs", json=keyed)
    assert (status, first["duplicate"]) == (201, False), first
    status, again = await api.post("/v1/jobs", json={**keyed, "payload": {"k": 1}})
    assert status == 200, again
    assert (again["id"], again["duplicate"]) == (first["id"], True)
    # The key again with other parameters: refused (Stripe's 409), in a list too.
    for other in ({"payload": {"k": 2}}, {"priority": "high"}, {"runAt": "2030-01-01T00:00:00Z"}):
        status, refused = await api.post("/v1/jobs", json={**keyed, **other})
        assert_error(status, refused, 409, "idempotencyKey", f"reused key, {other}")
        assert "different parameters" in refused["error"]["message"]
        assert first["id"] in refused["error"]["message"]
    status, refused = await api.post(
        "/v1/jobs", json=[{"target": "held", "payload": "new"}, {**keyed, "payload": 2}]
    )
    assert_error(status, refused, 409, "[1].idempotencyKey", "reused key in a list")
    assert (
        await sql_value(
            api.queue, "SELECT count(*) FROM herald.jobs WHERE payload::text = '\"new\"'"
        )
        == 0
    )
    status, batch = await api.post("/v1/jobs", json=[keyed, keyed])
    assert status == 200, "every job of the list was a duplicate"
    assert [j["id"] for j in batch["jobs"]] == [first["id"]] * 2
    status, mixed = await api.post("/v1/jobs", json=[keyed, {"target": "held", "payload": 0}])
    assert status == 201
    assert [j["duplicate"] for j in mixed["jobs"]] == [True, False]

    status, namespaced = await api.post(
        "/v1/jobs",
        json={
            "target": "team-b/elsewhere",
            "payload": 1,
            "orderingKey": "o",
            "runAt": "2030-01-01T00:00:00Z",
        },
    )
    assert status == 201, namespaced
    assert namespaced["target"] == "team-b/elsewhere"
    status, bare = await api.post("/v1/jobs", json={"target": "elsewhere", "payload": 1})
    assert (status, bare["target"]) == (201, "team-b/elsewhere"), "a unique name resolves"

    await wait_until(lambda: one["id"] in rx.delivered_ids())


async def test_get_job_from_tracker_and_from_database(api: Worker) -> None:
    _, delivered = await api.post("/v1/jobs", json={"target": "hook", "payload": {"d": 1}})
    await wait_state(api.queue, "succeeded", 1, target="hook")
    status, body = await api.get(f"/v1/jobs/{delivered['id']}")
    assert status == 200, body
    assert (body["source"], body["state"], body["id"]) == ("tracker", "succeeded", delivered["id"])
    assert body["target"] == "default/hook"

    _, waiting = await api.post(
        "/v1/jobs",
        json={
            "target": "held",
            "payload": {"w": [1, 2]},
            "priority": "low",
            "idempotencyKey": "ik",
            "orderingKey": "ok",
        },
    )
    status, body = await api.get(f"/v1/jobs/{waiting['id']}")
    assert status == 200, body
    assert body["source"] == "database", "a queued job may be taken by another replica"
    assert body["state"] == "queued"
    assert body["payload"] == {"w": [1, 2]}
    assert (body["priority"], body["idempotencyKey"], body["orderingKey"]) == ("low", "ik", "ok")
    assert body["attempts"] == 0


async def test_list_jobs_filters_and_paging(api: Worker) -> None:
    ids = []
    for i, priority in enumerate(["high", "low", "high", "medium", "high"]):
        _, j = await api.post(
            "/v1/jobs", json={"target": "held", "payload": i, "priority": priority}
        )
        ids.append(j["id"])
    _, other = await api.post("/v1/jobs", json={"target": "hook", "payload": "x"})
    await wait_state(api.queue, "succeeded", 1, target="hook")

    status, page = await api.get("/v1/jobs", params={"target": "held"})
    assert status == 200
    assert [j["id"] for j in page["items"]] == ids[::-1], "newest first"
    assert "payload" not in page["items"][0]

    status, high = await api.get("/v1/jobs", params={"target": "held", "priority": "high"})
    assert [j["id"] for j in high["items"]] == [ids[4], ids[2], ids[0]]

    status, done = await api.get("/v1/jobs", params={"state": "succeeded"})
    assert [j["id"] for j in done["items"]] == [other["id"]]
    status, queued = await api.get("/v1/jobs", params={"state": "queued", "limit": "1000"})
    assert {j["id"] for j in queued["items"]} == set(ids)

    seen: list[str] = []
    params: dict[str, str] = {"target": "default/held", "limit": "2"}
    while True:
        status, page = await api.get("/v1/jobs", params=params)
        assert status == 200
        seen += [j["id"] for j in page["items"]]
        assert len(page["items"]) == 2 if page["nextCursor"] else len(page["items"]) <= 2
        if page["nextCursor"] is None:
            break
        params["cursor"] = page["nextCursor"]
    assert seen == ids[::-1], "pages cover everything once"


async def test_cancel(api: Worker) -> None:
    _, j = await api.post("/v1/jobs", json={"target": "held", "payload": {"c": 1}})
    status, body = await api.delete(f"/v1/jobs/{j['id']}")
    assert status == 200, body
    assert body == {"id": j["id"], "state": "dead", "deadReason": "cancelled"}
    status, again = await api.delete(f"/v1/jobs/{j['id']}")
    assert_error(status, again, 409, "id", "cancel twice")
    status, shown = await api.get(f"/v1/jobs/{j['id']}")
    assert (shown["state"], shown["deadReason"]) == ("dead", "cancelled")
    status, letters = await api.get("/v1/dead-letters", params={"target": "held"})
    [letter] = letters["items"]
    assert (letter["jobId"], letter["reason"]) == (j["id"], "cancelled")


async def test_queue_stats_and_targets(api: Worker) -> None:
    await api.post(
        "/v1/jobs", json=[{"target": "held", "payload": i, "priority": "high"} for i in range(3)]
    )
    await api.post("/v1/jobs", json={"target": "hook", "payload": 0})
    await api.post("/v1/jobs", json={"target": "reject", "payload": 0})
    await wait_state(api.queue, "succeeded", 1, target="hook")
    await wait_state(api.queue, "dead", 1, target="reject")

    status, stats = await api.get("/v1/queue/stats")
    assert status == 200, stats
    for key in ("queued", "running", "retrying", "succeeded", "dead"):
        assert isinstance(stats[key], int), key
    assert (stats["queued"], stats["succeeded"], stats["dead"], stats["running"]) == (3, 1, 1, 0)
    assert stats["byPriority"]["high"]["queued"] == 3
    assert stats["byTarget"]["default/held"]["queued"] == 3
    assert stats["byTarget"]["default/hook"]["succeeded"] == 1

    status, targets = await api.get("/v1/targets")
    assert status == 200
    by_ref = {f"{t['namespace']}/{t['name']}": t for t in targets["items"]}
    assert set(by_ref) == {"default/hook", "default/held", "default/reject", "team-b/elsewhere"}
    assert by_ref["default/held"]["paused"] is True
    assert by_ref["default/hook"]["circuit"]["state"] == "closed"
    assert by_ref["default/hook"]["delivered"] == 1
    assert by_ref["default/reject"]["lastErrorClass"] == "permanent"


# -- dead letters -------------------------------------------------------------------------


async def test_dead_letter_endpoints(api: Worker, rx: TrackingReceiver) -> None:
    _, many = await api.post(
        "/v1/jobs", json=[{"target": "reject", "payload": {"r": i}} for i in range(5)]
    )
    rejected = [j["id"] for j in many["jobs"]]
    await wait_state(api.queue, "dead", 5, target="reject")
    _, cancelled = await api.post("/v1/jobs", json={"target": "held", "payload": {"c": 1}})
    await api.delete(f"/v1/jobs/{cancelled['id']}")

    # list: filters and cursor pages
    status, everything = await api.get("/v1/dead-letters")
    assert status == 200
    assert len(everything["items"]) == 6
    status, permanent = await api.get(
        "/v1/dead-letters",
        params={
            "target": "default/reject",
            "errorClass": "permanent",
            "replayed": "false",
            "failedAfter": "2000-01-01T00:00:00Z",
            "failedBefore": "2100-01-01T00:00:00Z",
        },
    )
    assert sorted(i["jobId"] for i in permanent["items"]) == sorted(rejected)
    seen: list[str] = []
    params = {"target": "reject", "limit": "2"}
    while True:
        status, page = await api.get("/v1/dead-letters", params=params)
        assert status == 200, page
        seen += [i["id"] for i in page["items"]]
        if page["nextCursor"] is None:
            break
        params["cursor"] = page["nextCursor"]
    assert len(seen) == len(set(seen)) == 5

    # one, with payload and target configuration
    entry_id = permanent["items"][0]["id"]
    status, entry = await api.get(f"/v1/dead-letters/{entry_id}")
    assert status == 200
    assert entry["payload"] in [{"r": i} for i in range(5)]
    assert entry["targetConfig"]["type"] == "webhook"
    assert entry["httpStatus"] == 400

    # stats
    status, stats = await api.get("/v1/dead-letters/stats")
    assert status == 200
    assert (stats["total"], stats["waiting"], stats["replayed"]) == (6, 6, 0)
    assert stats["byTarget"] == {"default/reject": 5, "default/held": 1}
    assert stats["byErrorClass"] == {"permanent": 6}

    # replay one
    status, result = await api.post(f"/v1/dead-letters/{entry_id}/replay")
    assert status == 200, result
    assert (result["matched"], result["replayed"]) == (1, 1)
    await wait_until(lambda: rx.counts().get(result["jobIds"][0]) == 2)
    # the receiver refuses it again: dead again, with a new dead letter
    await wait_state(api.queue, "dead", 5, target="reject")
    status, page = await api.get("/v1/dead-letters", params={"target": "reject"})
    assert len(page["items"]) == 6
    assert sum(1 for i in page["items"] if i["replayed"]) == 1

    # replay many: dry run changes nothing, then for real
    selector = {"target": "default/reject", "errorClass": "permanent"}
    status, dry = await api.post("/v1/dead-letters/replay", json={**selector, "dryRun": True})
    assert status == 200, dry
    assert (dry["matched"], dry["replayed"], dry["dryRun"]) == (5, 5, True)
    assert dry["jobIds"] == []
    status, page = await api.get(
        "/v1/dead-letters", params={"replayed": "false", "target": "reject"}
    )
    assert len(page["items"]) == 5, "a dry run replays nothing"
    status, real = await api.post("/v1/dead-letters/replay", json={**selector, "limit": 3})
    assert status == 200, real
    assert (real["matched"], real["replayed"], real["dryRun"]) == (3, 3, False)
    assert set(real["jobIds"]) <= set(rejected)
    status, by_ids = await api.post("/v1/dead-letters/replay", json={"jobIds": [cancelled["id"]]})
    assert (by_ids["replayed"], by_ids["jobIds"]) == (1, [cancelled["id"]])
    # Named again: replayed once ever, so 409, as for one entry (and as the CLI's exit 1).
    status, again = await api.post("/v1/dead-letters/replay", json={"jobIds": [cancelled["id"]]})
    assert_error(status, again, 409, "ids", "replaying a replayed dead letter")
    assert "already replayed" in again["error"]["message"]
    status, again = await api.post(f"/v1/dead-letters/{entry_id}/replay")
    assert_error(status, again, 409, "id", "replaying a replayed dead letter")
    status, unknown = await api.post("/v1/dead-letters/replay", json={"ids": [UNKNOWN_ID]})
    assert_error(status, unknown, 404, "ids", "replaying an unknown dead letter")
    assert (await api.get(f"/v1/jobs/{cancelled['id']}"))[1]["state"] == "queued"

    # purge: dry run, then for real
    status, dry = await api.delete("/v1/dead-letters", params={"olderThan": "0s", "dryRun": "true"})
    assert status == 200, dry
    assert dry["dryRun"] is True and dry["deleted"] == 0 and dry["matched"] >= 7
    status, purged = await api.delete(
        "/v1/dead-letters", params={"olderThan": "0s", "target": "held"}
    )
    assert status == 200, purged
    assert purged["deleted"] == 1
    status, stats = await api.get("/v1/dead-letters/stats")
    assert "default/held" not in stats["byTarget"]
    status, kept = await api.delete("/v1/dead-letters", params={"olderThan": "30d"})
    assert (status, kept["deleted"]) == (200, 0), "nothing that old"


# -- Alertmanager ---------------------------------------------------------------------------


def alert_message(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "status": "firing",
        "receiver": "herald",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "truncatedAlerts": 0,
        "alerts": list(alerts),
    }


def alert(fingerprint: str, severity: str = "warning", status: str = "firing") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "DiskFull", "severity": severity},
        "annotations": {"summary": "disk full"},
        "startsAt": "2026-11-20T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


async def test_a_replay_by_selector_leaves_cancelled_jobs_out(api: Worker) -> None:
    """DELETE /v1/jobs/{id} of a job scheduled for 2030, then a replay by selector: left out
    and counted (cancelledLeftOut); by jobIds it is back, still waiting for 2030."""
    _, job = await api.post(
        "/v1/jobs", json={"target": "hook", "payload": {"c": 1}, "runAt": "2030-01-01T00:00:00Z"}
    )
    status, _ = await api.delete(f"/v1/jobs/{job['id']}")
    assert status == 200
    status, listed = await api.get("/v1/dead-letters", params={"target": "hook"})
    [entry] = listed["items"]
    assert (entry["reason"], entry["runAt"]) == ("cancelled", "2030-01-01T00:00:00Z")
    for body in (
        {"target": "hook"},
        {"target": "hook", "dryRun": True},
        {"errorClass": "permanent"},
    ):
        status, result = await api.post("/v1/dead-letters/replay", json=body)
        assert status == 200, result
        assert (result["matched"], result["replayed"], result["cancelledLeftOut"]) == (0, 0, 1)
    assert (await api.get(f"/v1/jobs/{job['id']}"))[1]["state"] == "dead"
    status, result = await api.post("/v1/dead-letters/replay", json={"jobIds": [job["id"]]})
    assert (status, result["jobIds"], result["cancelledLeftOut"]) == (200, [job["id"]], 0)
    _, back = await api.get(f"/v1/jobs/{job['id']}")
    assert (back["state"], back["runAt"]) == ("queued", "2030-01-01T00:00:00Z")


async def test_alertmanager_routes(api: Worker) -> None:
    status, body = await api.post(
        "/v1/alertmanager/held", json=alert_message(alert("aa01", "critical"), alert("aa02"))
    )
    assert status == 200, body
    assert (body["created"], body["duplicates"]) == (2, 0)
    assert [j["target"] for j in body["jobs"]] == ["default/held"] * 2
    status, body = await api.post(
        "/v1/alertmanager/team-b/elsewhere", json=alert_message(alert("bb01"))
    )
    assert status == 200, body
    assert body["jobs"][0]["target"] == "team-b/elsewhere"
    status, body = await api.post(
        "/v1/alertmanager/default/held", json=alert_message(alert("aa01", "critical"))
    )
    assert (status, body["created"], body["duplicates"]) == (200, 0, 1)
    # Re-sent with changed annotations: the same alert (the receiver's own key), still a
    # duplicate rather than a refusal.
    changed = {**alert("aa01", "critical"), "annotations": {"summary": "now worse"}}
    status, body = await api.post("/v1/alertmanager/held", json=alert_message(changed))
    assert (status, body["created"], body["duplicates"]) == (200, 0, 1), body
    status, body = await api.post("/v1/alertmanager/nope", json=alert_message(alert("cc")))
    assert_error(status, body, 404, "target", "unknown target")


# -- bad input: a 4xx naming the field -----------------------------------------------------


def _too_long_list() -> list[dict[str, Any]]:
    return [{"target": "held", "payload": i} for i in range(1001)]


GOOD = {"target": "held", "payload": {"x": 1}}
BAD_SUBMISSIONS: list[tuple[str, Any, int | tuple[int, int], str]] = [
    # (what, JSON body or raw bytes, status, field)
    ("unknown field", {**GOOD, "extra": 1}, 400, "extra"),
    ("unknown field, camel case", {**GOOD, "idempotency_key": "k"}, 400, "idempotency_key"),
    ("missing target", {"payload": 1}, 400, "target"),
    ("empty target", {"target": "", "payload": 1}, 400, "target"),
    ("target not a string", {"target": 5, "payload": 1}, 400, "target"),
    ("target a list", {"target": ["held"], "payload": 1}, 400, "target"),
    ("bad target name", {"target": "Not_A_Name!", "payload": 1}, 400, "target"),
    ("target with a final newline", {"target": "hook\n", "payload": 1}, 400, "target"),
    ("target with a NUL", {"target": "ho\u0000ok", "payload": 1}, 400, "target"),
    ("bad namespaced target", {"target": "a/b/c", "payload": 1}, 400, "target"),
    ("target with spaces", {"target": "held ", "payload": 1}, 400, "target"),
    ("unknown target", {"target": "nope", "payload": 1}, 404, "target"),
    ("unknown namespace", {"target": "team-z/held", "payload": 1}, 404, "target"),
    ("missing payload", {"target": "held"}, 400, "payload"),
    ("NaN", b'{"target": "held", "payload": NaN}', 400, "payload"),
    ("Infinity", b'{"target": "held", "payload": {"x": [Infinity]}}', 400, "payload"),
    ("-Infinity", b'{"target": "held", "payload": -Infinity}', 400, "payload"),
    ("NUL in payload", {"target": "held", "payload": "a\u0000b"}, 400, "payload"),
    ("unpaired surrogate", b'{"target": "held", "payload": ["\\ud800"]}', 400, "payload"),
    (
        "nested too deep",
        b'{"target": "held", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
        "body",
    ),
    ("NUL in target", {"target": "he\u0000ld", "payload": 1}, (400, 404), "target"),
    ("payload too large", {"target": "held", "payload": "x" * MAX_PAYLOAD}, 413, "payload"),
    ("bad priority", {**GOOD, "priority": "urgent"}, 400, "priority"),
    ("priority a number", {**GOOD, "priority": 1}, 400, "priority"),
    ("priority upper case", {**GOOD, "priority": "HIGH"}, 400, "priority"),
    ("idempotencyKey a number", {**GOOD, "idempotencyKey": 5}, 400, "idempotencyKey"),
    ("idempotencyKey empty", {**GOOD, "idempotencyKey": ""}, 400, "idempotencyKey"),
    ("idempotencyKey a list", {**GOOD, "idempotencyKey": ["k"]}, 400, "idempotencyKey"),
    ("idempotencyKey too long", {**GOOD, "idempotencyKey": "k" * 257}, 400, "idempotencyKey"),
    ("idempotencyKey with NUL", {**GOOD, "idempotencyKey": "a\u0000"}, 400, "idempotencyKey"),
    ("orderingKey a number", {**GOOD, "orderingKey": 5}, 400, "orderingKey"),
    ("orderingKey empty", {**GOOD, "orderingKey": ""}, 400, "orderingKey"),
    ("orderingKey an object", {**GOOD, "orderingKey": {}}, 400, "orderingKey"),
    ("orderingKey too long", {**GOOD, "orderingKey": "o" * 257}, 400, "orderingKey"),
    ("orderingKey with NUL", {**GOOD, "orderingKey": "\u0000"}, 400, "orderingKey"),
    ("runAt not a time", {**GOOD, "runAt": "tomorrow"}, 400, "runAt"),
    ("runAt a number", {**GOOD, "runAt": 1700000000}, 400, "runAt"),
    ("runAt without zone", {**GOOD, "runAt": "2026-11-20T10:00:00"}, 400, "runAt"),
    ("runAt month 13", {**GOOD, "runAt": "2026-13-01T00:00:00Z"}, 400, "runAt"),
    ("malformed JSON", b'{"target": "held", "payload": ', 400, "body"),
    ("trailing garbage", b'{"target": "held", "payload": 1} x', 400, "body"),
    ("empty body", b"", 400, "body"),
    ("blank body", b"  \n ", 400, "body"),
    ("not UTF-8", b'{"target": "held", "payload": "\xff\xfe"}', 400, "body"),
    ("a number", 5, 400, "body"),
    ("a string", "job", 400, "body"),
    ("null", None, 400, "body"),
    ("empty list", [], 400, "body"),
    ("list too long", _too_long_list(), 400, "body"),
    ("bad item in a list", [GOOD, {"payload": 2}], 400, "[1].target"),
    ("non-object item in a list", [GOOD, 5], 400, "[1]"),
    ("bad priority in a list", [GOOD, GOOD, {**GOOD, "priority": "x"}], 400, "[2].priority"),
]


async def test_bad_submissions_are_refused_naming_the_field(api: Worker) -> None:
    before = await sql_value(api.queue, "SELECT count(*) FROM herald.jobs")
    for what, body, expected, field in BAD_SUBMISSIONS:
        if isinstance(body, bytes):
            kw: dict[str, Any] = {"data": body, "headers": {"Content-Type": "application/json"}}
        else:
            kw = {"data": json.dumps(body), "headers": {"Content-Type": "application/json"}}
        status, answer = await api.post("/v1/jobs", **kw)
        assert_error(status, answer, expected, field, what)
    assert await sql_value(api.queue, "SELECT count(*) FROM herald.jobs") == before, (
        "nothing refused was written, not even the good jobs of a refused list"
    )

    # The messages say what is wrong, not something near it.
    wording = [
        ({"target": 5, "payload": 1}, "target", "target: must be a string"),
        ({"payload": 1}, "target", "target: is required"),
        (42, "body", "body: must be a JSON object (one job) or a list of objects"),
        ([42], "[0]", "[0]: must be a JSON object"),
    ]
    for body, field, message in wording:
        status, answer = await api.post("/v1/jobs", json=body)
        assert_error(status, answer, 400, field, f"wording of {body}")
        assert answer["error"]["message"].startswith(message), answer

    # limits are inclusive: what is just allowed is accepted
    edge = {
        **GOOD,
        "idempotencyKey": "k" * 256,
        "orderingKey": "o" * 256,
        "payload": "x" * (MAX_PAYLOAD - 2),
    }
    status, answer = await api.post("/v1/jobs", json=edge)
    assert status == 201, answer
    status, answer = await api.post("/v1/jobs", json=[GOOD] * 1000)
    assert status == 201, "1000 jobs in a list are allowed"


async def test_wrong_content_type_is_refused(api: Worker) -> None:
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        status, answer = await api.post(
            "/v1/jobs", data=json.dumps(GOOD), headers={"Content-Type": content_type}
        )
        assert_error(status, answer, (400, 415), "Content-Type", content_type)
    status, answer = await api.post(
        "/v1/jobs", data=json.dumps(GOOD), headers={"Content-Type": "application/vnd.api+json"}
    )
    assert status == 201, "a +json media type is JSON"


async def test_request_body_over_the_limit_is_413(api: Worker) -> None:
    big = b'{"target": "held", "payload": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    status, answer = await api.post(
        "/v1/jobs", data=io.BytesIO(big), headers={"Content-Type": "application/json"}
    )
    assert_error(status, answer, 413, None, "a 17 MiB body")


async def test_any_json_value_is_a_payload(api: Worker, rx: TrackingReceiver) -> None:
    """ "payload: any JSON value": null, false, 0, "" and empty containers included; each
    is delivered as its JSON text."""
    values: list[Any] = [None, False, 0, "", [], {}, 1.5, "text"]
    ids = {}
    for value in values:
        status, answer = await api.post("/v1/jobs", json={"target": "hook", "payload": value})
        assert status == 201, f"payload {value!r}: {status} {answer}"
        ids[answer["id"]] = value
    await wait_state(api.queue, "succeeded", len(values), target="hook")
    bodies = {r.webhook_id: r.body for r in rx.received}
    for job_id, value in ids.items():
        assert bodies[job_id] == json.dumps(value, separators=(",", ":")).encode()


BAD_QUERIES: list[tuple[str, str, dict[str, str], int | tuple[int, int], str]] = [
    ("GET", "/v1/jobs", {"limit": "0"}, 400, "limit"),
    ("GET", "/v1/jobs", {"limit": "1001"}, 400, "limit"),
    ("GET", "/v1/jobs", {"limit": "abc"}, 400, "limit"),
    ("GET", "/v1/jobs", {"limit": "-1"}, 400, "limit"),
    ("GET", "/v1/jobs", {"limit": "1.5"}, 400, "limit"),
    ("GET", "/v1/jobs", {"state": "bogus"}, 400, "state"),
    ("GET", "/v1/jobs", {"state": "QUEUED"}, 400, "state"),
    ("GET", "/v1/jobs", {"priority": "urgent"}, 400, "priority"),
    ("GET", "/v1/jobs", {"cursor": "not-a-cursor"}, 400, "cursor"),
    ("GET", "/v1/jobs", {"target": "nope"}, 404, "target"),
    ("GET", "/v1/jobs", {"target": "Bad_Name"}, (400, 404), "target"),
    ("GET", "/v1/dead-letters", {"errorClass": "fatal"}, 400, "errorClass"),
    ("GET", "/v1/dead-letters", {"failedAfter": "yesterday"}, 400, "failedAfter"),
    ("GET", "/v1/dead-letters", {"failedBefore": "2026-01-01T00:00:00"}, 400, "failedBefore"),
    (
        "GET",
        "/v1/dead-letters",
        {"failedAfter": "2026-02-01T00:00:00Z", "failedBefore": "2026-01-01T00:00:00Z"},
        400,
        "failedBefore",
    ),
    ("GET", "/v1/dead-letters", {"replayed": "maybe"}, 400, "replayed"),
    ("GET", "/v1/dead-letters", {"limit": "0"}, 400, "limit"),
    ("GET", "/v1/dead-letters", {"limit": "5000"}, 400, "limit"),
    ("GET", "/v1/dead-letters", {"cursor": "garbage!!"}, 400, "cursor"),
    ("GET", "/v1/dead-letters", {"cursor": "abc"}, 400, "cursor"),
    ("GET", "/v1/dead-letters", {"cursor": "MjAyNnxub3QtYS11dWlk"}, 400, "cursor"),
    ("DELETE", "/v1/dead-letters", {}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "abc"}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "3 days"}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "-5"}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "1e12"}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "nan"}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "inf"}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "99999999999999d"}, 400, "olderThan"),
    ("GET", "/v1/jobs", {"limit": "\u00b2"}, 400, "limit"),
    ("GET", "/v1/jobs", {"target": "a\u0000b"}, 400, "target"),
    ("GET", "/v1/dead-letters", {"target": "a\u0000b"}, 400, "target"),
    # Given empty is not the same as not given: refused, as the document says.
    ("GET", "/v1/jobs", {"cursor": ""}, 400, "cursor"),
    ("GET", "/v1/jobs", {"priority": ""}, 400, "priority"),
    ("GET", "/v1/jobs", {"cursor": "0190a5b200007000800000000000000a"}, 400, "cursor"),
    ("GET", "/v1/dead-letters", {"errorClass": ""}, 400, "errorClass"),
    ("GET", "/v1/dead-letters", {"failedAfter": ""}, 400, "failedAfter"),
    ("GET", "/v1/dead-letters", {"target": ""}, 400, "target"),
    ("GET", "/v1/dead-letters", {"target": "Not A Target"}, 400, "target"),
    ("GET", "/v1/dead-letters", {"replayed": "yes"}, 400, "replayed"),
    ("GET", "/v1/dead-letters", {"failedAfter": "2026-01-01T00:00Z"}, 400, "failedAfter"),
    ("DELETE", "/v1/dead-letters", {"olderThan": ""}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "1h30m"}, 400, "olderThan"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "30d", "target": ""}, 400, "target"),
    ("DELETE", "/v1/dead-letters", {"olderThan": "30d", "dryRun": "perhaps"}, 400, "dryRun"),
]


async def test_bad_query_parameters_are_refused_naming_them(api: Worker) -> None:
    for method, path, params, expected, field in BAD_QUERIES:
        async with api.http.request(method, api.base + path, params=params) as r:
            body = await r.json()
            assert_error(r.status, body, expected, field, f"{method} {path} {params}")
    assert await sql_value(api.queue, "SELECT count(*) FROM herald.dead_letters") == 0


async def test_an_empty_replay_selector_replays_nothing_unless_all_is_said(api: Worker) -> None:
    await api.post("/v1/jobs", json=[{"target": "reject", "payload": {"r": i}} for i in range(3)])
    await wait_state(api.queue, "dead", 3, target="reject")
    for body in ({}, {"limit": 10}, {"all": False}):
        status, answer = await api.post("/v1/dead-letters/replay", json=body)
        assert_error(status, answer, 400, "all", f"empty selector {body}")
        assert '"all": true' in answer["error"]["message"]
    replayed = "SELECT count(*) FROM herald.dead_letters WHERE replayed"
    assert await sql_value(api.queue, replayed) == 0, "a refused replay replays nothing"
    status, answer = await api.post("/v1/dead-letters/replay", json={"all": True})
    assert status == 200, answer
    assert answer["replayed"] == 3
    assert await sql_value(api.queue, replayed) == 3


async def test_replaying_by_id_what_cannot_be_replayed_is_a_conflict(api: Worker) -> None:
    _, job = await api.post("/v1/jobs", json={"target": "reject", "payload": 1})
    await wait_state(api.queue, "dead", 1, target="reject")
    await api.queue.registry.delete("reject")
    _, page = await api.get("/v1/dead-letters")
    [entry] = page["items"]
    for path, body in (
        (f"/v1/dead-letters/{entry['id']}/replay", None),
        ("/v1/dead-letters/replay", {"ids": [entry["id"]]}),
        ("/v1/dead-letters/replay", {"jobIds": [job["id"]]}),
    ):
        status, answer = await api.post(path, json=body)
        assert_error(status, answer, 409, "target", f"{path} {body}")
        assert "default/reject no longer exists" in answer["error"]["message"], answer
    status, answer = await api.post("/v1/dead-letters/replay", json={"target": "reject"})
    assert (status, answer["replayed"], answer["skipped"]) == (200, 0, 1), answer


BAD_REPLAYS: list[tuple[str, Any, str]] = [
    ("empty selector", {}, "all"),
    ("empty selector, a dry run", {"dryRun": True}, "all"),
    ("empty selector, all false", {"all": False, "limit": 5}, "all"),
    ("all a string", {"all": "yes"}, "all"),
    ("ids empty", {"ids": []}, "ids"),
    ("target empty", {"target": ""}, "target"),
    ("failedAfter empty", {"failedAfter": ""}, "failedAfter"),
    ("errorClass empty", {"errorClass": ""}, "errorClass"),
    ("unknown field", {"bogus": 1}, "bogus"),
    ("limit zero", {"limit": 0}, "limit"),
    ("limit a string", {"limit": "5"}, "limit"),
    ("limit a boolean", {"limit": True}, "limit"),
    ("limit too big", {"limit": 2_000_000}, "limit"),
    ("dryRun a string", {"dryRun": "yes"}, "dryRun"),
    ("ids not a list", {"ids": "x"}, "ids"),
    ("ids not uuids", {"ids": ["not-a-uuid"]}, "ids[0]"),
    ("jobIds numbers", {"jobIds": [1]}, "jobIds[0]"),
    ("target a number", {"target": 5}, "target"),
    ("errorClass unknown", {"errorClass": "fatal"}, "errorClass"),
    ("failedAfter bad", {"failedAfter": "nope"}, "failedAfter"),
    ("failedBefore a number", {"failedBefore": 5}, "failedBefore"),
    (
        "window reversed",
        {"failedAfter": "2026-02-01T00:00:00Z", "failedBefore": "2026-01-01T00:00:00Z"},
        "failedBefore",
    ),
    ("a list", [], "body"),
    ("a string", "all", "body"),
    ("null", None, "body"),
]


async def test_bad_replay_selectors_are_refused_naming_the_field(api: Worker) -> None:
    for what, body, field in BAD_REPLAYS:
        status, answer = await api.post(
            "/v1/dead-letters/replay",
            data=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert_error(status, answer, 400, field, what)
    for what, raw in (("malformed", b"{"), ("empty", b"")):
        status, answer = await api.post(
            "/v1/dead-letters/replay", data=raw, headers={"Content-Type": "application/json"}
        )
        assert_error(status, answer, 400, "body", what)


BAD_ALERTS: list[tuple[str, Any, str]] = [
    ("not an object", [1], "body"),
    ("version 3", {"version": "3", "alerts": [alert("a")]}, "version"),
    ("no alerts", {"version": "4"}, "alerts"),
    ("empty alerts", {"alerts": []}, "alerts"),
    ("alerts an object", {"alerts": {}}, "alerts"),
    ("alert not an object", {"alerts": [alert("a"), "x"]}, "alerts[1]"),
    ("bad status", {"alerts": [{**alert("a"), "status": "pending"}]}, "alerts[0].status"),
    ("no labels", {"alerts": [{**alert("a"), "labels": {}}]}, "alerts[0].labels"),
    (
        "labels not strings",
        {"alerts": [{**alert("a"), "labels": {"x": 1}}]},
        "alerts[0].labels.x",
    ),
    (
        "annotations a list",
        {"alerts": [{**alert("a"), "annotations": []}]},
        "alerts[0].annotations",
    ),
    (
        "no startsAt",
        {"alerts": [{k: v for k, v in alert("a").items() if k != "startsAt"}]},
        "alerts[0].startsAt",
    ),
    ("groupLabels bad", {"groupLabels": "x", "alerts": [alert("a")]}, "groupLabels"),
    ("commonLabels bad", {"commonLabels": {"a": None}, "alerts": [alert("a")]}, "commonLabels.a"),
]


async def test_bad_alertmanager_messages_are_refused_naming_the_field(api: Worker) -> None:
    for what, body, field in BAD_ALERTS:
        status, answer = await api.post("/v1/alertmanager/held", json=body)
        assert_error(status, answer, 400, field, what)
    status, answer = await api.post(
        "/v1/alertmanager/held", data=b"", headers={"Content-Type": "application/json"}
    )
    assert_error(status, answer, 400, "body", "empty")
    surrogate = (
        b'{"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "x"}, '
        b'"annotations": {"summary": "\\udc00"}}]}'
    )
    status, answer = await api.post(
        "/v1/alertmanager/held", data=surrogate, headers={"Content-Type": "application/json"}
    )
    assert_error(status, answer, 400, None, "unpaired surrogate")
    status, answer = await api.post("/v1/alertmanager/he%00ld", json={"alerts": [alert("a")]})
    assert_error(status, answer, (400, 404), None, "NUL in the target")
    status, answer = await api.post("/v1/dead-letters/replay", json={"target": "a\u0000b"})
    assert_error(status, answer, (400, 404), None, "NUL in a replay's target")
    assert await sql_value(api.queue, "SELECT count(*) FROM herald.jobs") == 0


async def test_fixed_segments_are_not_ids(api: Worker) -> None:
    """/v1/dead-letters/replay and /stats are routes of their own, not ids of
    /v1/dead-letters/{id}: other methods on them are 405 with only their own Allow."""
    for method, path, allowed in (
        ("OPTIONS", "/v1/dead-letters/replay", "POST"),
        ("GET", "/v1/dead-letters/replay", "POST"),
        ("POST", "/v1/dead-letters/stats", "GET"),
    ):
        async with api.http.request(method, api.base + path) as r:
            assert r.status == 405, f"{method} {path}: {r.status}"
            assert r.headers["Allow"] == allowed, f"{method} {path}: {r.headers['Allow']}"


async def test_ids_in_paths(api: Worker) -> None:
    for method, path in (
        ("GET", "/v1/jobs/{}"),
        ("DELETE", "/v1/jobs/{}"),
        ("GET", "/v1/dead-letters/{}"),
        ("POST", "/v1/dead-letters/{}/replay"),
    ):
        for bad in (
            "not-a-uuid",
            "123",
            "%20",
            "0190a5b2-0000-7000-8000-00000000000g",
            "0190a5b200007000800000000000000a",  # a UUID, but not as the document writes one
            "urn:uuid:0190a5b2-0000-7000-8000-00000000000a",
        ):
            async with api.http.request(method, api.base + path.format(bad)) as r:
                assert_error(r.status, await r.json(), 400, "id", f"{method} {path} {bad}")
        async with api.http.request(method, api.base + path.format(UNKNOWN_ID)) as r:
            expected = 409 if method == "DELETE" else 404
            assert_error(r.status, await r.json(), expected, "id", f"{method} unknown id")


async def test_unknown_routes_and_methods_get_json_errors(api: Worker) -> None:
    for method, path, expected in (
        ("GET", "/v1/nowhere", 404),
        ("GET", "/", 404),
        ("POST", "/v1/jobs/x/y", 404),
        ("PUT", "/v1/jobs", 405),
        ("PATCH", "/v1/dead-letters", 405),
    ):
        async with api.http.request(method, api.base + path) as r:
            assert r.status == expected, f"{method} {path}: {r.status} {await r.text()}"
            assert_error(r.status, await r.json(), expected, None, f"{method} {path}")


# -- fuzz: nothing answers 500 ------------------------------------------------------------


def _random_value(r: random.Random, depth: int = 0) -> Any:
    atoms: list[Any] = [
        None,
        True,
        False,
        0,
        -1,
        2**63,
        1.5,
        -1e308,
        "",
        "held",
        "hook",
        "a" * 300,
        "\u0000",
        "ü",
        "high",
        "2026-11-20T10:00:00Z",
        "NaN",
        UNKNOWN_ID,
        "team-b/elsewhere",
        "x/y/z",
        "../etc",
    ]
    if depth > 3 or r.random() < 0.5:
        return r.choice(atoms)
    if r.random() < 0.5:
        return [_random_value(r, depth + 1) for _ in range(r.randint(0, 4))]
    return _random_object(r, depth + 1)


def _random_object(r: random.Random, depth: int = 0) -> dict[str, Any]:
    keys = [
        "target",
        "payload",
        "priority",
        "idempotencyKey",
        "orderingKey",
        "runAt",
        "alerts",
        "version",
        "status",
        "labels",
        "startsAt",
        "limit",
        "dryRun",
        "ids",
        "jobIds",
        "errorClass",
        "failedAfter",
        "failedBefore",
        "groupLabels",
        "x",
    ]
    body = {k: _random_value(r, depth) for k in r.sample(keys, r.randint(0, 6))}
    if r.random() < 0.6:
        body["target"] = r.choice(["held", "hook", "nope", "team-b/elsewhere", 5, None])
    if r.random() < 0.6:
        body["payload"] = _random_value(r, depth)
    return body


async def test_fuzz_never_answers_500(api: Worker) -> None:
    r = random.Random(20261120)
    failures: dict[str, list[str]] = {}  # kind of failure -> examples

    async def send(method: str, path: str, **kw: Any) -> None:
        async with api.http.request(method, api.base + path, **kw) as resp:
            text = await resp.text()
            kind = f"{method} {resp.url.path} -> {resp.status}"
            if resp.status >= 500:
                failures.setdefault(kind, []).append(f"{method} {path} {kw}"[:300])
            elif resp.status >= 400 and "error" not in json.loads(text):
                failures.setdefault(kind + " without error", []).append(f"{path} {kw}"[:300])

    for _ in range(150):
        body = (
            _random_object(r)
            if r.random() < 0.7
            else [_random_object(r) for _ in range(r.randint(0, 3))]
        )
        await send("POST", "/v1/jobs", json=body)
    for _ in range(40):
        raw = bytes(r.getrandbits(8) for _ in range(r.randint(0, 40)))
        content_type = r.choice(["application/json", "text/plain", "", "application/x+json"])
        path = r.choice(["/v1/jobs", "/v1/dead-letters/replay", "/v1/alertmanager/held"])
        await send("POST", path, data=raw, headers={"Content-Type": content_type})
    for _ in range(60):
        await send(
            "POST",
            "/v1/alertmanager/" + r.choice(["held", "nope", "team-b/elsewhere"]),
            json={
                "version": r.choice(["4", 4, None]),
                "alerts": [_random_object(r) for _ in range(r.randint(0, 3))],
                **(_random_object(r) if r.random() < 0.3 else {}),
            },
        )
    for _ in range(40):
        await send(
            "POST",
            "/v1/dead-letters/replay",
            json={**_random_object(r), "dryRun": r.choice([True, True, False])},
        )
    params = {
        "limit": ["0", "1", "1000", "x", "-3", "99999999999999999999", ""],
        "state": ["queued", "dead", "nope", ""],
        "priority": ["high", "x"],
        "cursor": [UNKNOWN_ID, "zz", "abc", "", "=="],
        "target": ["held", "nope", "a/b", "Bad!"],
        "errorClass": ["permanent", "x"],
        "failedAfter": ["2026-01-01T00:00:00Z", "x"],
        "failedBefore": ["2025-01-01T00:00:00Z", "1"],
        "replayed": ["true", "x"],
        "olderThan": ["1d", "-1", "x", "99999999999999d"],
        "dryRun": ["true", "x"],
    }
    for _ in range(100):
        query = {k: r.choice(v) for k, v in r.sample(sorted(params.items()), r.randint(0, 4))}
        method, path = r.choice(
            [
                ("GET", "/v1/jobs"),
                ("GET", "/v1/dead-letters"),
                ("DELETE", "/v1/dead-letters"),
                ("GET", "/v1/queue/stats"),
                ("GET", "/v1/dead-letters/stats"),
                ("GET", "/v1/targets"),
            ]
        )
        if method == "DELETE":
            query["dryRun"] = "true"
        await send(method, path, params=query)
    for _ in range(30):
        ident = r.choice([UNKNOWN_ID, "x", "%00", "..", "0" * 40, str(uuid.uuid4())])
        method, path = r.choice(
            [
                ("GET", "/v1/jobs/{}"),
                ("DELETE", "/v1/jobs/{}"),
                ("GET", "/v1/dead-letters/{}"),
                ("POST", "/v1/dead-letters/{}/replay"),
            ]
        )
        await send(method, path.format(ident))
    assert not failures, "\n".join(
        f"{kind}: {len(examples)} times, e.g. {examples[:2]}" for kind, examples in failures.items()
    )


# -- the bearer token -----------------------------------------------------------------------


def concrete(path: str) -> str:
    return (
        path.replace("{id}", UNKNOWN_ID)
        .replace("{target}", "hook")
        .replace("{namespace}", "default")
        .replace("{name}", "hook")
    )


async def test_bearer_token_guards_every_v1_endpoint(
    db_url: str, tmp_path: Path, rx: TrackingReceiver
) -> None:
    async with worker(db_url, api_manifests(tmp_path, rx.url), api_token=TOKEN) as w:
        v1 = [(r.method, r.path) for r in ROUTES if r.path.startswith("/v1/")]
        assert len(v1) >= 14
        for method, path in v1:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": TOKEN},
                {"Authorization": f"Basic {TOKEN}"},
            ):
                async with w.http.request(method, w.base + concrete(path), headers=headers) as r:
                    assert r.status == 401, f"{method} {path} with {headers}: {r.status}"
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                    assert_error(r.status, await r.json(), 401, "Authorization", path)
            async with w.http.request(
                method, w.base + concrete(path), headers={"Authorization": f"Bearer {TOKEN}"}
            ) as r:
                assert r.status != 401, f"{method} {path} refused the right token"
                assert r.status < 500
        for route in ROUTES:
            if route.path in PUBLIC:
                async with w.http.request(route.method, w.base + concrete(route.path)) as r:
                    # hook has no ed25519 key: its signing-keys answer 404, not 401
                    expected = 404 if "{" in route.path else 200
                    assert r.status == expected, f"{route.path} is open without a token"
        assert {r.path for r in ROUTES if not r.path.startswith("/v1/")} == set(PUBLIC)

        status, answer = await w.post(
            "/v1/jobs", json=GOOD, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 201, answer


async def test_no_token_configured_means_no_authentication(api: Worker) -> None:
    status, _ = await api.get("/v1/queue/stats")
    assert status == 200


# -- probes ---------------------------------------------------------------------------------


async def test_probes(api: Worker) -> None:
    status, body = await api.get("/healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, body = await api.get("/readyz")
    assert (status, body) == (200, {"status": "ready"})
    async with api.http.get(api.base + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        assert "herald_worker_ready 1.0" in await r.text()


# -- the OpenAPI document ------------------------------------------------------------------


async def openapi(w: Worker) -> dict[str, Any]:
    status, doc = await w.get("/openapi.json")
    assert status == 200
    return dict(doc)


async def test_openapi_document_is_valid_and_matches_the_routes(api: Worker) -> None:
    # test extra: openapi-spec-validator (imported here so that only this test needs it)
    from openapi_spec_validator import validate as validate_openapi

    doc = await openapi(api)
    validate_openapi(doc)
    documented = {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "delete", "patch")
    }
    served = {(r.method, r.path) for r in ROUTES}
    assert served - documented == set(), "routes missing from the document"
    assert documented - served == set(), "documented operations the server does not have"
    operation_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids)), "operationIds are unique"
    for path, ops in doc["paths"].items():
        names = set(path.replace("}", "{").split("{")[1::2])
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, f"{method} {path}: path parameters {declared}"
            if path.startswith("/v1/"):
                assert "401" in op["responses"], f"{method} {path} documents no 401"
                assert "400" in op["responses"], f"{method} {path} documents no 400"
            else:
                assert op.get("security") == [], f"{path} is public"


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> Any:
    response = doc["paths"][path][method.lower()]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator(
        {**schema, "components": doc["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def schema_problems(
    doc: dict[str, Any], path: str, method: str, status: int, body: Any
) -> list[str]:
    if str(status) not in doc["paths"][path][method.lower()]["responses"]:
        return [f"{method} {path}: status {status} is not documented"]
    errors = sorted(response_schema(doc, path, method, status).iter_errors(body), key=str)
    return [f"{method} {path} {status}: {e.message[:300]}" for e in errors]


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    problems = schema_problems(doc, path, method, status, body)
    assert not problems, problems


async def test_responses_match_the_documented_schemas(api: Worker) -> None:
    doc = await openapi(api)
    problems: list[str] = []

    def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
        problems.extend(schema_problems(doc, path, method, status, body))

    status, one = await api.post("/v1/jobs", json={"target": "hook", "payload": 1})
    check(doc, "/v1/jobs", "POST", status, one)
    status, many = await api.post(
        "/v1/jobs",
        json=[
            {
                "target": "held",
                "payload": 1,
                "idempotencyKey": "k",
                "orderingKey": "o",
                "runAt": "2030-01-01T00:00:00Z",
                "priority": "low",
            }
        ],
    )
    check(doc, "/v1/jobs", "POST", status, many)
    keyed = {
        "target": "held",
        "payload": 1,
        "idempotencyKey": "k",
        "orderingKey": "o",
        "runAt": "2030-01-01T00:00:00Z",
        "priority": "low",
    }
    status, dup = await api.post("/v1/jobs", json=keyed)
    assert status == 200
    check(doc, "/v1/jobs", "POST", status, dup)
    status, reused = await api.post("/v1/jobs", json={**keyed, "payload": 2})
    assert status == 409
    check(doc, "/v1/jobs", "POST", status, reused)
    await wait_state(api.queue, "succeeded", 1, target="hook")
    for job_id in (one["id"], many["jobs"][0]["id"]):
        status, body = await api.get(f"/v1/jobs/{job_id}")
        check(doc, "/v1/jobs/{id}", "GET", status, body)
    status, body = await api.get("/v1/jobs")
    check(doc, "/v1/jobs", "GET", status, body)
    status, body = await api.get("/v1/queue/stats")
    check(doc, "/v1/queue/stats", "GET", status, body)

    await api.post("/v1/jobs", json={"target": "reject", "payload": {"r": 1}})
    await wait_state(api.queue, "dead", 1, target="reject")
    status, body = await api.delete(f"/v1/jobs/{many['jobs'][0]['id']}")
    check(doc, "/v1/jobs/{id}", "DELETE", status, body)
    status, page = await api.get("/v1/dead-letters")
    check(doc, "/v1/dead-letters", "GET", status, page)
    assert len(page["items"]) == 2
    status, body = await api.get(f"/v1/dead-letters/{page['items'][0]['id']}")
    check(doc, "/v1/dead-letters/{id}", "GET", status, body)
    status, body = await api.post("/v1/dead-letters/replay", json={"all": True, "dryRun": True})
    check(doc, "/v1/dead-letters/replay", "POST", status, body)
    status, body = await api.post(f"/v1/dead-letters/{page['items'][0]['id']}/replay")
    check(doc, "/v1/dead-letters/{id}/replay", "POST", status, body)
    status, body = await api.post(f"/v1/dead-letters/{page['items'][0]['id']}/replay")
    check(doc, "/v1/dead-letters/{id}/replay", "POST", status, body)  # 409
    status, body = await api.get(f"/v1/dead-letters/{page['items'][1]['id']}")
    check(doc, "/v1/dead-letters/{id}", "GET", status, body)

    status, body = await api.post("/v1/jobs", json={"target": "held"})
    check(doc, "/v1/jobs", "POST", status, body)  # 400
    status, body = await api.post("/v1/jobs", json={"target": "nope", "payload": 1})
    check(doc, "/v1/jobs", "POST", status, body)  # 404
    status, body = await api.get(f"/v1/jobs/{UNKNOWN_ID}")
    check(doc, "/v1/jobs/{id}", "GET", status, body)  # 404
    status, body = await api.post("/v1/alertmanager/held", json=alert_message(alert("ff01")))
    check(doc, "/v1/alertmanager/{target}", "POST", status, body)
    for path in ("/healthz", "/readyz"):
        status, body = await api.get(path)
        check(doc, path, "GET", status, body)
    assert (await states(api.queue, "hook")) == {"succeeded": 1}
    assert not problems, "responses the document does not describe:\n" + "\n".join(problems)


async def test_unauthorized_answer_matches_the_document(
    db_url: str, tmp_path: Path, rx: TrackingReceiver
) -> None:
    async with worker(db_url, api_manifests(tmp_path, rx.url), api_token=TOKEN) as w:
        doc = await openapi(w)
        status, body = await w.get("/v1/jobs")
        check(doc, "/v1/jobs", "GET", status, body)
        async with aiohttp.ClientSession() as http, http.get(w.base + "/openapi.json") as r:
            assert r.status == 200


async def test_dead_letters_by_priority(api: Worker, rx: TrackingReceiver) -> None:
    """The priority filter of the list and of the replay selector (seed 004's DLQ filters)."""
    jobs = [
        {"target": "reject", "payload": {"p": p, "i": i}, "priority": p}
        for p in ("high", "medium", "low")
        for i in range(2)
    ]
    _, many = await api.post("/v1/jobs", json=jobs)
    answered = [j["id"] for j in many["jobs"]]  # in the order submitted
    ids = {"high": answered[0:2], "low": answered[4:6]}
    await wait_state(api.queue, "dead", 6, target="reject")

    status, high = await api.get("/v1/dead-letters", params={"priority": "high"})
    assert status == 200, high
    assert sorted(i["jobId"] for i in high["items"]) == sorted(ids["high"])
    assert {i["priority"] for i in high["items"]} == {"high"}
    status, bad = await api.get("/v1/dead-letters", params={"priority": "urgent"})
    assert_error(status, bad, 400, "priority", "a priority not in the set")

    status, dry = await api.post(
        "/v1/dead-letters/replay", json={"priority": "low", "dryRun": True}
    )
    assert status == 200, dry
    assert dry["matched"] == 2, "a selector of only a priority is a selector (no all: true)"
    status, real = await api.post("/v1/dead-letters/replay", json={"priority": "low"})
    assert status == 200, real
    assert sorted(real["jobIds"]) == sorted(ids["low"])
    status, bad = await api.post("/v1/dead-letters/replay", json={"priority": 3})
    assert_error(status, bad, 400, "priority", "a priority that is not a string")


# -- nesting depth ------------------------------------------------------------------------


def nested(depth: int, inner: str = "1") -> str:
    """JSON text of arrays ``depth`` deep (as text: json.dumps itself recurses)."""
    return "[" * depth + inner + "]" * depth


async def post_text(w: Worker, path: str, text: str) -> tuple[int, Any]:
    return await w.post(path, data=text, headers={"Content-Type": "application/json"})


async def test_a_payload_nested_past_the_limit_is_refused_naming_it(api: Worker) -> None:
    """980 deep once answered 500 with an idempotency key (RecursionError hashing it) and was
    accepted without one, breaking every read of it afterwards."""
    limit = QueueSettings().max_payload_depth
    for depth in (limit + 1, 980, 5000):
        for key in ("", ', "idempotencyKey": "deep"'):
            body = f'{{"target": "held", "payload": {nested(depth)}{key}}}'
            status, answer = await post_text(api, "/v1/jobs", body)
            field = "payload" if depth < 500 else "body"
            assert_error(status, answer, 400, field, f"{depth} deep{key}")
            assert "HERALD_MAX_PAYLOAD_DEPTH" in answer["error"]["message"], answer
        status, answer = await post_text(
            api,
            "/v1/jobs",
            f'[{{"target": "held", "payload": 1}}, {{"target": "held", '
            f'"payload": {nested(depth)}}}]',
        )
        assert_error(status, answer, 400, None, f"{depth} deep in a list")
        assert "HERALD_MAX_PAYLOAD_DEPTH" in answer["error"]["message"], answer
    # Another field nested deep: still one 400, never a 500.
    status, answer = await post_text(api, "/v1/jobs", f'{{"target": {nested(400)}, "payload": 1}}')
    assert_error(status, answer, 400, "target", "target nested 400 deep")
    assert await sql_value(api.queue, "SELECT count(*) FROM herald.jobs") == 0
    # At the limit, accepted and kept byte for byte; brackets inside strings are not depth.
    at_limit = nested(limit - 1, '{"s": "]]]\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}')
    status, answer = await post_text(
        api, "/v1/jobs", f'{{"target": "held", "payload": {at_limit}, "idempotencyKey": "ok"}}'
    )
    assert status == 201, answer
    stored = await sql_value(
        api.queue, "SELECT payload::text FROM herald.jobs WHERE id = %s", [answer["id"]]
    )
    assert stored == at_limit


async def test_alertmanager_refuses_a_payload_nested_past_the_limit(api: Worker) -> None:
    deep = alert("dd01")
    body = json.dumps(alert_message(deep)).replace(
        '"startsAt"', f'"extra": {nested(70)}, "startsAt"'
    )
    status, answer = await post_text(api, "/v1/alertmanager/held", body)
    assert_error(status, answer, 400, "alerts[0]", "an alert nested 70 deep")
    assert "HERALD_MAX_PAYLOAD_DEPTH" in answer["error"]["message"], answer


async def test_a_stored_payload_too_deep_to_decode_never_breaks_a_read(api: Worker) -> None:
    """A row from before the limit (nested 5000 deep, written with SQL): every read shows it,
    its payload as text with a note, and every listing around it still answers 200."""
    deep = nested(5000)
    _, normal = await api.post("/v1/jobs", json={"target": "held", "payload": {"ok": 1}})
    job_id = str(uuid.uuid4())
    await sql_value(
        api.queue,
        "INSERT INTO herald.jobs (id, target_id, priority, payload, run_at, deadline) "
        "SELECT %s, id, 'medium', %s::json, now(), now() FROM herald.targets "
        "WHERE name = 'held' RETURNING 1",
        [job_id, deep],
    )
    doc = await openapi(api)
    problems: list[str] = []

    def readable(path: str, status: int, body: Any) -> Any:
        assert status == 200, f"{path}: {status} {body}"
        problems.extend(schema_problems(doc, path, "GET", status, body))
        return body

    job = readable("/v1/jobs/{id}", *await api.get(f"/v1/jobs/{job_id}"))
    assert job["payload"] is None
    assert job["payloadText"] == deep
    assert "5000" in job["payloadNote"]
    for params in ({}, {"target": "held"}, {"state": "queued"}):
        page = readable("/v1/jobs", *await api.get("/v1/jobs", params=params))
        assert {i["id"] for i in page["items"]} >= {job_id, normal["id"]}, params
    assert (await api.get(f"/v1/jobs/{normal['id']}"))[0] == 200

    status, _ = await api.delete(f"/v1/jobs/{job_id}")  # now a dead letter too
    assert status == 200
    page = readable("/v1/dead-letters", *await api.get("/v1/dead-letters"))
    [entry] = [i for i in page["items"] if i["jobId"] == job_id]
    shown = readable("/v1/dead-letters/{id}", *await api.get(f"/v1/dead-letters/{entry['id']}"))
    assert (shown["payload"], shown["payloadText"]) == (None, deep)
    for params in ({"target": "held"}, {"errorClass": "permanent"}):
        readable("/v1/dead-letters", *await api.get("/v1/dead-letters", params=params))
    assert not problems, "answers the document does not describe:\n" + "\n".join(problems)
