"""``herald migrate``: idempotent, safe when run by several processes at once, and the
canonical schema.sql equals the numbered migrations applied one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from herald_core.errors import MigrationError, SchemaOutOfDate
from herald_queue import migrate, sql
from herald_queue.queue import Queue
from herald_queue.settings import DatabaseSettings, QueueSettings

FreshDb = Callable[..., Any]


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True)


CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname AS table, a.attname AS column, a.attnum AS position,
               format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
               pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity AS identity,
               a.attgenerated AS generated, a.attcollation::regcollation::text AS collation
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'herald' AND c.relkind IN ('r', 'p', 'v', 'm')
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 3""",
    "relations": """
        SELECT c.relname AS name, c.relkind AS kind, c.relpersistence AS persistence,
               c.reloptions AS options
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'herald' ORDER BY 1""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'herald' ORDER BY 1, 2""",
    "constraints": """
        SELECT c.relname AS table, k.conname AS name, k.contype AS type,
               pg_get_constraintdef(k.oid) AS definition, k.condeferrable, k.condeferred
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = k.connamespace
        WHERE n.nspname = 'herald' ORDER BY 1, 2""",
    "triggers": """
        SELECT c.relname AS table, t.tgname AS name, pg_get_triggerdef(t.oid) AS definition,
               t.tgenabled AS enabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'herald' AND NOT t.tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args,
               pg_get_functiondef(p.oid) AS definition
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'herald' ORDER BY 1, 2""",
    "sequences": """
        SELECT s.sequencename, s.data_type::text, s.start_value, s.increment_by, s.cycle
        FROM pg_sequences s WHERE s.schemaname = 'herald' ORDER BY 1""",
    "types": """
        SELECT t.typname, t.typtype FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'herald' AND t.typtype NOT IN ('c') ORDER BY 1""",
}


async def catalog(url: str) -> dict[str, list[dict[str, Any]]]:
    """Everything schema ``herald`` defines, in a form two databases can be diffed on."""
    out = {}
    async with await connect(url) as conn:
        for part, query in CATALOG_QUERIES.items():
            cur = await conn.cursor(row_factory=dict_row).execute(query.encode())
            out[part] = await cur.fetchall()
    return out


def diff(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems = []
    for part in a:
        left = [repr(sorted(r.items())) for r in a[part]]
        right = [repr(sorted(r.items())) for r in b[part]]
        problems += [f"{part}: only via schema.sql: {r}" for r in left if r not in right]
        problems += [f"{part}: only via migrations: {r}" for r in right if r not in left]
    return problems


async def test_migrate_twice_is_idempotent(fresh_db: FreshDb) -> None:
    url = await fresh_db()
    async with await connect(url) as conn:
        first = await migrate.migrate(conn)
        assert (first.before, first.after) == (0, migrate.latest_version())
        assert len(first.applied) == migrate.latest_version()
        second = await migrate.migrate(conn)
        assert (second.before, second.after, second.applied) == (
            migrate.latest_version(),
            migrate.latest_version(),
            [],
        )
        await migrate.check_schema(conn)
        cur = await conn.execute(
            "SELECT version, name FROM herald.schema_migrations ORDER BY version"
        )
        assert await cur.fetchall() == [(v, n) for v, n, _ in sql.migrations()]


async def test_concurrent_migrations_apply_once(fresh_db: FreshDb) -> None:
    url = await fresh_db()
    conns = [await connect(url) for _ in range(4)]
    try:
        reports = await asyncio.gather(*(migrate.migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    applied = [r for r in reports if r.applied]
    assert len(applied) == 1, "exactly one process applies the migrations"
    assert {(r.after) for r in reports} == {migrate.latest_version()}
    assert sorted(r.before for r in reports) == [0] + [migrate.latest_version()] * 3
    async with await connect(url) as conn:
        cur = await conn.execute(
            "SELECT version, count(*) FROM herald.schema_migrations GROUP BY 1 ORDER BY 1"
        )
        assert await cur.fetchall() == [(v, 1) for v, _, _ in sql.migrations()]
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert (await cur.fetchone()) == (0,), "the migration lock was released"


async def test_schema_sql_equals_the_migrations_one_by_one(fresh_db: FreshDb) -> None:
    canonical = await fresh_db()
    stepwise = await fresh_db()
    async with await connect(canonical) as conn:
        report = await migrate.migrate(conn)  # an empty database gets schema.sql
        assert all("schema.sql" in a for a in report.applied)
    async with await connect(stepwise) as conn:
        for version, name, text in sql.migrations():
            async with conn.transaction():
                await conn.execute(text.encode())
                await conn.execute(
                    "INSERT INTO herald.schema_migrations (version, name) VALUES (%s, %s)",
                    [version, name],
                )
        await migrate.check_schema(conn)
        assert (await migrate.migrate(conn)).applied == [], "migrate agrees it is up to date"
    a, b = await catalog(canonical), await catalog(stepwise)
    assert a["columns"] and a["indexes"] and a["constraints"] and a["triggers"]
    assert a["functions"]
    problems = diff(a, b)
    assert problems == [], "\n".join(problems)


async def test_catalog_dump_sees_a_difference(fresh_db: FreshDb, template_db: str) -> None:
    """The comparison above would notice a drift (here: one index changed)."""
    url = await fresh_db(template_db)
    before = await catalog(url)
    async with await connect(url) as conn:
        await conn.execute("DROP INDEX herald.jobs_finished_idx")
        await conn.execute("CREATE INDEX jobs_finished_idx ON herald.jobs (finished_at)")
        await conn.execute("ALTER TABLE herald.jobs ALTER COLUMN attempts SET DEFAULT 1")
    problems = diff(before, await catalog(url))
    assert any("jobs_finished_idx" in p for p in problems)
    assert any("attempts" in p for p in problems)


async def test_unmigrated_database_is_refused(fresh_db: FreshDb) -> None:
    url = await fresh_db()
    async with await connect(url) as conn:
        with pytest.raises(SchemaOutOfDate, match="run `herald migrate`") as info:
            await migrate.check_schema(conn)
        assert (info.value.current, info.value.expected) == (0, migrate.latest_version())
    with pytest.raises(SchemaOutOfDate, match="herald migrate"):
        await Queue.open(DatabaseSettings(pool_min=1, pool_max=2), QueueSettings(), url=url)


async def test_newer_schema_is_refused(fresh_db: FreshDb, template_db: str) -> None:
    url = await fresh_db(template_db)
    async with await connect(url) as conn:
        await conn.execute(
            "INSERT INTO herald.schema_migrations (version, name) VALUES (%s, 'from_the_future')",
            [migrate.latest_version() + 1],
        )
        with pytest.raises(SchemaOutOfDate, match="upgrade Herald"):
            await migrate.check_schema(conn)
        with pytest.raises(SchemaOutOfDate):
            await migrate.migrate(conn)


async def test_foreign_herald_schema_is_not_touched(fresh_db: FreshDb) -> None:
    url = await fresh_db()
    async with await connect(url) as conn:
        await conn.execute("CREATE SCHEMA herald")
        await conn.execute("CREATE TABLE herald.mine (x int)")
        with pytest.raises(MigrationError, match="schema named 'herald'"):
            await migrate.migrate(conn)
        cur = await conn.execute("SELECT to_regclass('herald.jobs') IS NULL")
        assert await cur.fetchone() == (True,)
