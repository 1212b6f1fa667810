"""Retention is a contract: the worker's cleaner (Maintenance.clean_once), run at explicit
times, removes finished jobs after HERALD_JOB_RETENTION, dead letters after
HERALD_DEAD_LETTER_RETENTION, and tombstones of deleted targets a day after the job
retention once none of their jobs is unfinished; nothing else, and nothing early.

The rows come from real traffic (a worker delivering to a real receiver over HTTP, the
API's cancel, the registry's delete); only the clock of the cleaner is chosen."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from herald_queue.settings import QueueSettings
from herald_tools.receiver import Answer, Receiver
from herald_worker.maintenance import TOMBSTONE_MARGIN
from tests.helpers import sql_exec, sql_rows, sql_value
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    Worker,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

JOB_RETENTION = 3600.0
DEAD_LETTER_RETENTION = 7200.0
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture()
async def rx() -> AsyncIterator[TrackingReceiver]:
    def script(receiver: Receiver, request: Any, body: bytes) -> Answer:
        return Answer(400, body="no") if request.query.get("reject") else Answer()

    async with TrackingReceiver(script) as receiver:
        yield receiver


@pytest.fixture()
async def w(db_url: str, tmp_path: Path, rx: TrackingReceiver) -> AsyncIterator[Worker]:
    policy = {"retry": {"maxAttempts": 1, **FAST_RETRY}, "circuitBreaker": NO_BREAKER}
    docs = [
        target_doc("ok", rx.url, **policy),
        target_doc("reject", rx.url + "?reject=1", **policy),
        target_doc("held", rx.url, paused=True, **policy),
        target_doc("gone", rx.url, paused=True, **policy),
        target_doc("busy", rx.url, paused=True, **policy),
    ]
    settings = QueueSettings(
        job_retention=JOB_RETENTION, dead_letter_retention=DEAD_LETTER_RETENTION
    )
    async with worker(
        db_url, write_manifests(tmp_path / "t.yaml", docs), queue_settings=settings
    ) as running:
        yield running


async def snapshot(w: Worker) -> dict[str, set[Any]]:
    jobs = await sql_rows(w.queue, "SELECT id, state FROM herald.jobs")
    letters = await sql_rows(w.queue, "SELECT id FROM herald.dead_letters")
    targets = await sql_rows(
        w.queue, "SELECT name, deleted_at IS NOT NULL AS t FROM herald.targets"
    )
    return {
        "jobs": {(r["id"], r["state"]) for r in jobs},
        "dead_letters": {r["id"] for r in letters},
        "targets": {(r["name"], r["t"]) for r in targets},
    }


async def test_the_cleaner_removes_what_is_due_and_nothing_else(w: Worker) -> None:
    succeeded = (await w.submit("ok", {"n": 1}))["id"]
    rejected = (await w.submit("reject", {"n": 2}))["id"]
    await wait_state(w.queue, "succeeded", 1, target="ok")
    await wait_state(w.queue, "dead", 1, target="reject")
    waiting = (await w.submit("held", {"n": 3}))["id"]
    cancelled = (await w.submit("held", {"n": 4}))["id"]
    status, _ = await w.delete(f"/v1/jobs/{cancelled}")
    assert status == 200
    buried = (await w.submit("gone", {"n": 5}))["id"]
    assert (await w.queue.registry.delete("default/gone")).dead_lettered == 1
    # A delivery still in flight on another worker when its target is deleted.
    in_flight = (await w.submit("busy", {"n": 6}))["id"]
    await sql_exec(
        w.queue,
        "UPDATE herald.jobs SET state = 'running', attempts = 1, leased_by = 'elsewhere', "
        "started_at = now(), lease_expires_at = now() + interval '10 days' WHERE id = %(id)s",
        {"id": in_flight},
    )
    assert (await w.queue.registry.delete("default/busy")).running == 1

    start = await snapshot(w)
    assert {s for _, s in start["jobs"]} == {"succeeded", "dead", "queued", "running"}
    assert len(start["dead_letters"]) == 3  # rejected, cancelled, buried
    first = await sql_value(
        w.queue,
        "SELECT least((SELECT min(finished_at) FROM herald.jobs), "
        "(SELECT min(failed_at) FROM herald.dead_letters), "
        "(SELECT min(deleted_at) FROM herald.targets))",
    )
    last = await sql_value(
        w.queue,
        "SELECT greatest((SELECT max(finished_at) FROM herald.jobs), "
        "(SELECT max(failed_at) FROM herald.dead_letters), "
        "(SELECT max(deleted_at) FROM herald.targets))",
    )
    clean = w.running.maintenance.clean_once
    job_retention = dt.timedelta(seconds=JOB_RETENTION)
    letter_retention = dt.timedelta(seconds=DEAD_LETTER_RETENTION)
    tombstone = job_retention + dt.timedelta(seconds=TOMBSTONE_MARGIN)

    # Just before anything is due: nothing goes.
    await clean(now=first + job_retention - MINUTE)
    assert await snapshot(w) == start

    # After the job retention: the finished jobs (succeeded, dead, cancelled, buried) go;
    # waiting and running jobs, every dead letter and every target stay.
    await clean(now=last + job_retention + MINUTE)
    after_jobs = await snapshot(w)
    finished = {succeeded, rejected, cancelled, buried}
    assert after_jobs["jobs"] == {(i, s) for i, s in start["jobs"] if str(i) not in finished}
    assert {str(i) for i, _ in after_jobs["jobs"]} == {waiting, in_flight}
    assert after_jobs["dead_letters"] == start["dead_letters"]
    assert after_jobs["targets"] == start["targets"]

    # Just before the dead-letter retention: the letters stay.
    await clean(now=first + letter_retention - MINUTE)
    assert await snapshot(w) == after_jobs

    # After it: the dead letters go, the rest stays.
    await clean(now=last + letter_retention + MINUTE)
    after_letters = await snapshot(w)
    assert after_letters["dead_letters"] == set()
    assert after_letters["jobs"] == after_jobs["jobs"]
    assert after_letters["targets"] == start["targets"]

    # Tombstones: not before their time.
    await clean(now=first + tombstone - MINUTE)
    assert await snapshot(w) == after_letters

    # After it: the tombstone of "gone" goes; that of "busy" stays while its delivery is
    # unfinished; live targets and unfinished jobs stay.
    await clean(now=last + tombstone + MINUTE)
    final = await snapshot(w)
    assert final["targets"] == start["targets"] - {("gone", True)}
    assert ("busy", True) in final["targets"]
    assert final["jobs"] == after_jobs["jobs"]

    # Once that delivery has finished and its row aged out, "busy" goes too.
    await sql_exec(
        w.queue,
        "UPDATE herald.jobs SET state = 'succeeded', leased_by = NULL, lease_expires_at = NULL, "
        "finished_at = now() WHERE id = %(id)s",
        {"id": in_flight},
    )
    finished_at = await sql_value(
        w.queue, "SELECT finished_at FROM herald.jobs WHERE id = %(id)s", {"id": in_flight}
    )
    await clean(now=finished_at + tombstone + MINUTE)
    done = await snapshot(w)
    assert ("busy", True) not in done["targets"]
    assert {str(i) for i, _ in done["jobs"]} == {waiting}
    assert {n for n, _ in done["targets"]} == {"ok", "reject", "held"}
