"""A worker that dies loses its lease; the rescuer puts its jobs back and nothing is lost.

The lease rescuer (``JobStore.rescue_expired``) treats an expired lease as a failed
attempt that does not count towards the circuit breaker: the job is retried (state
``retrying``, the attempt counted since the delivery may have happened), or dead-lettered
with reason ``attempts-exhausted`` when its attempts are spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from herald_core.states import JobState
from herald_queue.queue import Queue
from tests.helpers import (
    ROOT,
    claim_all,
    expire_leases,
    failure,
    job,
    job_rows,
    make_ready,
    register,
    sql_exec,
    sql_rows,
    stop_process,
    target_row,
    wait_until,
)


@contextlib.asynccontextmanager
async def holder(
    url: str, worker: str, *extra: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[uuid.UUID], list[uuid.UUID]]]:
    """A claimer process that claims one batch, completes some of it and hangs, holding the
    rest: (the process, the ids it claimed, those it completed). Killed on exit at the
    latest."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.queue.claimer",
        url,
        worker,
        "--hold",
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        claimed: list[uuid.UUID] = []
        completed: list[uuid.UUID] = []
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode().split()
            assert line, "the claimer exited before holding its batch"
            if line == ["holding"]:
                break
            {"claimed": claimed, "completed": completed}[line[0]].append(uuid.UUID(line[1]))
        yield proc, claimed, completed
    finally:
        await stop_process(proc, f"the claimer {worker}", 30)


async def run_to_end(url: str, worker: str) -> dict[str, list[uuid.UUID]]:
    """A claimer process that claims and completes until nothing waits; what it did."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.queue.claimer",
        url,
        worker,
        "--batch",
        "25",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    words = out.decode().split()
    assert words[-1] == "done"
    seen: dict[str, list[uuid.UUID]] = {"claimed": [], "completed": [], "lost": []}
    for verb, value in zip(words[:-1:2], words[1:-1:2], strict=True):
        seen[verb].append(uuid.UUID(value))
    return seen


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.communicate()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
async def test_killed_claimer_jobs_are_rescued_and_completed_by_another(queue: Queue) -> None:
    await register(queue, retry={"maxAttempts": 5})
    enqueued = {
        r.id for r in await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(100)])
    }
    async with holder(queue.url, "victim", "--batch", "60", "--complete", "20") as (
        proc,
        claimed,
        completed,
    ):
        assert len(claimed) == 60 and completed == claimed[:20]
        held = set(claimed) - set(completed)
        await kill(proc)

    # The dead worker's jobs stay leased to it until the lease expires: nothing to rescue.
    assert await queue.jobs.rescue_expired() == []
    rows = await job_rows(queue, "state = 'running'")
    assert {r["id"] for r in rows} == held and {r["leased_by"] for r in rows} == {"victim"}

    assert await expire_leases(queue, "victim") == 40
    rescued = await queue.jobs.rescue_expired()
    assert {o.id for o in rescued} == held
    assert {(o.state, o.attempts, o.refunded) for o in rescued} == {(JobState.RETRYING, 1, False)}
    rows = await job_rows(queue, "id = ANY(%s)", [list(held)])
    assert {(r["state"], r["attempts"], r["leased_by"], r["last_error_class"]) for r in rows} == {
        ("retrying", 1, None, "transient")
    }
    assert all("lease expired" in r["last_error"] for r in rows)
    assert await queue.jobs.rescue_expired() == [], "a rescue is done once"

    # Their backoff over, another claimer process takes everything left and completes it.
    await make_ready(queue)
    survivor = await run_to_end(queue.url, "survivor")
    assert sorted(survivor["claimed"]) == sorted(enqueued - set(completed))
    assert sorted(survivor["completed"]) == sorted(survivor["claimed"])
    assert survivor["lost"] == []
    rows = await job_rows(queue, "id = ANY(%s)", [list(held)])
    assert {(r["state"], r["attempts"]) for r in rows} == {("succeeded", 2)}

    # The dead worker's completions stand, and completing as the victim now changes nothing.
    rows = await sql_rows(queue, "SELECT state, count(*) AS n FROM herald.jobs GROUP BY 1")
    assert rows == [{"state": "succeeded", "n": 100}]
    assert await sql_rows(queue, "SELECT * FROM herald.dead_letters") == []


@pytest.mark.slow
async def test_short_lease_expires_by_itself(queue: Queue) -> None:
    """With a real (short) lease instead of SQL: the rescuer finds the jobs once it runs out."""
    await register(queue)
    await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(10)])
    async with holder(queue.url, "victim", "--batch", "10", "--lease", "0.5") as (proc, claimed, _):
        await kill(proc)
    lease = await sql_rows(
        queue, "SELECT min(lease_expires_at - started_at) AS lease FROM herald.jobs"
    )
    assert lease[0]["lease"].total_seconds() == pytest.approx(0.5, abs=0.01)
    rescued = await wait_until(
        queue.jobs.rescue_expired, timeout=10, interval=0.05, what="expired leases rescued"
    )
    more = await queue.jobs.rescue_expired()
    assert {o.id for o in rescued + more} == set(claimed)
    await make_ready(queue)
    again = await claim_all(queue, "survivor")
    assert {j.id for j in again} == set(claimed)


async def test_lease_renewed_by_heartbeat_is_not_rescued(queue: Queue) -> None:
    await register(queue)
    await queue.jobs.enqueue(job())
    [claimed] = await queue.jobs.claim("w1", 10)
    await expire_leases(queue, "w1")
    assert await queue.jobs.heartbeat("w1", [claimed.id]) == []
    assert await queue.jobs.rescue_expired() == []
    assert await queue.jobs.heartbeat("w2", [claimed.id]) == [claimed.id], "not w2's lease"
    assert (await queue.jobs.complete("w1", [claimed])).completed == [claimed.id]


async def test_late_settlement_by_the_lost_worker_is_refused(queue: Queue) -> None:
    """A worker that stalled past its lease (not dead) comes back after the rescue: its
    completion and its heartbeat report the job as lost; the job is delivered again."""
    await register(queue)
    await queue.jobs.enqueue(job())
    [claimed] = await queue.jobs.claim("slow", 10)
    await expire_leases(queue)
    assert len(await queue.jobs.rescue_expired()) == 1
    assert await queue.jobs.heartbeat("slow", [claimed.id]) == [claimed.id]
    done = await queue.jobs.complete("slow", [claimed])
    assert (done.completed, done.lost) == ([], [claimed.id])
    assert await queue.jobs.fail("slow", [failure(claimed)]) == []
    [row] = await job_rows(queue)
    assert (row["state"], row["attempts"]) == ("retrying", 1)
    await make_ready(queue)
    [again] = await queue.jobs.claim("fast", 10)
    assert (again.id, again.attempts) == (claimed.id, 2)


async def test_late_outcome_never_settles_a_newer_attempt_by_the_same_worker(
    queue: Queue,
) -> None:
    """A worker's settlement is held up (a database outage) past its lease; the job is
    rescued and claimed again by the same worker. The late outcome of the first attempt
    neither completes nor fails the second one, which settles on its own."""
    await register(queue)
    await queue.jobs.enqueue(job())
    [first] = await queue.jobs.claim("w", 10)
    await expire_leases(queue)
    assert len(await queue.jobs.rescue_expired()) == 1
    await make_ready(queue)
    [second] = await queue.jobs.claim("w", 10)
    assert (second.id, second.attempts) == (first.id, 2)
    done = await queue.jobs.complete("w", [first])
    assert (done.completed, done.lost) == ([], [first.id])
    assert await queue.jobs.fail("w", [failure(first)]) == []
    [row] = await job_rows(queue)
    assert (row["state"], row["attempts"], row["leased_by"]) == ("running", 2, "w")
    assert (await queue.jobs.complete("w", [second])).completed == [second.id]


async def test_rescue_after_the_last_attempt_dead_letters(queue: Queue) -> None:
    await register(queue, retry={"maxAttempts": 2})
    [r] = await queue.jobs.enqueue_many([job(payload={"last": True})])
    # One attempt already failed; the claim below is the last one.
    await sql_exec(queue, "UPDATE herald.jobs SET state = 'retrying', attempts = 1")
    [claimed] = await queue.jobs.claim("victim", 10)
    assert claimed.attempts == 2
    await expire_leases(queue)
    [outcome] = await queue.jobs.rescue_expired()
    assert (outcome.state, outcome.attempts) == (JobState.DEAD, 2)
    [row] = await job_rows(queue)
    assert (row["state"], row["dead_reason"]) == ("dead", "attempts-exhausted")
    [entry] = await sql_rows(queue, "SELECT * FROM herald.dead_letters")
    assert entry["job_id"] == r.id
    assert entry["reason"] == "attempts-exhausted"
    assert entry["retry_count"] == 2
    assert "lease expired" in entry["error_message"]


async def test_rescue_keeps_the_attempts_left(queue: Queue) -> None:
    """A worker dying on attempt 3 of maxAttempts 5 leaves two attempts: the job is retried.

    (An expired lease is not an unclassifiable delivery error: the smaller budget of
    ``unknown`` failures, min(maxAttempts, 3), must not apply to it.)
    """
    await register(queue, retry={"maxAttempts": 5})
    await queue.jobs.enqueue(job())
    await sql_exec(queue, "UPDATE herald.jobs SET state = 'retrying', attempts = 2")
    [claimed] = await queue.jobs.claim("victim", 10)
    assert claimed.attempts == 3
    await expire_leases(queue)
    [outcome] = await queue.jobs.rescue_expired()
    assert (outcome.state, outcome.attempts) == (JobState.RETRYING, 3), (
        "a job with attempts left must be retried after its worker died"
    )


async def test_rescue_does_not_count_towards_the_circuit_breaker(queue: Queue) -> None:
    await register(queue, circuitBreaker={"failureThreshold": 3})
    await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(8)])
    first, *_ = await queue.jobs.claim("w", 8)
    # One real failure: the streak is at 1 of 3.
    await queue.jobs.fail("w", [failure(first)])
    assert (await target_row(queue))["consecutive_failures"] == 1
    await expire_leases(queue)
    rescued = await queue.jobs.rescue_expired()
    assert len(rescued) == 7 and not any(o.tripped or o.refunded for o in rescued)
    t = await target_row(queue)
    assert t["consecutive_failures"] == 1
    assert (t["circuit_state"], t["circuit_trips_total"]) == ("closed", 0)
    await make_ready(queue)
    assert len(await claim_all(queue)) == 8, "the target still takes claims"
