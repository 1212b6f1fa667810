"""The soak benchmark (``herald bench --soak DURATION``): steady load for a long time, to see
whether Herald's tables stay the same size (dead rows vacuumed as fast as they are made),
whether its latency holds and whether a worker's memory stays flat.

Real ``herald worker`` processes deliver signed webhooks to the delivery benchmark's
receiver (:mod:`herald_tools.bench.sink`) while a producer enqueues one job at a time at a
paced rate: half the maximum delivery rate, measured first with the delivery benchmark's
own drain (:meth:`Bench.throughput <herald_tools.bench.deliver_bench.Bench.throughput>`),
unless ``--rate`` gives it. Every interval (60 s; 10 s with ``--quick``) it records the
throughput, the latency enqueue -> delivered (p50/p99), the backlog, the size of every
table in schema ``herald`` (the attempts partitions included) and of its indexes, their
dead tuples, autovacuum and autoanalyze counts, the workers' resident memory and the CPU
the workers and PostgreSQL used. At the end it judges (:func:`verdicts`):

- sizes plateau: every table but the attempts partitions (table + indexes) is, at its
  largest in the last ten intervals, no larger than at its largest in the ten before them,
  give or take 1 % (vacuum's sawtooth), with fewer than twenty intervals: the last third
  against the third before it. The
  attempts partitions are append-only by design (a whole day is dropped once it is past
  HERALD_ATTEMPT_RETENTION, never vacuumed row by row): their growth per hour is reported
  instead;
- p99 stable: the p99 of every delivery in the last ten intervals is within 1.5x of that
  of the first ten (with fewer: the last third against the first third);
- RSS flat: the workers' resident memory, at its largest in the last ten intervals, is
  within 10 % of its largest in the ten before them (the same windows as the sizes);
- kept up: the backlog, at its largest in the last ten intervals, is no larger than at its
  largest in the ten before them plus five seconds of the rate. Workers that fall behind
  make every other verdict judge an overload, not a steady state: the run says so as soon
  as the backlog passes ten seconds of the rate (choose a lower ``--rate``).

So that the job table reaches its steady size within the soak, the workers keep finished
jobs for ``2 x interval`` (HERALD_JOB_RETENTION) and prune every ``interval / 2``
(HERALD_CLEANUP_INTERVAL); with the shipped 24 h retention the steady state is 24 hours of
jobs, reached after a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from herald_queue.queue import Queue
from herald_tools.bench import procstat
from herald_tools.bench.deliver_bench import (
    Bench,
    Plan,
    bench_on,
    count_jobs,
    free_port,
    process,
    wait_http,
)
from herald_tools.bench.queue_bench import TARGET

WINDOW = 10
"""Intervals per window of the verdicts (the last ten against the ten before them)."""
P99_RATIO = 1.5
RSS_TOLERANCE = 0.10
SIZE_TOLERANCE = 0.01
"""A table at its steady size still moves with vacuum's sawtooth: its size at a given
minute depends on when vacuum last passed (0.2 % of the job table in a 20-minute soak)."""
SIZE_SLACK = 64 * 1024
"""Bytes a table may move besides ``SIZE_TOLERANCE``: a few pages, which a table of a few
rows (herald.targets, some 100 KiB) gains or loses with each vacuum."""
KEEP_UP_SECONDS = 5.0
"""Seconds of the rate the backlog may gain from one window to the next (jobs enqueued
just before an interval ends wait for the next claim)."""
BEHIND_SECONDS = 10.0
"""A backlog of this many seconds of the rate is reported at once: the workers fall
behind."""
ATTEMPTS = "attempts"
"""The partitioned table whose partitions (attempts_*) are dropped by day, not vacuumed."""

SIZES = b"""
SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid),
       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       coalesce(s.autovacuum_count, 0), coalesce(s.autoanalyze_count, 0)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = 'herald' AND c.relkind = 'r'
ORDER BY 1"""


# --- the verdicts' arithmetic (pure: unit-tested with made-up series) -------------------


def later_windows(n: int) -> tuple[slice, slice] | None:
    """The two windows compared for growth: the last ``WINDOW`` intervals and the
    ``WINDOW`` before them; with fewer than ``2 * WINDOW``, the last third and the third
    before it; None with fewer than three intervals."""
    if n >= 2 * WINDOW:
        return slice(n - 2 * WINDOW, n - WINDOW), slice(n - WINDOW, n)
    third = n // 3
    if third == 0:
        return None
    return slice(n - 2 * third, n - third), slice(n - third, n)


def first_last_windows(n: int) -> tuple[slice, slice] | None:
    """The first and the last ``WINDOW`` intervals (with fewer than ``2 * WINDOW``: the
    first and the last third); None with fewer than three intervals."""
    if n >= 2 * WINDOW:
        return slice(0, WINDOW), slice(n - WINDOW, n)
    third = n // 3
    if third == 0:
        return None
    return slice(0, third), slice(n - third, n)


def plateaued(series: Sequence[float]) -> bool | None:
    """Whether the largest size (bytes) of the later window is no larger than that of the
    window before it, give or take ``SIZE_TOLERANCE`` and ``SIZE_SLACK`` (None: too few
    values to say)."""
    return flat(series, SIZE_TOLERANCE, SIZE_SLACK)


def flat(
    series: Sequence[float], tolerance: float = RSS_TOLERANCE, slack: float = 0.0
) -> bool | None:
    """Whether the largest value of the later window is within ``tolerance`` (a fraction)
    and ``slack`` (an amount) of the largest of the window before it (None: too few
    values)."""
    windows = later_windows(len(series))
    if windows is None:
        return None
    before, last = windows
    return max(series[last]) <= max(series[before]) * (1 + tolerance) + slack


def p99(samples: Sequence[float]) -> float | None:
    if len(samples) < 2:
        return None
    return statistics.quantiles(sorted(samples), n=100, method="inclusive")[98]


def p99_ratio(per_interval: Sequence[Sequence[float]]) -> tuple[float, float, float] | None:
    """The p99 of every sample of the first window, of the last, and last / first (None:
    too few intervals or samples)."""
    windows = first_last_windows(len(per_interval))
    if windows is None:
        return None
    first_w, last_w = windows
    first = p99([x for interval in per_interval[first_w] for x in interval])
    last = p99([x for interval in per_interval[last_w] for x in interval])
    if first is None or last is None or first <= 0:
        return None
    return first, last, last / first


def verdicts(
    intervals: Sequence[dict[str, Any]], latencies: Sequence[Sequence[float]], *, rate: float
) -> dict[str, dict[str, Any]]:
    """The soak's four targets, each with its rule, the figures it compared and ``pass``
    (True, False, or None when there were too few intervals to judge)."""
    n = len(intervals)
    names = sorted({t for i in intervals for t in i["tables"]})
    steady = [t for t in names if not t.startswith(ATTEMPTS)]
    grew: dict[str, list[int]] = {}
    judged: list[bool | None] = []
    windows = later_windows(n)
    for table in steady:
        series = [_bytes(i["tables"].get(table)) for i in intervals]
        judged.append(plateaued(series))
        if windows and judged[-1] is False:
            grew[table] = [max(series[windows[0]]), max(series[windows[1]])]
    sizes: dict[str, Any] = {
        "rule": "every table but the attempts partitions (table + indexes): its largest size "
        "in the last 10 intervals is no larger than in the 10 before them, give or take "
        f"{SIZE_TOLERANCE:.0%} (with fewer than 20 intervals: the last third against the "
        "third before it)",
        "pass": None if windows is None else all(judged),
        "grew": grew,
    }
    attempts = [
        sum(_bytes(v) for t, v in i["tables"].items() if t.startswith(ATTEMPTS)) for i in intervals
    ]
    hours = (intervals[-1]["end_s"] - intervals[0]["end_s"]) / 3600 if n > 1 else 0
    if hours > 0:
        sizes["attempts_bytes_per_hour"] = round((attempts[-1] - attempts[0]) / hours)
    ratio = p99_ratio(latencies)
    latency: dict[str, Any] = {
        "rule": f"the p99 enqueue -> delivered of the last 10 intervals is within {P99_RATIO}x "
        "of that of the first 10 (with fewer than 20 intervals: the last third against the "
        "first third)",
        "pass": None if ratio is None else ratio[2] <= P99_RATIO,
    }
    if ratio is not None:
        latency |= {
            "first_p99_ms": round(ratio[0], 2),
            "last_p99_ms": round(ratio[1], 2),
            "ratio": round(ratio[2], 3),
        }
    rss_series = [float(i["rss_mib"]) for i in intervals]
    rss: dict[str, Any] = {
        "rule": f"the workers' RSS: its largest in the last 10 intervals is within "
        f"{RSS_TOLERANCE:.0%} of its largest in the 10 before them (with fewer than 20 "
        "intervals: the last third against the third before it)",
        "pass": flat(rss_series),
    }
    if windows is not None:
        rss |= _maxima(rss_series, windows, "mib", 1)
    backlogs = [float(i["backlog"]) for i in intervals]
    kept: dict[str, Any] = {
        "rule": f"the backlog: its largest in the last 10 intervals is no larger than its "
        f"largest in the 10 before them plus {KEEP_UP_SECONDS:g} s of the rate (with fewer "
        "than 20 intervals: the last third against the third before it)",
        "pass": flat(backlogs, 0.0, rate * KEEP_UP_SECONDS),
    }
    if windows is not None:
        kept |= _maxima(backlogs, windows, "backlog")
    return {"sizes_plateau": sizes, "p99_stable": latency, "rss_flat": rss, "kept_up": kept}


def _maxima(
    series: Sequence[float], windows: tuple[slice, slice], unit: str, digits: int | None = None
) -> dict[str, float]:
    """The largest value of the window before and of the last window, as a verdict
    reports them (``before_max_<unit>``, ``last_max_<unit>``)."""
    before, last = (max(series[w]) for w in windows)
    return {f"before_max_{unit}": round(before, digits), f"last_max_{unit}": round(last, digits)}


def _bytes(table: dict[str, Any] | None) -> int:
    return int(table["table_bytes"] + table["index_bytes"]) if table else 0


# --- the run ----------------------------------------------------------------------------


async def _take_stats(base: str) -> dict[str, Any]:
    """The receiver's figures since the last call, cleared at once."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"{base}/stats?reset=1") as r,
    ):
        return dict(await r.json())


async def _tables(queue: Queue) -> dict[str, dict[str, int]]:
    async with queue.pool.connection() as conn:
        cur = await conn.execute(SIZES)
        rows: list[Any] = await cur.fetchall()
    keys = (
        "table_bytes",
        "index_bytes",
        "live_tuples",
        "dead_tuples",
        "autovacuum_count",
        "autoanalyze_count",
    )
    return {str(r[0]): dict(zip(keys, (int(v) for v in r[1:]), strict=True)) for r in rows}


async def run(
    url: str,
    *,
    duration: float,
    quick: bool,
    progress: Callable[[str], None],
    interval: float | None = None,
    rate: float | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    interval = interval or (10.0 if quick else 60.0)
    count = max(1, round(duration / interval))
    retention = 2 * interval
    env = {
        "HERALD_JOB_RETENTION": f"{retention:g}",
        "HERALD_CLEANUP_INTERVAL": f"{interval / 2:g}",
    }
    plan = Plan(backlog=2_000 if quick else 10_000, workers=(workers,), latency_seconds=0)
    sink_port = free_port()
    base = f"http://127.0.0.1:{sink_port}"
    async with process(sys.executable, "-m", "herald_tools.bench.sink", str(sink_port)) as sink:
        await wait_http(f"{base}/stats")
        async with (
            bench_on(url, base, sink.pid, plan, progress) as bench,
            bench.workers(workers, **env) as pids,
        ):
            measured = None
            if rate is None:
                progress(f"{workers} worker process(es): the maximum, {plan.backlog} jobs")
                measured = (await bench.throughput(pids))["per_s"]
                rate = max(1.0, measured / 2)
            await _take_stats(base)
            progress(
                f"soak: {rate:.0f} jobs/s for {count} x {interval:g}s "
                f"(finished jobs kept {retention:g}s)"
            )
            intervals, latencies = await _soak(bench, pids, rate, interval, count)
    return {
        "soak_duration_s": count * interval,
        "soak_interval_s": interval,
        "soak_workers": workers,
        "soak_max_per_s": measured,
        "soak_rate": round(rate, 1),
        "soak_job_retention_s": retention,
        "soak_cleanup_interval_s": interval / 2,
        "soak_intervals": intervals,
        "soak_verdicts": verdicts(intervals, latencies, rate=rate),
    }


async def _soak(
    bench: Bench, pids: list[int], rate: float, interval: float, count: int
) -> tuple[list[dict[str, Any]], list[list[float]]]:
    started = time.monotonic()
    producers = max(8, round(rate) // 20)
    producer = asyncio.create_task(bench.paced(TARGET, rate, count * interval, producers=producers))
    intervals: list[dict[str, Any]] = []
    latencies: list[list[float]] = []
    cpu, mark = bench.cpu(pids), started
    behind = False
    try:
        for k in range(1, count + 1):
            delay = started + k * interval - time.monotonic()
            if delay > 0:
                await asyncio.wait([producer], timeout=delay)
            if producer.done() and producer.exception() is not None:
                raise RuntimeError("the soak's producer failed") from producer.exception()
            stats = await _take_stats(bench.base)
            now, used = time.monotonic(), bench.cpu(pids)
            tables = await _tables(bench.queue)
            lat = [float(x) for x in stats["latencies_ms"]]
            rss = [procstat.rss_mib(pid) for pid in pids]
            record: dict[str, Any] = {
                "interval": k,
                "end_s": round(now - started, 1),
                "delivered": stats["count"],
                "per_s": round(stats["count"] / max(now - mark, 1e-9), 1),
                "delivered_p50_ms": _quantile(lat, 49),
                "delivered_p99_ms": _quantile(lat, 98),
                "backlog": await count_jobs(bench.queue, "state IN ('queued', 'retrying')"),
                "rss_mib": round(sum(rss), 1),
                "rss_mib_per_worker": [round(r, 1) for r in rss],
                "cpu_worker_cores": round((used["worker"] - cpu["worker"]) / (now - mark), 2),
                "cpu_postgresql_cores": round(
                    (used["postgresql"] - cpu["postgresql"]) / (now - mark), 2
                ),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "herald_bytes": sum(_bytes(t) for t in tables.values()),
                "tables": tables,
            }
            intervals.append(record)
            latencies.append(lat)
            cpu, mark = used, now
            bench.progress(_line(record))
            if not behind and record["backlog"] > rate * BEHIND_SECONDS:
                behind = True
                bench.progress(
                    f"the workers fall behind: {record['backlog']} jobs wait, "
                    f"{record['backlog'] / rate:.0f} s of {rate:.0f} jobs/s; the verdicts will "
                    "judge an overload, not a steady state (choose a lower --rate)"
                )
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await producer
    return intervals, latencies


def _quantile(samples: list[float], index: int) -> float | None:
    if len(samples) < 2:
        return None
    return round(statistics.quantiles(sorted(samples), n=100, method="inclusive")[index], 2)


def _line(record: dict[str, Any]) -> str:
    tables = record["tables"]
    return (
        f"interval {record['interval']}: {record['per_s']}/s, "
        f"p50 {record['delivered_p50_ms']} ms, p99 {record['delivered_p99_ms']} ms, "
        f"backlog {record['backlog']}, herald {record['herald_bytes'] / 2**20:.1f} MiB, "
        f"dead tuples {sum(t['dead_tuples'] for t in tables.values())}, "
        f"rss {record['rss_mib']} MiB, load {record['load_average_1m']}"
    )


def render(results: dict[str, Any]) -> str:
    """The human form: one line per interval, then the verdicts."""
    lines = [
        f"soak: {results['soak_rate']} jobs/s (maximum measured: {results['soak_max_per_s']}) "
        f"for {results['soak_duration_s']:g}s, {results['soak_workers']} worker process(es), "
        f"finished jobs kept {results['soak_job_retention_s']:g}s"
    ]
    lines += [_line(r) for r in results["soak_intervals"]]
    for name, verdict in results["soak_verdicts"].items():
        state = {True: "PASS", False: "FAIL", None: "n/a (too few intervals)"}[verdict["pass"]]
        figures = {k: v for k, v in verdict.items() if k not in ("rule", "pass")}
        lines.append(f"{name}: {state} {figures if figures else ''}".rstrip())
        lines.append(f"  ({verdict['rule']})")
    return "\n".join(lines)
