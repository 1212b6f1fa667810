"""Fair share between targets: a target draining a backlog does not delay a quiet one.

The mechanism (sql/jobs.sql: claim, herald_worker/loop.py): a claim takes at most
``target_limit`` jobs from any one target (the worker passes HERALD_TARGET_CONCURRENCY) and,
for a target that already has deliveries in flight, only what its cap leaves
(``per_target_limits``). So a quiet target's new job is in the very next claim, however
many older jobs (earlier deadlines) another target has queued, and a worker whose busy
target is at its cap claims only the other targets' jobs. The worker-level test shows it
end to end: with the busy target's deliveries held, the quiet target's jobs are still
delivered while the backlog waits.
"""

from __future__ import annotations

import collections
from pathlib import Path

from tests.helpers import job, open_queue, register
from tests.integration.worker.harness import (
    NO_BREAKER,
    TrackingReceiver,
    target_doc,
    wait_state,
    worker,
)
from tests.integration.worker.harness import write_manifests as write

BACKLOG = 2000
QUIET = 5
CAP = 16


async def test_a_claim_takes_the_quiet_targets_jobs_despite_an_older_backlog(db_url: str) -> None:
    async with await open_queue(db_url) as queue:
        busy = await register(queue, "busy")
        quiet = await register(queue, "quiet")
        await queue.jobs.enqueue_many([job("busy", {"n": n}) for n in range(BACKLOG)])
        quiet_ids = {
            r.id for r in await queue.jobs.enqueue_many([job("quiet") for _ in range(QUIET)])
        }

        first = await queue.jobs.claim("w1", 50, target_limit=CAP)
        per_target = collections.Counter(j.target_id for j in first)
        assert per_target == {busy: CAP, quiet: QUIET}, "the backlog gives only its cap"
        assert {j.id for j in first if j.target_id == quiet} == quiet_ids

        # A worker whose busy target is at its cap (CAP in flight) asks for none of it.
        more_quiet = {
            r.id for r in await queue.jobs.enqueue_many([job("quiet") for _ in range(QUIET)])
        }
        second = await queue.jobs.claim("w1", 50, per_target_limits={busy: 0}, target_limit=CAP)
        assert {j.id for j in second} == more_quiet, "only the quiet target's new jobs"

        # With room again, the backlog is drained oldest first, CAP per claim.
        third = await queue.jobs.claim("w1", 50, target_limit=CAP)
        assert [j.target_id for j in third] == [busy] * CAP


async def test_a_quiet_target_is_delivered_while_a_backlog_holds_the_busy_one(
    db_url: str, tmp_path: Path
) -> None:
    async with TrackingReceiver() as busy_rx, TrackingReceiver() as quiet_rx:
        busy_rx.gate.clear()  # the busy target's deliveries hang: its backlog cannot drain
        path = write(
            tmp_path / "targets.yaml",
            [
                target_doc("busy", busy_rx.url, circuitBreaker=NO_BREAKER),
                target_doc("quiet", quiet_rx.url, circuitBreaker=NO_BREAKER),
            ],
        )
        async with worker(
            db_url, path, concurrency=8, target_concurrency=4, claim_batch=50, shutdown_grace=0.5
        ) as w:
            try:
                await w.submit_many("busy", [{"n": n} for n in range(500)])
                quiet_ids = [(await w.submit("quiet", {"q": n}))["id"] for n in range(20)]
                await wait_state(w.queue, "succeeded", 20, target="quiet")
                assert {r.webhook_id for r in quiet_rx.received} == set(quiet_ids)
                assert busy_rx.max_in_flight <= 4, "the busy target kept to its cap"
                assert not busy_rx.received, "no busy delivery finished: all quiet ones did"
            finally:
                busy_rx.gate.set()
            await wait_state(w.queue, "succeeded", 500, target="busy", timeout=120)
