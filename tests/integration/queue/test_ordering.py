"""Ordering keys: the jobs of one target sharing an ordering key are delivered one at a
time, in enqueue order. Only the head of a chain (its oldest unfinished job) may run; the
others wait with ``held = true`` (sql/jobs.sql: normalize_chains)."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import psycopg
import pytest

from herald_core.states import JobState
from herald_queue import locks
from herald_queue.dead_letters import DeadLetterFilter
from herald_queue.queue import Queue
from tests.helpers import (
    RETRY_LATER,
    failure,
    job,
    job_rows,
    make_ready,
    open_queue,
    register,
    sql_rows,
    sql_value,
    wait_until,
)

DOUBLE_RUNNING = """
SELECT target_id, ordering_key, array_agg(id) AS ids FROM herald.jobs
WHERE state = 'running' AND ordering_key IS NOT NULL
GROUP BY 1, 2 HAVING count(*) > 1
"""


async def held_flags(queue: Queue, key: str) -> list[tuple[str, bool]]:
    rows = await job_rows(queue, "ordering_key = %s", [key])
    return [(r["state"], r["held"]) for r in rows]


async def chain(queue: Queue, key: str, n: int, target: str = "hook") -> list[uuid.UUID]:
    results = await queue.jobs.enqueue_many(
        [job(target, {"key": key, "i": i}, ordering_key=key) for i in range(n)]
    )
    return [r.id for r in results]


@pytest.mark.slow
async def test_concurrent_claimers_keep_each_chain_in_order(db_url: str) -> None:
    keys = [f"k{n}" for n in range(6)]
    per_key = 20
    rng = random.Random(3)
    async with await open_queue(db_url, pool_max=10) as queue:
        await register(queue)
        # Interleaved enqueues (singles and batches), plus jobs without a key.
        expected: dict[str, list[uuid.UUID]] = {k: [] for k in keys}
        for i in range(per_key):
            batch = [job(payload={"k": k, "i": i}, ordering_key=k) for k in keys]
            batch.append(job(payload={"free": i}))
            results = await queue.jobs.enqueue_many(batch)
            for k, r in zip(keys, results, strict=False):
                expected[k].append(r.id)
        key_of = {i: k for k, ids in expected.items() for i in ids}
        total = len(key_of) + per_key
        claims: dict[str, list[uuid.UUID]] = {k: [] for k in keys}
        completions: dict[str, list[uuid.UUID]] = {k: [] for k in keys}
        finished: set[uuid.UUID] = set()
        violations: list[Any] = []

        async def claimer(worker: str) -> None:
            while len(finished) < total:
                jobs = await queue.jobs.claim(worker, 3)
                violations.extend(await sql_rows(queue, DOUBLE_RUNNING))
                for j in jobs:
                    if j.ordering_key:
                        claims[j.ordering_key].append(j.id)
                if not jobs:
                    await asyncio.sleep(0.001)
                    continue
                await asyncio.sleep(rng.random() * 0.002)  # widen the windows
                ok = [j for j in jobs if rng.random() > 0.1]
                failed = [j for j in jobs if j not in ok]
                for j in ok:
                    if j.ordering_key:
                        completions[j.ordering_key].append(j.id)
                assert (await queue.jobs.complete(worker, ok)).lost == []
                finished.update(j.id for j in ok)
                if failed:
                    outcomes = await queue.jobs.fail(worker, [failure(j) for j in failed])
                    assert {o.state for o in outcomes} == {JobState.RETRYING}
                    await make_ready(queue, "id = ANY(%s)", [[j.id for j in failed]])

        await asyncio.wait_for(asyncio.gather(*(claimer(f"w{n}") for n in range(5))), timeout=60)
        assert violations == [], "two jobs of one chain were running at once"
        for k in keys:
            assert completions[k] == expected[k], f"chain {k} delivered out of order"
            deduped = [i for n, i in enumerate(claims[k]) if n == 0 or claims[k][n - 1] != i]
            assert deduped == expected[k], f"chain {k} claimed out of order"
        assert (
            await sql_value(
                queue, "SELECT count(*) FROM herald.jobs WHERE state <> 'succeeded' OR held"
            )
            == 0
        )


async def test_held_flags_and_one_at_a_time(queue: Queue) -> None:
    await register(queue)
    a, b, c = await chain(queue, "order-1", 3)
    free = (await queue.jobs.enqueue(job(payload={"free": True}))).id
    assert await held_flags(queue, "order-1") == [
        ("queued", False),
        ("queued", True),
        ("queued", True),
    ]
    assert (await queue.jobs.get(b)).held  # type: ignore[union-attr]
    claimed = await queue.jobs.claim("w", 10)
    assert {j.id for j in claimed} == {a, free}
    assert await held_flags(queue, "order-1") == [
        ("running", False),
        ("queued", True),
        ("queued", True),
    ]
    assert await queue.jobs.claim("w", 10) == []
    await queue.jobs.complete("w", claimed)
    assert await held_flags(queue, "order-1") == [
        ("succeeded", False),
        ("queued", False),
        ("queued", True),
    ]
    [jb] = await queue.jobs.claim("w", 10)
    assert jb.id == b
    await queue.jobs.complete("w", [jb])
    [jc] = await queue.jobs.claim("w", 10)
    assert jc.id == c
    # A job added to a chain whose head runs waits behind it.
    [d] = await chain(queue, "order-1", 1)
    assert await held_flags(queue, "order-1") == [
        ("succeeded", False),
        ("succeeded", False),
        ("running", False),
        ("queued", True),
    ]
    await queue.jobs.complete("w", [jc])
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [d]


async def test_retrying_head_blocks_the_rest_until_it_succeeds(queue: Queue) -> None:
    await register(queue, retry=RETRY_LATER)  # the head is due when make_ready says so
    a, b, _ = await chain(queue, "k", 3)
    [ja] = await queue.jobs.claim("w", 10)
    [out] = await queue.jobs.fail("w", [failure(ja)])
    assert out.state is JobState.RETRYING
    assert await held_flags(queue, "k") == [("retrying", False), ("queued", True), ("queued", True)]
    assert await queue.jobs.claim("w", 10) == [], "head not due yet, the rest is held"
    await make_ready(queue)
    [ja2] = await queue.jobs.claim("w", 10)
    assert (ja2.id, ja2.attempts) == (a, 2)
    await queue.jobs.fail("w", [failure(ja2, "unknown")])
    await make_ready(queue)
    [ja3] = await queue.jobs.claim("w", 10)
    assert ja3.id == a
    await queue.jobs.complete("w", [ja3])
    [jb] = await queue.jobs.claim("w", 10)
    assert jb.id == b


async def test_dead_or_cancelled_head_lets_the_next_go(queue: Queue) -> None:
    await register(queue, retry={"maxAttempts": 1})
    _, b, c, d = await chain(queue, "k", 4)
    [ja] = await queue.jobs.claim("w", 10)
    [out] = await queue.jobs.fail("w", [failure(ja, "permanent")])
    assert out.state is JobState.DEAD
    assert await held_flags(queue, "k") == [
        ("dead", False),
        ("queued", False),
        ("queued", True),
        ("queued", True),
    ]
    [jb] = await queue.jobs.claim("w", 10)
    assert jb.id == b
    [out] = await queue.jobs.fail("w", [failure(jb, "transient")])  # maxAttempts 1: spent
    assert out.state is JobState.DEAD
    # The new head is cancelled before it runs: the one after it goes.
    assert await queue.jobs.cancel([c]) == [c]
    assert await held_flags(queue, "k") == [
        ("dead", False),
        ("dead", False),
        ("dead", False),
        ("queued", False),
    ]
    [jd] = await queue.jobs.claim("w", 10)
    assert jd.id == d


async def test_different_keys_and_targets_proceed_in_parallel(queue: Queue) -> None:
    await register(queue)
    await register(queue, "other")
    a = await chain(queue, "k1", 3)
    b = await chain(queue, "k2", 3)
    c = await chain(queue, "k1", 3, target="other")  # same key, another target: another chain
    claimed = await queue.jobs.claim("w", 10)
    assert {j.id for j in claimed} == {a[0], b[0], c[0]}
    await queue.jobs.complete("w", claimed)
    claimed = await queue.jobs.claim("w", 10)
    assert {j.id for j in claimed} == {a[1], b[1], c[1]}


async def test_release_and_rescue_keep_the_head(queue: Queue) -> None:
    await register(queue)
    a, _ = await chain(queue, "k", 2)
    [ja] = await queue.jobs.claim("w", 10)
    assert await queue.jobs.release("w", [ja.id]) == 1
    assert await held_flags(queue, "k") == [("queued", False), ("queued", True)]
    [ja] = await queue.jobs.claim("w", 10)
    assert ja.id == a
    await sql_rows(
        queue,
        "UPDATE herald.jobs SET lease_expires_at = now() - interval '1s' "
        "WHERE state = 'running' RETURNING id",
    )
    [out] = await queue.jobs.rescue_expired()
    assert out.state is JobState.RETRYING
    await make_ready(queue)
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [a]


async def test_replayed_dead_head_waits_for_the_running_job(queue: Queue) -> None:
    """A chain's dead head, replayed while a later job of the chain is running, must not
    run at the same time as that job."""
    await register(queue)
    a, b, _ = await chain(queue, "k", 3)
    [ja] = await queue.jobs.claim("w", 10)
    await queue.jobs.fail("w", [failure(ja, "permanent")])
    [jb] = await queue.jobs.claim("w", 10)
    assert jb.id == b
    result = await queue.dead_letters.replay(DeadLetterFilter(job_ids=(a,)))
    assert result.job_ids == [a]
    claimed = await queue.jobs.claim("w", 10)
    running = await sql_rows(queue, DOUBLE_RUNNING)
    assert running == [], (
        f"replayed head {a} was claimed ({[j.id for j in claimed]}) while {b} of the same "
        "chain is still running"
    )


async def test_concurrent_enqueues_to_one_chain_never_run_two_at_once(
    queue: Queue, db_url: str
) -> None:
    """Enqueue B to a chain; before B's transaction commits, enqueue A to the same chain
    and claim it. Once B commits, B (its seq is lower: it was inserted first) must still
    wait for the running A.

    The interleaving is forced: B's batch also names a second chain whose advisory lock
    (lock_chains takes them in hash order) the test holds, so B stops after its INSERT and
    before it takes the lock of the shared chain.
    """
    target_id = await register(queue)
    key = "shared"
    hashes = await sql_rows(
        queue,
        "SELECT k, hashtextextended(%(t)s::text || '/' || k, %(seed)s) AS h "
        "FROM unnest(%(keys)s::text[]) AS k",
        {
            "t": target_id,
            "keys": [key] + [f"blocker-{i}" for i in range(50)],
            "seed": locks.CHAIN_SEED,
        },
    )
    shared_hash = hashes[0]["h"]
    blocker, blocker_hash = next((r["k"], r["h"]) for r in hashes[1:] if r["h"] < shared_hash)

    async with await psycopg.AsyncConnection.connect(db_url) as gate:
        await gate.execute("SELECT pg_advisory_xact_lock(%s)", [blocker_hash])
        late = asyncio.create_task(
            queue.jobs.enqueue_many(
                [
                    job(payload={"who": "B"}, ordering_key=key),
                    job(payload={"who": "blocker"}, ordering_key=blocker),
                ]
            )
        )
        await wait_until(
            lambda: sql_value(
                queue,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            ),
            what="B waits for the blocker's chain lock",
        )
        first = await queue.jobs.enqueue(job(payload={"who": "A"}, ordering_key=key))
        [ja] = await queue.jobs.claim("w", 10)
        assert ja.id == first.id
        await gate.commit()  # B goes on
    b_result, _ = await asyncio.wait_for(late, timeout=10)
    claimed = await queue.jobs.claim("w", 10)
    assert b_result.id not in {j.id for j in claimed}, (
        "B was claimed while A, of the same ordering key, is running"
    )
    assert await sql_rows(queue, DOUBLE_RUNNING) == []
