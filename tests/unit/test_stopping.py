"""A worker always stops: a cancelled wait is never swallowed, and a side task that
survives a cancel (Python 3.11's asyncio.wait_for returns the result instead of raising
when the awaited future completes in the same loop iteration as the cancel: gh-86296)
is cancelled again until it ends, within a bound, instead of hanging the shutdown.

The CI hang this guards against: the worker fixture's teardown waited until pytest's
timeout because the target refresher's ``wait(listener.targets, ...)`` swallowed its
cancel and went round its loop again, and ``supervise`` waited for it forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from herald_queue.listener import wait
from herald_worker.supervision import supervise


async def test_a_cancelled_wait_is_not_swallowed_when_the_event_is_set_at_the_same_time() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait(event, 30))
    await asyncio.sleep(0)  # the waiter is waiting
    event.set()  # in the same loop iteration as the cancel, as at a shutdown
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_supervise_stops_a_side_task_that_survives_one_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:  # what a swallowing wait_for amounts to
                swallowed += 1
                if swallowed > 2:
                    raise

    async def main() -> None:
        await asyncio.sleep(0.01)

    async with asyncio.timeout(30):
        await supervise({"stubborn": stubborn}, main())
    assert swallowed == 3, "cancelled again until it ended"


async def test_supervise_gives_up_on_a_side_task_that_never_stops_and_says_which(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def immortal() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async def main() -> None:
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="herald.worker"):
        async with asyncio.timeout(30):
            await supervise({"immortal": immortal}, main(), stop_timeout=0.5)
    release.set()
    await asyncio.sleep(0)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("immortal" in m and "did not stop" in m for m in messages), messages
