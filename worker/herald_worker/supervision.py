"""Side tasks and a database that comes and goes.

- Side tasks (listener, settler, leases, rescuer...) are supervised: any failure stops the
  worker cleanly and loudly. At shutdown they are cancelled, again if they swallow it,
  and the shutdown goes on without one that will not stop.
- A lost database is waited for: operations are retried with backoff while PostgreSQL is
  away (the worker is not ready meanwhile), and resume once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import psycopg
import psycopg_pool
import tenacity

from herald_core.errors import DatabaseUnavailable
from herald_queue import db
from herald_worker.health import Health

log = logging.getLogger("herald.worker")

# Errors that mean "the database is not there right now": wait and try again.
DB_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout, DatabaseUnavailable, OSError)
STOP_TIMEOUT = 10.0
"""Seconds the side tasks get to end once cancelled at shutdown."""
STOP_RECANCEL = 0.2
"""Seconds between cancels of a side task that is still running (one swallowed a cancel)."""


def db_retry(
    health: Health,
    action: str,
    *,
    attempts: int | None = None,
    give_up: Callable[[], bool] | None = None,
) -> tenacity.AsyncRetrying:
    """Retry a database operation with backoff while PostgreSQL is away (at most
    ``attempts`` times, and no more once ``give_up`` says so)."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return
        health.database_error(exc)  # says what happened unless PostgreSQL is away
        if db.is_connection_failure(exc):
            log.warning(
                "database unavailable; retrying",
                extra={
                    "action": action,
                    "attempt": state.attempt_number,
                    "error": type(exc).__name__,
                },
            )

    limit = tenacity.stop_after_attempt(attempts) if attempts else tenacity.stop_never

    def stop(state: tenacity.RetryCallState) -> bool:
        return bool(limit(state)) or (give_up is not None and give_up())

    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(DB_ERRORS),
        wait=tenacity.wait_exponential(multiplier=0.1, max=5) + tenacity.wait_random(0, 0.2),
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
    )


async def supervise(
    tasks: Mapping[str, Callable[[], Coroutine[Any, Any, None]]],
    main: Awaitable[None],
    *,
    stop_timeout: float = STOP_TIMEOUT,
) -> None:
    """Run ``main`` with side tasks; if a side task fails, the worker fails loudly. When
    ``main`` ends, the side tasks are stopped (within ``stop_timeout``, see stop_tasks)."""
    side: dict[asyncio.Task[None], str] = {
        asyncio.create_task(factory(), name=name): name for name, factory in tasks.items()
    }
    main_task = asyncio.ensure_future(main)
    try:
        while True:
            done, _ = await asyncio.wait({main_task, *side}, return_when=asyncio.FIRST_COMPLETED)
            if main_task in done:
                main_task.result()
                return
            for task in done:
                name = side.pop(task)
                exc = task.exception()
                log.critical(
                    "side task %s stopped; the worker stops too",
                    name,
                    extra={"action": "supervise", "task": name, "error": repr(exc)},
                )
                raise RuntimeError(f"worker side task {name!r} failed: {exc!r}") from exc
    finally:
        main_task.cancel()
        with contextlib.suppress(BaseException):
            await main_task
        await stop_tasks(side, stop_timeout)


async def stop_tasks(tasks: Mapping[asyncio.Task[Any], str], timeout: float) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again those that are still running
    (a cancel can be swallowed: asyncio.wait_for on Python 3.11, in our code or in a
    library's, returns instead of raising when what it waits for completes at the same
    moment). After ``timeout`` the shutdown goes on without them, saying which they are and
    where they are stuck, rather than hanging until the pod is killed."""
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + timeout
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(remaining, STOP_RECANCEL))
    for task in pending:
        frames = task.get_stack(limit=3)
        where = "; ".join(f"{f.f_code.co_filename}:{f.f_lineno}" for f in frames) or "?"
        log.error(
            "side task %s did not stop within %gs of being cancelled; shutting down without it",
            tasks[task],
            timeout,
            extra={"action": "supervise", "task": tasks[task], "where": where},
        )
    done = [t for t in tasks if t.done() and not t.cancelled()]
    await asyncio.gather(*done, return_exceptions=True)
