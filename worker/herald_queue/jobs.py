"""The job store: enqueue, claim, settle (complete, fail, release), rescue, cancel, read.

Every operation is a few statements of named SQL (``sql/jobs.sql``); batches stay
batches all the way to PostgreSQL. Time comes from the database (``now()``), so workers
with skewed clocks still agree on leases, backoff and circuits.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from herald_core.errors import IdempotencyKeyReused, InvalidRequest
from herald_core.ids import parse_uuid, uuid7_ints
from herald_core.states import CircuitState, ErrorClass, JobState, Priority
from herald_core.trace_context import TraceContext
from herald_model.submission import JobRequest
from herald_model.target_spec import RetryPolicy
from herald_queue import admission, locks, ordering_keys, sql
from herald_queue.db import AsyncConn, retry_conflicts
from herald_queue.group_commit import GroupCommit
from herald_queue.records import (
    NO_NOTE,
    AttemptNote,
    ClaimedJob,
    CompleteOutcome,
    EnqueueResult,
    Failure,
    FailureOutcome,
    JobPage,
    JobRecord,
)
from herald_queue.registry import TargetRegistry
from herald_queue.retry import decide
from herald_queue.settings import QueueSettings
from herald_queue.waker import Waker

JOBS_SQL = sql.load("jobs")
TARGETS_SQL = sql.load("targets")
log = logging.getLogger("herald.queue")

# Batches at least this large, without idempotency or ordering keys, are written with COPY.
COPY_THRESHOLD = 32
# How often the list of targets that need quota claims (rate limits, probes) is re-read.
QUOTA_REFRESH_SECONDS = 0.5
# Targets under quotas (rate limits, half-open probes) are offered the head of a claim at
# least this often, so a backlog on other targets never starves them (a circuit never
# probed would stay open); in between they take what ordinary targets leave.
QUOTA_FIRST_SECONDS = 0.05


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _copy_escape(text: str) -> str:
    """``text`` as a column of COPY's text format: a backslash escapes, and a raw newline,
    carriage return or tab (JSON's whitespace, kept as the producer sent it) would end the
    row or the column."""
    if "\\" in text or "\n" in text or "\r" in text or "\t" in text:
        return text.translate(_COPY_ESCAPES)
    return text


class JobStore:
    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConn],
        registry: TargetRegistry,
        settings: QueueSettings,
        *,
        retry_after_cap: float = 3600.0,
    ) -> None:
        self._pool = pool
        self.registry = registry
        self.settings = settings
        self.retry_after_cap = retry_after_cap
        self._policies: dict[int, RetryPolicy] = {}
        self._policies_loaded = 0.0
        self._quota_targets: list[int] = []
        self._quota_checked = 0.0
        self._quota_refresh: asyncio.Task[None] | None = None
        self._quota_first_at = 0.0
        self.waker = Waker(pool)
        self.group_commit = GroupCommit(
            self.enqueue_many,
            max_group=settings.ingest_max_group,
            linger=settings.ingest_linger,
            in_flight=max(1, min(settings.ingest_groups_in_flight, pool.max_size - 1)),
        )

    # -- enqueue -----------------------------------------------------------------------

    async def enqueue(self, request: JobRequest) -> EnqueueResult:
        """Enqueue one job; concurrent calls share transactions (herald_queue.group_commit)
        unless HERALD_INGEST_MAX_GROUP is 1. Returns once the job is committed. A job with an
        ordering key is written alone: its chain's lock may be held a while (a settle, a
        replay of the chain), and no other request should wait for it."""
        if self.settings.ingest_max_group <= 1 or request.ordering_key:
            return (await self.enqueue_many([request]))[0]
        return await self.group_commit.submit(request)

    async def enqueue_many(self, requests: Sequence[JobRequest]) -> list[EnqueueResult]:
        """Enqueue in one transaction; results in the order given. A request whose
        idempotency key matches an existing job of its target returns that job."""
        if not requests:
            return []
        resolved = {t: await self.registry.resolve(t) for t in {r.target for r in requests}}
        ids = uuid7_ints(len(requests))
        plain = not any(
            r.idempotency_key or r.ordering_key or r.run_at or r.trace for r in requests
        )
        if plain and len(requests) >= COPY_THRESHOLD:
            return await self._copy(requests, resolved, ids)
        return await self._insert(requests, resolved, ids)

    @retry_conflicts
    async def _insert(
        self,
        requests: Sequence[JobRequest],
        resolved: dict[str, tuple[int, str]],
        ids: Sequence[int],
    ) -> list[EnqueueResult]:
        batch = ",".join(
            _record_json(job_id, resolved[r.target][0], r, self.settings.budget(r.priority))
            for job_id, r in zip(ids, requests, strict=True)
        )
        ordered = [(resolved[r.target][0], r.ordering_key) for r in requests if r.ordering_key]
        keyed = [(resolved[r.target][0], r.idempotency_key) for r in requests if r.idempotency_key]
        existing: dict[tuple[int, str], tuple[uuid.UUID, str, str | None]] = {}
        # One autocommitted statement (a multi-row INSERT is atomic on its own) unless
        # there are chains to lock, or keys to lock and look up across statements.
        single = not ordered and (len(requests) == 1 or not keyed)
        async with (
            self._pool.connection() as conn,
            contextlib.nullcontext() if single else conn.transaction(),
        ):
            # Locks first, in sorted order: the chains (so seq follows the chain order) and,
            # for a batch, the idempotency keys (so overlapping batches never deadlock).
            await ordering_keys.lock(conn, ordered)
            if keyed and not single:
                await conn.execute(
                    JOBS_SQL["lock_idempotency_keys"],
                    {
                        "target_ids": [t for t, _ in keyed],
                        "keys": [k for _, k in keyed],
                        "seed": locks.IDEMPOTENCY_SEED,
                    },
                )
            cur = await conn.execute(
                JOBS_SQL["enqueue_many"], {"batch": f"[{batch}]", "notify": self.waker.take()}
            )
            inserted = {row[0].int for row in await cur.fetchall()}  # type: ignore[attr-defined]
            if len(inserted) < len(requests) and keyed:
                cur = await conn.execute(
                    JOBS_SQL["find_by_idempotency_keys"],
                    {"target_ids": [t for t, _ in keyed], "keys": [k for _, k in keyed]},
                )
                for job_id, target_id, key, state, digest in await cur.fetchall():
                    existing[(int(str(target_id)), str(key))] = (
                        uuid.UUID(str(job_id)),
                        str(state),
                        None if digest is None else str(digest),
                    )
                # Raised inside the transaction: a batch with one reused key writes nothing.
                _check_key_reuse(requests, resolved, ids, inserted, existing)
            await ordering_keys.settle(conn, ordered)
        results = []
        for job_id, r in zip(ids, requests, strict=True):
            target_id, ref = resolved[r.target]
            if job_id in inserted:
                results.append(EnqueueResult(uuid.UUID(int=job_id), ref, JobState.QUEUED, True))
            else:  # not inserted: only an idempotency key conflict does that
                found = existing[(target_id, r.idempotency_key or "")]
                results.append(EnqueueResult(found[0], ref, JobState(found[1]), created=False))
        return results

    @retry_conflicts
    async def _copy(
        self,
        requests: Sequence[JobRequest],
        resolved: dict[str, tuple[int, str]],
        ids: Sequence[int],
    ) -> list[EnqueueResult]:
        results: list[EnqueueResult] = []
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(JOBS_SQL["transaction_time"])
            row = await cur.fetchone()
            assert row is not None
            now: dt.datetime = row[0]  # type: ignore[assignment]
            # Everything but the id and the payload is the same for a (target, priority).
            middles = {
                (target, p): f"\t{target}\t{p.value}\t"
                for target, _ in resolved.values()
                for p in Priority
            }
            deadlines = {p: now + dt.timedelta(seconds=self.settings.budget(p)) for p in Priority}
            tails = {p: f"\t{now.isoformat()}\t{deadlines[p].isoformat()}\n" for p in Priority}
            if self.waker.take():
                await conn.execute(JOBS_SQL["notify_jobs"])
            queued = JobState.QUEUED
            async with conn.cursor() as copy_cur, copy_cur.copy(JOBS_SQL["copy_jobs"]) as copy:
                for start in range(0, len(requests), 1000):
                    chunk = list(
                        zip(ids[start : start + 1000], requests[start : start + 1000], strict=True)
                    )
                    await copy.write(
                        "".join(
                            [
                                f"{job_id:032x}{middles[resolved[r.target][0], r.priority]}"
                                f"{_copy_escape(r.payload_json)}{tails[r.priority]}"
                                for job_id, r in chunk
                            ]
                        )
                    )
                    # Built while PostgreSQL takes in the chunk just sent.
                    results += [
                        EnqueueResult(uuid.UUID(int=job_id), resolved[r.target][1], queued, True)
                        for job_id, r in chunk
                    ]
        return results

    # -- claim -------------------------------------------------------------------------

    async def claim(
        self,
        worker: str,
        limit: int,
        *,
        per_target_limits: dict[int, int] | None = None,
        target_limit: int | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` ready jobs under a lease: those with the earliest deadlines
        (the returned list is in no particular order). Under contention a claim may take
        fewer than are ready (it skips jobs other claimers hold); claim again.

        Targets that are paused, or whose circuit is open, give nothing; a half-open circuit
        gives at most its probes and a rate limit its tokens (shared by all workers).
        ``target_limit`` caps what it takes from any one target, ``per_target_limits`` from
        particular ones.
        """
        if limit <= 0:
            return []
        caps = per_target_limits or {}
        jobs: list[ClaimedJob] = []
        async with self._pool.connection() as conn:
            quota_ids = [t for t in await self._quota_target_ids(conn) if caps.get(t, 1) > 0]
            now = time.monotonic()
            quota_first = bool(quota_ids) and now - self._quota_first_at >= QUOTA_FIRST_SECONDS
            if quota_first:
                self._quota_first_at = now
                jobs += await self._claim_with_quotas(conn, worker, limit, quota_ids, caps)
            if len(jobs) < limit:
                jobs += await self._claim(
                    conn,
                    worker,
                    limit - len(jobs),
                    caps,
                    with_quotas=False,
                    target_limit=target_limit,
                )
            if quota_ids and not quota_first and len(jobs) < limit:
                jobs += await self._claim_with_quotas(
                    conn, worker, limit - len(jobs), quota_ids, caps
                )
        return jobs

    async def _quota_target_ids(self, conn: AsyncConn) -> list[int]:
        """Targets needing quota claims, as last read. The list is re-read in the background
        (on another connection) every QUOTA_REFRESH_SECONDS, so a claim never waits for it;
        the first call reads it inline."""
        now = time.monotonic()
        if not self._quota_checked:
            await self._read_quota_targets(conn)
        elif now - self._quota_checked >= QUOTA_REFRESH_SECONDS and (
            self._quota_refresh is None or self._quota_refresh.done()
        ):
            self._quota_checked = now
            self._quota_refresh = asyncio.get_running_loop().create_task(self._refresh_quota())
        return self._quota_targets

    async def _refresh_quota(self) -> None:
        try:
            async with self._pool.connection() as conn:
                await self._read_quota_targets(conn)
        except (psycopg.Error, OSError) as exc:  # the next claim asks again
            self._quota_checked = 0.0
            log.warning(
                "could not read which targets need quotas",
                extra={"action": "claim", "error": type(exc).__name__},
            )

    async def _read_quota_targets(self, conn: AsyncConn) -> None:
        cur = await conn.execute(TARGETS_SQL["quota_targets"])
        self._quota_targets = [int(str(r[0])) for r in await cur.fetchall()]
        self._quota_checked = time.monotonic()

    async def _claim(
        self,
        conn: AsyncConn,
        worker: str,
        limit: int,
        limits: dict[int, int],
        *,
        with_quotas: bool,
        target_limit: int | None = None,
    ) -> list[ClaimedJob]:
        cur = await self._send_claim(
            conn,
            worker,
            limit,
            limits,
            with_quotas=with_quotas,
            extra={"target_limit": min(limit, target_limit or limit)},
        )
        return [_claimed(row) for row in await cur.fetchall()]

    async def _send_claim(
        self,
        conn: AsyncConn,
        worker: str,
        limit: int,
        limits: dict[int, int],
        *,
        with_quotas: bool,
        query: str = "claim",
        extra: dict[str, Any] | None = None,
    ) -> psycopg.AsyncCursor[dict[str, Any]]:
        cur = conn.cursor(row_factory=dict_row)
        cur.adapters.register_loader("json", TextLoader)  # payloads stay byte-exact text
        params = {
            "worker": worker,
            "limit": limit,
            "target_limit": limit,
            "lease_seconds": self.settings.lease,
            "quota_targets": list(limits),
            "quota_limits": list(limits.values()),
            "with_quotas": with_quotas,
            "async_commit": not self.settings.durable_claims,
        }
        await cur.execute(JOBS_SQL[query], params | (extra or {}))
        return cur

    async def _claim_with_quotas(
        self,
        conn: AsyncConn,
        worker: str,
        limit: int,
        target_ids: list[int],
        caps: dict[int, int],
    ) -> list[ClaimedJob]:
        async with conn.transaction():
            await conn.execute(TARGETS_SQL["lock_targets"], {"ids": target_ids})
            cur = await conn.cursor(row_factory=dict_row).execute(
                TARGETS_SQL["quota_state"], {"ids": target_ids}
            )
            grants = {}
            for state in await cur.fetchall():
                g = admission.grant(state, min(limit, caps.get(state["id"], limit)))
                if g.limit > 0:
                    grants[g.target_id] = g
            if not grants:
                return []
            jobs = await self._claim(
                conn, worker, limit, {t: g.limit for t, g in grants.items()}, with_quotas=True
            )
            taken: dict[int, int] = {}
            for job in jobs:
                taken[job.target_id] = taken.get(job.target_id, 0) + 1
            spent = {t: admission.spend(g, taken.get(t, 0)) for t, g in grants.items()}
            await conn.execute(
                TARGETS_SQL["spend_quota"],
                {
                    "ids": list(spent),
                    "probing": [probe for probe, _ in spent.values()],
                    "tokens": [tokens for _, tokens in spent.values()],
                },
            )
        return jobs

    # -- settle ------------------------------------------------------------------------

    @retry_conflicts
    async def complete(
        self,
        worker: str,
        jobs: Sequence[ClaimedJob],
        notes: Sequence[AttemptNote] | None = None,
    ) -> CompleteOutcome:
        """Mark delivered jobs succeeded, in one statement (one transaction when some
        carry an ordering key, whose chains then move on), recording each attempt (with its
        ``notes``, in the order of ``jobs``)."""
        if not jobs:
            return CompleteOutcome(completed=[], lost=[], recovered=[])
        params = {
            "ids": [j.id for j in jobs],
            "attempts": [j.attempts for j in jobs],
            "worker": worker,
        } | _note_params(jobs, notes)
        keyed = [(j.target_id, j.ordering_key) for j in jobs if j.ordering_key]
        async with self._pool.connection() as conn:
            if keyed:
                async with conn.transaction():
                    await ordering_keys.lock(conn, keyed)  # before any job row (see locks.py)
                    row = await (await conn.execute(JOBS_SQL["complete"], params)).fetchone()
                    await ordering_keys.settle(conn, keyed)
            else:
                row = await (await conn.execute(JOBS_SQL["complete"], params)).fetchone()
        return _completed(jobs, row)

    async def complete_and_claim(
        self, worker: str, done: Sequence[ClaimedJob], limit: int
    ) -> list[ClaimedJob]:
        """Complete ``done`` and claim up to ``limit`` more in one statement: a sequential
        consumer pays one round trip and one commit per job, not two. Jobs with ordering
        keys, and targets needing quotas (rate limits, probes), are left to :meth:`complete`
        and :meth:`claim`. (:meth:`consumer` does the same on a connection it keeps.)"""
        async with self._pool.connection() as conn:
            return await self._complete_and_claim(conn, worker, done, limit)

    @contextlib.asynccontextmanager
    async def consumer(self, worker: str) -> AsyncIterator[Consumer]:
        """A sequential consumer holding one connection for its whole life. It listens for
        new jobs on that same connection, so the server process that delivers the wake-up
        runs the next claim, already awake."""
        async with self._pool.connection() as conn:
            await conn.execute(JOBS_SQL["listen_jobs"])
            try:
                yield Consumer(self, conn, worker)
            finally:
                await conn.execute(JOBS_SQL["unlisten_jobs"])

    async def _complete_and_claim(
        self, conn: AsyncConn, worker: str, done: Sequence[ClaimedJob], limit: int
    ) -> list[ClaimedJob]:
        if any(j.ordering_key for j in done):
            await self.complete(worker, done)
            done = []
        cur = await self._send_claim(
            conn,
            worker,
            limit,
            {},
            with_quotas=False,
            query="complete_and_claim",
            extra={"ids": [j.id for j in done], "attempts": [j.attempts for j in done]}
            | _note_params(done, None),
        )
        return [_claimed(row) for row in await cur.fetchall()]

    async def fail(self, worker: str, failures: Sequence[Failure]) -> list[FailureOutcome]:
        """Record failed attempts: each job is retried after its backoff (honouring
        Retry-After), or dead-lettered when permanent or out of attempts, and the failures
        move their targets' circuit breakers. See the ``fail`` query for the rules."""
        return await self._fail(failures, leased_by=[worker] * len(failures), rescue=False)

    @retry_conflicts
    async def _fail(
        self, failures: Sequence[Failure], *, leased_by: Sequence[str], rescue: bool
    ) -> list[FailureOutcome]:
        if not failures:
            return []
        now = dt.datetime.now(dt.UTC)
        delays, exhausted = [], []
        for f in failures:
            policy = await self._policy(f.job.target_id)
            decision = decide(
                policy,
                f.error_class,
                f.job.attempts,
                now,
                retry_after=f.retry_after,
                retry_after_cap=self.retry_after_cap,
            )
            delays.append(decision.delay)
            exhausted.append(decision.exhausted)
        params = {
            "ids": [f.job.id for f in failures],
            "attempts": [f.job.attempts for f in failures],
            "leased_by": list(leased_by),
            "classes": [f.error_class.value for f in failures],
            "messages": [_clip(f.message) for f in failures],
            "statuses": [f.http_status for f in failures],
            "delays": delays,
            "exhausted": exhausted,
            "counts": [f.counts_for_breaker for f in failures],
            "rescue": [rescue] * len(failures),
            "retry_afters": [f.retry_after for f in failures],
            "notes": _notes_json([f.job for f in failures], [f.note for f in failures]),
            "budget_medium": self.settings.budget_medium,
            "budget_low": self.settings.budget_low,
        }
        keyed = [(f.job.target_id, f.job.ordering_key) for f in failures if f.job.ordering_key]
        async with self._pool.connection() as conn, conn.transaction():
            await ordering_keys.lock(conn, keyed)  # before any job row (see locks.py)
            cur = await conn.cursor(row_factory=dict_row).execute(JOBS_SQL["fail"], params)
            rows = await cur.fetchall()
            await ordering_keys.settle(conn, keyed)
        return [
            FailureOutcome(
                id=r["id"],
                target=r["target"],
                state=JobState(r["state"]),
                attempts=r["attempts"],
                run_at=r["run_at"],
                refunded=r["refund"],
                tripped=r["trips"],
                circuit_before=CircuitState(r["circuit_before"]),
                circuit_after=CircuitState(r["circuit_after"]),
            )
            for r in rows
        ]

    async def _policy(self, target_id: int) -> RetryPolicy:
        if target_id not in self._policies or time.monotonic() - self._policies_loaded > 5:
            self._policies = {t.id: t.spec.retry for t in await self.registry.list()}
            self._policies_loaded = time.monotonic()
        return self._policies.get(target_id, RetryPolicy())

    async def heartbeat(self, worker: str, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Extend the leases of jobs being delivered; returns those no longer held."""
        if not ids:
            return []
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                JOBS_SQL["heartbeat"],
                {"ids": list(ids), "worker": worker, "lease_seconds": self.settings.lease},
            )
            row = await cur.fetchone()
        return list(row[0]) if row else []  # type: ignore[call-overload]

    async def release(
        self,
        worker: str,
        ids: Sequence[uuid.UUID],
        *,
        noted: Sequence[tuple[ClaimedJob, AttemptNote]] = (),
        decision: str = "withheld",
    ) -> int:
        """Give back claimed jobs not started (shutdown): not counted as attempts, and
        claimable at once by other workers, in the place they had. The jobs of ``noted``
        are given back for a reason (``decision``: withheld, target-paused), which the
        attempt record keeps."""
        if not ids:
            return 0
        params = {
            "ids": list(ids),
            "worker": worker,
            "notes": _notes_json([j for j, _ in noted], [n for _, n in noted]),
            "decision": decision,
        }
        async with self._pool.connection() as conn:
            cur = await conn.execute(JOBS_SQL["release"], params)
            row = await cur.fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    async def rescue_expired(self, limit: int = 1000) -> list[FailureOutcome]:
        """Jobs whose lease expired (their worker died or lost the database) are tried
        again: the attempt counts, as the delivery may have happened, and a job out of
        attempts goes to the DLQ. It does not count against the target's circuit."""
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                JOBS_SQL["expired_leases"], {"limit": limit}
            )
            rows = await cur.fetchall()
        if not rows:
            return []
        failures = [
            Failure(
                job=ClaimedJob(
                    id=r["id"],
                    target_id=r["target_id"],
                    priority=Priority(r["priority"]),
                    payload_json="null",
                    attempts=r["attempts"],
                    idempotency_key=None,
                    ordering_key=r["ordering_key"],
                    created_at=dt.datetime.now(dt.UTC),
                    run_at=dt.datetime.now(dt.UTC),
                    lease_expires_at=dt.datetime.now(dt.UTC),
                ),
                # Not the receiver's fault: the normal attempt budget, no breaker count.
                error_class=ErrorClass.TRANSIENT,
                message=f"lease expired: worker {r['leased_by']} stopped renewing it "
                "(it died or lost the database); the delivery may or may not have happened",
                counts_for_breaker=False,
            )
            for r in rows
        ]
        outcomes = await self._fail(failures, leased_by=[r["leased_by"] for r in rows], rescue=True)
        if outcomes:
            async with self._pool.connection() as conn:
                await conn.execute("SELECT pg_notify('herald_jobs', '')")
        return outcomes

    async def notify_more(self) -> None:
        """Wake the workers that are not the waker (see herald_queue/listener.py)."""
        async with self._pool.connection() as conn:
            await conn.execute(JOBS_SQL["notify_more"])

    @retry_conflicts
    async def cancel(
        self, ids: Sequence[uuid.UUID], *, reason: str = "cancelled"
    ) -> list[uuid.UUID]:
        """Cancel waiting jobs (not running ones): they become dead, reason ``cancelled``,
        and can be replayed from the dead-letter queue."""
        async with self._pool.connection() as conn, conn.transaction():
            # The chains' locks before any job row (see locks.py): a job's ordering key
            # never changes, so reading them first is exact.
            cur = await conn.execute(JOBS_SQL["chains_of_jobs"], {"ids": list(ids)})
            await ordering_keys.lock(conn, [(int(str(t)), str(k)) for t, k in await cur.fetchall()])
            cur = await conn.execute(JOBS_SQL["cancel"], {"ids": list(ids), "message": reason})
            rows = await cur.fetchall()
            await ordering_keys.settle(conn, [(int(str(r[1])), str(r[2])) for r in rows if r[2]])
        return [r[0] for r in rows]  # type: ignore[misc]

    # -- read --------------------------------------------------------------------------

    async def get(self, job_id: uuid.UUID) -> JobRecord | None:
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                JOBS_SQL["get_job"], {"id": job_id}
            )
            row = await cur.fetchone()
        return JobRecord.from_row(row) if row else None

    async def list(
        self,
        *,
        state: JobState | None = None,
        target: str | None = None,
        priority: Priority | None = None,
        before: uuid.UUID | None = None,
        limit: int = 50,
    ) -> list[JobRecord]:
        """Most recent first; pass the last id as ``before`` for the next page."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit", f"must be from 1 to 1000, got {limit}")
        return await self._list(state, target, priority, before, limit)

    async def _list(
        self,
        state: JobState | None,
        target: str | None,
        priority: Priority | None,
        before: uuid.UUID | None,
        limit: int,
    ) -> builtins.list[JobRecord]:
        target_id = (await self.registry.resolve(target))[0] if target else None
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                JOBS_SQL["list_jobs"],
                {
                    "state": state.value if state else None,
                    "target_id": target_id,
                    "priority": priority.value if priority else None,
                    "before": before,
                    "limit": limit,
                },
            )
            return [JobRecord.from_row(r) for r in await cur.fetchall()]

    async def page(
        self,
        *,
        state: JobState | None = None,
        target: str | None = None,
        priority: Priority | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """A page of :meth:`list`: pass its ``next_cursor`` as ``cursor`` for the next one
        (None on the last page). The convention of every listing (dead letters too)."""
        before = None if cursor is None else parse_uuid(cursor)
        if cursor is not None and before is None:
            raise InvalidRequest(
                "cursor", "is not a cursor this server gave out (use nextCursor from a page)"
            )
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit", f"must be from 1 to 1000, got {limit}")
        records = await self._list(state, target, priority, before, limit + 1)
        more = len(records) > limit
        records = records[:limit]
        return JobPage(records, str(records[-1].id) if more else None)

    async def prune(self, *, batch: int = 5000, now: dt.datetime | None = None) -> int:
        """Retention: delete finished jobs older than the job retention period (at ``now``,
        by default the database's clock)."""
        params = {"older_than": self.settings.job_retention, "limit": batch, "now": now}
        total = 0
        async with self._pool.connection() as conn:
            while True:
                cur = await conn.execute(JOBS_SQL["prune_finished"], params)
                total += cur.rowcount
                if cur.rowcount < batch:
                    return total


class Consumer:
    """See :meth:`JobStore.consumer`."""

    def __init__(self, store: JobStore, conn: AsyncConn, worker: str) -> None:
        self._store = store
        self._conn = conn
        self.worker = worker

    async def step(self, done: Sequence[ClaimedJob], limit: int) -> list[ClaimedJob]:
        """Complete ``done`` and claim up to ``limit`` more, in one statement."""
        return await self._store._complete_and_claim(self._conn, self.worker, done, limit)

    async def wait(self, timeout: float) -> bool:
        """Until jobs are announced (True) or ``timeout`` seconds pass (False). A notice
        that came during a step is not lost: it ends the next wait at once."""
        async for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            return True
        return False


def _check_key_reuse(
    requests: Sequence[JobRequest],
    resolved: dict[str, tuple[int, str]],
    ids: Sequence[int],
    inserted: set[int],
    existing: dict[tuple[int, str], tuple[uuid.UUID, str, str | None]],
) -> None:
    """Refuse a request whose idempotency key names a job created with other parameters
    (an earlier job, or an earlier request of the same batch). Jobs without a stored digest
    (enqueued before it was kept) match any request."""
    for index, (job_id, r) in enumerate(zip(ids, requests, strict=True)):
        if job_id in inserted or not r.key_reuse_checked or r.idempotency_key is None:
            continue
        found = existing.get((resolved[r.target][0], r.idempotency_key))
        if found is not None and found[2] is not None and found[2] != r.request_hash:
            raise IdempotencyKeyReused(
                r.idempotency_key, str(found[0]), index=index if len(requests) > 1 else None
            )


def _note_params(jobs: Sequence[ClaimedJob], notes: Sequence[AttemptNote] | None) -> dict[str, str]:
    """The attempt record's notes of delivered jobs (``complete``, ``complete_and_claim``)."""
    return {"notes": _notes_json(jobs, notes)}


def _notes_json(jobs: Sequence[ClaimedJob], notes: Sequence[AttemptNote] | None) -> str:
    """The ``attempt_notes`` document of jobs and their notes (in the same order)."""
    shown = notes if notes is not None else [NO_NOTE] * len(jobs)
    return json.dumps(
        [
            {
                "id": str(j.id),
                "attempt": j.attempts,
                "target_id": j.target_id,
                "started": n.started,
                "duration": n.duration,
                "http_status": n.http_status,
                "response": n.response,
                "message": n.message,
            }
            for j, n in zip(jobs, shown, strict=True)
        ]
    )


def _completed(jobs: Sequence[ClaimedJob], row: Any) -> CompleteOutcome:
    assert row is not None
    completed: list[uuid.UUID] = list(row[0])
    done = set(completed)
    return CompleteOutcome(
        completed=completed,
        lost=[j.id for j in jobs if j.id not in done],
        recovered=list(row[1]),
    )


def _claimed(row: dict[str, Any]) -> ClaimedJob:
    return ClaimedJob(
        id=row["id"],
        target_id=row["target_id"],
        priority=Priority(row["priority"]),
        payload_json=row["payload"],
        attempts=row["attempts"],
        idempotency_key=row["idempotency_key"],
        ordering_key=row["ordering_key"],
        created_at=row["created_at"],
        run_at=row["run_at"],
        lease_expires_at=row["lease_expires_at"],
        traceparent=row["traceparent"],
        tracestate=row["tracestate"],
    )


def _json_str(value: str | None) -> str:
    return "null" if value is None else json.dumps(value)


def _record_json(job_id: int, target_id: int, r: JobRequest, budget: float) -> str:
    run_at = "null" if r.run_at is None else f'"{r.run_at.isoformat()}"'
    return (
        f'{{"id":"{job_id:032x}","target_id":{target_id},"priority":"{r.priority.value}",'
        f'"payload":{r.payload_json},"idempotency_key":{_json_str(r.idempotency_key)},'
        f'"ordering_key":{_json_str(r.ordering_key)},"run_at":{run_at},"budget":{budget},'
        f'"request_hash":{_json_str(r.request_hash)}{_trace_json(r.trace)}}}'
    )


def _trace_json(trace: TraceContext | None) -> str:
    if trace is None:
        return ""
    return f',"traceparent":"{trace.traceparent}","tracestate":{_json_str(trace.tracestate)}'


def _clip(message: str, limit: int = 2000) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"
