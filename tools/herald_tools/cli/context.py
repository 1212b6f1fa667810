"""What every command needs: settings from the environment and an open queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from herald_core.settings import check
from herald_delivery.egress import EgressPolicy
from herald_delivery.settings import EgressSettings
from herald_queue.queue import Queue
from herald_queue.settings import DatabaseSettings, QueueSettings


def database_settings() -> DatabaseSettings:
    return DatabaseSettings.from_env()


def queue_settings() -> QueueSettings:
    return QueueSettings.from_env()


def egress_policy() -> EgressPolicy:
    """The workers' egress policy (HERALD_EGRESS_*): targets are checked against it when
    they are applied."""
    return EgressSettings.from_env().policy()


@asynccontextmanager
async def open_queue(*, check_schema: bool = True) -> AsyncIterator[Queue]:
    """The queue on HERALD_DATABASE_URL, or on the embedded PostgreSQL (announced on
    stderr). The embedded database is migrated on first use, so a new user's first
    command just works."""
    check(DatabaseSettings, QueueSettings)  # every bad variable of both, at once
    db = database_settings()
    settings = queue_settings()
    if db.url is None:
        await _migrate_embedded(db)
    queue = await Queue.open(db, settings, announce=db.url is None, check_schema=check_schema)
    try:
        yield queue
    finally:
        await queue.close()


async def _migrate_embedded(db: DatabaseSettings) -> None:
    from herald_queue import db as dbmod
    from herald_queue import migrate

    await migrate.migrate_url(dbmod.resolve_url(db), db)
