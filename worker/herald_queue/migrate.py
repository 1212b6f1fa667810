"""``herald migrate``: bring a database to the schema this Herald needs.

Safe when several pods run it at once (a session advisory lock, SessionLock.MIGRATION,
serialises them), beside running workers of the same or the previous release (the normal
case of ``helm upgrade``), and idempotent (applied versions are recorded in
``herald.schema_migrations``). A database without Herald gets the canonical ``schema.sql``
with every version recorded; an older one gets the missing numbered migrations, each in its
own transaction.

Nothing here waits without a bound. The migration lock is tried, not waited for; a
migration's statements wait at most STATEMENT_LOCK_TIMEOUT for the table locks they need
(so running workers, queued behind a waiting ALTER TABLE, are held up no longer than that)
and are tried again. As soon as it waits, and then every PROGRESS_INTERVAL, the log says
what is awaited and who holds it; after ``wait`` seconds in all, MigrationError names the holder.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from herald_core.errors import MigrationError, SchemaOutOfDate
from herald_queue import db, sql
from herald_queue.db import AsyncConn
from herald_queue.locks import SessionLock
from herald_queue.settings import DatabaseSettings

log = logging.getLogger("herald.migrate")

LOCKS_SQL = sql.load("locks")
DEFAULT_WAIT = 300.0
"""Seconds ``herald migrate`` waits in all for the migration lock and table locks
(HERALD_MIGRATION_WAIT)."""
STATEMENT_LOCK_TIMEOUT = 2.0
"""Seconds one attempt of a migration waits for the table locks it needs."""
RETRY_PAUSE = 1.0
"""Seconds between two attempts of a migration whose table locks were not free: the
sessions queued behind the attempt run meanwhile, so they are never held back to back."""
PROGRESS_INTERVAL = 5.0
"""Seconds between two log lines saying what a waiting migration waits for."""
POLL_INTERVAL = 0.25
"""Seconds between two tries of the migration lock."""


@dataclasses.dataclass(frozen=True)
class MigrationReport:
    before: int
    after: int
    applied: list[str]


def latest_version() -> int:
    return max((v for v, _, _ in sql.migrations()), default=0)


async def current_version(conn: AsyncConn) -> int:
    cur = await conn.execute("SELECT to_regclass('herald.schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM herald.schema_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


async def check_schema(conn: AsyncConn) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is exactly at our version."""
    current = await current_version(conn)
    if current != latest_version():
        raise SchemaOutOfDate(current, latest_version())


class _Deadline:
    """The bound on a migration's waiting, and its progress lines."""

    def __init__(self, wait: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start = clock()
        self._end = self._start + wait
        self._said: float | None = None

    @property
    def waited(self) -> float:
        return self._clock() - self._start

    @property
    def left(self) -> float:
        return self._end - self._clock()

    def due(self) -> bool:
        """True at the first call (a wait is said as soon as it starts, however short its
        bound), then once every PROGRESS_INTERVAL: time to say again what we wait for."""
        if self._said is not None and self._clock() - self._said < PROGRESS_INTERVAL:
            return False
        self._said = self._clock()
        return True


async def migrate(
    conn: AsyncConn, *, wait: float = DEFAULT_WAIT, clock: Callable[[], float] = time.monotonic
) -> MigrationReport:
    """Apply what is missing. ``conn`` must be in autocommit mode. Waits at most ``wait``
    seconds for another migration or for the locks of its statements (see the module)."""
    before = await current_version(conn)
    if before == latest_version():  # the common case takes no lock at all
        return MigrationReport(before=before, after=before, applied=[])
    deadline = _Deadline(wait, clock)
    await _take_migration_lock(conn, deadline)
    try:
        before = await current_version(conn)
        migrations = sql.migrations()
        if before > latest_version():
            raise SchemaOutOfDate(before, latest_version())
        applied: list[str] = []
        if before == 0:
            await _refuse_partial_install(conn)
            await _apply(conn, deadline, "schema.sql", sql.schema(), migrations)
            applied = [f"{v:04d}_{n} (schema.sql)" for v, n, _ in migrations]
        else:
            for version, name, text in [m for m in migrations if m[0] > before]:
                label = f"{version:04d}_{name}"
                await _apply(conn, deadline, label, text, [(version, name, text)])
                applied.append(label)
        return MigrationReport(before=before, after=await current_version(conn), applied=applied)
    finally:
        await conn.execute(LOCKS_SQL["release_session_lock"], {"key": SessionLock.MIGRATION})


async def _take_migration_lock(conn: AsyncConn, deadline: _Deadline) -> None:
    """Try the migration lock until it is ours or ``deadline`` passes."""
    while True:
        row = await (
            await conn.execute(LOCKS_SQL["try_session_lock"], {"key": SessionLock.MIGRATION})
        ).fetchone()
        if row and row[0]:
            return
        if deadline.left <= 0 or deadline.due():
            holder = await _lock_holder(conn)
            if deadline.left <= 0:
                raise MigrationError(
                    f"gave up after {deadline.waited:.0f} s waiting for the migration lock, "
                    f"held by {holder}: another `herald migrate` is running or stuck there. "
                    "Run this again once it is done (HERALD_MIGRATION_WAIT sets the wait)."
                )
            log.warning(
                f"waiting for the migration lock, held by {holder}; giving up in "
                f"{deadline.left:.0f} s",
                extra={"action": "migrate", "waited_seconds": round(deadline.waited, 1)},
            )
        await asyncio.sleep(min(POLL_INTERVAL, max(0.0, deadline.left)))


async def _apply(
    conn: AsyncConn,
    deadline: _Deadline,
    label: str,
    text: str,
    versions: list[tuple[int, str, str]],
) -> None:
    """Run one migration (its text, then its version records) in one transaction, each
    attempt waiting at most STATEMENT_LOCK_TIMEOUT for table locks, again until
    ``deadline``."""
    while True:
        try:
            async with conn.transaction():
                await conn.execute(
                    LOCKS_SQL["local_lock_timeout"],
                    {"lock_timeout": db.milliseconds(STATEMENT_LOCK_TIMEOUT)},
                )
                await conn.execute(text.encode())
                for version, name, _ in versions:
                    await _record(conn, version, name)
            return
        except psycopg.errors.LockNotAvailable:
            holders = await _relation_lock_holders(conn)
            if deadline.left <= 0:
                raise MigrationError(
                    f"migration {label} gave up after {deadline.waited:.0f} s: the tables it "
                    f"changes stayed locked by {holders}; nothing of it was applied. Run "
                    "`herald migrate` again (HERALD_MIGRATION_WAIT sets the wait)."
                ) from None
            log.warning(
                f"migration {label} waits for table locks held by {holders}; trying again",
                extra={"action": "migrate", "waited_seconds": round(deadline.waited, 1)},
            )
            await asyncio.sleep(min(RETRY_PAUSE, max(0.0, deadline.left)))
        except psycopg.Error as exc:
            raise MigrationError(
                f"migration {label} failed: {exc}; nothing of it was applied (each migration "
                "runs in one transaction)"
            ) from exc


async def _lock_holder(conn: AsyncConn) -> str:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(LOCKS_SQL["session_lock_holder"], {"key": SessionLock.MIGRATION})
    row = await cur.fetchone()
    return _describe_session(row) if row else "a session that has just ended"


async def _relation_lock_holders(conn: AsyncConn) -> str:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(LOCKS_SQL["relation_lock_holders"])
    rows = await cur.fetchall()
    return ", ".join(_describe_session(r) for r in rows) or "sessions that have since let go"


def _describe_session(row: dict[str, Any]) -> str:
    """``'herald worker (pod-1)' (PostgreSQL pid 4242, idle, in a transaction for 12 s)``."""
    name = row.get("application_name") or "a session without application_name"
    parts = [f"PostgreSQL pid {row['pid']}"]
    if row.get("client_addr"):
        parts.append(f"from {row['client_addr']}")
    if row.get("state"):
        parts.append(str(row["state"]))
    if row.get("transaction_seconds") is not None:
        parts.append(f"in a transaction for {row['transaction_seconds']:.0f} s")
    return f"'{name}' ({', '.join(parts)})"


async def migrate_url(url: str, settings: DatabaseSettings) -> MigrationReport:
    """Connect to ``url``, migrate (waiting at most HERALD_MIGRATION_WAIT), disconnect."""
    conn = await db.connect(url, settings)
    try:
        return await migrate(conn, wait=settings.migration_wait)
    finally:
        await conn.close()


async def _record(conn: AsyncConn, version: int, name: str) -> None:
    await conn.execute(
        "INSERT INTO herald.schema_migrations (version, name) VALUES (%s, %s)", [version, name]
    )


async def _refuse_partial_install(conn: AsyncConn) -> None:
    cur = await conn.execute("SELECT to_regnamespace('herald') IS NOT NULL")
    row = await cur.fetchone()
    if row and row[0]:
        raise MigrationError(
            "the database has a schema named 'herald' without Herald's migration table; "
            "it was not made by `herald migrate`. Use another database or drop that schema."
        )
