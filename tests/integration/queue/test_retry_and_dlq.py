"""Failures: backoff and Retry-After, attempt budgets per error class, the dead-letter
queue, the circuit breaker shared in PostgreSQL, pauses and the rate limit.

Retry state lives in the database: after a failure the job is ``retrying`` with
``run_at`` = the failure's now() + delay. The failure's now() is also written to
``targets.last_error_at`` in the same statement, so the delay is read back exactly as
``run_at - last_error_at``. Later attempts are reached by moving ``run_at`` into the past.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import uuid
from typing import Any

import pytest

from herald_core.states import CircuitState, JobState, Priority
from herald_queue.queue import Queue
from herald_queue.records import ClaimedJob
from tests.helpers import (
    claim_all,
    failure,
    job,
    job_rows,
    make_ready,
    open_queue,
    register,
    sql_exec,
    sql_rows,
    sql_value,
    target_row,
    wait_until,
)

NO_BREAKER = {"failureThreshold": 1000}


async def fail_once(queue: Queue, error_class: str = "transient", **kw: Any) -> tuple[Any, float]:
    """Claim the one ready job, fail it; (outcome, delay in seconds as the DB recorded it)."""
    [claimed] = await queue.jobs.claim("w", 1)
    [outcome] = await queue.jobs.fail("w", [failure(claimed, error_class, **kw)])
    rows = await sql_rows(
        queue,
        "SELECT extract(epoch FROM j.run_at - t.last_error_at)::float AS delay, "
        "extract(epoch FROM j.run_at - now())::float AS from_now, "
        "extract(epoch FROM j.deadline - j.run_at)::float AS budget, j.priority "
        "FROM herald.jobs j JOIN herald.targets t ON t.id = j.target_id WHERE j.id = %s",
        [claimed.id],
    )
    row = rows[0]
    if outcome.state is JobState.RETRYING:
        assert row["from_now"] == pytest.approx(row["delay"], abs=0.5), "run_at is DB time"
        assert row["budget"] == queue.settings.budget(row["priority"]), (
            "the deadline keeps the priority's budget"
        )
        assert outcome.run_at == await sql_value(
            queue, "SELECT run_at FROM herald.jobs WHERE id = %s", [claimed.id]
        )
    return outcome, row["delay"]


async def dead_letter(queue: Queue, job_id: uuid.UUID) -> dict[str, Any]:
    [entry] = await sql_rows(queue, "SELECT * FROM herald.dead_letters WHERE job_id = %s", [job_id])
    return entry


# -- backoff -----------------------------------------------------------------------------


async def test_exponential_backoff_with_jitter(queue: Queue) -> None:
    """initialBackoff 2 s, multiplier 2, maxBackoff 30 s, jitter up to 1 s."""
    await register(queue, retry={"maxAttempts": 10}, circuitBreaker=NO_BREAKER)
    await queue.jobs.enqueue(job())
    for attempt, base in enumerate([2, 4, 8, 16, 30, 30], start=1):
        outcome, delay = await fail_once(queue)
        assert (outcome.state, outcome.attempts) == (JobState.RETRYING, attempt)
        assert base <= delay <= base + 1, f"attempt {attempt}: {delay}"
        await make_ready(queue)


async def test_retry_after_is_honoured_and_capped(db_url: str) -> None:
    async with await open_queue(db_url, retry_after_cap=100) as queue:
        await register(
            queue, retry={"maxAttempts": 10, "jitterSeconds": 0}, circuitBreaker=NO_BREAKER
        )
        await queue.jobs.enqueue(job())
        _, delay = await fail_once(queue, retry_after=45, http_status=429)
        assert delay == pytest.approx(45, abs=0.001), "Retry-After longer than the backoff"
        await make_ready(queue)
        _, delay = await fail_once(queue, retry_after=1, http_status=503)
        assert delay == pytest.approx(4, abs=0.001), "backoff (attempt 2) when it is longer"
        await make_ready(queue)
        _, delay = await fail_once(queue, retry_after=86_400, http_status=503)
        assert delay == pytest.approx(100, abs=0.001), "capped by retry_after_cap"
        [row] = await job_rows(queue)
        assert (row["state"], row["last_http_status"]) == ("retrying", 503)


async def test_explicit_schedule(queue: Queue) -> None:
    await register(
        queue,
        circuitBreaker=NO_BREAKER,
        retry={
            "scheduleSeconds": [60, 300, 900, 3600, 14400],
            "maxAttempts": 7,
            "jitterSeconds": 0,
        },
    )
    await queue.jobs.enqueue(job())
    delays = []
    for _ in range(6):
        outcome, delay = await fail_once(queue)
        assert outcome.state is JobState.RETRYING
        delays.append(delay)
        await make_ready(queue)
    assert delays == pytest.approx([60, 300, 900, 3600, 14400, 14400], abs=0.001), (
        "the schedule, its last step repeating"
    )
    outcome, _ = await fail_once(queue)
    assert (outcome.state, outcome.attempts) == (JobState.DEAD, 7)


# -- attempt budgets and the dead-letter queue ----------------------------------------


async def test_transient_failures_exhaust_max_attempts(queue: Queue) -> None:
    await register(queue, retry={"maxAttempts": 4}, circuitBreaker=NO_BREAKER)
    r = await queue.jobs.enqueue(
        job(payload={"alert": "x"}, priority=Priority.HIGH, idempotency_key="k")
    )
    for attempt in range(1, 4):
        outcome, _ = await fail_once(queue, message=f"503 number {attempt}")
        assert (outcome.state, outcome.attempts) == (JobState.RETRYING, attempt)
        await make_ready(queue)
    outcome, _ = await fail_once(queue, message="503 number 4")
    assert (outcome.state, outcome.attempts) == (JobState.DEAD, 4)
    [row] = await job_rows(queue)
    assert (row["state"], row["dead_reason"], row["leased_by"]) == (
        "dead",
        "attempts-exhausted",
        None,
    )
    assert row["finished_at"] is not None
    entry = await dead_letter(queue, r.id)
    assert entry["reason"] == "attempts-exhausted"
    assert entry["error_type"] == "transient"
    assert entry["retry_count"] == 4
    assert entry["error_message"] == "503 number 4"
    assert entry["http_status"] == 503
    assert entry["payload"] == {"alert": "x"}
    assert (entry["priority"], entry["idempotency_key"]) == ("high", "k")
    assert (entry["target_namespace"], entry["target_name"], entry["target_type"]) == (
        "default",
        "hook",
        "webhook",
    )
    assert entry["target_config"]["retry"]["maxAttempts"] == 4
    assert entry["failed_at"] == row["finished_at"]
    assert (await target_row(queue))["dead_lettered_total"] == 1
    assert await queue.jobs.claim("w", 10) == []


async def test_permanent_error_is_dead_after_one_attempt(queue: Queue) -> None:
    await register(queue, retry={"maxAttempts": 5})
    r = await queue.jobs.enqueue(job())
    outcome, _ = await fail_once(queue, "permanent", http_status=422, message="bad payload")
    assert (outcome.state, outcome.attempts) == (JobState.DEAD, 1)
    entry = await dead_letter(queue, r.id)
    assert (entry["reason"], entry["error_type"], entry["http_status"], entry["retry_count"]) == (
        "permanent-error",
        "permanent",
        422,
        1,
    )


@pytest.mark.parametrize(("max_attempts", "budget"), [(5, 3), (2, 2)])
async def test_unknown_errors_get_a_smaller_budget(
    queue: Queue, max_attempts: int, budget: int
) -> None:
    """Unclassified failures: min(maxAttempts, 3) attempts."""
    await register(queue, retry={"maxAttempts": max_attempts}, circuitBreaker=NO_BREAKER)
    r = await queue.jobs.enqueue(job())
    for attempt in range(1, budget):
        outcome, _ = await fail_once(queue, "unknown")
        assert (outcome.state, outcome.attempts) == (JobState.RETRYING, attempt)
        await make_ready(queue)
    outcome, _ = await fail_once(queue, "unknown")
    assert (outcome.state, outcome.attempts) == (JobState.DEAD, budget)
    entry = await dead_letter(queue, r.id)
    assert (entry["reason"], entry["error_type"], entry["retry_count"]) == (
        "attempts-exhausted",
        "unknown",
        budget,
    )


async def test_job_not_yet_due_is_not_claimed(queue: Queue) -> None:
    await register(queue)
    now = await sql_value(queue, "SELECT now()")
    later = await queue.jobs.enqueue(job(run_at=now + dt.timedelta(minutes=5)))
    due = await queue.jobs.enqueue(job(run_at=now - dt.timedelta(seconds=1)))
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [due.id]
    assert await queue.jobs.claim("w", 10) == []
    [row] = await job_rows(queue, "id = %s", [later.id])
    assert row["state"] == "queued" and row["run_at"] == now + dt.timedelta(minutes=5)
    await make_ready(queue)
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [later.id]


# -- circuit breaker ---------------------------------------------------------------------


async def test_circuit_opens_and_gives_attempts_back(queue: Queue) -> None:
    await register(
        queue, retry={"maxAttempts": 5}, circuitBreaker={"failureThreshold": 3, "openSeconds": 30}
    )
    await register(queue, "other")
    ids = [r.id for r in await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(6)])]
    # Job 3 already failed 4 times: this claim is its last attempt.
    await sql_exec(
        queue, "UPDATE herald.jobs SET state = 'retrying', attempts = 4 WHERE id = %s", [ids[3]]
    )
    claimed = {j.id: j for j in await queue.jobs.claim("w", 10)}
    assert len(claimed) == 6 and claimed[ids[3]].attempts == 5

    [o1] = await queue.jobs.fail("w", [failure(claimed[ids[0]])])
    [o2] = await queue.jobs.fail("w", [failure(claimed[ids[1]])])
    assert (o1.state, o2.state, o2.circuit_after) == (
        JobState.RETRYING,
        JobState.RETRYING,
        CircuitState.CLOSED,
    )
    assert (await target_row(queue))["consecutive_failures"] == 2
    [o3] = await queue.jobs.fail("w", [failure(claimed[ids[2]])])
    assert o3.tripped and o3.circuit_before is CircuitState.CLOSED
    assert o3.circuit_after is CircuitState.OPEN
    assert (o3.state, o3.attempts, o3.refunded) == (JobState.QUEUED, 0, True)
    t = await target_row(queue)
    assert (t["circuit_state"], t["circuit_trips_total"]) == ("open", 1)
    open_for = (t["circuit_open_until"] - t["circuit_changed_at"]).total_seconds()
    assert open_for == pytest.approx(30)
    assert o3.run_at >= t["circuit_open_until"]

    # In-flight jobs failing while the circuit is open give their attempt back, even the
    # one on its last attempt.
    outcomes = {
        o.id: o
        for o in await queue.jobs.fail(
            "w", [failure(claimed[ids[3]]), failure(claimed[ids[4]], "unknown")]
        )
    }
    assert (outcomes[ids[3]].state, outcomes[ids[3]].attempts) == (JobState.RETRYING, 4)
    assert (outcomes[ids[4]].state, outcomes[ids[4]].attempts) == (JobState.QUEUED, 0)
    assert all(o.refunded and not o.tripped for o in outcomes.values())
    assert all(o.run_at >= t["circuit_open_until"] for o in outcomes.values())
    assert await sql_rows(queue, "SELECT * FROM herald.dead_letters") == []
    # ... but a permanent failure is still dead at once.
    [o5] = await queue.jobs.fail("w", [failure(claimed[ids[5]], "permanent")])
    assert (o5.state, o5.refunded) == (JobState.DEAD, False)

    # While open, nothing of the target is claimed, even when due; other targets are.
    await make_ready(queue)
    other = await queue.jobs.enqueue(job("other"))
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [other.id]
    assert await queue.jobs.claim("w", 10) == []
    assert (await target_row(queue))["circuit_state"] == "open"


async def open_circuit(queue: Queue, n_jobs: int, **breaker: Any) -> list[uuid.UUID]:
    """Register 'hook' (failureThreshold 1), enqueue jobs, fail one: the circuit opens.
    Returns the job ids; the failed one (the first) has its attempt back."""
    await register(queue, circuitBreaker={"failureThreshold": 1, **breaker})
    ids = [
        r.id for r in await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(n_jobs)])
    ]
    [first] = await queue.jobs.claim("w", 1)
    [o] = await queue.jobs.fail("w", [failure(first)])
    assert o.tripped and o.refunded
    return ids


async def end_open_period(queue: Queue) -> None:
    await sql_exec(
        queue,
        "UPDATE herald.targets SET circuit_open_until = now() - "
        "interval '1 second' WHERE circuit_state = 'open'",
    )
    await make_ready(queue)


async def claim_probes(queue: Queue, limit: int = 10) -> list[ClaimedJob]:
    # A JobStore re-reads which targets need quota claims every 0.5 s: wait for it.
    result: list[ClaimedJob] = await wait_until(
        lambda: queue.jobs.claim("w", limit), timeout=5, what="probe claimed"
    )
    return result


async def test_half_open_lets_at_most_the_probes_through(queue: Queue) -> None:
    await open_circuit(queue, 8, halfOpenProbes=2)
    assert await queue.jobs.claim("w", 10) == []
    await end_open_period(queue)
    probes = await claim_probes(queue)
    assert len(probes) == 2
    t = await target_row(queue)
    assert (t["circuit_state"], t["circuit_open_until"]) == ("half_open", None)
    assert await queue.jobs.claim("w", 10) == [], "the probes are in flight"
    done = await queue.jobs.complete("w", probes)
    assert done.recovered == ["default/hook"]
    t = await target_row(queue)
    assert (t["circuit_state"], t["consecutive_failures"], t["circuit_recoveries_total"]) == (
        "closed",
        0,
        1,
    )
    assert len(await claim_all(queue)) == 6


async def test_failed_probe_reopens_successful_probe_closes(queue: Queue) -> None:
    await open_circuit(queue, 5, halfOpenProbes=1, openSeconds=20)
    await end_open_period(queue)
    [probe] = await claim_probes(queue)
    attempts = probe.attempts
    assert (await target_row(queue))["circuit_state"] == "half_open"
    [o] = await queue.jobs.fail("w", [failure(probe)])
    assert o.tripped and o.circuit_before is CircuitState.HALF_OPEN
    assert (o.circuit_after, o.refunded, o.attempts) == (CircuitState.OPEN, True, attempts - 1)
    t = await target_row(queue)
    assert (t["circuit_state"], t["circuit_trips_total"]) == ("open", 2)
    assert (t["circuit_open_until"] - t["circuit_changed_at"]).total_seconds() == 20
    assert await queue.jobs.claim("w", 10) == []

    await end_open_period(queue)
    [probe] = await claim_probes(queue)
    await queue.jobs.complete("w", [probe])
    t = await target_row(queue)
    assert (t["circuit_state"], t["consecutive_failures"], t["circuit_open_until"]) == (
        "closed",
        0,
        None,
    )
    assert len(await claim_all(queue)) == 4
    assert await sql_rows(queue, "SELECT * FROM herald.dead_letters") == []


async def test_permanent_failures_do_not_count_towards_the_breaker(queue: Queue) -> None:
    await register(queue, circuitBreaker={"failureThreshold": 2})
    await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(4)])
    claimed = await queue.jobs.claim("w", 10)
    outcomes = await queue.jobs.fail(
        "w", [failure(j, "permanent", http_status=400) for j in claimed[:3]]
    )
    assert {o.state for o in outcomes} == {JobState.DEAD}
    t = await target_row(queue)
    assert (t["circuit_state"], t["consecutive_failures"], t["failed_attempts_total"]) == (
        "closed",
        0,
        3,
    )
    [o] = await queue.jobs.fail("w", [failure(claimed[3])])
    assert (o.circuit_after, (await target_row(queue))["consecutive_failures"]) == (
        CircuitState.CLOSED,
        1,
    )


# -- pauses --------------------------------------------------------------------------------


async def test_paused_target_gives_nothing(queue: Queue) -> None:
    await register(queue, paused=True)
    r = await queue.jobs.enqueue(job())
    assert r.created
    assert await queue.jobs.claim("w", 10) == []
    await register(queue, paused=False)
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [r.id]


async def test_auto_pause_holds_until_resume_or_spec_change(queue: Queue) -> None:
    target_id = await register(queue)
    await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(3)])
    assert await queue.registry.auto_pause(target_id, "410 Gone")
    assert not await queue.registry.auto_pause(target_id, "410 Gone"), "already paused"
    assert (await queue.registry.get("hook")).holding
    assert await queue.jobs.claim("w", 10) == []
    await queue.registry.resume("hook")
    [first] = await queue.jobs.claim("w", 1)
    await queue.jobs.complete("w", [first])

    assert await queue.registry.auto_pause(target_id, "410 Gone")
    await register(queue)  # the same spec again: still paused
    assert await queue.jobs.claim("w", 10) == []
    await register(queue, timeoutSeconds=5)  # a changed spec clears the pause
    assert (await target_row(queue))["auto_paused_reason"] is None
    assert len(await queue.jobs.claim("w", 10)) == 2


# -- rate limit ----------------------------------------------------------------------------


async def test_rate_limit_is_a_shared_token_bucket(queue: Queue) -> None:
    # One token per 100 s: none comes back while the test runs, however slowly; the
    # refill is shown by ageing the bucket in SQL.
    hook_id = await register(queue, rateLimit={"requestsPerSecond": 0.01, "burst": 10})
    await register(queue, "free")
    await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(40)])
    await queue.jobs.enqueue_many([job("free", {"i": i}) for i in range(20)])
    async with await open_queue(queue.url) as other:  # another worker, its own pool
        first = await queue.jobs.claim("w", 100)
        by_target: dict[int, int] = {}
        for j in first:
            by_target[j.target_id] = by_target.get(j.target_id, 0) + 1
        assert by_target.pop(hook_id) == 10, "the burst"
        assert sum(by_target.values()) == 20, "other targets are not limited"
        assert (await target_row(queue))["rate_tokens"] == 0
        # Right after, the bucket is empty for every worker.
        assert await queue.jobs.claim("w", 100) == []
        assert await other.jobs.claim("w2", 100) == []
        # 500 seconds later (the bucket aged by SQL): 5 tokens, for whichever worker asks.
        await sql_exec(
            queue,
            "UPDATE herald.targets SET rate_tokens = 0, rate_updated_at = "
            "now() - interval '500 seconds' WHERE id = %s",
            [hook_id],
        )
        assert len(await other.jobs.claim("w2", 100)) == 5, "0.01 tokens a second"
        assert await queue.jobs.claim("w", 100) == []


async def test_replicas_share_probes_and_tokens(queue: Queue) -> None:
    """Four workers (each its own pool and caches) claim at the same instant: together
    they take exactly the half-open probes of one target and the burst of another."""
    await open_circuit(queue, 10, halfOpenProbes=2)
    # No token comes back while the four claims run (one per 1,000 s), however slowly.
    limited = await register(queue, "limited", rateLimit={"requestsPerSecond": 0.001, "burst": 7})
    await queue.jobs.enqueue_many([job("limited", {"i": i}) for i in range(30)])
    await end_open_period(queue)
    replicas = [await open_queue(queue.url, pool_max=2) for _ in range(4)]
    try:
        claims = await asyncio.gather(
            *(r.jobs.claim(f"replica-{n}", 50) for n, r in enumerate(replicas))
        )
    finally:
        for r in replicas:
            await r.close()
    taken = [j for c in claims for j in c]
    assert len({j.id for j in taken}) == len(taken)
    hook = (await target_row(queue))["id"]
    assert sum(j.target_id == hook for j in taken) == 2, "the probes, no more"
    assert sum(j.target_id == limited for j in taken) == 7, "the burst, no more"
    assert (await target_row(queue))["circuit_state"] == "half_open"


async def test_probes_and_tokens_are_not_starved_by_a_backlog(queue: Queue) -> None:
    """A backlog on another target fills every claim; the half-open target still gets its
    probe and the rate-limited one its tokens: quota targets are offered the head of a
    claim at least every QUOTA_FIRST_SECONDS."""
    await open_circuit(queue, 5, halfOpenProbes=1)
    limited = await register(queue, "limited", rateLimit={"requestsPerSecond": 1, "burst": 3})
    await queue.jobs.enqueue_many([job("limited", {"i": i}) for i in range(10)])
    await register(queue, "busy")
    await queue.jobs.enqueue_many([job("busy", {"i": i}) for i in range(3000)])
    await end_open_period(queue)
    hook = (await target_row(queue))["id"]
    seen: collections.Counter[int] = collections.Counter()

    async def both_served() -> bool:
        claimed = await queue.jobs.claim("w", 20)
        assert len(claimed) == 20, "the backlog fills every claim"
        seen.update(j.target_id for j in claimed)
        await queue.jobs.complete("w", [j for j in claimed if j.target_id != hook])
        return seen[hook] >= 1 and seen[limited] >= 3

    await wait_until(both_served, timeout=5, interval=0.01, what="probe and tokens served")
    assert seen[hook] == 1, "one probe, no more"
