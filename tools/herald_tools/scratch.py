"""A throwaway database (for the benchmark and the demo): a new database on the given
server, or on a private embedded PostgreSQL that is stopped and removed afterwards."""

from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from herald_queue import db, embedded, migrate

SETTINGS = (
    "server_version",
    "synchronous_commit",
    "fsync",
    "wal_level",
    "shared_buffers",
    "max_connections",
    "wal_sync_method",
    "checkpoint_timeout",
    "max_wal_size",
)


@asynccontextmanager
async def scratch_database(
    admin_url: str | None, *, prefix: str = "herald_scratch"
) -> AsyncIterator[str]:
    """Yield the URL of a fresh, migrated database; drop it (and the embedded server,
    if one was started) afterwards."""
    tmp: Path | None = None
    if admin_url is None:
        tmp = Path(tempfile.mkdtemp(prefix="herald-scratch-"))
        tmp.chmod(0o755)
        admin_url = embedded.start(tmp)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        async with await db.connect(admin_url) as conn:
            await conn.execute(f'CREATE DATABASE "{name}"'.encode())
        url = make_conninfo(admin_url, dbname=name)
        async with await db.connect(url) as conn:
            await migrate.migrate(conn)
        try:
            yield url
        finally:
            async with await db.connect(admin_url) as conn:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
    finally:
        if tmp is not None:
            embedded.stop(tmp)
            shutil.rmtree(tmp, ignore_errors=True)


async def describe_server(url: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        settings = {}
        for name in SETTINGS:
            cur = await conn.execute(f"SHOW {name}".encode())
            row = await cur.fetchone()
            settings[name] = row[0] if row else None
    return {
        "postgresql": settings,
        "python": sys.version.split()[0],
        "machine": {"cpus": _cpus(), "platform": platform.platform()},
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
