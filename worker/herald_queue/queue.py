"""One handle on a Herald database: pool, target registry, jobs, dead letters, stats."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from herald_queue import db, migrate, stats
from herald_queue.attempts import AttemptStore
from herald_queue.dead_letters import DeadLetterStore
from herald_queue.jobs import JobStore
from herald_queue.records import QueueStats
from herald_queue.registry import TargetRegistry
from herald_queue.settings import DatabaseSettings, QueueSettings


class Queue:
    def __init__(
        self,
        pool: AsyncConnectionPool[db.AsyncConn],
        settings: QueueSettings,
        url: str,
        *,
        retry_after_cap: float = 3600.0,
    ) -> None:
        self.pool = pool
        self.url = url
        self.settings = settings
        self.registry = TargetRegistry(pool, default_namespace=settings.default_namespace)
        self.jobs = JobStore(pool, self.registry, settings, retry_after_cap=retry_after_cap)
        self.dead_letters = DeadLetterStore(pool, settings)
        self.attempts = AttemptStore(pool)

    @classmethod
    async def open(
        cls,
        db_settings: DatabaseSettings,
        settings: QueueSettings,
        *,
        url: str | None = None,
        announce: bool = False,
        check_schema: bool = True,
        retry_after_cap: float = 3600.0,
    ) -> Queue:
        """Connect (starting the embedded server when no URL is configured) and check
        that the schema is the one this Herald needs."""
        url = url or db.resolve_url(db_settings, announce=announce)
        pool = await db.open_pool(url, db_settings)
        try:
            if check_schema:
                async with pool.connection() as conn:
                    await migrate.check_schema(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, settings, url, retry_after_cap=retry_after_cap)

    async def stats(self, *, live_only: bool = False) -> QueueStats:
        return await stats.queue_stats(
            self.pool, live_only=live_only, capacity=self.settings.capacity
        )

    async def close(self) -> None:
        await self.jobs.group_commit.close()
        await self.jobs.waker.flush()
        await self.pool.close()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
