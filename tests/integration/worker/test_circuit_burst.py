"""A failing target gets no burst before its circuit opens: once this worker has seen the
failureThreshold's worth of failures of a target, it claims and sends nothing more of it
until those failures are written (and the shared circuit has opened), and gives back the
jobs it had claimed but not sent, without counting an attempt.

It used to send two or three waves of one claimed batch (32 to 50 requests with a
threshold of 5): each failure freed a slot and the next claim took more jobs of the
target while the failures were still waiting to be written."""

from __future__ import annotations

import collections
from pathlib import Path

from herald_tools.receiver import Answer, always
from tests.helpers import RETRY_LATER, sql_rows, wait_until
from tests.integration.worker.harness import (
    TrackingReceiver,
    circuit,
    dead_letters,
    states,
    target_doc,
    worker,
    write_manifests,
)

THRESHOLD = 5
TARGET_CONCURRENCY = 16
JOBS = 50


async def test_the_threshold_stops_the_batch_before_the_circuit_is_written(
    db_url: str, tmp_path: Path
) -> None:
    # The 503s come a little late, so that each wave's failures arrive close together,
    # as they do from a real receiver that is down.
    async with TrackingReceiver(always(Answer(503, body="down", delay=0.05))) as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc(
                    "down",
                    rx.url,
                    retry={"maxAttempts": 5, **RETRY_LATER},
                    # Open for an hour: nothing after the trip is a probe.
                    circuitBreaker={"failureThreshold": THRESHOLD, "openSeconds": 3600},
                )
            ],
        )
        async with worker(
            db_url, path, concurrency=64, target_concurrency=TARGET_CONCURRENCY, claim_batch=50
        ) as w:
            ids = await w.submit_many("down", [{"n": i} for i in range(JOBS)])

            async def opened_and_settled() -> bool:
                return (
                    await circuit(w.queue, "down") == "open"
                    and (await states(w.queue)).get("running", 0) == 0
                    and rx.in_flight == 0
                )

            await wait_until(opened_and_settled, timeout=30, what="circuit open, settled")
            assert rx.arrived <= THRESHOLD + TARGET_CONCURRENCY, (
                f"{rx.arrived} requests before the circuit opened (threshold {THRESHOLD}, "
                f"{TARGET_CONCURRENCY} at once per target)"
            )
            rows = await sql_rows(
                w.queue, "SELECT id::text AS id, state, attempts FROM herald.jobs"
            )
            sent = collections.Counter(r.webhook_id for r in rx.received)
            assert {r["id"] for r in rows} == set(ids)
            for r in rows:
                assert r["attempts"] <= sent[r["id"]], f"an attempt it did not make: {r}"
                assert r["state"] in ("queued", "retrying"), r
            assert await dead_letters(w.queue) == []
