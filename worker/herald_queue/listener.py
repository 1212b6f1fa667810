"""LISTEN/NOTIFY wake-ups: an idle claimer starts within milliseconds of an enqueue.

A dedicated connection listens on ``herald_jobs`` (new, released, rescued or replayed
jobs) and ``herald_targets`` (registry changes). Each notification sets an event; the
claim loop clears it before claiming and waits on it (with a polling timeout as the
fallback) when a claim comes back empty, so no wake-up is ever lost. A lost connection is
reopened with backoff; meanwhile ``connected`` is False and waiters fall back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
import tenacity

from herald_queue import db
from herald_queue.errors import DatabaseUnavailable

log = logging.getLogger("herald.listener")

JOBS_CHANNEL = "herald_jobs"
TARGETS_CHANNEL = "herald_targets"


class Listener:
    def __init__(
        self, url: str, *, channels: tuple[str, ...] = (JOBS_CHANNEL, TARGETS_CHANNEL)
    ) -> None:
        self._url = url
        self._channels = channels
        self.jobs = asyncio.Event()
        self.targets = asyncio.Event()
        self.connected = asyncio.Event()
        self.notifications = 0

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff after a connection loss."""
        retrying = tenacity.AsyncRetrying(
            wait=tenacity.wait_exponential(multiplier=0.2, max=10) + tenacity.wait_random(0, 0.5),
            retry=tenacity.retry_if_exception_type(
                (psycopg.OperationalError, OSError, DatabaseUnavailable)
            ),
            before_sleep=lambda state: log.warning(
                "listener connection lost; reconnecting",
                extra={
                    "action": "listen",
                    "attempt": state.attempt_number,
                    "error": str(state.outcome.exception()) if state.outcome else None,
                },
            ),
        )
        async for attempt in retrying:
            with attempt:
                await self._listen()

    async def _listen(self) -> None:
        conn = await db.connect(self._url)
        try:
            for channel in self._channels:
                await conn.execute(f"LISTEN {channel}".encode())
            self.connected.set()
            # Anything enqueued while we were not listening must not wait for a poll.
            self.jobs.set()
            self.targets.set()
            async for note in conn.notifies():
                self.notifications += 1
                if note.channel == JOBS_CHANNEL:
                    self.jobs.set()
                else:
                    self.targets.set()
            raise psycopg.OperationalError("notification stream ended")
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                await conn.close()


async def wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True if it was set.

    asyncio.timeout, not asyncio.wait_for: on Python 3.11 wait_for returns the result
    instead of raising when the event is set in the same loop iteration as a cancel, and
    a loop that waits this way then survives the cancel that should stop it."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
