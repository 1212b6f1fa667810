"""Priorities, and the bound on how long a flood of high jobs can keep a low job waiting.

The rule (QueueSettings, sql/jobs.sql: claim): every job has a *deadline*, the time it
became ready (``run_at``) plus its priority's latency budget — high 0, medium
``budget_medium``, low ``budget_low`` — and claims take ready jobs by earliest deadline,
then enqueue order. So a low job ready at T goes before every high job that becomes ready
after T + budget_low, and after the high jobs ready before that.

The starvation bound: a low job never waits for more than ``budget_low`` seconds' worth of
high jobs; once the high jobs that became ready up to T + budget_low (and the jobs ahead
of it) are drained, it is next, however many high jobs keep arriving.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from herald_core.states import Priority
from herald_queue.records import ClaimedJob
from tests.helpers import claim_all, job, open_queue, register, sql_exec, sql_value

HIGH, MEDIUM, LOW = Priority.HIGH, Priority.MEDIUM, Priority.LOW


async def test_high_before_medium_before_low_fifo_within(db_url: str) -> None:
    async with await open_queue(db_url) as queue:
        await register(queue)
        order = [LOW, HIGH, MEDIUM, LOW, HIGH, MEDIUM, HIGH, LOW, MEDIUM]
        # Singles (the INSERT path) and one batch large enough for COPY.
        singles = [
            (await queue.jobs.enqueue(job(payload={"n": n}, priority=p))).id
            for n, p in enumerate(order)
        ]
        batch = [
            r.id
            for r in await queue.jobs.enqueue_many(
                [job(payload={"n": n}, priority=order[n % 9]) for n in range(45)]
            )
        ]
        expected = []
        for p in (HIGH, MEDIUM, LOW):
            expected += [i for i, q in zip(singles, order, strict=True) if q is p]
            expected += [i for n, i in enumerate(batch) if order[n % 9] is p]
        # A claim takes the first jobs in that order; within one claim the list comes back
        # in no particular order (the UPDATE's RETURNING), so batches compare as sets.
        for start in range(0, len(expected), 7):
            batch_ids = {j.id for j in await queue.jobs.claim("w", 7)}
            assert batch_ids == set(expected[start : start + 7])
        assert await queue.jobs.claim("w", 7) == []
        # One at a time, the order is exact.
        await sql_value(
            queue,
            "UPDATE herald.jobs SET state = 'queued', attempts = 0, "
            "leased_by = NULL, lease_expires_at = NULL RETURNING 1",
        )
        assert [j.id for j in await claim_all(queue, limit=1)] == expected


async def test_deadline_rule_for_jobs_ready_at_different_times(db_url: str) -> None:
    """budget_low = 300 s: a low job ready at T beats high jobs ready after T + 300 s and
    yields to those ready before; a medium one (budget 60 s) likewise. (A runAt in the past
    means "now", so the ready times are moved back in SQL, budgets kept.)"""
    async with await open_queue(db_url, budget_medium=60, budget_low=300) as queue:
        await register(queue)
        now = await sql_value(queue, "SELECT now()")

        def at(seconds_ago: float) -> dt.datetime:
            return now - dt.timedelta(seconds=seconds_ago)

        plan = [  # (name, priority, ready seconds ago) -> deadline (seconds ago)
            ("high-late", HIGH, 50),  # -50
            ("low", LOW, 400),  # -100
            ("high-just-after", HIGH, 99),  # -99
            ("high-just-before", HIGH, 101),  # -101
            ("medium", MEDIUM, 200),  # -140
            ("high-early", HIGH, 200),  # -200
            ("low-older", LOW, 700),  # -400
        ]
        ids: dict[uuid.UUID, str] = {}
        for name, priority, ago in plan:
            r = await queue.jobs.enqueue(job(payload={"name": name}, priority=priority))
            ids[r.id] = name
            await sql_exec(
                queue,
                "UPDATE herald.jobs SET deadline = deadline - (run_at - %(at)s), run_at = %(at)s"
                " WHERE id = %(id)s",
                {"at": at(ago), "id": r.id},
            )
        claimed = [ids[j.id] for j in await claim_all(queue, limit=1)]
        assert claimed == [
            "low-older",
            "high-early",
            "medium",
            "high-just-before",
            "low",
            "high-just-after",
            "high-late",
        ]


@pytest.mark.slow
async def test_low_job_not_starved_by_a_flood_of_high_jobs(db_url: str) -> None:
    """A flood of high jobs outpaces the consumer (each step enqueues 40 and claims 20, so
    the backlog only grows); a low job enqueued mid-flood is claimed while the flood goes
    on, and every high job claimed before it became ready no later than the low job's ready
    time + budget_low."""
    budget_low = 1.0
    async with await open_queue(db_url, budget_medium=0.2, budget_low=budget_low) as queue:
        await register(queue)
        claimed: list[list[ClaimedJob]] = []
        low_id: uuid.UUID | None = None
        produced = 0
        # Producer and consumer in lockstep, one after the other: whatever the machine's
        # speed, the flood outpaces the consumer, and every job's run_at (its
        # transaction's time) is in the order the steps ran.
        give_up = time.monotonic() + budget_low + 30
        while time.monotonic() < give_up:
            await queue.jobs.enqueue_many(
                [job(payload={"n": produced + i}, priority=HIGH) for i in range(40)]
            )
            produced += 40
            if low_id is None and produced >= 400:  # mid-flood: a backlog is waiting
                low_id = (await queue.jobs.enqueue(job(payload={"low": True}, priority=LOW))).id
            batch = await queue.jobs.claim("consumer", 20)
            claimed.append(batch)
            await queue.jobs.complete("consumer", batch)
            if any(j.id == low_id for j in batch):
                break
        else:
            raise AssertionError("the low job was never claimed during the flood")

        # Claims are compared batch by batch (a batch comes back in no particular order).
        low = next(j for j in claimed[-1] if j.id == low_id)
        bound = low.run_at + dt.timedelta(seconds=budget_low)
        before = [j for b in claimed[:-1] for j in b]
        assert before and all(j.priority is HIGH for j in before)
        late = [j for j in before if j.run_at > bound]
        assert late == [], f"{len(late)} high jobs ready after the bound went first"
        # The flood was still on when the low job was claimed (high jobs that were ready
        # then are still waiting: the low job overtook them), and it waited for high jobs
        # newer than itself, up to its budget.
        waiting_then = await sql_value(
            queue, "SELECT count(*) FROM herald.jobs WHERE priority = 'high' AND state = 'queued'"
        )
        assert waiting_then > 0, "the consumer kept up: no flood to overtake"
        assert max(j.run_at for j in before) > low.run_at, "high jobs newer than it went first"
