"""The LISTEN connection against a real PostgreSQL: a lost connection is reopened, and a
connection that was listening starts the reconnect backoff over, so the tenth database
blip in a process's life costs what the first did (it used to grow to 10 s: one retry
loop wrapped the whole life of the listener and counted every blip since the start).

Time is explicit: the backoff is injected. The first step after a loss is 0 s and any
later one is an hour, so a backoff that did not start over shows up as a reconnect that
never comes, not as a slower one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg.conninfo import make_conninfo

from herald_queue.listener import Listener, reconnect_backoff
from tests.helpers import bounded, job, open_queue, register, wait_until

BLIPS = 10


@contextlib.asynccontextmanager
async def listening(listener: Listener) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(listener.run(), name="listener")
    try:
        yield task
    finally:
        task.cancel()
        await bounded(asyncio.gather(task, return_exceptions=True), "the listener to stop", 10)


async def terminate(url: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert (await cur.fetchone()) == (True,)


async def test_every_blip_reconnects_at_the_first_backoff_step(db_url: str) -> None:
    steps: list[int] = []

    def backoff(failures: int) -> float:
        steps.append(failures)
        return 0.0 if failures == 1 else 3600.0

    listener = Listener(db_url, backoff=backoff)
    async with listening(listener):
        for blip in range(BLIPS):
            pid = await wait_until(
                lambda: listener.connected.is_set() and listener.backend_pid,
                timeout=10,
                what=f"listening before blip {blip + 1}",
            )
            await terminate(db_url, pid)
            await wait_until(
                lambda old=pid: (
                    listener.connected.is_set() and listener.backend_pid not in (None, old)
                ),
                timeout=10,
                what=f"listening again after blip {blip + 1} (backoff steps so far: {steps})",
            )
        assert steps == [1] * BLIPS, "each blip is a first failure"
        assert listener.reconnects == BLIPS

        # And it is really listening: a NOTIFY wakes the claimers.
        listener.jobs.clear()
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await conn.execute("SELECT pg_notify('herald_jobs', '')")
        await wait_until(listener.jobs.is_set, timeout=10, what="the NOTIFY arrived")


async def test_the_backoff_grows_while_connecting_fails(db_url: str) -> None:
    """While PostgreSQL does not answer, each failed connect is one more step."""
    steps: list[int] = []
    seen_enough = asyncio.Event()

    def backoff(failures: int) -> float:
        steps.append(failures)
        if failures >= 4:
            seen_enough.set()
        return 0.01

    url = make_conninfo(db_url, port=1, connect_timeout=1)
    listener = Listener(url, backoff=backoff)
    async with listening(listener):
        await bounded(seen_enough.wait(), "four failed connects", 30)
    assert steps[:4] == [1, 2, 3, 4]
    assert not listener.connected.is_set() and listener.reconnects == 0


def test_the_default_backoff_starts_small_and_is_capped() -> None:
    assert 0.2 <= reconnect_backoff(1) <= 0.7
    assert 10 <= reconnect_backoff(50) <= 10.5


async def test_one_enqueue_wakes_one_listener_and_a_full_claim_wakes_the_others(
    db_url: str,
) -> None:
    """One listener (the waker) hears herald_jobs; notify_more reaches the others; when
    the waker's connection ends another listener becomes the waker."""
    listeners = [Listener(db_url, elect_interval=0.05) for _ in range(3)]
    async with await open_queue(db_url) as queue, contextlib.AsyncExitStack() as stack:
        await register(queue)  # before listening: its herald_targets note is not counted
        tasks = [await stack.enter_async_context(listening(li)) for li in listeners]
        await wait_until(lambda: all(li.connected.is_set() for li in listeners), timeout=10)
        await wait_until(lambda: sum(li.waker for li in listeners) == 1, timeout=10)
        [waker] = [li for li in listeners if li.waker]
        others = [li for li in listeners if not li.waker]
        for li in listeners:
            li.jobs.clear()
        before = [li.notifications for li in others]
        await queue.jobs.enqueue(job())
        await wait_until(waker.jobs.is_set, timeout=10)
        # The others never heard it: the next notification they get is notify_more's
        # (PostgreSQL delivers in commit order), and it is their first since.
        assert not any(li.jobs.is_set() for li in others)
        await queue.jobs.notify_more()
        await wait_until(lambda: all(li.jobs.is_set() for li in others), timeout=10)
        assert [li.notifications for li in others] == [n + 1 for n in before]
        assert sum(li.waker for li in listeners) == 1

        # The waker goes away: one of the others takes over and hears enqueues.
        tasks[listeners.index(waker)].cancel()
        await wait_until(lambda: sum(li.waker for li in others) == 1, timeout=10)
        [heir] = [li for li in others if li.waker]
        heir.jobs.clear()
        await queue.jobs.enqueue(job())
        await wait_until(heir.jobs.is_set, timeout=10)
