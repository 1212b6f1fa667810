from __future__ import annotations

from herald_core.states import ErrorClass, JobState
from herald_queue.dead_letters import DeadLetterFilter
from herald_queue.queue import Queue
from herald_queue.records import Failure
from tests.helpers import job, register


async def test_enqueue_claim_complete(queue: Queue) -> None:
    await register(queue)
    results = await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(40)])
    assert len(results) == 40
    r1 = await queue.jobs.enqueue(job(idempotency_key="k1"))
    r2 = await queue.jobs.enqueue(job(idempotency_key="k1"))
    assert r1.id == r2.id and r1.created and not r2.created
    claimed = await queue.jobs.claim("w1", 100)
    assert len(claimed) == 41
    out = await queue.jobs.complete("w1", claimed[:30])
    assert len(out.completed) == 30
    fails = await queue.jobs.fail(
        "w1",
        [Failure(job=j, error_class=ErrorClass.TRANSIENT, message="boom") for j in claimed[30:35]],
    )
    assert {f.state for f in fails} <= {JobState.RETRYING, JobState.QUEUED}
    fails = await queue.jobs.fail(
        "w1",
        [
            Failure(job=j, error_class=ErrorClass.PERMANENT, message="bad", http_status=400)
            for j in claimed[35:]
        ],
    )
    assert {f.state for f in fails} == {JobState.DEAD}
    page = await queue.dead_letters.list()
    assert len(page.items) == 6
    stats = await queue.stats()
    assert stats.succeeded == 30 and stats.dead == 6
    rep = await queue.dead_letters.replay(DeadLetterFilter())
    assert rep.replayed == 6
