"""Connections to PostgreSQL: the URL (given, or the embedded server's), the pool, and the
translation of connection failures into errors that never show credentials."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from herald_queue import embedded
from herald_queue.errors import DatabaseUnavailable
from herald_queue.settings import DatabaseSettings

AsyncConn = psycopg.AsyncConnection[tuple[object, ...]]


def describe(url: str) -> str:
    """Where ``url`` points, without user or password: ``host:port/dbname``."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(a malformed database URL)"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or params.get("user") or "postgres")
    return f"{host}:{port}/{dbname}" if not host.startswith("/") else f"{host}/{dbname}"


_STARTED: set[Path] = set()
_ANNOUNCED: set[Path] = set()


def resolve_url(settings: DatabaseSettings, *, announce: bool = False) -> str:
    """The database URL to use: HERALD_DATABASE_URL, else the embedded server's."""
    if settings.url:  # a valid URL: DatabaseSettings checks it
        return settings.url.get_secret_value()
    data_dir = Path(settings.data_dir) if settings.data_dir else embedded.default_data_dir()
    # Said by the process that starts the server, once, not by every command that finds
    # it running.
    if embedded.running(data_dir) is None:
        _STARTED.add(data_dir)
    url = embedded.start(data_dir)
    if announce and data_dir in _STARTED and data_dir not in _ANNOUNCED:
        _ANNOUNCED.add(data_dir)
        print(
            f"herald: HERALD_DATABASE_URL is not set; using the embedded PostgreSQL in "
            f"{data_dir} (left running for the next command; `herald db stop` stops it)",
            file=sys.stderr,
        )
    return url


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailable:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # libpq messages name host and port but never the password; still, strip the URL.
    reason = reason.replace(url, describe(url))
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at {describe(url)}: {reason}. Check HERALD_DATABASE_URL "
        "and that the server is up."
    )


async def connect(url: str, *, timeout: float = 5.0) -> AsyncConn:
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=max(1, round(timeout))
        )
    except psycopg.OperationalError as exc:
        raise unavailable(url, exc) from None
    except psycopg.ProgrammingError:  # a malformed conninfo: its message may quote the URL
        raise DatabaseUnavailable(
            "the database URL is not a valid PostgreSQL URL; expected e.g. "
            "postgresql://user:password@host:5432/dbname"
        ) from None


async def open_pool(
    url: str, settings: DatabaseSettings, *, name: str = "herald"
) -> AsyncConnectionPool[AsyncConn]:
    """Open a pool once the database answers (a clear error if it does not)."""
    probe = await connect(url, timeout=settings.connect_timeout)
    await probe.close()
    pool: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
        url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        kwargs={"autocommit": True, "connect_timeout": max(1, round(settings.connect_timeout))},
        open=False,
        name=name,
        timeout=settings.connect_timeout * 2,
    )
    try:
        await pool.open(wait=settings.pool_min > 0, timeout=settings.connect_timeout * 2)
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        await pool.close()
        raise unavailable(url, exc) from None
    return pool


@asynccontextmanager
async def transaction(pool: AsyncConnectionPool[AsyncConn]) -> AsyncIterator[AsyncConn]:
    async with pool.connection() as conn, conn.transaction():
        yield conn
