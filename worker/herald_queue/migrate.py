"""``herald migrate``: bring a database to the schema this Herald needs.

Safe when several pods run it at once (a session advisory lock serialises them) and
idempotent (applied versions are recorded in ``herald.schema_migrations``). A database
without Herald gets the canonical ``schema.sql`` with every version recorded; an older one
gets the missing numbered migrations, each in its own transaction.
"""

from __future__ import annotations

import dataclasses

import psycopg

from herald_queue import db, sql
from herald_queue.db import AsyncConn
from herald_queue.errors import MigrationError, SchemaOutOfDate

# Arbitrary, fixed key of the advisory lock that serialises migrations ("herald" in ASCII).
MIGRATION_LOCK_KEY = 0x686572616C64


@dataclasses.dataclass(frozen=True)
class MigrationReport:
    before: int
    after: int
    applied: list[str]


def latest_version() -> int:
    return len(sql.migrations())


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


async def migrate(conn: AsyncConn) -> MigrationReport:
    """Apply what is missing. ``conn`` must be in autocommit mode."""
    await conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
    try:
        before = await current_version(conn)
        migrations = sql.migrations()
        if before > len(migrations):
            raise SchemaOutOfDate(before, len(migrations))
        applied: list[str] = []
        if before == 0:
            await _refuse_partial_install(conn)
            async with conn.transaction():
                await conn.execute(sql.schema().encode())
                for version, name, _ in migrations:
                    await _record(conn, version, name)
            applied = [f"{v:04d}_{n} (schema.sql)" for v, n, _ in migrations]
        else:
            for version, name, text in migrations[before:]:
                try:
                    async with conn.transaction():
                        await conn.execute(text.encode())
                        await _record(conn, version, name)
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {version:04d}_{name} failed: {exc}; nothing of it was "
                        "applied (each migration runs in one transaction)"
                    ) from exc
                applied.append(f"{version:04d}_{name}")
        return MigrationReport(before=before, after=await current_version(conn), applied=applied)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])


async def migrate_url(url: str, *, timeout: float = 5.0) -> MigrationReport:
    """Connect to ``url``, migrate, disconnect."""
    conn = await db.connect(url, timeout=timeout)
    try:
        return await migrate(conn)
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
