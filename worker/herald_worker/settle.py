"""Settling: the outcomes of deliveries are written in batches (one statement per batch).

- Deliveries hand their outcomes to the :class:`Settler`: successes are completed, a 410
  pauses its target, failures go through the shared circuit breaker, and what was held
  back is given back (after the failures, so the circuit they open holds it).
- A lost database pauses settling (not ready), which resumes with backoff; settlements
  wait in memory meanwhile and are written once it is back (a lease that expired meanwhile
  means another worker may deliver again: at-least-once, never lost).
- What it tells the claim side goes through :class:`ClaimSide`: when a retry is due, and
  which outcomes are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from herald_core.states import ErrorClass, JobState
from herald_delivery.outcome import Outcome
from herald_queue.queue import Queue
from herald_queue.records import AttemptNote, ClaimedJob, Failure, FailureOutcome
from herald_worker.health import Health
from herald_worker.metrics import Metrics
from herald_worker.supervision import db_retry
from herald_worker.target_cache import RuntimeTarget
from herald_worker.tracker import Snapshot, Tracker

log = logging.getLogger("herald.worker")

SETTLE_BATCH = 200
SETTLE_LINGER = 0.005


@dataclasses.dataclass
class Settlement:
    """A claimed job and what became of its attempt, waiting to be written."""

    job: ClaimedJob
    target: RuntimeTarget | None
    outcome: Outcome
    counted: bool = False
    """A failure this worker counted towards the target's local streak."""


class ClaimSide(Protocol):
    """What the settler tells the side that claims and delivers."""

    def wake_at(self, when: dt.datetime) -> None:
        """A retry this worker scheduled is due at ``when``: claim again then."""

    def written(self, batch: Sequence[Settlement]) -> None:
        """These outcomes are written: their jobs are not held any more, and the failures
        they counted are in the shared circuit state."""


class Settler:
    def __init__(
        self,
        queue: Queue,
        worker: str,
        claim_side: ClaimSide,
        *,
        metrics: Metrics,
        tracker: Tracker,
        health: Health,
    ) -> None:
        self.queue = queue
        self.id = worker
        self.claim_side = claim_side
        self.metrics = metrics
        self.tracker = tracker
        self.health = health
        self._settlements: asyncio.Queue[Settlement] = asyncio.Queue()
        self._unsettled = 0
        """Outcomes queued or being written."""
        self._settled = asyncio.Event()

    def put(self, settlement: Settlement) -> None:
        """Queue an outcome to be written."""
        self._unsettled += 1
        self._settled.clear()
        self._settlements.put_nowait(settlement)

    async def settle_forever(self) -> None:
        """Side task: write outcomes in batches until cancelled."""
        while True:
            await self._settle_batch(await self._next_batch())

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every outcome is written (the database may be back meanwhile)."""
        if self._unsettled:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: see listener.wait
                    await self._settled.wait()

    async def _next_batch(self) -> list[Settlement]:
        batch = [await self._settlements.get()]
        deadline = time.monotonic() + SETTLE_LINGER
        while len(batch) < SETTLE_BATCH:
            try:
                batch.append(self._settlements.get_nowait())
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, 0.001))
        return batch

    async def _settle_batch(self, batch: list[Settlement]) -> None:
        delivered = [s for s in batch if s.outcome.delivered]
        gone = [s for s in batch if s.outcome.gone]
        withheld = [s for s in batch if s.outcome.withheld]
        failed = [
            s
            for s in batch
            if not s.outcome.delivered and not s.outcome.gone and not s.outcome.withheld
        ]
        last_success: dict[int, float] = {}
        for s in delivered:
            target = s.job.target_id
            last_success[target] = max(last_success.get(target, 0.0), s.outcome.finished)
        async for attempt in db_retry(self.health, "settle"):
            with attempt:
                if delivered:
                    await self._complete(delivered)
                    delivered = []
                if gone:
                    await self._pause_gone(gone)
                    gone = []
                if failed:
                    await self._fail(failed, last_success)
                    failed = []
                if withheld:  # after the failures, so the circuit they open holds them
                    await self.queue.jobs.release(
                        self.id,
                        [s.job.id for s in withheld],
                        noted=[(s.job, _note(s.outcome)) for s in withheld],
                        decision="withheld",
                    )
                    withheld = []
        self.claim_side.written(batch)
        # Jobs settled without an outcome of ours (released after a 410, lease lost).
        self.tracker.let_go(s.job.id for s in batch)
        self._unsettled -= len(batch)
        if not self._unsettled:
            self._settled.set()

    async def _complete(self, done: list[Settlement]) -> None:
        written = await self.queue.jobs.complete(
            self.id, [s.job for s in done], [_note(s.outcome) for s in done]
        )
        completed = set(written.completed)
        now = dt.datetime.now(dt.UTC)
        for s in done:
            ref = s.target.ref if s.target else str(s.job.target_id)
            if s.job.id not in completed:
                self.metrics.lost_leases.inc()
                log.warning(
                    "delivered, but the lease was lost first: another worker may "
                    "deliver this job again",
                    extra={"action": "complete", "job": str(s.job.id), "target": ref},
                )
                continue
            series = self.metrics.per_job(ref, s.job.priority.value)
            series.delivered.inc()
            if s.job.attempts > 1:
                self.metrics.retry_successes.labels(ref).inc()
            series.latency.observe(max(0.0, (now - s.job.created_at).total_seconds()))
            self.tracker.record(
                Snapshot(
                    s.job.id,
                    ref,
                    s.job.priority.value,
                    JobState.SUCCEEDED,
                    s.job.attempts,
                    s.job.created_at,
                    now,
                )
            )
        for ref in written.recovered:
            self.metrics.recoveries.labels(ref).inc()
            log.info(
                "circuit closed: a probe was delivered",
                extra={"action": "circuit-close", "target": ref},
            )

    async def _pause_gone(self, gone: list[Settlement]) -> None:
        for s in gone:
            ref = s.target.ref if s.target else str(s.job.target_id)
            reason = (
                f"the receiver answered 410 Gone ({s.outcome.message}): the endpoint is "
                "gone. Jobs are held; change the target's spec (or run `herald targets "
                "resume`) to deliver again."
            )
            if await self.queue.registry.auto_pause(s.job.target_id, reason):
                self.metrics.gone.labels(ref).inc()
                log.error(
                    "target paused: its receiver says the endpoint is gone (410)",
                    extra={"action": "auto-pause", "target": ref, "job": str(s.job.id)},
                )
        # Not the jobs' fault: back to the queue, attempt not counted, held by the pause.
        await self.queue.jobs.release(
            self.id,
            [s.job.id for s in gone],
            noted=[(s.job, _note(s.outcome)) for s in gone],
            decision="target-paused",
        )

    async def _fail(self, failed: list[Settlement], last_success: dict[int, float]) -> None:
        failures = []
        for s in failed:
            # The breaker counts consecutive failures: a failure that came back before a
            # success of its target in this batch was followed by that success (which reset
            # the streak), so it does not count.
            counts = s.outcome.finished > last_success.get(s.job.target_id, 0.0)
            failures.append(_failure(s, counts_for_breaker=counts))
        written = await self.queue.jobs.fail(self.id, failures)
        by_id = {s.job.id: s for s in failed}
        for row in written:
            self._record_failure(by_id[row.id], row)
        # A batch that opened a circuit says so on each of its jobs: one trip per target.
        for target, message in {
            o.target: by_id[o.id].outcome.message for o in written if o.tripped
        }.items():
            self.metrics.trips.labels(target).inc()
            log.warning(
                "circuit opened: the target keeps failing; its jobs wait",
                extra={"action": "circuit-open", "target": target, "error": message},
            )
        lost = len(failed) - len(written)
        if lost:
            self.metrics.lost_leases.inc(lost)

    def _record_failure(self, s: Settlement, written: FailureOutcome) -> None:
        ref = written.target
        error_class = s.outcome.error_class or ErrorClass.UNKNOWN
        self.metrics.failures.labels(ref, error_class.value).inc()
        context = {
            "job": str(s.job.id),
            "target": ref,
            "error_class": error_class.value,
            "error": s.outcome.message,
            "attempts": written.attempts,
        }
        if written.refunded:
            self.metrics.refunds.labels(ref).inc()
        if written.state is JobState.DEAD:
            # Counted by PostgreSQL (herald_dead_letters_written_total), like every path.
            reason = (
                "permanent-error" if error_class is ErrorClass.PERMANENT else "attempts-exhausted"
            )
            log.warning(
                "job dead-lettered", extra={"action": "dead-letter", "reason": reason, **context}
            )
        else:
            delay = max(0.0, (written.run_at - dt.datetime.now(dt.UTC)).total_seconds())
            self.metrics.retries.labels(ref, error_class.value).inc()
            self.metrics.backoff.labels(ref).observe(delay)
            self.claim_side.wake_at(written.run_at)
            log.info(
                "delivery failed; will try again",
                extra={"action": "retry", "delay_seconds": round(delay, 3), **context},
            )
        self.tracker.record(
            Snapshot(
                s.job.id,
                ref,
                s.job.priority.value,
                written.state,
                written.attempts,
                s.job.created_at,
                dt.datetime.now(dt.UTC),
                last_error=s.outcome.message,
            )
        )


def _failure(s: Settlement, *, counts_for_breaker: bool) -> Failure:
    """The queue's input for a failed attempt (the queue knows nothing of delivery)."""
    assert s.outcome.error_class is not None
    return Failure(
        job=s.job,
        error_class=s.outcome.error_class,
        message=s.outcome.message,
        http_status=s.outcome.status,
        retry_after=s.outcome.retry_after,
        counts_for_breaker=counts_for_breaker,
        note=_note(s.outcome),
    )


def _note(outcome: Outcome) -> AttemptNote:
    """What the attempt record keeps of an outcome beyond its decision."""
    sent = not outcome.withheld
    return AttemptNote(
        started=outcome.ended_at - outcome.duration if sent else None,
        duration=outcome.duration if sent else None,
        http_status=outcome.status,
        response=outcome.response,
        message=outcome.message or None,
    )
