"""The attempt record: every delivery attempt of a job (herald.attempts, migration 0007).

Rows are written by the statements that settle attempts (``jobs.sql``: complete, fail,
release), never one round trip per delivery. The table is partitioned by the UTC day it
was recorded: :meth:`AttemptStore.rotate` makes the coming days' partitions ahead of time
and drops whole days past HERALD_ATTEMPT_RETENTION (no row-by-row delete), except a day a
dead letter still kept may have attempts on, so a dead letter's attempts stay viewable as
long as the dead letter. Rows written while a day had no partition land in the default
partition (an insert never fails for want of one) and move into the day's partition when
it is made.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from herald_core.errors import InvalidRequest
from herald_queue import sql
from herald_queue.db import AsyncConn
from herald_queue.records import AttemptPage, AttemptRecord

ATTEMPTS_SQL = sql.load("attempts")
DAYS_AHEAD = 3
"""Day partitions kept ready: today and the next two (UTC), so midnight never waits for
the cleaner."""
MAX_DROPS = 10
"""Most day partitions one pass of the cleaner drops (the rest go on its next pass)."""
DROP_LOCK_TIMEOUT_MS = 1000
"""How long dropping a day waits for its lock on herald.attempts (milliseconds). Settles
queue behind a waiting DROP, so it waits briefly and the day goes on a later pass."""
LOCKS_SQL = sql.load("locks")
MAX_PAGE = 1000
CURSOR_PATTERN = r"^[0-9]{1,18}$"
"""An attempts page's cursor: the seq of the last attempt shown."""
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclasses.dataclass(frozen=True)
class Rotation:
    created: int
    dropped: list[str]
    kept_for_dead_letters: list[str]
    default_pruned: int
    busy: list[str] = dataclasses.field(default_factory=list)
    """Days due to go whose lock was not had within DROP_LOCK_TIMEOUT_MS: a later pass."""


class AttemptStore:
    def __init__(self, pool: AsyncConnectionPool[AsyncConn]) -> None:
        self._pool = pool

    async def page(
        self, job_id: uuid.UUID, *, cursor: str | None = None, limit: int = 100
    ) -> AttemptPage | None:
        """A job's attempts, oldest first; None when no such job is known (neither a job,
        nor a dead letter, nor any attempt on record)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest("limit", f"must be from 1 to {MAX_PAGE}, got {limit}")
        if cursor is not None and not _CURSOR.match(cursor):
            raise InvalidRequest(
                "cursor", "is not a cursor this server gave out (use nextCursor from a page)"
            )
        after = int(cursor) if cursor is not None else 0
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                ATTEMPTS_SQL["list_attempts"],
                {"job_id": job_id, "after": after, "limit": limit + 1},
            )
            rows = await cur.fetchall()
            if not rows and cursor is None:
                known = await (
                    await conn.execute(ATTEMPTS_SQL["job_known"], {"job_id": job_id})
                ).fetchone()
                if not known or not known[0]:
                    return None
        items = [AttemptRecord.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return AttemptPage(items, str(items[-1].seq) if more else None)

    async def create_partitions(
        self, *, now: dt.datetime | None = None, days: int = DAYS_AHEAD
    ) -> int:
        """Make the day partitions from the day of ``now`` (default: the database's clock)
        for ``days`` days; returns how many were missing."""
        async with self._pool.connection() as conn:
            return await create_partitions(conn, now=now, days=days)

    async def rotate(
        self,
        retention: float,
        *,
        now: dt.datetime | None = None,
        batch: int = 5000,
    ) -> Rotation:
        """One pass of the cleaner as of ``now`` (default: the database's clock): make the
        coming days' partitions, drop (at most MAX_DROPS) whole days that ended more than
        ``retention`` seconds ago unless a kept dead letter may have attempts on them, and
        delete what the default partition holds past retention."""
        created = await self.create_partitions(now=now)
        async with self._pool.connection() as conn:
            cur = await conn.execute(b"SELECT coalesce(%(now)s::timestamptz, now())", {"now": now})
            row = await cur.fetchone()
            assert row is not None
            at: dt.datetime = row[0]  # type: ignore[assignment]
            cutoff = at - dt.timedelta(seconds=retention)
            listing = await conn.cursor(row_factory=dict_row).execute(
                ATTEMPTS_SQL["day_partitions"]
            )
            parts = await listing.fetchall()
            dropped: list[str] = []
            kept: list[str] = []
            busy: list[str] = []
            for part in parts:
                day: dt.date = part["day"]
                end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
                if end > cutoff or len(dropped) >= MAX_DROPS:
                    break
                needed = await (
                    await conn.execute(ATTEMPTS_SQL["day_needed_by_dead_letters"], {"day": day})
                ).fetchone()
                if needed and needed[0]:
                    kept.append(part["name"])
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(
                            LOCKS_SQL["local_lock_timeout"],
                            {"lock_timeout": str(DROP_LOCK_TIMEOUT_MS)},
                        )
                        await conn.execute(
                            pgsql.SQL("DROP TABLE IF EXISTS herald.{}").format(
                                pgsql.Identifier(part["name"])
                            )
                        )
                except psycopg.errors.LockNotAvailable:
                    busy.append(part["name"])
                    continue
                dropped.append(part["name"])
            pruned = 0
            params = {"now": now, "older_than": retention, "limit": batch}
            while True:
                cur = await conn.execute(ATTEMPTS_SQL["prune_default"], params)
                pruned += cur.rowcount
                if cur.rowcount < batch:
                    break
        return Rotation(created, dropped, kept, pruned, busy)


async def create_partitions(
    conn: AsyncConn, *, now: dt.datetime | None = None, days: int = DAYS_AHEAD
) -> int:
    """See :meth:`AttemptStore.create_partitions` (also run by ``herald migrate``). Two
    processes making the same day at once (commands run at the same time after midnight):
    the one that loses finds the day made when it tries again."""
    for tries_left in (1, 0):
        try:
            async with conn.transaction():
                cur = await conn.execute(
                    ATTEMPTS_SQL["create_partitions"], {"now": now, "days": days}
                )
                row = await cur.fetchone()
            return int(row[0]) if row else 0  # type: ignore[call-overload]
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
            if not tries_left:
                raise
    raise AssertionError("unreachable")
