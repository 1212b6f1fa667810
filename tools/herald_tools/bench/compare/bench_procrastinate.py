"""Herald's queue benchmark (tools/herald_tools/bench/queue_bench.py), run on procrastinate
3.10.0.

    python bench_procrastinate.py [--quick] [--grid 10x1,50x1,...]

Prints one JSON object with the keys of `herald bench --json`. Uses procrastinate's
public API only: App with PsycopgConnector, a task's batch_defer_async (a batch) and
defer_async (one job), and App.run_worker_async (its worker loop: one fetch per job,
`concurrency` jobs in flight, LISTEN/NOTIFY wake-ups). See README.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from importlib.metadata import version
from typing import Any

import common
from procrastinate import App, PsycopgConnector

QUEUE = "bench"
TASK = "bench"
TABLES = ["procrastinate_jobs", "procrastinate_events", "procrastinate_workers"]
VACUUM = ["procrastinate_jobs", "procrastinate_events"]
# (worker concurrency, workers, delete_jobs): each worker is one App.run_worker_async in
# this process. Chosen from a wider one-off sweep (README.md): 10x1, 50x1, 5x2, 10x2, 25x2,
# 5x4, 10x4, 25x4 with delete_jobs=never, and 10x2, 10x4, 25x2 with delete_jobs=successful.
GRID = ((10, 2, "never"), (10, 4, "never"), (10, 4, "successful"))
# Herald drains 100,000 jobs per try; procrastinate drains about 500 jobs/s here, so that
# would be some 200 s a try and 20+ minutes for the search. The rate is a steady-state
# one (first completion to last), so the search uses 20,000 (--best-jobs to change).
BEST_JOBS = 20_000


def make_app(url: str, record: list[float] | None = None) -> App:
    # As Herald's bench queue: a pool of 2..16 connections.
    app = App(connector=PsycopgConnector(conninfo=url, min_size=2, max_size=16))

    @app.task(name=TASK, queue=QUEUE)
    async def bench(alert: dict[str, Any] | None = None, t0: int | None = None, i: int = 0):
        if record is not None and t0 is not None:
            record.append((time.monotonic_ns() - t0) / 1e6)

    return app


async def enqueue_batch(url: str, app: App, total: int, batch: int = 5000) -> float:
    await common.reset(url, TABLES, VACUUM)
    task = app.tasks[TASK]
    work = [[{"alert": common.SAMPLE}] * batch for _ in range(total // batch)]
    started = time.perf_counter()
    for chunk in work:
        await task.batch_defer_async(*chunk)
    return total / (time.perf_counter() - started)


async def enqueue_single(url: str, app: App, total: int, producers: int = 10) -> float:
    await common.reset(url, TABLES, VACUUM)
    task = app.tasks[TASK]
    per_producer = total // producers

    async def produce() -> None:
        for _ in range(per_producer):
            await task.defer_async(alert=common.SAMPLE)

    started = time.perf_counter()
    await asyncio.gather(*(produce() for _ in range(producers)))
    return per_producer * producers / (time.perf_counter() - started)


async def fill(url: str, app: App, total: int) -> None:
    await common.reset(url, TABLES, VACUUM)
    task = app.tasks[TASK]
    for start in range(0, total, 5000):
        await task.batch_defer_async(*[{"alert": common.SAMPLE}] * min(5000, total - start))
    await common.settle(url, VACUUM)


def count_completions(app: App, completions: common.Completions) -> None:
    """Instrumentation only: a job is complete when procrastinate's completion statement
    (JobManager.finish_job, called by the worker after the task returns) has returned.
    Wraps that public method on this app's instance; changes nothing."""
    manager = app.job_manager
    original = manager.finish_job

    async def finish_job(job: Any, status: Any, delete_job: bool) -> None:
        await original(job=job, status=status, delete_job=delete_job)
        completions.record(1)

    manager.finish_job = finish_job  # type: ignore[method-assign]


async def drain(
    url: str, app: App, total: int, *, concurrency: int, workers: int, delete_jobs: str = "never"
) -> float:
    """Jobs per second from the first completion to the last, no-op task: `workers`
    procrastinate workers (App.run_worker_async) in this process, each with `concurrency`."""
    await fill(url, app, total)
    completions = common.Completions(total)
    count_completions(app, completions)
    runs = [
        asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                name=f"bench-{i}",
                concurrency=concurrency,
                wait=True,
                install_signal_handlers=False,
                delete_jobs=delete_jobs,
            )
        )
        for i in range(workers)
    ]
    try:
        finished = asyncio.create_task(completions.finished.wait())
        done, _ = await asyncio.wait([finished, *runs], return_when=asyncio.FIRST_COMPLETED)
        if finished not in done:
            for task in done:
                task.result()
            raise RuntimeError("a worker stopped early")
    finally:
        for task in runs:
            task.cancel()  # procrastinate stops the worker gracefully on cancellation
        await asyncio.gather(*runs, return_exceptions=True)
        app.job_manager.__dict__.pop("finish_job", None)
    return completions.rate()


# -- latency ---------------------------------------------------------------------------


async def latency_consumer(url: str, concurrency: int) -> None:
    """A separate process: procrastinate's own worker (App.run_worker_async, woken by its
    LISTEN/NOTIFY); the task records now - t0 as it starts."""
    latencies: list[float] = []
    app = make_app(url, latencies)
    expected = common.ExpectedCount()
    await expected.start()
    async with app.open_async():
        run = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE], concurrency=concurrency, wait=True, install_signal_handlers=False
            )
        )
        # Ready once the worker is idle and a job deferred now is run well before the
        # 5 s polling fallback, that is, through its LISTEN/NOTIFY wake-up.
        await asyncio.sleep(1.0)
        while True:
            before = len(latencies)
            await app.tasks[TASK].defer_async(t0=time.monotonic_ns(), i=-1)
            deadline = time.monotonic() + 0.5
            while len(latencies) == before and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if len(latencies) > before:
                break
            if run.done():
                run.result()
        latencies.clear()
        print("ready", flush=True)
        while expected.value is None or len(latencies) < expected.value:
            if run.done():
                run.result()
                raise RuntimeError("worker stopped")
            await asyncio.sleep(0.05)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    print(json.dumps(latencies), flush=True)


async def latency(
    url: str, app: App, *, rate: float, seconds: float, concurrency: int
) -> dict[str, float]:
    await common.reset(url, TABLES, VACUUM)
    task = app.tasks[TASK]

    async def enqueue(payload: dict[str, Any]) -> None:
        await task.defer_async(**payload)

    argv = [sys.executable, __file__, "--latency-consumer", url, "--concurrency", str(concurrency)]
    return await common.latency_producer(argv, enqueue, rate=rate, seconds=seconds)


# -- the run ---------------------------------------------------------------------------


PHASES = ("batch", "single", "c1", "best", "latency")


async def run(
    url: str,
    *,
    quick: bool,
    grid: tuple[tuple[int, int, str], ...],
    best_jobs: int,
    phases: tuple[str, ...],
    latency_concurrency: int,
) -> dict[str, Any]:
    progress = common.progress
    scale = 4 if quick else 1
    app = make_app(url)
    results: dict[str, Any] = {
        "library": "procrastinate",
        "library_version": version("procrastinate"),
    }
    async with app.open_async():
        await app.schema_manager.apply_schema_async()

        if "batch" in phases:
            progress("batch enqueue")
            runs = [await enqueue_batch(url, app, 200_000 // scale) for _ in range(3)]
            progress(f"  {[round(r) for r in runs]}")
            results["enqueue_batch_per_s"] = round(common.median(runs))

        if "single" in phases:
            progress("single enqueue, 10 concurrent producers")
            runs = [await enqueue_single(url, app, 20_000 // scale) for _ in range(3)]
            progress(f"  {[round(r) for r in runs]}")
            results["enqueue_single_c10_per_s"] = round(common.median(runs))

        if "c1" in phases:
            progress("drain at concurrency 1 (one worker, concurrency=1)")
            runs = [
                await drain(url, app, 4_000 // scale, concurrency=1, workers=1) for _ in range(3)
            ]
            progress(f"  {[round(r) for r in runs]}")
            results["drain_c1_per_s"] = round(common.median(runs))

        if "best" in phases:
            progress("drain, searching the best setting")
            best: tuple[float, dict[str, Any]] = (0.0, {})
            tried = []
            for concurrency, workers, delete_jobs in grid:
                rates = [
                    await drain(
                        url,
                        app,
                        best_jobs // scale,
                        concurrency=concurrency,
                        workers=workers,
                        delete_jobs=delete_jobs,
                    )
                    for _ in range(2)
                ]
                rate = common.median(rates)
                setting = {
                    "concurrency": concurrency,
                    "workers": workers,
                    "delete_jobs": delete_jobs,
                }
                tried.append({**setting, "per_s": round(rate)})
                progress(
                    f"  concurrency {concurrency}, {workers} workers, delete_jobs={delete_jobs}: "
                    f"{rate:,.0f} jobs/s"
                )
                if rate > best[0]:
                    best = (rate, setting)
            results["drain_best_per_s"] = round(best[0])
            results["drain_best_setting"] = best[1]
            results["drain_settings_tried"] = tried
            results["drain_best_jobs"] = best_jobs // scale

        if "latency" in phases:
            progress("enqueue-to-task latency at 200 jobs/s")
            lat = await latency(
                url,
                app,
                rate=200,
                seconds=5 if quick else 15,
                concurrency=latency_concurrency,
            )
            common.summary(results, lat)
            results["latency_setting"] = {"concurrency": latency_concurrency}
    return results


def parse_grid(text: str) -> tuple[tuple[int, int, str], ...]:
    """10x2,10x4:successful -> ((10, 2, "never"), (10, 4, "successful"))."""
    grid = []
    for item in text.split(","):
        sizes, _, delete_jobs = item.partition(":")
        concurrency, workers = (int(x) for x in sizes.split("x"))
        grid.append((concurrency, workers, delete_jobs or "never"))
    return tuple(grid)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="runs a quarter the size")
    parser.add_argument("--grid", type=parse_grid, default=GRID, help="e.g. 10x2,10x4:successful")
    parser.add_argument("--best-jobs", type=int, default=BEST_JOBS, help="jobs per best-drain try")
    parser.add_argument(
        "--only", type=lambda t: tuple(t.split(",")), default=PHASES, help="e.g. c1,latency"
    )
    parser.add_argument(
        "--latency-concurrency", type=int, default=10, help="the latency worker's concurrency"
    )
    parser.add_argument("--latency-consumer", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latency_consumer:
        await latency_consumer(args.latency_consumer, args.concurrency)
        return
    started = time.monotonic()
    async with common.scratch_database("procrastinate_bench") as url:
        environment = await common.describe_server(url)
        common.progress(
            f"PostgreSQL {environment['postgresql']['server_version']}, "
            f"synchronous_commit={environment['postgresql']['synchronous_commit']}"
        )
        results = await run(
            url,
            quick=args.quick,
            grid=args.grid,
            best_jobs=args.best_jobs,
            phases=args.only,
            latency_concurrency=args.latency_concurrency,
        )
    results["environment"] = environment
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
