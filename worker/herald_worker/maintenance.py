"""The worker's side services, each a loop on its own interval:

- rescuer (HERALD_RESCUE_INTERVAL): claims back jobs whose lease expired (their worker
  died), sweeps waiting jobs of deleted targets to the DLQ and disables the targets that
  failed continuously for their disable period (HERALD_DISABLE_AFTER), as of ``clock()``;
- cleaner (HERALD_CLEANUP_INTERVAL): retention of finished jobs (HERALD_JOB_RETENTION),
  of dead letters (HERALD_DEAD_LETTER_RETENTION), of deleted targets' tombstones, and of
  the attempt record (HERALD_ATTEMPT_RETENTION: the coming days' partitions made ahead,
  whole past days dropped);
- sampler (HERALD_SAMPLE_INTERVAL): queue depth, oldest ready job, DLQ size and circuit
  states into /metrics;
- refresher (HERALD_TARGETS_REFRESH, and at once on a registry notification): target
  configuration and Secrets, so changes apply without a restart.

A database outage makes a loop wait and try again (the worker reports not ready); any
other exception ends the loop, and the supervisor then stops the worker loudly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from herald_core.states import CircuitState, JobState
from herald_queue import db, stats
from herald_queue.capacity import ALL, CapacityWatch, CountStart, Level, percent
from herald_queue.listener import Listener, wait
from herald_queue.queue import Queue
from herald_queue.records import StateCount, TargetRow
from herald_worker.health import Health
from herald_worker.metrics import DEAD_LETTER_SERIES, Metrics
from herald_worker.supervision import DB_ERRORS
from herald_worker.target_cache import TargetDirectory

log = logging.getLogger("herald.maintenance")
# Tombstones of deleted targets outlive the job retention by this much.
TOMBSTONE_MARGIN = 86_400.0


class Maintenance:
    def __init__(
        self,
        queue: Queue,
        directory: TargetDirectory,
        metrics: Metrics,
        health: Health,
        listener: Listener,
        capacity: CapacityWatch | None = None,
        *,
        disable_after: float = 432_000.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.capacity = capacity or CapacityWatch(
            queue.settings.capacity, queue.settings.capacity_hard_limit
        )
        self.queue = queue
        self.directory = directory
        self.metrics = metrics
        self.health = health
        self.listener = listener
        self.disable_after = disable_after
        """HERALD_DISABLE_AFTER."""
        self.clock = clock
        """The time the disable check goes by (tests move it instead of waiting days)."""

    async def _loop(self, name: str, step: Callable[[], Awaitable[None]], interval: float) -> None:
        while True:
            try:
                await step()
            except DB_ERRORS as exc:
                self.health.database_error(exc)  # says what happened unless PostgreSQL is away
                if db.is_connection_failure(exc):
                    log.warning(
                        "database unavailable, will try again",
                        extra={"action": name, "error": type(exc).__name__},
                    )
            await asyncio.sleep(interval)

    async def rescuer(self, interval: float) -> None:
        await self._loop("rescue", self.rescue_once, interval)

    async def cleaner(self, interval: float) -> None:
        await self._loop("cleanup", self.clean_once, interval)

    async def sampler(self, interval: float) -> None:
        await self._loop("sample", self.sample_once, interval)

    async def refresher(self, interval: float) -> None:
        while True:
            try:
                await self.directory.refresh()
                for target in self.directory.all():
                    self.metrics.initialize_target(target.ref)
            except DB_ERRORS as exc:
                self.health.database_error(exc)
            await wait(self.listener.targets, interval)
            self.listener.targets.clear()
            # Names resolved for enqueues may now point at a deleted or re-created target.
            self.queue.registry.invalidate()

    async def rescue_once(self) -> None:
        outcomes = await self.queue.jobs.rescue_expired()
        if outcomes:
            self.metrics.rescued.inc(len(outcomes))
            dead = sum(1 for o in outcomes if o.state is JobState.DEAD)
            log.warning(
                "claimed back jobs whose worker stopped renewing their lease",
                extra={"action": "rescue", "jobs": len(outcomes), "dead": dead},
            )
        await self.disable_once()
        swept = await self.queue.registry.sweep_deleted()
        if swept:
            log.info(
                "moved jobs of deleted targets to the dead-letter queue",
                extra={"action": "sweep", "jobs": swept},
            )

    async def disable_once(self) -> None:
        """Disable the targets failing continuously for their disable period: their jobs
        wait (none is dead-lettered), the operator reports a Disabled condition and an
        Event; ``herald targets enable`` brings them back."""
        for target in await self.queue.registry.disable_failing(self.clock(), self.disable_after):
            self.metrics.disabled.labels(target.ref).inc()
            log.warning(
                "target disabled: its deliveries have failed continuously for its disable "
                "period. Jobs are held; fix the endpoint, then `herald targets enable "
                f"{target.ref}`",
                extra={
                    "action": "disable",
                    "target": target.ref,
                    "reason": target.auto_paused_reason,
                },
            )

    async def clean_once(self, now: dt.datetime | None = None) -> None:
        """One pass of retention, as of ``now`` (by default the database's clock): finished
        jobs after HERALD_JOB_RETENTION, dead letters after HERALD_DEAD_LETTER_RETENTION,
        tombstones of deleted targets a day after the job retention once no job of theirs
        is unfinished, and whole days of attempts (herald_queue/attempts.py)."""
        settings = self.queue.settings
        jobs = await self.queue.jobs.prune(now=now)
        purged = await self.queue.dead_letters.purge(settings.dead_letter_retention, now=now)
        tombstones = await self.queue.registry.purge_tombstones(
            settings.job_retention + TOMBSTONE_MARGIN, now=now
        )
        rotation = await self.queue.attempts.rotate(settings.attempt_retention, now=now)
        if rotation.dropped or rotation.default_pruned:
            log.info(
                "attempt retention: dropped whole days of attempts",
                extra={
                    "action": "cleanup",
                    "partitions": rotation.dropped,
                    "kept_for_dead_letters": rotation.kept_for_dead_letters,
                    "default_rows": rotation.default_pruned,
                },
            )
        if rotation.busy:
            log.info(
                "attempt retention: days not dropped this pass, their lock was busy "
                "(tried again on the next pass)",
                extra={"action": "cleanup", "partitions": rotation.busy},
            )
        if jobs or purged.deleted or tombstones:
            log.info(
                "retention",
                extra={
                    "action": "cleanup",
                    "jobs": jobs,
                    "dead_letters": purged.deleted,
                    "target_tombstones": tombstones,
                },
            )

    async def sample_once(self) -> None:
        m = self.metrics
        since = self.capacity.begin()  # before the count: jobs accepted from now are added
        rows = await stats.count_rows(self.queue.pool, live_only=True)
        dlq = await self.queue.dead_letters.stats()
        targets = await self.queue.registry.list()
        written, replayed = await self.queue.dead_letters.counters()
        # From here on no await: a scrape sees one sample, not half of two.
        zeros = {(t.ref, c, r): 0 for t in targets for c, r in DEAD_LETTER_SERIES}
        m.database_counters.written = zeros | written
        m.database_counters.replayed = {t.ref: 0 for t in targets} | replayed
        oldest: dict[str, float] = {}
        m.depth.clear()
        for t in targets:  # every live target shows 0 rather than nothing
            for state in (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING):
                for priority in ("high", "medium", "low"):
                    m.depth.labels(t.ref, priority, state.value).set(0)
        for r in rows:
            m.depth.labels(r.target, r.priority.value, r.state.value).set(r.n)
            if r.oldest_ready_age_seconds is not None:
                oldest[r.target] = max(oldest.get(r.target, 0.0), r.oldest_ready_age_seconds)
        m.oldest_ready.clear()
        m.dlq_size.clear()
        m.circuit.clear()
        m.paused.clear()
        for t in targets:
            m.oldest_ready.labels(t.ref).set(oldest.get(t.ref, 0.0))
            m.dlq_size.labels(t.ref).set(dlq.by_target.get(t.ref, 0))
            for circuit in CircuitState:
                m.circuit.labels(t.ref, circuit.value).set(1 if t.circuit_state is circuit else 0)
            m.paused.labels(t.ref).set(1 if t.holding else 0)
        self._sample_capacity(rows, targets, since)
        self.health.database_ok()

    def _sample_capacity(
        self, rows: list[StateCount], targets: list[TargetRow], since: CountStart
    ) -> None:
        """Fill of each capacity into /metrics and the API's hard limits; one log line
        (and one count) per crossing of 80 % or 100 %, not per sample."""
        m = self.metrics
        waiting: dict[str, int] = {}
        for r in rows:
            if r.state in (JobState.QUEUED, JobState.RETRYING):
                waiting[r.target] = waiting.get(r.target, 0) + r.n
        limits = {t.ref: t.spec.capacity for t in targets if t.spec.capacity is not None}
        crossings = self.capacity.observe(waiting, limits, since)
        m.capacity_ratio.clear()
        m.capacity_jobs.clear()
        for ref, policy in limits.items():
            m.capacity_ratio.labels(ref).set(waiting.get(ref, 0) / policy.jobs)
            m.capacity_jobs.labels(ref).set(policy.jobs)
            for level in ("warning", "full"):
                m.capacity_crossings.labels(ref, level)
        total = self.capacity.total_capacity
        m.total_capacity_jobs.set(total)
        m.total_capacity_ratio.set(self.capacity.total / total if total else 0)
        for c in crossings:
            extra = {
                "action": "capacity",
                "target": c.scope or None,
                "level": c.after.label,
                "waiting": c.waiting,
                "capacity": c.capacity,
                "percent": percent(c.waiting, c.capacity),
            }
            if not c.rising:
                log.info("capacity fill went down a level", extra=extra)
                continue
            if c.scope == ALL:
                m.total_capacity_crossings.labels(c.after.label).inc()
            else:
                m.capacity_crossings.labels(c.scope, c.after.label).inc()
            log.warning(
                "queue at capacity" if c.after is Level.FULL else "queue near capacity",
                extra=extra,
            )
