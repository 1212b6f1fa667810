"""The dead-letter queue: list (filters, keyset pages), get, replay (once ever, even when
run concurrently; after retention removed the job row; to a deleted target), dry runs,
purge, statistics, and the paths that fill it (target deletion, cancel)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest

from herald_core.errors import InvalidRequest, TargetNotFound
from herald_core.states import ErrorClass, JobState, Priority
from herald_queue.dead_letters import DeadLetterFilter, one_off_tag
from herald_queue.queue import Queue
from herald_queue.records import DeadLetterRecord
from herald_worker.api import models
from tests.helpers import (
    failure,
    job,
    job_rows,
    open_queue,
    register,
    sql_exec,
    sql_rows,
    sql_value,
)

TARGETS = ("default/alpha", "default/beta", "team/alpha")
CLASSES = ("transient", "permanent", "unknown")
ONE_SHOT = {"retry": {"maxAttempts": 1}, "circuitBreaker": {"failureThreshold": 1000}}


async def register_all(queue: Queue) -> None:
    for ref in TARGETS:
        namespace, name = ref.split("/")
        await register(queue, name, namespace, **ONE_SHOT)


async def bury(queue: Queue, n: int, *, spread: bool = True) -> list[uuid.UUID]:
    """``n`` dead jobs: job i goes to TARGETS[i % 3] with class CLASSES[(i // 3) % 3] and
    priority high/low alternately; with ``spread``, job i failed i + 1 hours ago (so the
    newest-first order is the enqueue order). Returns the job ids in enqueue order."""
    results = await queue.jobs.enqueue_many(
        [
            job(TARGETS[i % 3], {"i": i}, Priority.HIGH if i % 2 == 0 else Priority.LOW)
            for i in range(n)
        ]
    )
    ids = [r.id for r in results]
    claimed = {j.id: j for j in await queue.jobs.claim("w", n)}
    outcomes = await queue.jobs.fail(
        "w",
        [
            failure(claimed[job_id], CLASSES[(i // 3) % 3], message=f"failure {i}")
            for i, job_id in enumerate(ids)
        ],
    )
    assert {o.state for o in outcomes} == {JobState.DEAD}
    if spread:
        await sql_exec(
            queue,
            """
            UPDATE herald.dead_letters d
            SET failed_at = now() - make_interval(hours => x.n::integer)
            FROM (SELECT id, row_number() OVER (ORDER BY job_id) AS n
                  FROM herald.dead_letters) AS x
            WHERE d.id = x.id""",
        )
    return ids


async def all_entries(
    queue: Queue, where: DeadLetterFilter | None = None
) -> list[DeadLetterRecord]:
    page = await queue.dead_letters.list(where or DeadLetterFilter(), limit=1000)
    assert page.next_cursor is None
    return page.items


def job_ids(items: list[DeadLetterRecord]) -> list[uuid.UUID]:
    return [e.job_id for e in items]


async def test_list_newest_first_with_each_filter(queue: Queue) -> None:
    await register_all(queue)
    ids = await bury(queue, 30)
    everything = await all_entries(queue)
    assert job_ids(everything) == ids, "newest first"
    failed = [e.failed_at for e in everything]
    assert failed == sorted(failed, reverse=True)

    def expect(pred: Any) -> list[uuid.UUID]:
        return [job_id for i, job_id in enumerate(ids) if pred(i)]

    cases = {
        DeadLetterFilter(target="default/alpha"): expect(lambda i: i % 3 == 0),
        DeadLetterFilter(target="team/alpha"): expect(lambda i: i % 3 == 2),
        DeadLetterFilter(target="alpha"): expect(lambda i: i % 3 != 1),  # any namespace
        DeadLetterFilter(target="beta"): expect(lambda i: i % 3 == 1),
        DeadLetterFilter(error_class=ErrorClass.UNKNOWN): expect(lambda i: (i // 3) % 3 == 2),
        DeadLetterFilter(target="default/beta", error_class=ErrorClass.TRANSIENT): expect(
            lambda i: i % 3 == 1 and (i // 3) % 3 == 0
        ),
        DeadLetterFilter(failed_after=failed[12], failed_before=failed[4]): ids[5:13],
        DeadLetterFilter(failed_after=failed[25]): ids[:26],
        DeadLetterFilter(failed_before=failed[25]): ids[26:],
        DeadLetterFilter(job_ids=(ids[3], ids[7])): [ids[3], ids[7]],
        DeadLetterFilter(ids=(everything[9].id,)): [ids[9]],
        DeadLetterFilter(target="nowhere"): [],
    }
    for where, expected in cases.items():
        assert job_ids(await all_entries(queue, where)) == expected, where

    await queue.dead_letters.replay(DeadLetterFilter(job_ids=(ids[1], ids[2], ids[20])))
    assert job_ids(await all_entries(queue, DeadLetterFilter(replayed=True))) == [
        ids[1],
        ids[2],
        ids[20],
    ]
    assert job_ids(await all_entries(queue, DeadLetterFilter(replayed=False))) == [
        i for i in ids if i not in (ids[1], ids[2], ids[20])
    ]
    with pytest.raises(InvalidRequest):
        DeadLetterFilter(failed_after=failed[0], failed_before=failed[1])


async def pages(queue: Queue, where: DeadLetterFilter, limit: int) -> list[list[DeadLetterRecord]]:
    out, cursor = [], None
    while True:
        page = await queue.dead_letters.list(where, limit=limit, cursor=cursor)
        out.append(page.items)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


@pytest.mark.parametrize("spread", [True, False], ids=["distinct-times", "same-time"])
async def test_cursor_pages_cover_everything_once(queue: Queue, spread: bool) -> None:
    """Pages never overlap and together are the full list, newest first; also when many
    entries share one failed_at (one failing batch), which the cursor breaks by id."""
    await register_all(queue)
    await bury(queue, 31, spread=spread)
    full = await all_entries(queue)
    for where, limit in [
        (DeadLetterFilter(), 7),
        (DeadLetterFilter(), 31),
        (DeadLetterFilter(target="alpha"), 4),
    ]:
        got = await pages(queue, where, limit)
        flat = [e.id for p in got for e in p]
        assert len(flat) == len(set(flat)), "pages overlap"
        assert flat == [e.id for e in await all_entries(queue, where)]
        assert all(len(p) == limit for p in got[:-1]) and 0 < len(got[-1]) <= limit
    assert [e.id for p in await pages(queue, DeadLetterFilter(), 10) for e in p] == [
        e.id for e in full
    ]
    with pytest.raises(InvalidRequest):
        await queue.dead_letters.list(cursor="not-a-cursor")


async def test_get_one(queue: Queue) -> None:
    await register_all(queue)
    ids = await bury(queue, 3)
    [entry] = (await queue.dead_letters.list(DeadLetterFilter(job_ids=(ids[1],)))).items
    got = await queue.dead_letters.get(entry.id)
    assert got is not None
    body = models.DeadLetter.from_record(got).dump()
    assert body["jobId"] == str(ids[1])
    assert body["target"] == "default/beta"
    assert (body["errorClass"], body["reason"], body["attempts"]) == (
        "transient",
        "attempts-exhausted",
        1,
    )
    assert body["payload"] == {"i": 1} and body["priority"] == "low"
    assert body["error"] == "failure 1" and body["httpStatus"] == 503
    assert body["targetConfig"]["retry"]["maxAttempts"] == 1
    assert body["replayed"] is False and body["replayResult"] is None
    assert await queue.dead_letters.get(uuid.uuid4()) is None


async def test_replay_one_then_never_again(queue: Queue) -> None:
    await register_all(queue)
    ids = await bury(queue, 3)
    [entry] = (await queue.dead_letters.list(DeadLetterFilter(job_ids=(ids[0],)))).items
    result = await queue.dead_letters.replay(DeadLetterFilter(ids=(entry.id,)), replayed_by="alice")
    assert (result.matched, result.replayed, result.skipped, result.job_ids) == (1, 1, 0, [ids[0]])
    [row] = await job_rows(queue, "id = %s", [ids[0]])
    assert (row["state"], row["attempts"], row["dead_reason"], row["finished_at"]) == (
        "queued",
        0,
        None,
        None,
    )
    assert row["last_error"] is None and row["payload"] == {"i": 0}
    got = await queue.dead_letters.get(entry.id)
    assert got is not None
    assert (got.replayed, got.replay_result, got.replayed_by) == (
        True,
        "queued",
        "alice",
    )
    assert got.replayed_at is not None

    again = await queue.dead_letters.replay(DeadLetterFilter(ids=(entry.id,)))
    assert (again.matched, again.replayed) == (0, 0)
    # The same job id is delivered again (a webhook-id stable across the replay).
    [claimed] = await queue.jobs.claim("w", 10)
    assert (claimed.id, claimed.attempts) == (ids[0], 1)
    assert await sql_value(queue, "SELECT count(*) FROM herald.jobs") == 3


async def test_replay_a_filtered_set(queue: Queue) -> None:
    await register_all(queue)
    ids = await bury(queue, 18)
    where = DeadLetterFilter(target="alpha", error_class=ErrorClass.TRANSIENT)
    expected = {i for n, i in enumerate(ids) if n % 3 != 1 and (n // 3) % 3 == 0}
    assert len(expected) == 4
    dry = await queue.dead_letters.replay(where, dry_run=True)
    assert (dry.matched, dry.replayed, dry.skipped, dry.dry_run) == (4, 4, 0, True)
    assert await sql_value(queue, "SELECT count(*) FROM herald.dead_letters WHERE replayed") == 0, (
        "dry run"
    )
    result = await queue.dead_letters.replay(where)
    assert set(result.job_ids) == expected and result.replayed == 4
    states = {r["id"]: r["state"] for r in await job_rows(queue)}
    assert {i for i, s in states.items() if s == "queued"} == expected
    assert (await queue.dead_letters.replay(where)).matched == 0
    # limit: the oldest first.
    limited = await queue.dead_letters.replay(DeadLetterFilter(target="beta"), limit=2)
    beta = [i for n, i in enumerate(ids) if n % 3 == 1]
    assert limited.job_ids == [beta[-1], beta[-2]]


async def test_concurrent_replays_queue_each_job_once(db_url: str) -> None:
    async with await open_queue(db_url, pool_max=10) as queue:
        await register_all(queue)
        ids = await bury(queue, 60)
        results = await asyncio.gather(
            *(queue.dead_letters.replay(DeadLetterFilter(), replayed_by=f"r{n}") for n in range(4))
        )
        replayed = [i for r in results for i in r.job_ids]
        assert sorted(replayed) == sorted(ids), "each job replayed by exactly one replay"
        assert sum(r.matched for r in results) == 60
        assert await sql_rows(
            queue, "SELECT state, attempts, count(*) AS n FROM herald.jobs GROUP BY 1, 2"
        ) == [{"state": "queued", "attempts": 0, "n": 60}]
        assert (
            await sql_value(queue, "SELECT count(*) FROM herald.dead_letters WHERE NOT replayed")
            == 0
        )
        assert len(await queue.jobs.claim("w", 1000)) == 60


async def test_replay_after_the_job_row_was_pruned(queue: Queue) -> None:
    await register_all(queue)
    await register(queue, "keyed", **ONE_SHOT)
    r = await queue.jobs.enqueue(
        job("keyed", {"x": 1}, Priority.HIGH, idempotency_key="k1", ordering_key="o1")
    )
    [c] = await queue.jobs.claim("w", 1)
    await queue.jobs.fail("w", [failure(c, "permanent")])
    created = await sql_value(queue, "SELECT created_at FROM herald.jobs WHERE id = %s", [r.id])
    assert await sql_exec(queue, "DELETE FROM herald.jobs WHERE id = %s", [r.id]) == 1
    result = await queue.dead_letters.replay(DeadLetterFilter(job_ids=(r.id,)))
    assert result.job_ids == [r.id]
    [row] = await job_rows(queue, "id = %s", [r.id])
    assert (row["state"], row["attempts"], row["priority"], row["payload"]) == (
        "queued",
        0,
        "high",
        {"x": 1},
    )
    assert (row["idempotency_key"], row["ordering_key"], row["held"]) == ("k1", "o1", False)
    assert row["created_at"] == created
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [r.id]


async def test_replay_after_pruning_when_the_key_was_reused(queue: Queue) -> None:
    """The idempotency key of a pruned job may since belong to a new job: the replay
    re-creates the job without the key rather than failing."""
    await register(queue, **ONE_SHOT)
    old = await queue.jobs.enqueue(job(idempotency_key="k"))
    [c] = await queue.jobs.claim("w", 1)
    await queue.jobs.fail("w", [failure(c, "permanent")])
    await sql_exec(queue, "DELETE FROM herald.jobs WHERE id = %s", [old.id])
    new = await queue.jobs.enqueue(job(idempotency_key="k"))
    assert new.created and new.id != old.id
    result = await queue.dead_letters.replay(DeadLetterFilter(job_ids=(old.id,)))
    assert result.job_ids == [old.id]
    [row] = await job_rows(queue, "id = %s", [old.id])
    assert (row["state"], row["idempotency_key"]) == ("queued", None)


async def test_replay_to_a_recreated_target_whose_key_is_taken(queue: Queue) -> None:
    """A deleted target's waiting jobs are dead-lettered; the target is recreated and the
    producer re-sends the same alert (same idempotency key) before the replay. The replay
    moves the dead job to the new target without its key rather than failing the batch."""
    await register(queue, "doomed")
    old = await queue.jobs.enqueue(job("doomed", idempotency_key="alert-1"))
    await queue.registry.delete("doomed")
    await register(queue, "doomed")
    resent = await queue.jobs.enqueue(job("doomed", idempotency_key="alert-1"))
    assert resent.created and resent.id != old.id
    result = await queue.dead_letters.replay(DeadLetterFilter(target="doomed"))
    assert result.job_ids == [old.id]
    [row] = await job_rows(queue, "id = %s", [old.id])
    assert (row["state"], row["idempotency_key"]) == ("queued", None)


async def test_replay_to_a_missing_target_is_skipped(queue: Queue) -> None:
    await register_all(queue)
    ids = await bury(queue, 6)
    assert (await queue.registry.delete("default/beta")).deleted
    dry = await queue.dead_letters.replay(DeadLetterFilter(), dry_run=True)
    assert (dry.matched, dry.replayed, dry.skipped) == (6, 4, 2)
    result = await queue.dead_letters.replay(DeadLetterFilter(), replayed_by="after-outage")
    assert (result.matched, result.replayed, result.skipped) == (6, 4, 2)
    beta = {ids[1], ids[4]}
    assert set(result.job_ids) == set(ids) - beta
    entries = await all_entries(queue, DeadLetterFilter(target="beta"))
    assert {(e.replayed, e.replay_result) for e in entries} == {(False, "target-missing")}, (
        "skipped, but still replayable later"
    )
    assert {r["state"] for r in await job_rows(queue, "id = ANY(%s)", [list(beta)])} <= {"dead"}, (
        "not requeued"
    )
    assert await queue.dead_letters.replay_counts("after-outage") == (4, 2)
    assert await queue.dead_letters.replay_counts("nobody") == (0, 0)
    # The same replay run again does not loop on what it skipped...
    again = await queue.dead_letters.replay(DeadLetterFilter(), replayed_by="after-outage")
    assert (again.matched, again.replayed, again.skipped) == (0, 0, 0)
    # ...and once the target exists again, a new replay puts them back.
    await register(queue, "beta")
    later = await queue.dead_letters.replay(DeadLetterFilter(), replayed_by="target-is-back")
    assert (later.replayed, later.skipped) == (2, 0) and set(later.job_ids) == beta


async def test_one_off_replays_retry_what_an_earlier_one_found_without_a_target(
    queue: Queue,
) -> None:
    """The API and the CLI tag each call apart: an entry skipped for a missing target by
    one call is replayed by the next once the target exists again."""
    await register_all(queue)
    ids = await bury(queue, 3)
    await queue.registry.delete("default/beta")
    first = await queue.dead_letters.replay(DeadLetterFilter(), replayed_by=one_off_tag("api"))
    assert (first.replayed, first.skipped) == (2, 1)
    await register(queue, "beta")
    dry = await queue.dead_letters.replay(DeadLetterFilter(), dry_run=True)
    assert (dry.matched, dry.replayed) == (1, 1)
    second = await queue.dead_letters.replay(DeadLetterFilter(), replayed_by=one_off_tag("api"))
    assert (second.replayed, second.skipped, second.job_ids) == (1, 0, [ids[1]])


async def test_replay_counts_by_replay_name(queue: Queue) -> None:
    await register_all(queue)
    ids = await bury(queue, 9)
    await queue.dead_letters.replay(DeadLetterFilter(job_ids=tuple(ids[:3])), replayed_by="a")
    await queue.dead_letters.replay(DeadLetterFilter(job_ids=tuple(ids[3:5])), replayed_by="b")
    await queue.dead_letters.replay(DeadLetterFilter(job_ids=tuple(ids[:5])), replayed_by="c")
    assert await queue.dead_letters.replay_counts("a") == (3, 0)
    assert await queue.dead_letters.replay_counts("b") == (2, 0)
    assert await queue.dead_letters.replay_counts("c") == (0, 0)


async def test_purge_by_age(queue: Queue) -> None:
    await register_all(queue)
    await bury(queue, 30)  # failed 1 .. 30 hours ago
    hours = 3600.0
    dry = await queue.dead_letters.purge(10.5 * hours, dry_run=True)
    assert (dry.matched, dry.deleted, dry.dry_run) == (20, 0, True)
    assert await sql_value(queue, "SELECT count(*) FROM herald.dead_letters") == 30
    by_target = await queue.dead_letters.purge(20.5 * hours, target="team/alpha")
    assert (by_target.matched, by_target.deleted) == (4, 4)  # 21, 24, 27 and 30 h ago
    real = await queue.dead_letters.purge(10.5 * hours, batch=4)
    assert (real.matched, real.deleted) == (16, 16)
    left = await sql_rows(
        queue, "SELECT extract(epoch FROM now() - failed_at) / 3600 AS h FROM herald.dead_letters"
    )
    assert len(left) == 10 and all(r["h"] < 10.5 for r in left)
    assert (await queue.dead_letters.purge(1000 * hours)).deleted == 0
    with pytest.raises(InvalidRequest):
        await queue.dead_letters.purge(-1)


async def test_stats_by_target_class_and_priority(queue: Queue) -> None:
    await register_all(queue)
    ids = await bury(queue, 12)
    await queue.dead_letters.replay(DeadLetterFilter(job_ids=(ids[0], ids[1])))
    stats = await queue.dead_letters.stats()
    assert (stats.total, stats.waiting, stats.replayed) == (12, 10, 2)
    assert stats.by_target == {"default/alpha": 3, "default/beta": 3, "team/alpha": 4}
    expected_class: dict[str, int] = {}
    expected_priority: dict[str, int] = {}
    for n in range(2, 12):
        cls = CLASSES[(n // 3) % 3]
        expected_class[cls] = expected_class.get(cls, 0) + 1
        prio = "high" if n % 2 == 0 else "low"
        expected_priority[prio] = expected_priority.get(prio, 0) + 1
    assert stats.by_error_class == expected_class
    assert stats.by_priority == expected_priority
    newest = await sql_value(
        queue, "SELECT max(failed_at) FROM herald.dead_letters d WHERE NOT replayed"
    )
    assert stats.newest_failed_at == newest
    shown = models.DeadLetterStats.from_record(stats).dump()["newestFailedAt"]
    assert shown == newest.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def test_deleting_a_target_dead_letters_its_waiting_jobs(queue: Queue) -> None:
    """registry.delete: the target becomes a tombstone at once (its name is free, nothing
    more is claimed for it), its waiting jobs go to the DLQ with reason target-deleted;
    deliveries in flight finish their attempt, and a retry of one is dead-lettered by the
    sweeper. Nothing is lost: the dead letters can be replayed to a recreated target."""
    old_id = await register(queue, "doomed", retry={"maxAttempts": 3})
    await register(queue, "kept")
    ids = [r.id for r in await queue.jobs.enqueue_many([job("doomed", {"i": i}) for i in range(6)])]
    kept = await queue.jobs.enqueue(job("kept"))
    claimed = {j.id: j for j in await queue.jobs.claim("w", 10)}
    # ids[0], ids[5] stay running; ids[1] retries, ids[2] is already dead; ids[3], ids[4]
    # are released (queued again).
    await queue.jobs.fail("w", [failure(claimed[ids[1]]), failure(claimed[ids[2]], "permanent")])
    await queue.jobs.release("w", [ids[3], ids[4], kept.id])

    result = await queue.registry.delete("doomed")
    assert (result.deleted, result.dead_lettered, result.running) == (True, 3, 2)
    with pytest.raises(TargetNotFound):
        await queue.registry.resolve("doomed")
    with pytest.raises(TargetNotFound):
        await queue.jobs.enqueue(job("doomed"))
    rows = {r["id"]: r for r in await job_rows(queue)}
    assert {i: rows[i]["state"] for i in ids} == {
        ids[0]: "running",
        ids[1]: "dead",
        ids[2]: "dead",
        ids[3]: "dead",
        ids[4]: "dead",
        ids[5]: "running",
    }
    assert {rows[i]["dead_reason"] for i in (ids[1], ids[3], ids[4])} == {"target-deleted"}
    assert rows[kept.id]["state"] == "queued", "other targets untouched"

    # In flight: one delivery succeeds, the other fails and would retry: the sweeper
    # dead-letters it instead (nothing is claimed for a deleted target meanwhile).
    assert (await queue.jobs.complete("w", [claimed[ids[0]]])).completed == [ids[0]]
    [o] = await queue.jobs.fail("w", [failure(claimed[ids[5]])])
    assert o.state is JobState.RETRYING
    await sql_exec(
        queue, "UPDATE herald.jobs SET run_at = now() - interval '1s' WHERE id = %s", [ids[5]]
    )
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [kept.id]
    assert await queue.registry.sweep_deleted() == 1
    assert await queue.registry.sweep_deleted() == 0

    entries = await all_entries(queue, DeadLetterFilter(target="doomed"))
    reasons = {e.job_id: e.reason for e in entries}
    assert reasons == {
        ids[1]: "target-deleted",
        ids[2]: "permanent-error",
        ids[3]: "target-deleted",
        ids[4]: "target-deleted",
        ids[5]: "target-deleted",
    }
    assert {e.target_name for e in entries} == {"doomed"}

    # Recreated (a new registration, the name being free), the target receives the
    # replayed jobs, under their old ids.
    new_id = await register(queue, "doomed")
    assert new_id != old_id
    replay = await queue.dead_letters.replay(DeadLetterFilter(target="doomed"))
    assert set(replay.job_ids) == {ids[1], ids[2], ids[3], ids[4], ids[5]}
    again = await queue.jobs.claim("w", 10)
    assert {j.id for j in again} == {ids[1], ids[2], ids[3], ids[4], ids[5]}
    assert {j.target_id for j in again} == {new_id}


async def test_cancel_waiting_jobs(queue: Queue) -> None:
    await register(queue)
    a, b, c = [
        r.id for r in await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(3)])
    ]
    [_, jb, _] = sorted(await queue.jobs.claim("w", 3), key=lambda j: j.id)
    await queue.jobs.fail("w", [failure(jb)])  # retrying
    await queue.jobs.release("w", [c])  # queued
    assert set(await queue.jobs.cancel([a, b, c, uuid.uuid4()], reason="operator said so")) == {
        b,
        c,
    }
    rows = {r["id"]: r for r in await job_rows(queue)}
    assert rows[a]["state"] == "running", "a running job is not cancelled"
    assert {(rows[i]["state"], rows[i]["dead_reason"]) for i in (b, c)} == {("dead", "cancelled")}
    entries = await all_entries(queue)
    assert {(e.reason, e.error) for e in entries} == {("cancelled", "operator said so")}
    assert {e.attempts for e in entries} == {0, 1}
    assert await queue.jobs.cancel([b]) == [], "already dead"


async def test_a_replay_leaves_cancelled_jobs_out_unless_named_by_id(queue: Queue) -> None:
    """A cancellation is the user's intent: a replay by filters or of everything (the
    store's, so the API's, the CLI's and a DeadLetterReplay's) leaves cancelled jobs out and
    counts them; naming one by dead-letter id or job id replays it."""
    await register(queue, **ONE_SHOT)
    a, b, c, d = [
        r.id for r in await queue.jobs.enqueue_many([job(payload={"i": i}) for i in range(4)])
    ]
    assert set(await queue.jobs.cancel([a, c, d])) == {a, c, d}
    [jb] = await queue.jobs.claim("w", 10)
    assert jb.id == b
    await queue.jobs.fail("w", [failure(jb, "permanent")])

    everything = DeadLetterFilter()
    dry = await queue.dead_letters.replay(everything, dry_run=True)
    assert (dry.matched, dry.cancelled_left_out) == (1, 3)
    result = await queue.dead_letters.replay(everything)
    assert (result.job_ids, result.cancelled_left_out) == ([b], 3)
    assert models.ReplayResult.from_record(result).dump()["cancelledLeftOut"] == 3
    by_filter = await queue.dead_letters.replay(DeadLetterFilter(target="hook"))
    assert (by_filter.matched, by_filter.cancelled_left_out) == (0, 3)
    rows = {r["id"]: r["state"] for r in await job_rows(queue)}
    assert rows == {a: "dead", b: "queued", c: "dead", d: "dead"}

    [entry_a] = await all_entries(queue, DeadLetterFilter(job_ids=(a,)))
    by_id = await queue.dead_letters.replay(DeadLetterFilter(ids=(entry_a.id,)))
    assert (by_id.job_ids, by_id.cancelled_left_out) == ([a], 0)
    by_job = await queue.dead_letters.replay(DeadLetterFilter(job_ids=(c,)))
    assert by_job.job_ids == [c]
    rows = {r["id"]: r["state"] for r in await job_rows(queue)}
    assert rows == {a: "queued", b: "queued", c: "queued", d: "dead"}
    left = await queue.dead_letters.replay(everything, dry_run=True)
    assert (left.matched, left.cancelled_left_out) == (0, 1)


async def test_a_replay_keeps_a_future_run_at(queue: Queue) -> None:
    """A job cancelled before its runAt keeps it when replayed (also after retention
    removed the job row): it waits for its time. A job that was attempted runs again now."""
    await register(queue, **ONE_SHOT)
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    scheduled = await queue.jobs.enqueue(job(payload={"when": "2030"}, run_at=later))
    pruned = await queue.jobs.enqueue(job(payload={"when": "2030, pruned"}, run_at=later))
    attempted = await queue.jobs.enqueue(job(payload={"when": "now"}))
    [c] = await queue.jobs.claim("w", 10)
    assert c.id == attempted.id
    await queue.jobs.fail("w", [failure(c, "permanent")])
    assert set(await queue.jobs.cancel([scheduled.id, pruned.id])) == {scheduled.id, pruned.id}
    [entry] = await all_entries(queue, DeadLetterFilter(job_ids=(scheduled.id,)))
    assert models.DeadLetter.from_record(entry).dump()["runAt"] == "2030-01-01T00:00:00Z"
    [failed_entry] = await all_entries(queue, DeadLetterFilter(job_ids=(attempted.id,)))
    assert models.DeadLetter.from_record(failed_entry).dump()["runAt"] is None
    assert await sql_exec(queue, "DELETE FROM herald.jobs WHERE id = %s", [pruned.id]) == 1

    ids = (scheduled.id, pruned.id, attempted.id)
    result = await queue.dead_letters.replay(DeadLetterFilter(job_ids=ids))
    assert set(result.job_ids) == set(ids)
    rows = {r["id"]: r for r in await job_rows(queue)}
    assert rows[scheduled.id]["run_at"] == later
    assert rows[pruned.id]["run_at"] == later
    assert rows[attempted.id]["run_at"] < later
    assert [j.id for j in await queue.jobs.claim("w", 10)] == [attempted.id]
