"""The delivery loop: claim, deliver concurrently, hand the outcomes to the settler.

- Claims wake on LISTEN/NOTIFY, on this worker's own retry timers, when capacity frees up,
  and every HERALD_POLL_INTERVAL as the fallback.
- Deliveries are bounded per worker (HERALD_CONCURRENCY) and per target
  (HERALD_TARGET_CONCURRENCY); outcomes are settled in batches (settle.py), leases renewed
  meanwhile (leases.py), and a failing target held back locally (holdback.py).
- A lost database pauses the loop (not ready), which resumes with backoff
  (supervision.py).
- stop(): no more claims; deliveries in flight get HERALD_SHUTDOWN_GRACE to finish; the
  rest are cancelled and released so another worker takes them at once.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Sequence

from herald_core.errors import InvalidTarget
from herald_core.states import ErrorClass, JobState
from herald_delivery.outcome import Outcome
from herald_delivery.send import Sender
from herald_delivery.target_types.base import InvalidPayload, RenderContext
from herald_queue.listener import Listener
from herald_queue.listener import wait as listener_wait
from herald_queue.queue import Queue
from herald_queue.records import ClaimedJob
from herald_worker import leases, tracing
from herald_worker.health import Health
from herald_worker.holdback import WITHHELD, HoldBack
from herald_worker.metrics import Metrics
from herald_worker.settings import WorkerSettings
from herald_worker.settle import Settlement, Settler
from herald_worker.supervision import DB_ERRORS, db_retry
from herald_worker.target_cache import RuntimeTarget, TargetDirectory
from herald_worker.tracker import Snapshot, Tracker

log = logging.getLogger("herald.worker")

MORE_INTERVAL = 0.05
"""Seconds between two wake-ups of the other workers by the waker (see _claim_once)."""


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Worker:
    def __init__(
        self,
        queue: Queue,
        directory: TargetDirectory,
        settings: WorkerSettings,
        *,
        sender: Sender,
        tracker: Tracker,
        metrics: Metrics,
        health: Health,
        listener: Listener,
        name: str | None = None,
        tracer: tracing.AttemptTracer | None = None,
    ) -> None:
        self.queue = queue
        self.directory = directory
        self.settings = settings
        self.sender = sender
        self.tracker = tracker
        self.metrics = metrics
        self.health = health
        self.listener = listener
        self.tracer = tracer
        """Spans per attempt while trace export is configured (herald_worker.tracing)."""
        self.id = name or worker_id()
        self._deliveries: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._per_target: dict[int, int] = {}
        self._held: dict[uuid.UUID, ClaimedJob] = {}
        """Every job this worker holds a lease on: delivering, or waiting to be settled."""
        self._wake = asyncio.Event()
        self._refill = max(1, min(settings.claim_batch, settings.concurrency) // 2)
        """Free delivery slots that make a busy worker claim again."""
        self._more_sent = -MORE_INTERVAL
        """When this worker last woke the others (time.monotonic)."""
        self._stopping = False
        self._hold_back = HoldBack()
        self.settler = Settler(
            queue, self.id, self, metrics=metrics, tracker=tracker, health=health
        )
        # Read at scrape time, not set twice per job.
        metrics.in_flight.set_function(lambda: len(self._deliveries))

    # -- the claim loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and deliver until ``stop`` is set, then shut down gracefully."""
        stopper = asyncio.create_task(self._stop_when(stop))
        # While PostgreSQL is away, a stop ends the retries (then the shutdown settles and
        # releases what it can; what it cannot is rescued after the lease).
        retrying = db_retry(self.health, "claim", give_up=lambda: self._stopping)
        try:
            while not self._stopping:
                try:
                    async for attempt in retrying:
                        with attempt:
                            await self._claim_once()
                            self.health.database_ok()
                except DB_ERRORS:
                    if not self._stopping:
                        raise
        finally:
            stopper.cancel()
            await self._shutdown()

    async def _stop_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        self._wake.set()

    async def _claim_once(self) -> None:
        free = self.settings.concurrency - len(self._deliveries)
        if self._deliveries and free < self._refill:
            # Busy: claim again once half a batch of capacity is free (fewer, larger claims:
            # less CPU per job here and in PostgreSQL). Until then only freed capacity, a
            # timer or stop wakes the loop; a notification stays set for the next claim
            # (waiting on it here would spin while it is set).
            self._wake.clear()
            if not self._stopping:
                await listener_wait(self._wake, self.settings.poll_interval)
            return
        cap = self.settings.target_concurrency
        limits = {t: max(0, cap - n) for t, n in self._per_target.items() if n}
        limits.update(dict.fromkeys(self._hold_back.targets, 0))
        want = min(self.settings.claim_batch, free)
        self.listener.jobs.clear()
        self._wake.clear()
        jobs = await self.queue.jobs.claim(
            self.id, want, per_target_limits=limits, target_limit=cap
        )
        if self._stopping:  # claimed just as we were told to stop: give them back
            await self.queue.jobs.release(self.id, [j.id for j in jobs])
            return
        for job in jobs:
            self._start(job)
        now = time.monotonic()
        if (
            self.listener.waker
            and now - self._more_sent >= MORE_INTERVAL
            and _limited(jobs, want, limits, cap)
        ):
            # More may be waiting than this claim could take: wake the workers that do not
            # hear herald_jobs (one enqueue wakes only the waker; a backlog is shared).
            # Once per MORE_INTERVAL at most: a woken worker goes on claiming by itself.
            self._more_sent = now
            await self.queue.jobs.notify_more()
        if len(jobs) < want:
            await self._sleep(self.settings.poll_interval)

    async def _sleep(self, timeout: float) -> None:
        """Until a notification, a retry timer, freed capacity, stop, or ``timeout``."""
        waiters = [
            asyncio.ensure_future(self.listener.jobs.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def wake_at(self, when: dt.datetime) -> None:
        """Claim again at ``when`` (a retry this worker scheduled)."""
        delay = max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds()) + 0.005
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    # -- deliveries ---------------------------------------------------------------------

    def _start(self, job: ClaimedJob) -> None:
        target = self.directory.get(job.target_id)
        self._held[job.id] = job
        self._per_target[job.target_id] = self._per_target.get(job.target_id, 0) + 1
        ref = target.ref if target else str(job.target_id)
        self.metrics.per_job(ref, job.priority.value).claimed.inc()
        self.tracker.record(
            Snapshot(
                job.id,
                ref,
                job.priority.value,
                JobState.RUNNING,
                job.attempts,
                job.created_at,
                dt.datetime.now(dt.UTC),
                local=True,
            )
        )
        task = asyncio.create_task(self._deliver(job, target), name=f"deliver-{job.id}")
        self._deliveries[job.id] = task

    async def _deliver(self, job: ClaimedJob, target: RuntimeTarget | None) -> None:
        try:
            try:
                if target is None:  # registered after our last refresh
                    await self.directory.refresh()
                    target = self.directory.get(job.target_id)
                if job.target_id in self._hold_back:
                    outcome = Outcome.held_back(WITHHELD)
                elif self.tracer is None:  # a stored trace context goes on unchanged
                    outcome = await self._attempt(job, target, tracing.propagated(job))
                else:
                    outcome = await self._traced(job, target, self.tracer)
            except Exception as exc:  # a bug or a lost database: never leave the job held
                log.error(
                    "delivery attempt failed inside the worker; the job is retried",
                    exc_info=True,
                    extra={"action": "deliver", "job": str(job.id), "error": type(exc).__name__},
                )
                outcome = Outcome.not_sent(
                    ErrorClass.UNKNOWN,
                    f"the worker failed before an answer ({type(exc).__name__})",
                )
            if not outcome.withheld:
                ref = target.ref if target else str(job.target_id)
                series = self.metrics.per_job(ref, job.priority.value)
                series.attempts.inc()
                duration = series.success if outcome.delivered else series.failure
                duration.observe(outcome.duration)
            counted = self._hold_back.observe(job.target_id, target, outcome)
            self.settler.put(Settlement(job, target, outcome, counted))
        finally:
            self._deliveries.pop(job.id, None)
            self._per_target[job.target_id] -= 1
            self._wake.set()

    def written(self, batch: Sequence[Settlement]) -> None:
        """Outcomes written (the settler's :class:`~herald_worker.settle.ClaimSide`): the
        failures counted are in the shared circuit state, which decides from now on, and
        the jobs are not held any more."""
        self._hold_back.written(s.job.target_id for s in batch if s.counted)
        for s in batch:
            if self._held.get(s.job.id) is s.job:  # not a newer attempt claimed since
                del self._held[s.job.id]

    async def _traced(
        self, job: ClaimedJob, target: RuntimeTarget | None, tracer: tracing.AttemptTracer
    ) -> Outcome:
        """An attempt in its own span (a child of the producer's), which the receiver's
        ``traceparent`` names as its parent."""
        span = tracer.start(job, target.ref if target else str(job.target_id))
        if span is None:  # tracing failed: the delivery goes on without a span
            return await self._attempt(job, target, tracing.propagated(job))
        try:
            outcome = await self._attempt(job, target, span.headers)
        except BaseException as exc:
            span.fail(exc)
            raise
        span.finish(outcome)
        return outcome

    async def _attempt(
        self,
        job: ClaimedJob,
        target: RuntimeTarget | None,
        trace_headers: dict[str, str] | None = None,
    ) -> Outcome:
        if target is None:
            return Outcome.not_sent(
                ErrorClass.TRANSIENT, "the target is not in the registry any more"
            )
        if target.problem:
            # A configuration problem (a missing Secret...) is ridden out like an outage:
            # the circuit opens and the jobs wait, without burning attempts, until fixed.
            return Outcome.not_sent(ErrorClass.TRANSIENT, f"cannot deliver: {target.problem}")
        try:
            request = target.kind.render(
                RenderContext(
                    job_id=job.id,
                    attempt=job.attempts,
                    payload_json=job.payload_json,
                    target=target.target,
                    secrets=target.secrets,
                    timestamp=int(time.time()),
                )
            )
        except InvalidPayload as exc:
            return Outcome.not_sent(
                ErrorClass.PERMANENT, f"invalid payload for a {target.row.type} target: {exc}"
            )
        except InvalidTarget as exc:  # the target's fault, not the job's: ride it out
            return Outcome.not_sent(ErrorClass.TRANSIENT, f"cannot deliver: {exc}")
        if trace_headers is not None:  # W3C trace context: the receiver's trace continues
            tracing.set_headers(request.headers, trace_headers)
        return await self.sender.send(request, timeout=target.row.spec.timeout)

    # -- leases and settling -----------------------------------------------------------

    async def renew_leases_forever(self) -> None:
        """Side task: extend the leases of jobs held, every third of the lease."""
        await leases.renew_forever(
            self.queue,
            self.id,
            self._held,
            self._deliveries,
            tracker=self.tracker,
            health=self.health,
        )

    async def settle_forever(self) -> None:
        """Side task: write outcomes in batches until cancelled."""
        await self.settler.settle_forever()

    async def drain_settlements(self, timeout: float = 60.0) -> None:
        """Wait until every outcome is written (the database may be back meanwhile)."""
        await self.settler.drain(timeout)

    # -- shutdown -----------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._stopping = True
        pending = list(self._deliveries.values())
        if pending:
            log.info(
                "stopping: waiting for deliveries in flight",
                extra={
                    "action": "shutdown",
                    "in_flight": len(pending),
                    "grace_seconds": self.settings.shutdown_grace,
                },
            )
            _, late = await asyncio.wait(pending, timeout=self.settings.shutdown_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        # Every delivered outcome is written first (the settler runs meanwhile); what is
        # left held was cancelled mid-delivery and goes back to the queue.
        await self.drain_settlements()
        unsettled = list(self._held)
        if unsettled:
            released = 0
            async for attempt in db_retry(self.health, "release", attempts=5):
                with attempt:
                    released = await self.queue.jobs.release(self.id, unsettled)
            self.tracker.let_go(unsettled)
            log.info(
                "released jobs not delivered before the grace period ended",
                extra={"action": "shutdown", "released": released},
            )
            self._held.clear()

    @property
    def in_flight(self) -> int:
        return len(self._deliveries)


def _limited(jobs: list[ClaimedJob], want: int, limits: dict[int, int], cap: int) -> bool:
    """The claim took all it asked for, or all it could of some target."""
    if len(jobs) >= want:
        return True
    taken = collections.Counter(j.target_id for j in jobs)
    return any(n >= limits.get(t, cap) for t, n in taken.items())
