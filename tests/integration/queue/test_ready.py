"""One definition of a job "ready" to run: due now (run_at passed, not held behind an
earlier job of its ordering key), its target not paused (by spec or by a 410) and its
circuit not open. Queue statistics (API, CLI), the sampled metrics and the operator's
scaler all count it that way."""

from __future__ import annotations

import datetime as dt

from herald_core.states import Priority
from herald_queue import stats
from herald_queue.queue import Queue
from tests.helpers import job, register, sql_exec


async def test_jobs_of_an_open_circuit_or_a_paused_target_are_not_ready(queue: Queue) -> None:
    for name in ("ok", "open", "paused", "gone"):
        await register(queue, name, paused=name == "paused")
    await sql_exec(
        queue,
        "UPDATE herald.targets SET circuit_state = 'open', circuit_changed_at = now(), "
        "circuit_open_until = now() + interval '1 hour' WHERE name = 'open'",
    )
    await sql_exec(
        queue,
        "UPDATE herald.targets SET auto_paused_reason = 'HTTP 410 Gone', auto_paused_at = now() "
        "WHERE name = 'gone'",
    )
    for name in ("ok", "open", "paused", "gone"):
        await queue.jobs.enqueue_many([job(name, {"i": i}, Priority.HIGH) for i in range(3)])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    await queue.jobs.enqueue(job("ok", {"later": 1}, run_at=later))  # not due
    await queue.jobs.enqueue_many(  # the second waits behind the first
        [job("ok", {"o": i}, Priority.LOW, ordering_key="k") for i in range(2)]
    )

    s = await queue.stats()
    assert s.queued == 3 * 4 + 1 + 2, "every waiting job is queued"
    assert s.ready == 3 + 1, "ready: only the due jobs of a target that can take them"
    assert s.by_priority["high"].ready == 3
    assert s.by_priority["low"].ready == 1
    assert {t: v.ready for t, v in s.by_target.items()} == {
        "default/ok": 4,
        "default/open": 0,
        "default/paused": 0,
        "default/gone": 0,
    }
    for name in ("open", "paused", "gone"):
        assert s.by_target[f"default/{name}"].oldest_ready_age_seconds is None, name
    assert s.by_target["default/ok"].oldest_ready_age_seconds is not None
    assert await stats.ready_for_scaling(queue.pool) == s.ready, "the scaler counts the same"
    rows = await stats.count_rows(queue.pool, live_only=True)  # what the metrics sampler reads
    assert {r.target for r in rows if r.ready} == {"default/ok"}

    # The circuit closes and the pause ends: their jobs are ready again.
    await sql_exec(
        queue,
        "UPDATE herald.targets SET circuit_state = 'closed', circuit_open_until = NULL, "
        "paused = false, auto_paused_reason = NULL, auto_paused_at = NULL",
    )
    s = await queue.stats()
    assert s.ready == 3 * 4 + 1
    assert await stats.ready_for_scaling(queue.pool) == s.ready
