"""LISTEN/NOTIFY wake-ups: an idle claimer starts within milliseconds of an enqueue.

A dedicated connection per worker process listens on ``herald_targets`` (registry
changes) and ``herald_jobs_more``; one process at a time, the *waker*, also listens on
``herald_jobs`` (new, released, rescued or replayed jobs), so that one enqueue wakes one
claimer, not every idle process. The waker is whoever holds a session advisory lock
(SessionLock.WAKER), taken by the first listener to try and given up only with its connection;
the others try again every ``elect_interval`` seconds, so a stopped waker is replaced
within that. A waker whose claim came back full (more is waiting than it took) sends
``herald_jobs_more``, which wakes every other process: a backlog is shared at once, a
trickle wakes only the waker. Each notification sets an event; the
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
from typing import Any

import psycopg
import tenacity

from herald_core.errors import DatabaseUnavailable
from herald_queue import db, sql
from herald_queue.locks import SessionLock

log = logging.getLogger("herald.listener")

JOBS_CHANNEL = "herald_jobs"
TARGETS_CHANNEL = "herald_targets"
MORE_CHANNEL = "herald_jobs_more"
_TRY_LOCK = sql.load("locks")["try_session_lock"]
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
        channels: tuple[str, ...] = (TARGETS_CHANNEL, MORE_CHANNEL),
        backoff: Callable[[int], float] = reconnect_backoff,
        elect_interval: float = 1.0,
    ) -> None:
        self._url = url
        self._channels = channels
        self._backoff = backoff
        self._elect_interval = elect_interval
        self.waker = False
        """This listener hears ``herald_jobs`` (it holds SessionLock.WAKER)."""
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
            while True:
                if not self.waker:
                    await self._elect(conn)
                # A waker listens until the connection ends; the others come back to try
                # the lock again.
                timeout = None if self.waker else self._elect_interval
                async for note in conn.notifies(timeout=timeout):
                    self.notifications += 1
                    if note.channel == TARGETS_CHANNEL:
                        self.targets.set()
                    else:
                        self.jobs.set()
                if self.waker:
                    raise psycopg.OperationalError("notification stream ended")
        finally:
            self.connected.clear()
            self.waker = False
            self.backend_pid = None
            with contextlib.suppress(Exception):
                await conn.close()

    async def _elect(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # The listener that gets this session lock is the waker, the one that hears herald_jobs.
        cur = await conn.execute(_TRY_LOCK, {"key": SessionLock.WAKER})
        row = await cur.fetchone()
        if row and row[0]:
            await conn.execute(f"LISTEN {JOBS_CHANNEL}".encode())
            # herald_jobs_more is the waker's own call to the others: hearing it would
            # wake this process for nothing after each of its limited claims.
            await conn.execute(f"UNLISTEN {MORE_CHANNEL}".encode())
            self.waker = True
            self.jobs.set()  # what was enqueued before we heard herald_jobs


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
