"""Herald's queue benchmark (tools/herald_tools/bench/queue_bench.py), run on pgqueuer 1.6.0.

    python bench_pgqueuer.py [--quick] [--grid 50x1,100x2,...]

Prints one JSON object with the keys of `herald bench --json`. Uses pgqueuer's public
API only: Queries.enqueue (lists for a batch, scalars for one job) over asyncpg (the
driver its README shows), and QueueManager (its worker loop: dequeue batches, dispatch
to the entrypoint, buffered completion, LISTEN/NOTIFY wake-ups). See README.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import asyncpg
import common
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Job, Queries, QueueManager
from pgqueuer.domain.errors import FailingListenerError

ENTRYPOINT = "bench"
PAYLOAD = common.SAMPLE_JSON.encode()
TABLES = ["pgqueuer", "pgqueuer_log", "pgqueuer_statistics"]
VACUUM = ["pgqueuer"]
# Herald's grid: (batch, claimers) -> (QueueManager batch_size, QueueManagers).
GRID = ((50, 1), (100, 2), (200, 2), (500, 1), (200, 4), (500, 2))


async def open_pool(url: str) -> asyncpg.Pool:
    # As Herald's bench queue: a pool of 2..16 connections.
    return await asyncpg.create_pool(url, min_size=2, max_size=16)


async def enqueue_batch(url: str, queries: Queries, total: int, batch: int = 5000) -> float:
    await common.reset(url, TABLES, VACUUM)
    work = [([ENTRYPOINT] * batch, [PAYLOAD] * batch, [0] * batch) for _ in range(total // batch)]
    started = time.perf_counter()
    for entrypoints, payloads, priorities in work:
        await queries.enqueue(entrypoints, payloads, priorities)
    return total / (time.perf_counter() - started)


async def enqueue_single(url: str, queries: Queries, total: int, producers: int = 10) -> float:
    await common.reset(url, TABLES, VACUUM)
    per_producer = total // producers

    async def produce() -> None:
        for _ in range(per_producer):
            await queries.enqueue(ENTRYPOINT, PAYLOAD)

    started = time.perf_counter()
    await asyncio.gather(*(produce() for _ in range(producers)))
    return per_producer * producers / (time.perf_counter() - started)


async def fill(url: str, queries: Queries, total: int) -> None:
    await common.reset(url, TABLES, VACUUM)
    for start in range(0, total, 5000):
        n = min(5000, total - start)
        await queries.enqueue([ENTRYPOINT] * n, [PAYLOAD] * n, [0] * n)
    await common.settle(url, VACUUM)


def consumer_manager(conn: asyncpg.Connection, *, concurrency_limit: int = 0) -> QueueManager:
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint(ENTRYPOINT, concurrency_limit=concurrency_limit)
    async def handler(job: Job) -> None:
        return None

    return qm


def count_completions(qm: QueueManager, completions: common.Completions) -> None:
    """Instrumentation only: a job is complete when pgqueuer's completion statement
    (Queries.log_jobs, which moves it from the queue to the log, fed by the worker's
    buffer) has returned. Wraps that public method on this instance; changes nothing."""
    queries = qm.queries
    original = queries.log_jobs

    async def log_jobs(job_status: list[Any]) -> None:
        await original(job_status)
        completions.record(sum(1 for _, status, _ in job_status if status == "successful"))

    queries.log_jobs = log_jobs  # type: ignore[method-assign]


async def drain(
    url: str,
    queries: Queries,
    total: int,
    *,
    batch: int,
    consumers: int,
    concurrency_limit: int = 0,
    max_concurrent_tasks: int | None = None,
) -> float:
    """Jobs per second from the first completion to the last, no-op handler. Each consumer
    is a QueueManager on its own connection (as pgqueuer's README sets one up)."""
    await fill(url, queries, total)
    completions = common.Completions(total)
    conns = [await asyncpg.connect(url) for _ in range(consumers)]
    managers = [consumer_manager(c, concurrency_limit=concurrency_limit) for c in conns]
    for qm in managers:
        count_completions(qm, completions)
    runs = [
        asyncio.create_task(qm.run(batch_size=batch, max_concurrent_tasks=max_concurrent_tasks))
        for qm in managers
    ]
    try:
        finished = asyncio.create_task(completions.finished.wait())
        done, _ = await asyncio.wait([finished, *runs], return_when=asyncio.FIRST_COMPLETED)
        if finished not in done:
            for task in done:
                task.result()  # a manager died: raise its error
            raise RuntimeError("a queue manager stopped early")
    finally:
        for qm in managers:
            qm.shutdown.set()
        await asyncio.gather(*runs, return_exceptions=True)
        for c in conns:
            await c.close()
    return completions.rate()


# -- latency ---------------------------------------------------------------------------


async def latency_consumer(url: str) -> None:
    """A separate process: pgqueuer's own worker loop (QueueManager.run, woken by its
    LISTEN/NOTIFY), batch_size 10 as Herald's latency consumer claims up to 10; the
    handler records now - t0 as it starts."""
    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    latencies: list[float] = []

    @qm.entrypoint(ENTRYPOINT)
    async def handler(job: Job) -> None:
        now = time.monotonic_ns()
        assert job.payload is not None
        latencies.append((now - json.loads(job.payload)["t0"]) / 1e6)

    expected = common.ExpectedCount()
    await expected.start()
    run = asyncio.create_task(qm.run(batch_size=10))
    while True:  # ready once a NOTIFY round trip through the manager's listener works
        try:
            await qm.listener_healthy(timeout=timedelta(seconds=1))
            break
        except FailingListenerError:
            if run.done():
                run.result()
    print("ready", flush=True)
    while expected.value is None or len(latencies) < expected.value:
        if run.done():
            run.result()
            raise RuntimeError("queue manager stopped")
        await asyncio.sleep(0.05)
    qm.shutdown.set()
    await run
    await conn.close()
    print(json.dumps(latencies), flush=True)


async def latency(url: str, queries: Queries, *, rate: float, seconds: float) -> dict[str, float]:
    await common.reset(url, TABLES, VACUUM)

    async def enqueue(payload: dict[str, Any]) -> None:
        await queries.enqueue(ENTRYPOINT, common.encode(payload).encode())

    argv = [sys.executable, __file__, "--latency-consumer", url]
    return await common.latency_producer(argv, enqueue, rate=rate, seconds=seconds)


# -- the run ---------------------------------------------------------------------------


PHASES = ("batch", "single", "c1", "best", "latency")


async def run(
    url: str, *, quick: bool, grid: tuple[tuple[int, int], ...], phases: tuple[str, ...]
) -> dict[str, Any]:
    progress = common.progress
    scale = 4 if quick else 1
    pool = await open_pool(url)
    setup = await asyncpg.connect(url)
    try:
        await Queries(AsyncpgDriver(setup)).install()
    finally:
        await setup.close()
    queries = Queries(AsyncpgPoolDriver(pool))
    results: dict[str, Any] = {"library": "pgqueuer", "library_version": version("pgqueuer")}
    try:
        if "batch" in phases:
            progress("batch enqueue")
            runs = [await enqueue_batch(url, queries, 200_000 // scale) for _ in range(3)]
            progress(f"  {[round(r) for r in runs]}")
            results["enqueue_batch_per_s"] = round(common.median(runs))

        if "single" in phases:
            progress("single enqueue, 10 concurrent producers")
            runs = [await enqueue_single(url, queries, 20_000 // scale) for _ in range(3)]
            progress(f"  {[round(r) for r in runs]}")
            results["enqueue_single_c10_per_s"] = round(common.median(runs))

        if "c1" in phases:
            progress("drain at concurrency 1 (entrypoint concurrency_limit=1, batch_size 1)")
            runs = [
                await drain(url, queries, 4_000 // scale, batch=1, consumers=1, concurrency_limit=1)
                for _ in range(3)
            ]
            progress(f"  {[round(r) for r in runs]}")
            results["drain_c1_per_s"] = round(common.median(runs))

            # Not one of Herald's keys: the nearest looser setting, batch_size 1 with the
            # smallest global cap pgqueuer accepts (max_concurrent_tasks >= 2 * batch_size),
            # so up to 2 jobs in flight, and no wait for a completion before the next claim.
            progress("drain at batch_size 1, max_concurrent_tasks 2 (extra)")
            runs = [
                await drain(
                    url, queries, 4_000 // scale, batch=1, consumers=1, max_concurrent_tasks=2
                )
                for _ in range(3)
            ]
            progress(f"  {[round(r) for r in runs]}")
            results["drain_b1_cap2_per_s"] = round(common.median(runs))

        if "best" in phases:
            progress("drain, searching the best setting")
            best: tuple[float, dict[str, int]] = (0.0, {})
            tried = []
            for batch, consumers in grid:
                rates = [
                    await drain(url, queries, 100_000 // scale, batch=batch, consumers=consumers)
                    for _ in range(2)
                ]
                rate = common.median(rates)
                setting = {"batch_size": batch, "queue_managers": consumers}
                tried.append({**setting, "per_s": round(rate)})
                progress(f"  batch_size {batch}, {consumers} queue managers: {rate:,.0f} jobs/s")
                if rate > best[0]:
                    best = (rate, setting)
            results["drain_best_per_s"] = round(best[0])
            results["drain_best_setting"] = best[1]
            results["drain_settings_tried"] = tried

        if "latency" in phases:
            progress("enqueue-to-handler latency at 200 jobs/s")
            lat = await latency(url, queries, rate=200, seconds=5 if quick else 15)
            common.summary(results, lat)
        return results
    finally:
        await pool.close()


def parse_grid(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(x) for x in item.split("x")) for item in text.split(","))  # type: ignore[misc]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="runs a quarter the size")
    parser.add_argument("--grid", type=parse_grid, default=GRID, help="e.g. 50x1,100x2")
    parser.add_argument(
        "--only", type=lambda t: tuple(t.split(",")), default=PHASES, help="e.g. c1,latency"
    )
    parser.add_argument("--latency-consumer", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latency_consumer:
        await latency_consumer(args.latency_consumer)
        return
    started = time.monotonic()
    async with common.scratch_database("pgqueuer_bench") as url:
        environment = await common.describe_server(url)
        common.progress(
            f"PostgreSQL {environment['postgresql']['server_version']}, "
            f"synchronous_commit={environment['postgresql']['synchronous_commit']}"
        )
        results = await run(url, quick=args.quick, grid=args.grid, phases=args.only)
    results["environment"] = environment
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
