"""The queue benchmark's phases, run small against the test database: each one does the
work it reports on (every job enqueued, every job drained exactly once). The figures
themselves are never asserted; `herald bench` reports them."""

from __future__ import annotations

from herald_bench import queue_bench
from herald_queue.queue import Queue
from tests.helpers import sql_value

COUNT_BY_STATE = "SELECT count(*) FROM herald.jobs WHERE state = %s"


async def test_enqueue_phases_store_every_job(queue: Queue) -> None:
    await queue_bench.register_target(queue)
    assert await queue_bench.enqueue_batch(queue, 2_000, batch=500) > 0
    assert await sql_value(queue, COUNT_BY_STATE, ("queued",)) == 2_000
    assert await queue_bench.enqueue_single(queue, 200) > 0
    assert await sql_value(queue, COUNT_BY_STATE, ("queued",)) == 200


async def test_drain_completes_every_job_once(queue: Queue) -> None:
    await queue_bench.register_target(queue)
    assert await queue_bench.drain(queue, 1_000, batch=50, claimers=2) > 0
    assert await sql_value(queue, COUNT_BY_STATE, ("succeeded",)) == 1_000
    assert await sql_value(queue, "SELECT max(attempts) FROM herald.jobs") == 1


async def test_latency_sees_every_job_and_the_floor_cleans_up(db_url: str, queue: Queue) -> None:
    await queue_bench.register_target(queue)
    lat = await queue_bench.latency(db_url, queue, rate=200, seconds=0.5)
    assert lat["jobs"] == 100
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert await sql_value(queue, COUNT_BY_STATE, ("succeeded",)) == 100
    floor = await queue_bench.commit_floor(queue, 20)
    assert 0 < floor["p50"] <= floor["p99"]
    assert await sql_value(queue, "SELECT to_regclass('herald_bench_commit_probe')") is None
