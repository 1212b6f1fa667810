"""Wakes idle claimers after enqueues (``NOTIFY herald_jobs``), at most once per
``interval`` per process.

A notifying transaction holds PostgreSQL's notification lock while it commits, so a NOTIFY
in every enqueue would serialise concurrent enqueues (it halves single-enqueue throughput).
So an enqueue carries the NOTIFY in its own transaction only when none was sent in the last
``interval`` (at low rates, every one: the wake-up comes with the commit, no extra round
trip); otherwise one trailing NOTIFY, sent on its own after the interval, covers every
enqueue since. Either way each enqueue is followed by a notification sent after its commit,
so a claimer never sleeps through a job (listener.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from psycopg_pool import AsyncConnectionPool

from herald_queue.db import AsyncConn

log = logging.getLogger("herald.waker")


class Waker:
    def __init__(self, pool: AsyncConnectionPool[AsyncConn], *, interval: float = 0.002) -> None:
        self._pool = pool
        self._interval = interval
        self._last = 0.0
        self._pending: asyncio.Task[None] | None = None
        self.sent = 0

    def take(self) -> bool:
        """An enqueue is about to commit: True if it should carry the NOTIFY itself;
        otherwise a trailing notification is (or will be) on its way."""
        if self._pending is None or self._pending.done():
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                self.sent += 1
                return True
        self.poke()
        return False

    def poke(self) -> None:
        """Jobs were committed: make sure a notification follows."""
        if self._pending is not None and not self._pending.done():
            return  # the pending notification has not been sent yet: it covers these jobs
        delay = max(0.0, self._last + self._interval - time.monotonic())
        self._pending = asyncio.get_running_loop().create_task(self._send(delay))

    async def _send(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        self._last = time.monotonic()
        try:
            async with self._pool.connection() as conn:
                await conn.execute("SELECT pg_notify('herald_jobs', '')")
            self.sent += 1
        except Exception as exc:  # claimers still poll; never fail an enqueue over this
            log.warning(
                "could not notify workers of new jobs; they will find them by polling",
                extra={"action": "notify", "error": str(exc)},
            )

    async def flush(self) -> None:
        """Wait for the pending notification (before closing the pool)."""
        if self._pending is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
