"""Idempotency keys: a duplicate enqueue returns the existing job (created=False), never a
second row. Keys are per target, and outlive the job's delivery (until retention). The key
sent again with other parameters (payload, priority, ordering key, runAt) is refused, as
Stripe does, unless Herald derived the key itself (the Alertmanager receiver's)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random

import pytest

from herald_core.errors import IdempotencyKeyReused
from herald_core.states import JobState, Priority
from herald_model.submission import JobRequest
from herald_queue.queue import Queue
from tests.helpers import failure, job, job_rows, open_queue, register, sql_exec, sql_value


async def count_jobs(queue: Queue) -> int:
    return int(await sql_value(queue, "SELECT count(*) FROM herald.jobs"))


async def test_duplicate_single_enqueue(queue: Queue) -> None:
    await register(queue)
    first = await queue.jobs.enqueue(job(payload={"v": 1, "w": [1, 2]}, idempotency_key="alert-1"))
    second = await queue.jobs.enqueue(job(payload={"w": [1, 2], "v": 1}, idempotency_key="alert-1"))
    assert first.created and not second.created, "the same request (key order aside) again"
    assert second.id == first.id and second.state is JobState.QUEUED
    assert second.created is False
    [row] = await job_rows(queue)
    assert row["payload"] == {"v": 1, "w": [1, 2]}


@pytest.mark.parametrize(
    "change",
    [
        {"payload_json": '{"v":2}'},
        {"priority": Priority.HIGH},
        {"ordering_key": "node7"},
        {"run_at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)},
    ],
    ids=["payload", "priority", "orderingKey", "runAt"],
)
async def test_a_key_reused_with_other_parameters_is_refused(
    queue: Queue, change: dict[str, object]
) -> None:
    await register(queue)
    first = await queue.jobs.enqueue(job(payload={"v": 1}, idempotency_key="alert-1"))
    other = dataclasses.replace(job(payload={"v": 1}, idempotency_key="alert-1"), **change)
    with pytest.raises(IdempotencyKeyReused) as refused:
        await queue.jobs.enqueue(other)
    assert refused.value.job_id == str(first.id) and refused.value.index is None
    assert "different parameters" in str(refused.value)
    [row] = await job_rows(queue)
    assert row["payload"] == {"v": 1}, "the first job is kept as it was"


async def test_run_at_is_compared_as_an_instant(queue: Queue) -> None:
    await register(queue)
    utc = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
    paris = utc.astimezone(dt.timezone(dt.timedelta(hours=1)))
    first = await queue.jobs.enqueue(job(idempotency_key="k", run_at=utc))
    again = await queue.jobs.enqueue(job(idempotency_key="k", run_at=paris))
    assert (again.id, again.created) == (first.id, False)


async def test_a_batch_with_one_reused_key_writes_nothing(queue: Queue) -> None:
    await register(queue)
    await queue.jobs.enqueue(job(payload={"v": 1}, idempotency_key="old"))
    with pytest.raises(IdempotencyKeyReused) as refused:
        await queue.jobs.enqueue_many(
            [job(payload={"i": 0}), job(payload={"v": 2}, idempotency_key="old")]
        )
    assert refused.value.index == 1
    with pytest.raises(IdempotencyKeyReused) as inside:  # within the batch itself
        await queue.jobs.enqueue_many(
            [
                job(payload={"i": 0}, idempotency_key="new"),
                job(payload={"i": 1}, idempotency_key="new"),
            ]
        )
    assert inside.value.index == 1
    assert await count_jobs(queue) == 1


async def test_herald_s_own_keys_stay_duplicates(queue: Queue) -> None:
    """The Alertmanager receiver derives its keys from the alert (fingerprint, status,
    startsAt): a re-sent group with changed annotations is the same event."""
    await register(queue)
    first = await queue.jobs.enqueue(job(payload={"a": "old summary"}, idempotency_key="am:1"))
    resent = JobRequest(
        target="hook",
        payload_json='{"a":"new summary"}',
        idempotency_key="am:1",
        key_reuse_checked=False,
    )
    again = await queue.jobs.enqueue(resent)
    assert (again.id, again.created) == (first.id, False)


async def test_jobs_without_a_stored_digest_match_any_request(queue: Queue) -> None:
    """Jobs enqueued before migration 0002 have no digest: nothing to compare with."""
    await register(queue)
    first = await queue.jobs.enqueue(job(payload={"v": 1}, idempotency_key="k"))
    await sql_exec(queue, "UPDATE herald.jobs SET request_hash = NULL")
    again = await queue.jobs.enqueue(job(payload={"v": 2}, idempotency_key="k"))
    assert (again.id, again.created) == (first.id, False)


async def test_duplicates_inside_one_batch(queue: Queue) -> None:
    await register(queue)
    results = await queue.jobs.enqueue_many(
        [
            job(payload={"i": 0}, idempotency_key="a"),
            job(payload={"i": 1}, idempotency_key="b"),
            job(payload={"i": 0}, idempotency_key="a"),
            job(payload={"i": 3}),
            job(payload={"i": 0}, idempotency_key="a"),
        ]
    )
    assert [r.created for r in results] == [True, True, False, True, False]
    assert results[2].id == results[0].id == results[4].id
    assert len({r.id for r in results}) == 3
    assert await count_jobs(queue) == 3


async def test_duplicates_across_batches(queue: Queue) -> None:
    await register(queue)
    first = await queue.jobs.enqueue_many(
        [job(payload={"i": i}, idempotency_key=f"k{i}") for i in range(50)]
    )
    # The second batch is large enough for the COPY path, were it not for its keys.
    second = await queue.jobs.enqueue_many(
        [job(payload={"i": i}, idempotency_key=f"k{i}") for i in range(25, 75)]
    )
    assert all(r.created for r in first)
    assert [r.created for r in second] == [False] * 25 + [True] * 25
    by_key = {f"k{i}": r.id for i, r in enumerate(first)}
    assert [r.id for r in second[:25]] == [by_key[f"k{i}"] for i in range(25, 50)]
    assert await count_jobs(queue) == 75


async def test_same_key_on_different_targets_is_two_jobs(queue: Queue) -> None:
    await register(queue, "one")
    await register(queue, "two")
    await register(queue, "one", namespace="other")
    a = await queue.jobs.enqueue(job("one", idempotency_key="same"))
    b = await queue.jobs.enqueue(job("two", idempotency_key="same"))
    c = await queue.jobs.enqueue(job("other/one", idempotency_key="same"))
    assert a.created and b.created and c.created
    assert len({a.id, b.id, c.id}) == 3
    again = await queue.jobs.enqueue(job("default/one", idempotency_key="same"))
    assert (again.id, again.created) == (a.id, False)


async def test_key_survives_completion_and_death(queue: Queue) -> None:
    await register(queue)
    ok = await queue.jobs.enqueue(job(idempotency_key="done"))
    bad = await queue.jobs.enqueue(job(idempotency_key="dead"))
    claimed = {j.id: j for j in await queue.jobs.claim("w", 10)}
    await queue.jobs.complete("w", [claimed[ok.id]])
    assert await queue.jobs.cancel([bad.id]) == [], "a running job is not cancelled"
    await queue.jobs.fail("w", [failure(claimed[bad.id], "permanent")])
    again_ok = await queue.jobs.enqueue(job(idempotency_key="done"))
    again_bad = await queue.jobs.enqueue(job(idempotency_key="dead"))
    assert (again_ok.id, again_ok.created, again_ok.state) == (ok.id, False, JobState.SUCCEEDED)
    assert (again_bad.id, again_bad.created, again_bad.state) == (bad.id, False, JobState.DEAD)
    assert await count_jobs(queue) == 2
    assert await queue.jobs.claim("w", 10) == []


async def test_concurrent_duplicates_from_several_tasks(db_url: str) -> None:
    async with await open_queue(db_url, pool_max=12) as queue:
        await register(queue)
        results = await asyncio.gather(
            *(
                queue.jobs.enqueue(job(payload={"task": 1}, idempotency_key="race"))
                for _ in range(12)
            )
        )
        assert sum(r.created for r in results) == 1
        assert len({r.id for r in results}) == 1
        assert await count_jobs(queue) == 1


async def test_concurrent_overlapping_batches(db_url: str) -> None:
    """Several tasks enqueue batches sharing keys, in different orders (as Alertmanager
    replicas in HA would, each sending the same alerts): every enqueue succeeds, one row
    per key, and every task is told the same id for a key. Several rounds, as the
    interleaving differs from run to run."""
    rng = random.Random(7)
    async with await open_queue(db_url, pool_max=10) as queue:
        await register(queue)
        for round_ in range(5):
            keys = [f"r{round_}-fp-{i}" for i in range(40)]
            batches = [
                [job(payload={"k": k}, idempotency_key=k) for k in rng.sample(keys, 25)]
                for _ in range(8)
            ]
            results = await asyncio.gather(*(queue.jobs.enqueue_many(b) for b in batches))
            ids: dict[str, set[object]] = {}
            created = 0
            for batch, res in zip(batches, results, strict=True):
                for request, r in zip(batch, res, strict=True):
                    ids.setdefault(request.idempotency_key or "", set()).add(r.id)
                    created += r.created
            assert all(len(v) == 1 for v in ids.values()), "one job per key"
            assert created == len(ids)
            assert await sql_value(
                queue,
                "SELECT count(*) FROM herald.jobs WHERE idempotency_key LIKE %s",
                [f"r{round_}-%"],
            ) == len(ids)
