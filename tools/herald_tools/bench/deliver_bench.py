"""The delivery benchmark: end to end through real HTTP, enqueue -> signed webhook
delivered -> completed, with `herald worker` processes and a receiver in its own process,
which is first measured alone so it is known not to be the bottleneck.

Phases (every figure's key in ``herald bench --deliver --json`` starts with its phase):

- ``deliver_receiver_alone_*``: the receiver under a plain aiohttp client, requests/s and
  its CPU per request;
- ``deliver_w{N}_*``, N worker processes: a backlog drained (``per_s``, enqueue included in
  PostgreSQL's CPU), CPU per job (µs) of the workers, the receiver and PostgreSQL (from
  /proc) and each one's share of a core; then latency enqueue -> delivered (``lat{R}``) and
  -> completed at a paced R jobs/s (200 and 1,000);
- ``deliver_best_*``: the N with the highest rate;
- ``deliver_rss_*``: the resident memory of one worker process with its tracker full
  (HERALD_TRACKER_SIZE jobs) and while a backlog of 100,000 jobs is queued;
- ``deliver_fair_*``: with the shipped concurrency defaults, a quiet target's latency
  enqueue -> delivered (paced) while one worker drains the 100,000-job backlog of another.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
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

from herald_model.submission import JobRequest, encode_payload
from herald_model.target_spec import parse_target
from herald_queue.queue import Queue
from herald_tools.bench import procstat
from herald_tools.bench.queue_bench import TARGET, open_queue, reset
from herald_tools.bench.shared import SAMPLE

QUIET = "bench-quiet"
# A fixed key for a local benchmark (32 bytes, base64): deliveries are signed as in use.
BENCH_SECRET = "whsec_" + base64.b64encode(b"herald bench signing key, 32 b.").decode()
SAMPLE_JSON = encode_payload(SAMPLE, max_bytes=1 << 20)


@dataclasses.dataclass(frozen=True)
class Plan:
    backlog: int
    """Jobs drained for the throughput figure, per worker count."""
    workers: tuple[int, ...]
    latency_seconds: float
    """How long each paced latency run lasts."""
    rates: tuple[int, ...] = (200, 1000)
    latency_workers: tuple[int, ...] = (1, 4)
    tracked: int = 10_000
    big_backlog: int = 100_000
    fair_rate: int = 20
    fair_seconds: float = 10.0


FULL = Plan(backlog=20_000, workers=(1, 2, 4), latency_seconds=10, fair_seconds=20)
QUICK = Plan(backlog=5_000, workers=(1, 4), latency_seconds=2, fair_seconds=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(url: str, timeout: float = 60.0) -> None:
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
    """Requests per second the receiver takes from a plain aiohttp client (the same body
    and headers as a signed delivery)."""
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
                async with http.post(f"{base}/hook", data=body, headers=_ALONE_HEADERS) as r:
                    await r.read()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


_ALONE_HEADERS = {
    "Content-Type": "application/json",
    "webhook-id": "00000000-0000-0000-0000-000000000000",
    "webhook-timestamp": "1700000000",
    "webhook-signature": "v1," + "A" * 44,
}


def _manifest(folder: Path, base: str) -> Path:
    """The two targets (the busy one and the fair-share phase's quiet one), both signed."""
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "PublishingTarget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "type": "webhook",
                "url": f"{base}/{path}",
                "timeoutSeconds": 10,
                "secretRef": {"name": "bench-signing"},
            },
        }
        for name, path in ((TARGET, "hook"), (QUIET, "quiet"))
    ]
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-signing", "namespace": "default"},
            "stringData": {"signingSecret": BENCH_SECRET},
        }
    )
    path = folder / "bench-targets.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


async def _register(queue: Queue, manifest: Path) -> None:
    docs = list(yaml.safe_load_all(await asyncio.to_thread(manifest.read_text)))
    for doc in docs:
        if doc["kind"] == "PublishingTarget":
            await queue.registry.apply(parse_target(doc))


@dataclasses.dataclass
class Bench:
    url: str
    queue: Queue
    base: str
    manifest: Path
    sink_pid: int
    postmaster: int
    plan: Plan
    progress: Callable[[str], None]

    def cpu(self, workers: list[int]) -> dict[str, float]:
        return {
            "worker": procstat.cpu_seconds(workers),
            "receiver": procstat.cpu_seconds([self.sink_pid]),
            "postgresql": procstat.cpu_seconds(procstat.children_of(self.postmaster)),
        }

    @contextlib.asynccontextmanager
    async def workers(self, n: int, **env: str) -> AsyncIterator[list[int]]:
        """``n`` ``herald worker`` processes, ready; yields their pids."""
        common = {
            "HERALD_DATABASE_URL": self.url,
            "HERALD_LOG_LEVEL": "WARNING",
            # 128 deliveries in flight per worker hide the round trip to the receiver; 64
            # delivered 10-20 % fewer jobs per second here with the same CPU per job.
            "HERALD_CONCURRENCY": "128",
            "HERALD_TARGET_CONCURRENCY": "128",
            "HERALD_CLAIM_BATCH": "128",
            "HERALD_HTTP_HOST": "127.0.0.1",
            "HERALD_EGRESS_ALLOW_LOOPBACK": "true",  # the receiver is on 127.0.0.1
            "HERALD_POLL_INTERVAL": "0.5",
        } | env
        async with contextlib.AsyncExitStack() as stack:
            ports, pids = [], []
            for i in range(n):
                port = free_port()
                ports.append(port)
                proc = await stack.enter_async_context(
                    process(
                        sys.executable,
                        "-m",
                        "herald_tools.cli.main",
                        "worker",
                        "--targets",
                        str(self.manifest),
                        "--name",
                        f"bench-{i}",
                        env=common | {"HERALD_HTTP_PORT": str(port)},
                    )
                )
                pids.append(proc.pid)
            for port in ports:
                await wait_http(f"http://127.0.0.1:{port}/readyz")
            yield pids

    async def throughput(self, pids: list[int]) -> dict[str, Any]:
        """Drain a backlog enqueued while the workers wait; CPU from before the enqueue to
        the last completion."""
        backlog = self.plan.backlog
        before, wall = self.cpu(pids), time.monotonic()
        for start in range(0, backlog, 5000):
            await self.queue.jobs.enqueue_many(
                [
                    JobRequest(target=TARGET, payload_json=SAMPLE_JSON)
                    for _ in range(min(5000, backlog - start))
                ]
            )
        await _wait_drained(self.queue, backlog)
        after, wall = self.cpu(pids), time.monotonic() - wall
        async with self.queue.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM herald.jobs"
            )
            row: Any = await cur.fetchone()
        seconds = max(float(row[0]) if row and row[0] else 0.0, 1e-9)
        stats = await sink_stats(self.base)
        out: dict[str, Any] = {"per_s": round(backlog / seconds)}
        for who in ("worker", "receiver", "postgresql"):
            used = after[who] - before[who]
            out[f"cpu_{who}_us_per_job"] = round(used / backlog * 1e6, 1)
            out[f"cpu_{who}_cores"] = round(used / wall, 2)
        out["signed"] = stats["signed"] == stats["count"] == backlog
        out["duplicates"] = stats["count"] - stats["unique"]
        await reset(self.queue)
        await sink_reset(self.base)
        return out

    async def paced(self, target: str, rate: float, seconds: float, *, producers: int = 8) -> float:
        """Enqueue one job at a time at ``rate`` per second, each carrying its enqueue time
        (t0); returns the rate achieved."""
        count = max(1, round(rate * seconds))
        started = time.monotonic()
        cursor = iter(range(count))

        async def produce() -> None:
            for i in cursor:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = SAMPLE | {"t0": time.monotonic_ns(), "i": i}
                payload = encode_payload(body, max_bytes=1 << 20)
                await self.queue.jobs.enqueue(JobRequest(target=target, payload_json=payload))

        await asyncio.gather(*(produce() for _ in range(producers)))
        return count / (time.monotonic() - started)

    async def latency(self, rate: int) -> dict[str, Any]:
        seconds = self.plan.latency_seconds
        # Enough producers that commits (one per job) keep up with the pace.
        achieved = await self.paced(TARGET, rate, seconds, producers=max(8, rate // 20))
        count = max(1, round(rate * seconds))
        await _wait_drained(self.queue, count)
        lat = (await sink_stats(self.base))["latencies_ms"]
        completed = await _completion_latencies(self.queue)
        await reset(self.queue)
        await sink_reset(self.base)
        return {
            f"lat{rate}_rate_achieved": round(achieved),
            **_percentiles(f"lat{rate}_delivered", lat),
            **_percentiles(f"lat{rate}_completed", completed),
        }

    async def rss_tracked(self, pid: int) -> dict[str, Any]:
        """Fill the tracker of one worker (it keeps the last HERALD_TRACKER_SIZE jobs)."""
        n = self.plan.tracked
        for start in range(0, n, 5000):
            await self.queue.jobs.enqueue_many(
                [
                    JobRequest(target=TARGET, payload_json=SAMPLE_JSON)
                    for _ in range(min(5000, n - start))
                ]
            )
        await _wait_drained(self.queue, n)
        rss = procstat.rss_mib(pid)
        await reset(self.queue)
        await sink_reset(self.base)
        return {"rss_tracked_jobs": n, "rss_tracked_mib": round(rss, 1)}

    async def fair_share(self) -> dict[str, Any]:
        """One worker with the shipped concurrency defaults drains a backlog of
        ``big_backlog`` jobs of one target while another gets a paced trickle."""
        big = self.plan.big_backlog
        defaults = {"HERALD_CONCURRENCY": "64", "HERALD_TARGET_CONCURRENCY": "16"}
        async with self.workers(1, **defaults) as [pid]:
            for start in range(0, big, 5000):
                await self.queue.jobs.enqueue_many(
                    [
                        JobRequest(target=TARGET, payload_json=SAMPLE_JSON)
                        for _ in range(min(5000, big - start))
                    ]
                )
            peak = procstat.rss_mib(pid)
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, procstat.rss_mib(pid))
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            try:
                achieved = await self.paced(
                    QUIET, self.plan.fair_rate, self.plan.fair_seconds, producers=2
                )
                quiet = round(self.plan.fair_rate * self.plan.fair_seconds)
                await _wait_drained(self.queue, quiet, target=QUIET)
            finally:
                sampling = False
                await sampler
            waiting = await count_jobs(self.queue, "state IN ('queued', 'retrying')")
        stats = await sink_stats(self.base)
        await reset(self.queue)
        await sink_reset(self.base)
        return {
            "rss_backlog_jobs": big,
            "rss_backlog_mib": round(peak, 1),
            "fair_backlog": big,
            "fair_backlog_still_queued": waiting,
            "fair_quiet_rate_achieved": round(achieved, 1),
            **_percentiles("fair_quiet_delivered", stats["latencies_ms_by_path"].get("/quiet", [])),
        }


def _percentiles(prefix: str, samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {f"{prefix}_count": len(samples)}
    q = statistics.quantiles(sorted(samples), n=100, method="inclusive")
    return {
        f"{prefix}_p50_ms": round(q[49], 2),
        f"{prefix}_p95_ms": round(q[94], 2),
        f"{prefix}_p99_ms": round(q[98], 2),
    }


async def postmaster(queue: Queue) -> int:
    """The pid of the PostgreSQL server ``queue`` talks to (its backends are its children,
    whose CPU a benchmark charges to PostgreSQL)."""
    async with queue.pool.connection() as conn:
        cur = await conn.execute("SELECT pg_backend_pid()")
        row: Any = await cur.fetchone()
    assert row is not None
    return procstat.parent_of(int(row[0]))


@contextlib.asynccontextmanager
async def bench_on(
    url: str, base: str, sink_pid: int, plan: Plan, progress: Callable[[str], None]
) -> AsyncIterator[Bench]:
    """A :class:`Bench` delivering to the receiver at ``base``: the queue open, the target
    registered from a manifest in a temporary folder, the queue emptied."""
    queue = await open_queue(url)
    try:
        with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
            manifest = _manifest(Path(tmp), base)
            await _register(queue, manifest)
            bench = Bench(
                url, queue, base, manifest, sink_pid, await postmaster(queue), plan, progress
            )
            await reset(queue)
            yield bench
    finally:
        await queue.close()


async def run(url: str, *, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    results: dict[str, Any] = {}
    sink_port = free_port()
    base = f"http://127.0.0.1:{sink_port}"
    async with process(sys.executable, "-m", "herald_tools.bench.sink", str(sink_port)) as sink:
        await wait_http(f"{base}/stats")
        progress("receiver alone")
        before = procstat.cpu_seconds([sink.pid])
        requests = plan.backlog * 2
        results["deliver_receiver_alone_per_s"] = round(
            await receiver_alone(base, requests=requests)
        )
        used = procstat.cpu_seconds([sink.pid]) - before
        results["deliver_receiver_alone_cpu_us_per_request"] = round(used / requests * 1e6, 1)
        async with bench_on(url, base, sink.pid, plan, progress) as bench:
            await sink_reset(base)
            results |= await _sessions(bench)
    return results


async def _sessions(bench: Bench) -> dict[str, Any]:
    plan, results = bench.plan, dict[str, Any]()
    for n in sorted(set(plan.workers) | set(plan.latency_workers)):
        async with bench.workers(n) as pids:
            figures: dict[str, Any] = {}
            if n in plan.workers:
                bench.progress(f"{n} worker process(es): draining {plan.backlog} jobs")
                figures |= await bench.throughput(pids)
            if n in plan.latency_workers:
                for rate in plan.rates:
                    bench.progress(f"{n} worker process(es): latency at {rate} jobs/s")
                    figures |= await bench.latency(rate)
            if n == 1:
                bench.progress(f"1 worker process: memory with {plan.tracked} tracked jobs")
                results |= {
                    f"deliver_{k}": v for k, v in (await bench.rss_tracked(pids[0])).items()
                }
            results |= {f"deliver_w{n}_{k}": v for k, v in figures.items()}
    best = max(plan.workers, key=lambda n: results[f"deliver_w{n}_per_s"])
    results["deliver_best_workers"] = best
    results["deliver_best_per_s"] = results[f"deliver_w{best}_per_s"]
    bench.progress(
        f"fair share: a quiet target at {plan.fair_rate}/s during a {plan.big_backlog} backlog"
    )
    results |= {f"deliver_{k}": v for k, v in (await bench.fair_share()).items()}
    return results


async def count_jobs(queue: Queue, where: str, target: str | None = None) -> int:
    query = "SELECT count(*) FROM herald.jobs j JOIN herald.targets t ON t.id = j.target_id"
    query += f" WHERE {where}" + (" AND t.name = %s" if target else "")
    async with queue.pool.connection() as conn:
        cur = await conn.execute(query.encode(), (target,) if target else None)
        row: Any = await cur.fetchone()
    return int(row[0]) if row else 0


async def _wait_drained(
    queue: Queue, expected: int, *, target: str | None = None, timeout: float = 600.0
) -> None:
    """Until ``expected`` jobs (of ``target``) have succeeded (the timing comes from the
    jobs' own timestamps and the receiver's clock, so this polls gently)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await count_jobs(queue, "state = 'succeeded'", target) >= expected:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{expected} jobs were not delivered within {timeout}s")


async def _completion_latencies(queue: Any) -> list[float]:
    async with queue.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM herald.jobs "
            "WHERE state = 'succeeded' AND payload ->> 't0' IS NOT NULL"
        )
        return [float(r[0]) for r in await cur.fetchall()]
