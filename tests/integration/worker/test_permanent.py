"""A permanent error reaches the DLQ after one attempt (one request at the receiver), is
visible through the API (GET /v1/dead-letters, GET /v1/dead-letters/{id}), is replayed
with POST /v1/dead-letters/{id}/replay, and is then delivered once the receiver accepts it:
same job id, same webhook-id, same payload."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from herald_tools.receiver import Answer, Receiver
from tests.integration.worker.harness import (
    FAST_RETRY,
    TrackingReceiver,
    job,
    states,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)


async def test_permanent_error_to_dlq_then_replayed_and_delivered(
    db_url: str, tmp_path: Path
) -> None:
    accept = False

    def script(receiver: Receiver, request: web.Request, body: bytes) -> Answer:
        if accept:
            return Answer(202, body="accepted")
        return Answer(422, body='{"error": "field severity: unknown value \\"urgent\\""}')

    payload = {"summary": "disk full", "severity": "urgent", "host": "db-1"}
    async with TrackingReceiver(script) as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [target_doc("hook", rx.url, retry={"maxAttempts": 5, **FAST_RETRY})],
        )
        async with worker(db_url, path) as w:
            submitted = await w.submit("hook", payload, priority="high")
            job_id = submitted["id"]
            await wait_state(w.queue, "dead", 1)
            assert len(rx.received) == 1, "one attempt, one request"

            # -- visible through the API -----------------------------------------------
            status, page = await w.get("/v1/dead-letters")
            assert status == 200, page
            [item] = page["items"]
            assert page["nextCursor"] is None
            assert item["jobId"] == job_id
            assert item["target"] == "default/hook"
            assert item["errorClass"] == "permanent"
            assert item["reason"] == "permanent-error"
            assert item["httpStatus"] == 422
            assert "HTTP 422" in item["error"] and "unknown value" in item["error"], item
            assert item["attempts"] == 1
            assert item["priority"] == "high"
            assert item["replayed"] is False
            assert "payload" not in item, "lists leave payloads out"

            status, entry = await w.get(f"/v1/dead-letters/{item['id']}")
            assert status == 200, entry
            assert entry["payload"] == payload
            assert entry["targetConfig"]["url"] == rx.url

            status, found = await w.get(
                "/v1/dead-letters", params={"errorClass": "permanent", "target": "hook"}
            )
            assert [i["id"] for i in found["items"]] == [item["id"]]
            status, none = await w.get("/v1/dead-letters", params={"errorClass": "transient"})
            assert none["items"] == []

            status, stats = await w.get("/v1/dead-letters/stats")
            assert status == 200
            assert stats["waiting"] == 1
            assert stats["byTarget"] == {"default/hook": 1}
            assert stats["byErrorClass"] == {"permanent": 1}

            status, shown = await w.get(f"/v1/jobs/{job_id}")
            assert shown["state"] == "dead", shown

            # -- replayed, and delivered once the receiver accepts it --------------------
            accept = True
            status, result = await w.post(f"/v1/dead-letters/{item['id']}/replay")
            assert status == 200, result
            assert result == {
                "matched": 1,
                "replayed": 1,
                "skipped": 0,
                "cancelledLeftOut": 0,
                "dryRun": False,
                "jobIds": [job_id],
            }
            await wait_state(w.queue, "succeeded", 1)
            assert await states(w.queue) == {"succeeded": 1}
            assert rx.delivered_ids() == [job_id], "the same job, same webhook-id"
            assert len(rx.received) == 2
            assert rx.received[0].body == rx.received[1].body, "the same payload, byte for byte"
            assert json.loads(rx.received[1].body) == payload
            row = await job(w.queue, job_id)
            assert (row["attempts"], row["dead_reason"], row["priority"]) == (1, None, "high")

            status, shown = await w.get(f"/v1/jobs/{job_id}")
            assert shown["state"] == "succeeded", shown

            # -- a dead letter is replayed once --------------------------------------------
            status, again = await w.post(f"/v1/dead-letters/{item['id']}/replay")
            assert status == 409, again
            assert again["error"]["field"] == "id"
            status, entry = await w.get(f"/v1/dead-letters/{item['id']}")
            assert entry["replayed"] is True
            assert entry["replayResult"] == "queued"
            assert entry["replayedBy"].startswith("api/")
            assert rx.statuses() == {422: 1, 202: 1}
