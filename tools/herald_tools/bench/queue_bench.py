"""The queue benchmark: batch and concurrent single enqueue, drain with a no-op handler
(claim + complete) at concurrency 1 and at the best setting tried, and enqueue-to-claim
latency at a steady rate, woken by LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from herald_core.states import Priority
from herald_model.submission import JobRequest, encode_payload
from herald_model.target_spec import parse_target
from herald_queue import settings as qsettings
from herald_queue.queue import Queue
from herald_queue.records import ClaimedJob
from herald_tools.bench.shared import SAMPLE

TARGET = "bench"
SAMPLE_JSON = encode_payload(SAMPLE, max_bytes=1 << 20)


def requests(n: int, priority: Priority = Priority.MEDIUM) -> list[JobRequest]:
    return [
        JobRequest(target=TARGET, payload_json=SAMPLE_JSON, priority=priority) for _ in range(n)
    ]


async def open_queue(url: str, pool_max: int = 16) -> Queue:
    return await Queue.open(
        qsettings.DatabaseSettings(pool_min=2, pool_max=pool_max),
        qsettings.QueueSettings(),
        url=url,
    )


async def register_target(queue: Queue) -> None:
    await queue.registry.apply(
        parse_target(
            {
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "PublishingTarget",
                "metadata": {"name": TARGET, "namespace": "default"},
                "spec": {"type": "webhook", "url": "http://127.0.0.1:9/bench"},
            }
        )
    )


async def reset(queue: Queue) -> None:
    """Empty tables, fresh statistics, and a checkpoint, so that one phase's writes do not
    trigger a checkpoint in the middle of the next one."""
    async with queue.pool.connection() as conn:
        await conn.execute("TRUNCATE herald.jobs, herald.dead_letters")
        await conn.execute("VACUUM ANALYZE herald.jobs")
        await conn.execute("CHECKPOINT")


async def enqueue_batch(queue: Queue, total: int, batch: int = 5000) -> float:
    await reset(queue)
    work = [requests(batch) for _ in range(total // batch)]
    started = time.perf_counter()
    for chunk in work:
        await queue.jobs.enqueue_many(chunk)
    return total / (time.perf_counter() - started)


async def enqueue_single(queue: Queue, total: int, producers: int = 10) -> float:
    await reset(queue)
    per_producer = total // producers
    one = requests(1)[0]

    async def produce() -> None:
        for _ in range(per_producer):
            await queue.jobs.enqueue(one)

    started = time.perf_counter()
    await asyncio.gather(*(produce() for _ in range(producers)))
    return per_producer * producers / (time.perf_counter() - started)


async def fill(queue: Queue, total: int) -> None:
    await reset(queue)
    for start in range(0, total, 5000):
        await queue.jobs.enqueue_many(requests(min(5000, total - start)))
    async with queue.pool.connection() as conn:
        await conn.execute("VACUUM ANALYZE herald.jobs")
        await conn.execute("CHECKPOINT")


async def drain(queue: Queue, total: int, *, batch: int, claimers: int) -> float:
    """Jobs per second from the first completion to the last, no-op handler: each claimer
    is a sequential consumer on its own connection, completing what it holds and claiming
    more in one statement per step (JobStore.consumer)."""
    await fill(queue, total)
    done = 0
    first: float | None = None
    first_count = 0
    last = 0.0

    async def claimer(index: int) -> None:
        nonlocal done, first, first_count, last
        worker = f"bench-{index}"
        held: list[ClaimedJob] = []
        async with queue.jobs.consumer(worker) as consumer:
            while True:
                completed = len(held)
                held = await consumer.step(held, batch)
                if completed:
                    last = time.perf_counter()
                    done += completed
                    if first is None:
                        first, first_count = last, completed
                if not held and done >= total:
                    return
                if not held:
                    await asyncio.sleep(0)

    await asyncio.gather(*(claimer(i) for i in range(claimers)))
    assert first is not None
    return (done - first_count) / max(last - first, 1e-9)


async def latency(url: str, queue: Queue, *, rate: float, seconds: float) -> dict[str, float]:
    """Enqueue at a steady ``rate`` (single enqueues) while a consumer process, woken by
    LISTEN/NOTIFY, claims; latency is enqueue call start to claim return (CLOCK_MONOTONIC,
    shared by both processes)."""
    await reset(queue)
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_tools.bench.latency_consumer",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert consumer.stdout is not None and consumer.stdin is not None
    ready = await asyncio.wait_for(consumer.stdout.readline(), 30)
    if ready.strip() != b"ready":
        raise RuntimeError(f"latency consumer did not start: {ready!r}")
    count = int(rate * seconds)
    interval = 1.0 / rate
    start = time.monotonic()
    for i in range(count):
        target_time = start + i * interval
        delay = target_time - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        payload = encode_payload({"t0": time.monotonic_ns(), "i": i}, max_bytes=1 << 20)
        await queue.jobs.enqueue(JobRequest(target=TARGET, payload_json=payload))
    consumer.stdin.write(f"{count}\n".encode())
    await consumer.stdin.drain()
    out, _ = await asyncio.wait_for(consumer.communicate(), 60)
    samples = sorted(json.loads(out))
    if len(samples) != count:
        raise RuntimeError(f"latency consumer saw {len(samples)} of {count} jobs")
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": samples[-1], "jobs": count}


async def commit_floor(queue: Queue, count: int, *, rate: float = 200) -> dict[str, float]:
    """The server's floor for one durable commit, as the latency phase sees it: one-row
    autocommitted INSERTs into a scratch table, paced at ``rate``, timed call to return.
    Enqueue-to-claim spans two such commits (the enqueue's and the claim's)."""
    async with queue.pool.connection() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS herald_bench_commit_probe (n integer)")
        samples = []
        try:
            for i in range(count):
                await asyncio.sleep(1.0 / rate)
                started = time.perf_counter()
                await conn.execute("INSERT INTO herald_bench_commit_probe VALUES (%s)", (i,))
                samples.append((time.perf_counter() - started) * 1000)
        finally:
            await conn.execute("DROP TABLE herald_bench_commit_probe")
    q = statistics.quantiles(sorted(samples), n=100, method="inclusive")
    return {"p50": q[49], "p99": q[98]}


async def run(url: str, *, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    queue = await open_queue(url)
    try:
        await register_target(queue)
        scale = 4 if quick else 1
        results: dict[str, Any] = {}

        progress("batch enqueue")
        runs = [await enqueue_batch(queue, 200_000 // scale) for _ in range(3)]
        results["enqueue_batch_per_s"] = round(statistics.median(runs))

        progress("single enqueue, 10 concurrent producers")
        runs = [await enqueue_single(queue, 20_000 // scale) for _ in range(3)]
        results["enqueue_single_c10_per_s"] = round(statistics.median(runs))

        progress("drain at concurrency 1")
        runs = [await drain(queue, 4_000 // scale, batch=1, claimers=1) for _ in range(3)]
        results["drain_c1_per_s"] = round(statistics.median(runs))

        progress("drain, searching the best setting")
        best: tuple[float, dict[str, int]] = (0.0, {})
        for batch, claimers in ((50, 1), (100, 2), (200, 2), (500, 1), (200, 4), (500, 2)):
            rate = statistics.median(
                [
                    await drain(queue, 100_000 // scale, batch=batch, claimers=claimers)
                    for _ in range(2)
                ]
            )
            progress(f"  batch {batch}, {claimers} claimers: {rate:,.0f} jobs/s")
            if rate > best[0]:
                best = (rate, {"batch": batch, "claimers": claimers})
        results["drain_best_per_s"] = round(best[0])
        results["drain_best_setting"] = best[1]

        progress("enqueue-to-claim latency at 200 jobs/s")
        lat = await latency(url, queue, rate=200, seconds=5 if quick else 15)
        results["latency_p50_ms"] = round(lat["p50"], 3)
        results["latency_p95_ms"] = round(lat["p95"], 3)
        results["latency_p99_ms"] = round(lat["p99"], 3)
        results["latency_max_ms"] = round(lat["max"], 3)
        results["latency_jobs"] = lat["jobs"]

        progress("floor: one durable commit, paced as the latency phase")
        floor = await commit_floor(queue, 1000 if quick else 3000)
        results["commit_p50_ms"] = round(floor["p50"], 3)
        results["commit_p99_ms"] = round(floor["p99"], 3)
        return results
    finally:
        await queue.close()
