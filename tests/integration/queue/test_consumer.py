"""The sequential consumer: complete-and-claim in one statement, woken on its own
connection."""

from __future__ import annotations

import asyncio

from herald_queue.queue import Queue
from tests.helpers import job, register, sql_value


async def test_step_completes_what_it_held_and_claims_more(queue: Queue) -> None:
    await register(queue)
    await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(5)])
    async with queue.jobs.consumer("c") as consumer:
        held = await consumer.step([], 2)
        assert len(held) == 2
        held = await consumer.step(held, 10)
        assert len(held) == 3
        held = await consumer.step(held, 10)
        assert held == []
    assert await sql_value(queue, "SELECT count(*) FROM herald.jobs WHERE state = 'succeeded'") == 5


async def test_wait_wakes_on_an_enqueue_and_keeps_notices_that_came_during_a_step(
    queue: Queue,
) -> None:
    await register(queue)
    async with queue.jobs.consumer("c") as consumer:
        assert await consumer.step([], 1) == []
        assert not await consumer.wait(0.05), "nothing enqueued: the wait times out"
        waiting = asyncio.create_task(consumer.wait(10))
        await asyncio.sleep(0)
        await queue.jobs.enqueue(job())
        assert await asyncio.wait_for(waiting, 10)
        held = await consumer.step([], 1)
        assert len(held) == 1
        # A notice that arrives while no wait is running is kept for the next wait.
        await queue.jobs.enqueue(job())
        held = await consumer.step(held, 0)
        assert await consumer.wait(5)
