"""Queue statistics: totals per state, then per priority and per target, and the age of
the oldest job ready to run.

"Ready" has one definition (``sql/stats.sql``): due now, not held behind its ordering key,
its target neither paused nor behind an open circuit. Statistics, metrics, target status
and the operator's scaler all count it so."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from herald_core.states import JobState, Priority
from herald_queue import sql
from herald_queue.capacity import percent
from herald_queue.db import AsyncConn
from herald_queue.records import PriorityStats, QueueStats, StateCount, TargetStats

STATS_SQL = sql.load("stats")


def _zero() -> dict[str, int]:
    return {s.value: 0 for s in JobState}


async def count_rows(
    pool: AsyncConnectionPool[AsyncConn], *, live_only: bool = False
) -> list[StateCount]:
    """One count per (namespace, name, priority, state), with its ready jobs and the age of
    the oldest."""
    async with pool.connection() as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(
            STATS_SQL["job_counts"], {"live_only": live_only}
        )
        return [StateCount.from_row(row) for row in await cur.fetchall()]


async def target_capacities(pool: AsyncConnectionPool[AsyncConn]) -> dict[str, int]:
    """spec.capacity.jobs by namespace/name, of the live targets that have one."""
    async with pool.connection() as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(STATS_SQL["target_capacities"])
        return {f"{r['namespace']}/{r['name']}": int(r["jobs"]) for r in await cur.fetchall()}


async def queue_stats(
    pool: AsyncConnectionPool[AsyncConn], *, live_only: bool = False, capacity: int = 0
) -> QueueStats:
    """Totals per state, the ready jobs and the age of the oldest, then the same per
    priority and per target.

    ``succeeded`` and ``dead`` count the finished jobs still kept (HERALD_JOB_RETENTION);
    with ``live_only`` they are not counted at all (cheaper, for samplers).

    ``capacity_pct`` is the fill of ``capacity`` (HERALD_QUEUE_CAPACITY) by waiting jobs, and
    each target's of its spec.capacity (None without one; herald_queue.capacity).
    """
    rows = await count_rows(pool, live_only=live_only)
    totals = _zero()
    by_priority = {p.value: _zero() | {"ready": 0} for p in Priority}
    by_target: dict[str, dict[str, Any]] = {}
    oldest: float | None = None
    ready = 0
    for r in rows:
        n = r.n
        target = r.target
        entry = by_target.setdefault(
            target,
            _zero()
            | {
                "ready": 0,
                "oldestReadyAgeSeconds": None,
                "byPriority": {p.value: 0 for p in Priority},
            },
        )
        totals[r.state.value] += n
        entry[r.state.value] += n
        by_priority[r.priority.value][r.state.value] += n
        if r.state in (JobState.QUEUED, JobState.RETRYING):
            entry["byPriority"][r.priority.value] += n
        age = r.oldest_ready_age_seconds
        if age is not None:
            ready += r.ready
            entry["ready"] += r.ready
            by_priority[r.priority.value]["ready"] += r.ready
            oldest = age if oldest is None else max(oldest, age)
            current = entry["oldestReadyAgeSeconds"]
            entry["oldestReadyAgeSeconds"] = age if current is None else max(current, age)
    limits = await target_capacities(pool)
    for ref, entry in by_target.items():
        entry["capacityPct"] = percent(entry["queued"] + entry["retrying"], limits.get(ref))
    return QueueStats(
        **totals,
        capacity_pct=percent(totals["queued"] + totals["retrying"], capacity),
        ready=ready,
        oldest_ready_age_seconds=oldest,
        by_priority={p: PriorityStats(**counts) for p, counts in by_priority.items()},
        by_target={
            ref: TargetStats(
                **{s.value: entry[s.value] for s in JobState},
                ready=entry["ready"],
                oldest_ready_age_seconds=entry["oldestReadyAgeSeconds"],
                by_priority=entry["byPriority"],
                capacity_pct=entry["capacityPct"],
            )
            for ref, entry in by_target.items()
        },
    )


async def ready_for_scaling(pool: AsyncConnectionPool[AsyncConn]) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(STATS_SQL["ready_for_scaling"])
        row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]
