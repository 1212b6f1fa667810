"""Group commit of single-job enqueues (herald_queue.group_commit): concurrent
``queue.jobs.enqueue`` calls share transactions, and each still gets its own answer once
its own job is committed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import psycopg
import pytest

from herald_core.errors import IdempotencyKeyReused, IngestClosed, TargetNotFound
from herald_queue import ordering_keys
from herald_queue.queue import Queue
from tests.helpers import bounded, job, open_queue, register, sql_value, wait_until


@contextlib.asynccontextmanager
async def grouping(db_url: str, **settings: object) -> AsyncIterator[Queue]:
    # One group in flight: those submitted while it commits gather into the next one.
    async with await open_queue(db_url, ingest_groups_in_flight=1, **settings) as q:
        await register(q)
        yield q


@contextlib.asynccontextmanager
async def jobs_locked(queue: Queue) -> AsyncIterator[None]:
    """Hold a lock on herald.jobs that every INSERT waits for, keeping the group in flight
    waiting."""
    async with queue.pool.connection() as conn, conn.transaction():
        await conn.execute("LOCK TABLE herald.jobs IN SHARE MODE")
        yield


FIRST = {"first": True}
"""The payload of the request whose group waits for the lock."""


async def count(queue: Queue, where: str = "true") -> int:
    return int(await sql_value(queue, f"SELECT count(*) FROM herald.jobs WHERE {where}"))


async def test_concurrent_enqueues_share_transactions_and_are_committed_when_answered(
    db_url: str,
) -> None:
    async with grouping(db_url) as q:

        async def one(n: int) -> None:
            result = await q.jobs.enqueue(job(payload={"n": n}))
            assert result.created
            # Answered: committed, so another connection sees it.
            assert await count(q, f"id = '{result.id}'") == 1

        await bounded(asyncio.gather(*(one(n) for n in range(50))), "50 enqueues", 30)
        g = q.jobs.group_commit
        assert g.requests == 50
        assert g.groups < 50, "concurrent enqueues were grouped"
        assert await count(q) == 50


async def test_grouping_off_is_one_transaction_per_job(db_url: str) -> None:
    async with grouping(db_url, ingest_max_group=1) as q:
        await asyncio.gather(*(q.jobs.enqueue(job(payload={"n": n})) for n in range(10)))
        assert q.jobs.group_commit.groups == 0
        assert await count(q) == 10


async def test_full_groups_commit_without_lingering(db_url: str) -> None:
    async with grouping(db_url, ingest_max_group=2, ingest_linger=0.1) as q:
        results = await asyncio.gather(*(q.jobs.enqueue(job(payload={"n": n})) for n in range(4)))
        assert all(r.created for r in results)
        assert q.jobs.group_commit.groups == 2


async def test_a_failed_group_answers_each_request_for_itself(db_url: str) -> None:
    async with grouping(db_url) as q:
        first = await q.jobs.enqueue(job(payload={"v": 1}, idempotency_key="k"))
        requests = [job(payload={"n": n}) for n in range(9)]
        requests[3] = job(payload={"v": 2}, idempotency_key="k")  # reused: 409
        # PostgreSQL refuses \u0000 in jsonb (the model refuses it first; not here).
        requests[5] = dataclasses.replace(job(), payload_json='{"s":"\\u0000"}')
        requests[7] = job(target="nowhere")
        results = await asyncio.gather(
            *(q.jobs.enqueue(r) for r in requests), return_exceptions=True
        )
        assert isinstance(results[3], IdempotencyKeyReused)
        assert results[3].job_id == str(first.id) and results[3].index is None
        assert isinstance(results[5], psycopg.DataError)
        assert isinstance(results[7], TargetNotFound)
        good = [r for i, r in enumerate(results) if i not in (3, 5, 7)]
        assert all(not isinstance(r, BaseException) and r.created for r in good)
        assert await count(q) == 1 + 6


async def test_idempotency_inside_one_group(db_url: str) -> None:
    async with grouping(db_url) as q:
        async with jobs_locked(q):
            held = asyncio.ensure_future(q.jobs.enqueue(job(payload=FIRST)))
            await wait_until(lambda: q.jobs.group_commit._in_flight == 1)
            same = [q.jobs.enqueue(job(payload={"v": 1}, idempotency_key="k")) for _ in range(2)]
            other = q.jobs.enqueue(job(payload={"v": 2}, idempotency_key="k"))
            gathered = asyncio.gather(*same, other, return_exceptions=True)
            await wait_until(lambda: len(q.jobs.group_commit._pending) == 3)
        results = await bounded(gathered, "the grouped enqueues", 30)
        await bounded(held, "the held enqueue", 30)
        a, b, c = results
        assert not isinstance(a, BaseException) and not isinstance(b, BaseException)
        assert a.created and not b.created and b.id == a.id, "one job; the second a duplicate"
        assert isinstance(c, IdempotencyKeyReused), "the other payload is refused, alone"
        assert await count(q, "idempotency_key = 'k'") == 1


async def test_a_cancelled_caller_neither_loses_nor_duplicates(db_url: str) -> None:
    async with grouping(db_url) as q:
        async with jobs_locked(q):
            in_flight = asyncio.ensure_future(q.jobs.enqueue(job(payload=FIRST)))
            await wait_until(lambda: q.jobs.group_commit._in_flight == 1)
            # The group in flight waits for the lock; these gather behind it.
            waiting = [
                asyncio.ensure_future(q.jobs.enqueue(job(payload={"n": n}))) for n in range(5)
            ]
            await wait_until(lambda: len(q.jobs.group_commit._pending) == 5)
            in_flight.cancel()  # its group started: its job is still written, once
            waiting[2].cancel()  # its group has not started: taken out, never written
            await asyncio.gather(in_flight, waiting[2], return_exceptions=True)
            assert len(q.jobs.group_commit._pending) == 4
        others = await bounded(
            asyncio.gather(*(w for i, w in enumerate(waiting) if i != 2)), "the others", 30
        )
        assert all(r.created for r in others)
        await wait_until(lambda: q.jobs.group_commit._in_flight == 0)
        assert await count(q, "payload->>'first' = 'true'") == 1
        assert await count(q, "payload->>'n' = '2'") == 0
        assert await count(q) == 5


async def test_close_writes_what_it_holds_then_refuses(db_url: str) -> None:
    q = await open_queue(db_url, ingest_groups_in_flight=1)
    await register(q)
    pending = [asyncio.ensure_future(q.jobs.enqueue(job(payload={"n": n}))) for n in range(20)]
    await asyncio.sleep(0)
    await bounded(q.jobs.group_commit.close(), "closing the group commit", 30)
    results = await bounded(asyncio.gather(*pending), "the enqueues", 30)
    assert all(r.created for r in results), "everything gathered before close is written"
    with pytest.raises(IngestClosed) as refused:
        await q.jobs.enqueue(job())
    assert refused.value.http_status == 503 and "shutting down" in str(refused.value)
    assert await count(q) == 20
    await q.close()


async def test_close_gives_up_on_a_stuck_group_after_its_bound(db_url: str) -> None:
    async with grouping(db_url) as q, jobs_locked(q):
        stuck = asyncio.ensure_future(q.jobs.enqueue(job(payload=FIRST)))
        await wait_until(lambda: q.jobs.group_commit._in_flight == 1)
        behind = asyncio.ensure_future(q.jobs.enqueue(job()))
        await wait_until(lambda: len(q.jobs.group_commit._pending) == 1)
        await bounded(q.jobs.group_commit.close(timeout=0.2), "closing", 30)
        for task in (stuck, behind):
            with pytest.raises(IngestClosed):
                await bounded(task, "a request failed by close", 5)


async def test_a_job_with_an_ordering_key_waits_alone_for_its_chain(db_url: str) -> None:
    """Its chain's lock may be held a while (a settle, a replay of the chain): the single
    requests sent beside it are not in its transaction and do not wait for it."""
    async with grouping(db_url) as q:
        target_id = (await q.registry.resolve("hook"))[0]
        async with q.pool.connection() as conn, conn.transaction():
            await ordering_keys.lock(conn, [(target_id, "hold")])
            ordered = asyncio.ensure_future(q.jobs.enqueue(job(ordering_key="hold")))
            others = await bounded(
                asyncio.gather(*(q.jobs.enqueue(job(payload={"n": n})) for n in range(5))),
                "single enqueues beside a job waiting for its chain",
                30,
            )
            assert all(r.created for r in others) and not ordered.done()
        assert (await bounded(ordered, "the ordered enqueue", 30)).created
        assert await count(q) == 6


async def test_payloads_sent_with_line_breaks_and_tabs_in_a_large_group(db_url: str) -> None:
    """A group (or a batch) large enough to be copied keeps JSON's whitespace as sent: a
    raw newline or tab would end COPY's row or column."""
    async with grouping(db_url) as q:
        pretty = '{\n\t"a": "x\\\\y",\r\n\t"n": 1\n}'
        sent = [dataclasses.replace(job(), payload_json=pretty) for _ in range(40)]
        results = await bounded(q.jobs.enqueue_many(sent), "a batch of 40 pretty payloads", 30)
        assert all(r.created for r in results)
        stored = await sql_value(q, "SELECT DISTINCT payload::text FROM herald.jobs")
        assert stored == pretty and await count(q) == 40, "stored as sent"
