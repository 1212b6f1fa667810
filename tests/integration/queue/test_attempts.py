"""The attempt record (herald.attempts, migration 0007): every attempt is written by the
statement that settles it, with what was decided; the day partitions are made ahead and
dropped whole past HERALD_ATTEMPT_RETENTION, except days a kept dead letter needs.

Time is explicit: the cleaner takes ``now``; partitions are named by their UTC day."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid

import psycopg
import pytest

from herald_core.errors import InvalidRequest
from herald_core.states import ErrorClass, JobState
from herald_delivery.outcome import Outcome
from herald_queue.attempts import DAYS_AHEAD, create_partitions
from herald_queue.queue import Queue
from herald_queue.records import AttemptNote
from tests.helpers import (
    claim_all,
    expire_leases,
    failure,
    job,
    make_ready,
    register,
    sql_exec,
    sql_rows,
    sql_value,
)

NO_BREAKER = {"failureThreshold": 1000}
DAY = 86_400.0


async def attempts(queue: Queue, job_id: uuid.UUID) -> list[dict[str, object]]:
    return await sql_rows(
        queue,
        "SELECT attempt, decision, worker, http_status, error_class, message, response, "
        "retry_after_seconds, retry_at, duration_seconds, started_at "
        "FROM herald.attempts WHERE job_id = %s ORDER BY seq",
        [job_id],
    )


async def partitions(queue: Queue) -> list[str]:
    rows = await sql_rows(
        queue,
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'herald.attempts'::regclass ORDER BY 1",
    )
    return [str(r["name"]) for r in rows]


def part(day: dt.date) -> str:
    return f"attempts_p{day:%Y%m%d}"


async def test_every_decision_is_recorded(queue: Queue) -> None:
    """Retry (with retry_at and the Retry-After honoured), then success; a permanent
    failure is dead; the note's timing and answer are kept."""
    await register(queue, retry={"maxAttempts": 5}, circuitBreaker=NO_BREAKER)
    result = await queue.jobs.enqueue(job())
    [claimed] = await claim_all(queue)
    started = dt.datetime.now(dt.UTC)
    note = AttemptNote(started=started.timestamp(), duration=0.25, http_status=503, response="busy")
    f = failure(claimed, "transient", message="HTTP 503: busy", retry_after=7.0)
    [outcome] = await queue.jobs.fail("w", [dataclasses.replace(f, note=note)])
    assert outcome.state is JobState.RETRYING
    await make_ready(queue)
    [again] = await claim_all(queue, worker="w2")
    done = await queue.jobs.complete(
        "w2", [again], [AttemptNote(started=started.timestamp(), duration=0.01, http_status=200)]
    )
    assert done.completed == [result.id]
    rows = await attempts(queue, result.id)
    assert [(r["attempt"], r["decision"], r["worker"]) for r in rows] == [
        (1, "retry", "w"),
        (2, "succeeded", "w2"),
    ]
    first, second = rows
    assert first["http_status"] == 503 and first["error_class"] == "transient"
    assert first["response"] == "busy" and first["message"] == "HTTP 503: busy"
    assert first["retry_after_seconds"] == 7.0 and first["duration_seconds"] == 0.25
    assert first["retry_at"] == outcome.run_at
    assert abs(first["started_at"] - started) < dt.timedelta(milliseconds=1)
    assert second["http_status"] == 200 and second["retry_at"] is None

    permanent = await queue.jobs.enqueue(job())
    [claimed] = await claim_all(queue)
    await queue.jobs.fail("w", [failure(claimed, "permanent", message="HTTP 400")])
    [row] = await attempts(queue, permanent.id)
    assert (row["decision"], row["http_status"], row["retry_at"]) == ("dead", 400, None)


async def test_exhausted_attempts_are_dead(queue: Queue) -> None:
    await register(queue, retry={"maxAttempts": 2}, circuitBreaker=NO_BREAKER)
    result = await queue.jobs.enqueue(job())
    for _ in range(2):
        await make_ready(queue)
        [claimed] = await claim_all(queue)
        await queue.jobs.fail("w", [failure(claimed)])
    assert [r["decision"] for r in await attempts(queue, result.id)] == ["retry", "dead"]


async def test_circuit_open_withheld_paused_and_lost_leases(queue: Queue) -> None:
    target_id = await register(queue, circuitBreaker={"failureThreshold": 1})
    tripped = await queue.jobs.enqueue(job())
    [claimed] = await claim_all(queue)
    await queue.jobs.fail("w", [failure(claimed)])
    [row] = await attempts(queue, tripped.id)
    assert row["decision"] == "circuit-open" and row["retry_at"] is not None

    # Withheld and target-paused: given back with a reason; a plain release records none.
    await sql_exec(
        queue,
        "UPDATE herald.targets SET circuit_state = 'closed', circuit_open_until = NULL, "
        "consecutive_failures = 0 WHERE id = %s",
        [target_id],
    )
    await make_ready(queue)
    a, b = (await queue.jobs.enqueue(job())).id, (await queue.jobs.enqueue(job())).id
    claimed_jobs = {j.id: j for j in await claim_all(queue)}
    assert {a, b, tripped.id} <= set(claimed_jobs)
    await queue.jobs.release(
        "w", [a], noted=[(claimed_jobs[a], AttemptNote(message="held back"))], decision="withheld"
    )
    await queue.jobs.release(
        "w",
        [b],
        noted=[(claimed_jobs[b], AttemptNote(http_status=410, message="HTTP 410"))],
        decision="target-paused",
    )
    await queue.jobs.release("w", [tripped.id])
    assert [r["decision"] for r in await attempts(queue, a)] == ["withheld"]
    [paused] = await attempts(queue, b)
    assert (paused["decision"], paused["http_status"]) == ("target-paused", 410)
    assert [r["decision"] for r in await attempts(queue, tripped.id)] == ["circuit-open"]

    # A lease lost before the outcome: the rescuer records the expiry, the late success
    # is recorded as lease-lost.
    [again] = [j for j in await claim_all(queue) if j.id == a]
    await expire_leases(queue)
    rescued = await queue.jobs.rescue_expired()
    assert a in {o.id for o in rescued}
    await queue.jobs.complete("w", [again])
    decisions = [(r["decision"], r["worker"]) for r in await attempts(queue, a)]
    assert decisions[1:] == [("retry", "w"), ("lease-lost", "w")], decisions


async def test_attempts_page_and_unknown_job(queue: Queue) -> None:
    await register(queue, retry={"maxAttempts": 10}, circuitBreaker=NO_BREAKER)
    result = await queue.jobs.enqueue(job())
    for _ in range(5):
        await make_ready(queue)
        [claimed] = await claim_all(queue)
        await queue.jobs.fail("w", [failure(claimed)])
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        page = await queue.attempts.page(result.id, cursor=cursor, limit=2)
        assert page is not None
        seen += [a.attempt for a in page.items]
        assert all(a.target == "default/hook" for a in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [1, 2, 3, 4, 5]
    assert await queue.attempts.page(uuid.uuid4()) is None
    fresh = await queue.jobs.enqueue(job())
    empty = await queue.attempts.page(fresh.id)
    assert empty is not None and empty.items == [] and empty.next_cursor is None
    for bad in ("x", "-1", "9" * 19):
        with pytest.raises(InvalidRequest):
            await queue.attempts.page(result.id, cursor=bad)
    for limit in (0, 1001):
        with pytest.raises(InvalidRequest):
            await queue.attempts.page(result.id, limit=limit)


async def test_partitions_made_ahead_and_dropped_whole(queue: Queue) -> None:
    now = dt.datetime(2031, 3, 10, 12, tzinfo=dt.UTC)
    rotation = await queue.attempts.rotate(2 * DAY, now=now)
    assert rotation.created == DAYS_AHEAD
    days = [now.date() + dt.timedelta(days=i) for i in range(DAYS_AHEAD)]
    assert {part(d) for d in days} <= set(await partitions(queue))
    assert "attempts_default" in await partitions(queue)

    # Rows land in their day's partition (recorded_at is the partition key).
    await register(queue)
    result = await queue.jobs.enqueue(job())
    for d in days:
        await sql_exec(
            queue,
            "INSERT INTO herald.attempts (job_id, attempt, decision, recorded_at) "
            "VALUES (%s, 1, 'retry', %s)",
            [result.id, dt.datetime.combine(d, dt.time(23, 59), dt.UTC)],
        )
    assert await sql_value(queue, f"SELECT count(*) FROM herald.{part(days[0])}") == 1

    # Three days later, the first day ended more than two days ago: dropped whole.
    later = now + dt.timedelta(days=3)
    rotation = await queue.attempts.rotate(2 * DAY, now=later)
    assert part(days[0]) in rotation.dropped
    assert part(days[1]) not in rotation.dropped, "ended less than two days before"
    left = await partitions(queue)
    assert part(days[0]) not in left and part(days[1]) in left
    assert part(later.date() + dt.timedelta(days=DAYS_AHEAD - 1)) in left, "made ahead"
    assert (
        await sql_value(
            queue, "SELECT count(*) FROM herald.attempts WHERE job_id = %s", [result.id]
        )
        == len(days) - 1
    )


async def test_a_day_whose_lock_is_busy_waits_for_a_later_pass(queue: Queue) -> None:
    """Settles queue behind a waiting DROP: the cleaner waits for the lock briefly, leaves
    the day for its next pass, and never holds the settles up longer than that."""
    now = dt.datetime(2031, 4, 10, 12, tzinfo=dt.UTC)
    await queue.attempts.rotate(DAY, now=now)
    await register(queue)
    result = await queue.jobs.enqueue(job())
    later = now + dt.timedelta(days=2)
    async with queue.pool.connection() as holder, holder.transaction():
        # An open transaction that wrote an attempt (as a settle in progress does).
        await holder.execute(
            "INSERT INTO herald.attempts (job_id, attempt, decision, recorded_at) "
            "VALUES (%s, 1, 'retry', %s)",
            [result.id, later],
        )
        rotation = await queue.attempts.rotate(DAY, now=later)
        assert part(now.date()) in rotation.busy and not rotation.dropped
    rotation = await queue.attempts.rotate(DAY, now=later)
    assert part(now.date()) in rotation.dropped and not rotation.busy


async def test_a_kept_dead_letter_keeps_its_days(queue: Queue) -> None:
    now = dt.datetime(2031, 5, 1, 12, tzinfo=dt.UTC)
    await queue.attempts.rotate(DAY, now=now)
    await register(queue)
    result = await queue.jobs.enqueue(job())
    [claimed] = await claim_all(queue)
    await queue.jobs.fail("w", [failure(claimed, "permanent")])
    # The job lived and died on that day (as the dead letter says).
    await sql_exec(
        queue,
        "UPDATE herald.dead_letters SET job_created_at = %(at)s, failed_at = %(at)s "
        "WHERE job_id = %(id)s",
        {"at": now, "id": result.id},
    )
    await sql_exec(
        queue,
        "UPDATE herald.attempts SET recorded_at = %s WHERE job_id = %s",
        [now, result.id],
    )
    later = now + dt.timedelta(days=5)
    rotation = await queue.attempts.rotate(DAY, now=later)
    assert part(now.date()) in rotation.kept_for_dead_letters
    assert part(now.date() + dt.timedelta(days=1)) in rotation.dropped
    page = await queue.attempts.page(result.id)
    assert page is not None and [a.decision for a in page.items] == ["dead"]

    await sql_exec(queue, "DELETE FROM herald.dead_letters WHERE job_id = %s", [result.id])
    rotation = await queue.attempts.rotate(DAY, now=later)
    assert part(now.date()) in rotation.dropped


async def test_default_partition_takes_a_day_without_one(queue: Queue) -> None:
    """Maintenance did not run: the insert lands in the default partition; making the
    day's partition moves its rows in; past retention the default's rows are deleted."""
    far = dt.datetime(2032, 1, 1, 0, 0, 1, tzinfo=dt.UTC)
    await register(queue)
    result = await queue.jobs.enqueue(job())
    await sql_exec(
        queue,
        "INSERT INTO herald.attempts (job_id, attempt, decision, recorded_at) "
        "VALUES (%s, 1, 'retry', %s)",
        [result.id, far],
    )
    assert await sql_value(queue, "SELECT count(*) FROM herald.attempts_default") == 1
    await queue.attempts.create_partitions(now=far, days=1)
    assert await sql_value(queue, "SELECT count(*) FROM herald.attempts_default") == 0
    assert await sql_value(queue, f"SELECT count(*) FROM herald.{part(far.date())}") == 1

    old = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    await sql_exec(
        queue,
        "INSERT INTO herald.attempts (job_id, attempt, decision, recorded_at) "
        "VALUES (%s, 1, 'retry', %s)",
        [result.id, old],
    )
    rotation = await queue.attempts.rotate(DAY, now=old + dt.timedelta(days=3))
    assert rotation.default_pruned == 1


async def test_processes_making_the_same_days_at_once(queue: Queue) -> None:
    """Commands run together after midnight all make the new day: none of them fails."""
    far = dt.datetime(2033, 6, 1, tzinfo=dt.UTC)
    conns = [await psycopg.AsyncConnection.connect(queue.url, autocommit=True) for _ in range(4)]
    try:
        made = await asyncio.gather(*(create_partitions(c, now=far, days=3) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sum(made) == 3
    assert {part(far.date() + dt.timedelta(days=i)) for i in range(3)} <= set(
        await partitions(queue)
    )


async def test_text_postgresql_refuses_is_stored_printable(queue: Queue) -> None:
    """A NUL or a lone surrogate (an error quoting binary, text decoded with
    surrogateescape) in an outcome's message or answer would make PostgreSQL refuse the
    whole settle batch: the outcome keeps them as U+FFFD and '?', and the batch settles."""
    await register(queue, circuitBreaker=NO_BREAKER)
    result = await queue.jobs.enqueue(job())
    [claimed] = await claim_all(queue)
    dirty = "busy \x00 \udc80 é"
    outcome = Outcome(
        status=503, duration=0.01, error_class=ErrorClass.TRANSIENT, message=dirty, response=dirty
    )
    f = failure(claimed, message=outcome.message)
    f = dataclasses.replace(f, note=AttemptNote(response=outcome.response))
    await queue.jobs.fail("w", [f])
    [row] = await attempts(queue, result.id)
    assert row["message"] == row["response"] == "busy \ufffd ? é"
    assert await sql_value(queue, "SELECT last_error FROM herald.jobs") == "busy \ufffd ? é"
