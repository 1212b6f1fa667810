"""The dead-letter queue: list with filters and pages, show, replay, purge, statistics."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from herald_core.errors import AlreadyReplayed, DeadLetterNotFound, InvalidRequest, TargetsMissing
from herald_core.states import ErrorClass, Priority
from herald_queue import ordering_keys, sql
from herald_queue.db import AsyncConn, retry_conflicts
from herald_queue.records import DeadLetterPage, DeadLetterRecord, DeadLetterStats
from herald_queue.settings import QueueSettings

DEAD_LETTERS_SQL = sql.load("dead_letters")
MAX_PAGE = 1000
MAX_REPLAY_BATCH = 1000


def one_off_tag(source: str) -> str:
    """The ``replayed_by`` of a one-off replay (an API call, a CLI command): unique to the
    call, so an entry an earlier call found without a target can be replayed by a later
    one. Named replays (a DeadLetterReplay) pass a stable tag instead, so that running the
    same replay again resumes it rather than starting over."""
    return f"{source}/{uuid.uuid4().hex[:12]}"


@dataclasses.dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters; every field is optional."""

    target: str | None = None
    """``namespace/name``, or a bare name (any namespace)."""
    namespace: str | None = None
    """Only dead letters of targets in this namespace (with or without ``target``)."""
    error_class: ErrorClass | None = None
    priority: Priority | None = None
    failed_after: dt.datetime | None = None
    failed_before: dt.datetime | None = None
    replayed: bool | None = None
    ids: tuple[uuid.UUID, ...] | None = None
    """Dead-letter ids."""
    job_ids: tuple[uuid.UUID, ...] | None = None
    """Ids of the jobs that died."""

    def __post_init__(self) -> None:
        if self.failed_after and self.failed_before and self.failed_before <= self.failed_after:
            raise InvalidRequest("failedBefore", "must be later than failedAfter")

    def params(self) -> dict[str, Any]:
        namespace, name = self.namespace, None
        if self.target:
            prefix, _, name = self.target.rpartition("/")
            if prefix and namespace and prefix != namespace:
                raise InvalidRequest("target", f"{self.target!r} is not in namespace {namespace}")
            namespace = prefix or namespace
        return {
            "namespace": namespace,
            "name": name,
            "error_type": self.error_class.value if self.error_class else None,
            "priority": self.priority.value if self.priority else None,
            "failed_after": self.failed_after,
            "failed_before": self.failed_before,
            "ids": list(self.ids) if self.ids is not None else None,
            "job_ids": list(self.job_ids) if self.job_ids is not None else None,
        }


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    matched: int
    replayed: int
    skipped: int
    """Entries whose target no longer exists (marked ``target-missing``)."""
    job_ids: list[uuid.UUID]
    dry_run: bool
    cancelled_left_out: int = 0
    """Cancelled jobs the selector matched but a replay leaves out: only a replay that
    names them by id (dead-letter id or job id) puts them back."""


@dataclasses.dataclass(frozen=True)
class PurgeResult:
    matched: int
    deleted: int
    cutoff: dt.datetime
    """Dead letters that failed before this were (or would be) deleted."""
    dry_run: bool


CURSOR_PATTERN = r"^[0-9]{1,16}\.[0-9a-f]{32}$"
"""A dead-letter page cursor: the last entry's failure time (microseconds since the epoch)
and id. Every string of this form is a cursor (the API schema's pattern)."""
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def encode_cursor(failed_at: dt.datetime, entry_id: uuid.UUID) -> str:
    return f"{(failed_at - _EPOCH) // dt.timedelta(microseconds=1)}.{entry_id.hex}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    if not _CURSOR.match(cursor):
        raise InvalidRequest(
            "cursor", "is not a cursor this server gave out (use nextCursor from a page)"
        )
    micros, _, ident = cursor.partition(".")
    return _EPOCH + dt.timedelta(microseconds=int(micros)), uuid.UUID(ident)


class DeadLetterStore:
    def __init__(self, pool: AsyncConnectionPool[AsyncConn], settings: QueueSettings) -> None:
        self._pool = pool
        self.settings = settings

    async def list(
        self,
        where: DeadLetterFilter = DeadLetterFilter(),
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> DeadLetterPage:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest("limit", f"must be from 1 to {MAX_PAGE}, got {limit}")
        after_failed_at, after_id = decode_cursor(cursor) if cursor else (None, None)
        params = where.params() | {
            "replayed": where.replayed,
            "after_failed_at": after_failed_at,
            "after_id": after_id,
            "limit": limit + 1,
        }
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                DEAD_LETTERS_SQL["list_dead_letters"], params
            )
            rows = await cur.fetchall()
        items = [DeadLetterRecord.from_row(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(last["failed_at"], last["id"])
        return DeadLetterPage(items=items, next_cursor=next_cursor)

    async def get(self, entry_id: uuid.UUID) -> DeadLetterRecord | None:
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                DEAD_LETTERS_SQL["get_dead_letter"], {"id": entry_id}
            )
            row = await cur.fetchone()
        return DeadLetterRecord.from_row(row) if row else None

    async def replay(
        self,
        where: DeadLetterFilter,
        *,
        limit: int = 1000,
        dry_run: bool = False,
        replayed_by: str | None = None,
    ) -> ReplayResult:
        """Put unreplayed dead letters matching ``where`` back on the queue (oldest first,
        at most ``limit``). Each entry is replayed once ever, in batches that each commit
        with their jobs, so an interrupted replay can simply be run again. Without
        ``replayed_by`` the replay is a one-off (:func:`one_off_tag`).

        Cancelled jobs are left out unless ``where`` names them by id (``ids`` or
        ``job_ids``); the result counts them (``cancelled_left_out``). A job that died
        before its first attempt keeps a ``runAt`` still in the future."""
        replayed_by = replayed_by or one_off_tag("replay")
        if limit < 1:
            raise InvalidRequest("limit", f"must be at least 1, got {limit}")
        params = where.params()
        if dry_run:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    DEAD_LETTERS_SQL["count_replayable"], params | {"limit": limit}
                )
                row = await cur.fetchone()
                assert row is not None
                matched, missing = int(row[0]), int(row[1])  # type: ignore[call-overload]
                cancelled = await self._cancelled_left_out(conn, params)
            return ReplayResult(
                matched=matched,
                replayed=matched - missing,
                skipped=missing,
                job_ids=[],
                dry_run=True,
                cancelled_left_out=cancelled,
            )
        replayed, skipped, job_ids = 0, 0, []
        remaining = limit
        while remaining > 0:
            size = min(remaining, MAX_REPLAY_BATCH)
            batch = await self.replay_batch(where, limit=size, replayed_by=replayed_by)
            replayed += batch.replayed
            skipped += batch.skipped
            job_ids += batch.job_ids
            remaining -= batch.matched
            if batch.matched < size:
                break
        async with self._pool.connection() as conn:
            cancelled = await self._cancelled_left_out(conn, params)
        return ReplayResult(
            matched=replayed + skipped,
            replayed=replayed,
            skipped=skipped,
            job_ids=job_ids,
            dry_run=False,
            cancelled_left_out=cancelled,
        )

    async def _cancelled_left_out(self, conn: AsyncConn, params: dict[str, Any]) -> int:
        cur = await conn.execute(DEAD_LETTERS_SQL["count_cancelled_left_out"], params)
        row = await cur.fetchone()
        return int(row[0]) if row else 0  # type: ignore[call-overload]

    @retry_conflicts
    async def replay_batch(
        self, where: DeadLetterFilter, *, limit: int, replayed_by: str
    ) -> ReplayResult:
        """One transaction of a replay: at most ``limit`` entries."""
        params = where.params() | {
            "limit": limit,
            "replayed_by": replayed_by,
            "budget_medium": self.settings.budget_medium,
            "budget_low": self.settings.budget_low,
        }
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.cursor(row_factory=dict_row).execute(
                DEAD_LETTERS_SQL["replay_dead_letters"], params
            )
            rows = await cur.fetchall()
            await ordering_keys.settle(
                conn,
                [
                    (r["target_id"], r["ordering_key"])
                    for r in rows
                    if r["requeued"] and r["ordering_key"]
                ],
            )
        requeued = [r["job_id"] for r in rows if r["requeued"]]
        skipped = sum(1 for r in rows if r["replay_result"] == "target-missing")
        return ReplayResult(
            matched=len(rows),
            replayed=len(requeued),
            skipped=skipped,
            job_ids=requeued,
            dry_run=False,
        )

    async def explain_nothing_replayed(
        self,
        ids: Sequence[uuid.UUID],
        job_ids: Sequence[uuid.UUID] = (),
        result: ReplayResult | None = None,
    ) -> None:
        """After a replay of dead letters named by id (or job id) replayed none: raise
        :class:`DeadLetterNotFound` for names without a dead letter,
        :class:`AlreadyReplayed` when each was replayed before, or :class:`TargetsMissing`
        when the replay found them but their targets are gone. Returns when it was other
        filters given with the ids that matched nothing."""
        if result is not None and result.matched and result.skipped == result.matched:
            page = await self.list(
                DeadLetterFilter(ids=tuple(ids) or None, job_ids=tuple(job_ids) or None),
                limit=MAX_PAGE,
            )
            missing = {d.target for d in page.items}
            raise TargetsMissing(sorted(missing))
        unknown = [str(i) for i in ids if await self.get(i) is None]
        if job_ids:
            page = await self.list(DeadLetterFilter(job_ids=tuple(job_ids)), limit=MAX_PAGE)
            with_entries = {str(d.job_id) for d in page.items}
            unknown += [f"of job {i}" for i in job_ids if str(i) not in with_entries]
        if unknown:
            raise DeadLetterNotFound(unknown)
        named = DeadLetterFilter(ids=tuple(ids) or None, job_ids=tuple(job_ids) or None)
        left = await self.list(dataclasses.replace(named, replayed=False), limit=1)
        if not left.items:
            raise AlreadyReplayed([*map(str, ids), *(f"of job {i}" for i in job_ids)])

    async def replay_counts(self, replayed_by: str) -> tuple[int, int]:
        """(replayed, skipped) so far by the replay named ``replayed_by``."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                DEAD_LETTERS_SQL["count_replayed_by"], {"replayed_by": replayed_by}
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])  # type: ignore[call-overload]

    async def purge(
        self,
        older_than: float,
        *,
        target: str | None = None,
        dry_run: bool = False,
        batch: int = 5000,
        now: dt.datetime | None = None,
    ) -> PurgeResult:
        """Delete dead letters that failed more than ``older_than`` seconds before ``now``
        (by default the database's clock)."""
        if older_than < 0:
            raise InvalidRequest("olderThan", "must not be negative")
        cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=older_than)  # shown
        namespace, name = None, None
        if target:
            ns, _, name = target.rpartition("/")
            namespace = ns or None
        params = {"older_than": older_than, "namespace": namespace, "name": name, "now": now}
        async with self._pool.connection() as conn:
            cur = await conn.execute(DEAD_LETTERS_SQL["count_purgeable"], params)
            row = await cur.fetchone()
            matched = int(row[0]) if row else 0  # type: ignore[call-overload]
            deleted = 0
            if not dry_run:
                while True:
                    cur = await conn.execute(
                        DEAD_LETTERS_SQL["purge_dead_letters"], params | {"limit": batch}
                    )
                    deleted += cur.rowcount
                    if cur.rowcount < batch:
                        break
        return PurgeResult(matched=matched, deleted=deleted, cutoff=cutoff, dry_run=dry_run)

    async def waiting_by_target(
        self, namespace: str | None = None
    ) -> dict[tuple[str, str], dict[str, int]]:
        """Dead letters waiting for a replay (not cancelled ones), keyed by (namespace,
        name), counted per error class."""
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                DEAD_LETTERS_SQL["waiting_by_target"], {"namespace": namespace}
            )
            rows = await cur.fetchall()
        out: dict[tuple[str, str], dict[str, int]] = {}
        for r in rows:
            key = (r["target_namespace"], r["target_name"])
            out.setdefault(key, {})[r["error_type"]] = int(r["n"])
        return out

    async def counters(self) -> tuple[dict[tuple[str, str, str], int], dict[str, int]]:
        """The counters PostgreSQL keeps on every path: dead letters written per
        (namespace/name, error class, reason), and dead letters replayed per namespace/name
        (tombstones of deleted targets included)."""
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                DEAD_LETTERS_SQL["dead_letter_counters"]
            )
            written = {
                (f"{r['namespace']}/{r['name']}", r["error_type"], r["reason"]): int(r["n"])
                for r in await cur.fetchall()
            }
            cur = await conn.cursor(row_factory=dict_row).execute(
                DEAD_LETTERS_SQL["replay_counters"]
            )
            replayed = {f"{r['namespace']}/{r['name']}": int(r["n"]) for r in await cur.fetchall()}
        return written, replayed

    async def stats(self) -> DeadLetterStats:
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                DEAD_LETTERS_SQL["dead_letter_stats"]
            )
            rows = await cur.fetchall()
        total = replayed = 0
        by_target: dict[str, int] = {}
        by_class: dict[str, int] = {}
        by_priority: dict[str, int] = {}
        oldest: dt.datetime | None = None
        newest: dt.datetime | None = None
        for r in rows:
            n = int(r["n"])
            total += n
            if r["replayed"]:
                replayed += n
                continue
            key = f"{r['target_namespace']}/{r['target_name']}"
            by_target[key] = by_target.get(key, 0) + n
            by_class[r["error_type"]] = by_class.get(r["error_type"], 0) + n
            by_priority[r["priority"]] = by_priority.get(r["priority"], 0) + n
            oldest = r["oldest"] if oldest is None else min(oldest, r["oldest"])
            newest = r["newest"] if newest is None else max(newest, r["newest"])
        return DeadLetterStats(
            total=total,
            waiting=total - replayed,
            replayed=replayed,
            by_target=by_target,
            by_error_class=by_class,
            by_priority=by_priority,
            oldest_failed_at=oldest,
            newest_failed_at=newest,
        )
