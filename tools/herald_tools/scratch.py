"""A throwaway database (for the benchmark and the demo): a new database on the given
server, or on a private embedded PostgreSQL that is stopped and removed afterwards."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from psycopg.conninfo import make_conninfo

from herald_queue import db, embedded, migrate


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
