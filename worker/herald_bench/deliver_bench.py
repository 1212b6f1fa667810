"""The delivery benchmark: end to end through real HTTP, enqueue -> delivered -> completed,
with 1 and 4 worker processes (`herald worker`) and a receiver in its own process, which
is first measured alone so it is known not to be the bottleneck."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from herald_bench.queue_bench import SAMPLE, TARGET, open_queue, register_target, reset
from herald_queue.requests import JobRequest, encode_payload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout}s")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def process(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def sink_stats(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/stats") as r:
        return dict(await r.json())


async def sink_reset(base: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{base}/reset") as r:
        await r.read()


async def receiver_alone(base: str, *, requests: int = 20_000, concurrency: int = 64) -> float:
    """Requests per second the receiver takes from a plain aiohttp client."""
    await sink_reset(base)
    body = json.dumps(SAMPLE).encode()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client() -> None:
            while not queue.empty():
                queue.get_nowait()
                async with http.post(
                    f"{base}/hook", data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def _manifest(folder: Path, sink_url: str) -> Path:
    path = folder / "bench-target.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "herald.dev/v1alpha1",
                "kind": "PublishingTarget",
                "metadata": {"name": TARGET, "namespace": "default"},
                "spec": {"type": "webhook", "url": sink_url, "timeoutSeconds": 10},
            }
        )
    )
    return path


async def run(url: str, *, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    sink_port = free_port()
    base = f"http://127.0.0.1:{sink_port}"
    backlog = 5_000 if quick else 20_000
    async with process(sys.executable, "-m", "herald_bench.sink", str(sink_port)):
        await _wait_http(f"{base}/stats")
        progress("receiver alone")
        results["deliver_receiver_alone_per_s"] = round(
            await receiver_alone(base, requests=backlog)
        )
        queue = await open_queue(url)
        try:
            await register_target(queue)
            with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
                manifest = _manifest(Path(tmp), f"{base}/hook")
                for workers in (1, 4):
                    progress(f"delivery with {workers} worker process(es): {backlog} jobs")
                    figures = await _with_workers(
                        url, queue, base, manifest, workers, backlog, quick
                    )
                    results.update({f"deliver_w{workers}_{k}": v for k, v in figures.items()})
        finally:
            await queue.close()
    return results


async def _with_workers(
    url: str, queue: Any, base: str, manifest: Path, workers: int, backlog: int, quick: bool
) -> dict[str, Any]:
    await reset(queue)
    await sink_reset(base)
    # The backlog is in place before the workers start: the rate is measured from the first
    # delivery to the last completion.
    for start in range(0, backlog, 5000):
        await queue.jobs.enqueue_many(
            [
                JobRequest(target=TARGET, payload_json=encode_payload(SAMPLE, max_bytes=1 << 20))
                for _ in range(min(5000, backlog - start))
            ]
        )
    env_common = {
        "HERALD_DATABASE_URL": url,
        "HERALD_LOG_LEVEL": "WARNING",
        "HERALD_CONCURRENCY": "64",
        "HERALD_TARGET_CONCURRENCY": "64",
        "HERALD_CLAIM_BATCH": "64",
        "HERALD_HTTP_HOST": "127.0.0.1",
        "HERALD_EGRESS_ALLOW_LOOPBACK": "true",  # the receiver is on 127.0.0.1
        "HERALD_POLL_INTERVAL": "0.5",
    }
    async with contextlib.AsyncExitStack() as stack:
        ports = []
        for i in range(workers):
            port = free_port()
            ports.append(port)
            await stack.enter_async_context(
                process(
                    sys.executable,
                    "-m",
                    "herald_cli.main",
                    "worker",
                    "--targets",
                    str(manifest),
                    "--name",
                    f"bench-{i}",
                    env=env_common | {"HERALD_HTTP_PORT": str(port)},
                )
            )
        for port in ports:
            await _wait_http(f"http://127.0.0.1:{port}/readyz")
        await _wait_drained(queue, backlog)
        async with queue.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM herald.jobs"
            )
            row = await cur.fetchone()
        rate = backlog / max(float(row[0]) if row and row[0] else 0.0, 1e-9)
        # Latency at a steady 200 jobs/s, the workers idle in between.
        await sink_reset(base)
        seconds = 5 if quick else 10
        count = 200 * seconds
        started = time.monotonic()
        for i in range(count):
            delay = started + i / 200 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = encode_payload(SAMPLE | {"t0": time.monotonic_ns()}, max_bytes=1 << 20)
            await queue.jobs.enqueue(JobRequest(target=TARGET, payload_json=payload))
        await _wait_drained(queue, count)
        stats = await sink_stats(base)
        completed = await _completion_latencies(queue)
    lat = sorted(stats["latencies_ms"])
    q = statistics.quantiles(lat, n=100, method="inclusive")
    qc = statistics.quantiles(completed, n=100, method="inclusive")
    return {
        "per_s": round(rate),
        "latency_p50_ms": round(q[49], 2),
        "latency_p95_ms": round(q[94], 2),
        "latency_p99_ms": round(q[98], 2),
        "completed_p50_ms": round(qc[49], 2),
        "completed_p99_ms": round(qc[98], 2),
        "duplicates": stats["count"] - stats["unique"],
    }


async def _wait_drained(queue: Any, expected: int, timeout: float = 600.0) -> None:
    """Until ``expected`` jobs have succeeded (the timing comes from the jobs' own
    timestamps, so this polls gently)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with queue.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM herald.jobs WHERE state = 'succeeded'")
            row = await cur.fetchone()
        if row and row[0] >= expected:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{expected} jobs were not delivered within {timeout}s")


async def _completion_latencies(queue: Any) -> list[float]:
    async with queue.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM herald.jobs "
            "WHERE state = 'succeeded' AND payload ->> 't0' IS NOT NULL"
        )
        return [float(r[0]) for r in await cur.fetchall()]
