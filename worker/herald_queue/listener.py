"""LISTEN/NOTIFY wake-ups: an idle claimer starts within milliseconds of an enqueue.

A dedicated connection listens on ``herald_jobs`` (new, released, rescued or replayed
jobs) and ``herald_targets`` (registry changes). Each notification sets an event; the
claim loop clears it before claiming and waits on it (with a polling timeout as the
fallback) when a claim comes back empty, so no wake-up is ever lost. A lost connection is
reopened with backoff; meanwhile ``connected`` is False and waiters fall back to polling.
The backoff grows while reconnecting fails and starts over once a connection is listening
again: each database blip costs its first step (a fraction of a second), however many came
before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
import tenacity

from herald_queue import db
from herald_queue.errors import DatabaseUnavailable

log = logging.getLogger("herald.listener")

JOBS_CHANNEL = "herald_jobs"
TARGETS_CHANNEL = "herald_targets"
RECONNECT_ERRORS = (psycopg.OperationalError, OSError, DatabaseUnavailable)
_BACKOFF = tenacity.wait_exponential(multiplier=0.2, max=10) + tenacity.wait_random(0, 0.5)


def reconnect_backoff(failures: int) -> float:
    """Seconds before reconnecting after ``failures`` failures in a row (1-based): 0.2 s
    doubling up to 10 s, plus up to 0.5 s of jitter."""
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, failures)
    return float(_BACKOFF(state))


class Listener:
    def __init__(
        self,
        url: str,
        *,
        channels: tuple[str, ...] = (JOBS_CHANNEL, TARGETS_CHANNEL),
        backoff: Callable[[int], float] = reconnect_backoff,
    ) -> None:
        self._url = url
        self._channels = channels
        self._backoff = backoff
        self.jobs = asyncio.Event()
        self.targets = asyncio.Event()
        self.connected = asyncio.Event()
        self.notifications = 0
        self.reconnects = 0
        """Connections that were listening and were lost."""
        self.backend_pid: int | None = None
        """The PostgreSQL backend of the LISTEN connection, while it is up."""

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff after a connection loss. The
        failures are counted from the last connection that was listening: one that got as
        far as LISTEN starts the backoff over."""
        failures = 0
        while True:
            listening = False

            def up() -> None:
                nonlocal listening
                listening = True

            try:
                await self._listen(up)
            except RECONNECT_ERRORS as exc:
                if listening:
                    failures = 0
                    self.reconnects += 1
                failures += 1
                delay = self._backoff(failures)
                log.warning(
                    "listener connection lost; reconnecting"
                    if listening
                    else "listener cannot connect; trying again",
                    extra={
                        "action": "listen",
                        "attempt": failures,
                        "delay_seconds": round(delay, 3),
                        "error": str(exc),
                    },
                )
                await asyncio.sleep(delay)

    async def _listen(self, up: Callable[[], None]) -> None:
        conn = await db.connect(self._url)
        try:
            for channel in self._channels:
                await conn.execute(f"LISTEN {channel}".encode())
            self.backend_pid = conn.info.backend_pid
            up()
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
            self.backend_pid = None
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
