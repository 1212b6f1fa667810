"""Connections to PostgreSQL: the URL (given, or the embedded server's), the pool, each
session's name and lock bound, the translation of connection failures into errors that
never show credentials, and telling an outage from a conflict between transactions (which
is retried, never reported as an outage)."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from herald_core.errors import DatabaseUnavailable
from herald_queue import embedded, sql
from herald_queue.settings import DatabaseSettings

AsyncConn = psycopg.AsyncConnection[tuple[object, ...]]
log = logging.getLogger("herald.db")

_CONFIGURE = sql.load("locks")["configure_session"]
_application_name = "herald"


def name_process(role: str) -> None:
    """Name this process's connections ``herald ROLE (HOST)``, as pg_stat_activity shows
    them; HOST is the pod's name in Kubernetes. Called once, by the command that starts."""
    global _application_name
    _application_name = f"herald {role} ({socket.gethostname()})"[:63]


def application_name() -> str:
    return _application_name


async def configure(conn: AsyncConn, *, lock_timeout: float) -> None:
    """Name the session and bound its lock waits (see ``configure_session``)."""
    await conn.execute(
        _CONFIGURE,
        {
            "application_name": _application_name,
            "lock_timeout": milliseconds(lock_timeout),
        },
    )


def milliseconds(seconds: float) -> str:
    """A duration as PostgreSQL's timeout settings take it (``lock_timeout``): whole
    milliseconds, at least 1 (0 would mean no timeout at all)."""
    return f"{max(1, round(seconds * 1000))}ms"


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


# SQLSTATEs that mean the server is going away or not accepting connections yet.
_GOING_AWAY = {"57P01", "57P02", "57P03"}


def is_connection_failure(exc: BaseException) -> bool:
    """True when ``exc`` means PostgreSQL cannot be reached (or the connection was lost);
    False for an error the server answered: a deadlock, a lock timeout, a serialization
    failure, a cancelled statement... which say nothing about the database being down."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _GOING_AWAY
    return isinstance(exc, DatabaseUnavailable | OSError | PoolTimeout)


def what_happened(exc: BaseException) -> str:
    """Words for a database error in a log line or a message: the server's reason and its
    SQLSTATE name (``deadlock detected (DeadlockDetected)``), never a URL."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{reason} ({type(exc).__name__})"


CONFLICT_ATTEMPTS = 5
"""Tries of a transaction that PostgreSQL rolled back for a deadlock or a serialization
failure, before the error is raised."""
P = ParamSpec("P")
R = TypeVar("R")


def retry_conflicts(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run a whole transaction again when PostgreSQL rolled it back because it conflicted
    with another (deadlock detected, serialization failure): nothing of it was written, and
    the next try usually goes through. Logged as what it is, never as an outage."""

    @functools.wraps(fn)
    async def retrying(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return await fn(*args, **kwargs)
            except psycopg.Error as exc:  # class 40: deadlock, serialization failure...
                if not (exc.sqlstate or "").startswith("40") or attempt == CONFLICT_ATTEMPTS:
                    raise
                log.warning(
                    "transaction rolled back by a conflict with another; trying again",
                    extra={
                        "action": fn.__name__.lstrip("_"),
                        "attempt": attempt,
                        "error": what_happened(exc),
                    },
                )
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    return retrying


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailable:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # libpq messages name host and port but never the password; still, strip the URL.
    reason = reason.replace(url, describe(url))
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at {describe(url)}: {reason}. Check HERALD_DATABASE_URL "
        "and that the server is up."
    )


async def connect(url: str, settings: DatabaseSettings | None = None) -> AsyncConn:
    """One connection (autocommit), named and with its lock bound; ``settings`` give the
    timeouts (HERALD_DB_CONNECT_TIMEOUT, HERALD_DB_LOCK_TIMEOUT), their defaults without."""
    settings = settings or DatabaseSettings()
    try:
        conn = await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            connect_timeout=max(1, round(settings.connect_timeout)),
            application_name=_application_name,
        )
    except psycopg.OperationalError as exc:
        raise unavailable(url, exc) from None
    except psycopg.ProgrammingError:  # a malformed conninfo: its message may quote the URL
        raise DatabaseUnavailable(
            "the database URL is not a valid PostgreSQL URL; expected e.g. "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    try:
        await configure(conn, lock_timeout=settings.lock_timeout)
    except BaseException:
        await conn.close()
        raise
    return conn


async def open_pool(
    url: str, settings: DatabaseSettings, *, name: str = "herald"
) -> AsyncConnectionPool[AsyncConn]:
    """Open a pool once the database answers (a clear error if it does not)."""
    probe = await connect(url, settings)
    await probe.close()

    async def configure_pooled(conn: AsyncConn) -> None:
        await configure(conn, lock_timeout=settings.lock_timeout)

    pool: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
        url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        kwargs={
            "autocommit": True,
            "connect_timeout": max(1, round(settings.connect_timeout)),
            "application_name": _application_name,
        },
        configure=configure_pooled,
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
