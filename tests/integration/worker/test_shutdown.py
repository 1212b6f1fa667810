"""Stopping ``herald worker`` (a real subprocess):

- SIGTERM drains cleanly: exit status 0, deliveries in flight finish and are recorded,
  no job is left ``running``, nothing claimed is kept: a second worker takes every
  remaining job at once (HERALD_LEASE is 300 s, so a job left leased would wait 5 min);
- grace exceeded: a delivery still hanging when HERALD_SHUTDOWN_GRACE ends is cancelled
  and released (attempt not counted), exit status 0;
- with HERALD_SHUTDOWN_DRAIN, SIGTERM first drains the API: unready, still answering,
  each answer closing its connection, until the drain ends and the listener closes;
- SIGKILL at any moment loses nothing: once the dead worker's leases expire, a new worker
  delivers every job (at least once).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from herald_queue.settings import QueueSettings
from herald_tools.receiver import Answer, always
from tests.helpers import (
    LOCAL_EGRESS_ENV,
    expire_leases,
    job,
    open_queue,
    sql_rows,
    stop_process,
    wait_until,
)
from tests.integration.worker.harness import (
    FAST_RETRY,
    TrackingReceiver,
    all_in_state,
    free_port,
    states,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

pytestmark = pytest.mark.slow

CONCURRENCY = 8
RUNNING_LEASES = "SELECT DISTINCT leased_by FROM herald.jobs WHERE state = 'running'"


@contextlib.asynccontextmanager
async def worker_process(
    db_url: str, manifest: Path, log: Path, port: int = 0, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``herald worker --targets manifest`` as a subprocess, ready (its /readyz says so)."""
    port = port or free_port()
    environ = {
        **os.environ,
        "HERALD_DATABASE_URL": db_url,
        "HERALD_HTTP_HOST": "127.0.0.1",
        "HERALD_HTTP_PORT": str(port),
        "HERALD_KUBERNETES_SECRETS": "false",
        **LOCAL_EGRESS_ENV,
        "HERALD_POLL_INTERVAL": "0.05",
        "HERALD_CONCURRENCY": str(CONCURRENCY),
        "HERALD_TARGET_CONCURRENCY": str(CONCURRENCY),
        "HERALD_CLAIM_BATCH": str(CONCURRENCY),
        "HERALD_LEASE": "300",
        "HERALD_LOG_LEVEL": "INFO",
        **env,
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "herald_tools.cli.main",
            "worker",
            "--targets",
            str(manifest),
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    if proc.returncode is not None:
                        raise AssertionError(f"worker exited: {log.read_text()[-3000:]}")
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                            return r.status == 200
                    except aiohttp.ClientError:
                        return False

                await wait_until(ready, timeout=30, interval=0.1, what="worker ready")
            yield proc
        finally:
            await stop_process(proc, "herald worker", 30)


async def exit_status(proc: asyncio.subprocess.Process, log: Path, timeout: float) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"the worker did not exit within {timeout}s; log:\n{log.read_text()[-3000:]}"
        ) from None


async def job_rows(queue: Any) -> dict[str, dict[str, Any]]:
    rows = await sql_rows(
        queue,
        "SELECT id::text AS id, state, attempts, leased_by, lease_expires_at FROM herald.jobs",
    )
    return {r["id"]: r for r in rows}


def manifests(tmp_path: Path, url: str) -> Path:
    return write_manifests(
        tmp_path / "targets.yaml", [target_doc("hook", url, retry={"maxAttempts": 5, **FAST_RETRY})]
    )


async def test_sigterm_drains_the_api_before_its_listener_closes(
    db_url: str, tmp_path: Path
) -> None:
    """What a rolling update needs from a worker behind a Service: after SIGTERM it keeps
    answering for HERALD_SHUTDOWN_DRAIN, unready (so the endpoint leaves the Service) and
    with ``Connection: close`` on every answer (so a producer's kept-alive connection, which
    kube-proxy keeps sending to this Pod, is not reused and its next request goes to a
    connection the Service routes afresh), then it closes its listener and exits 0. Every
    job accepted during the drain is in the queue."""
    port = free_port()
    drain = 12.0  # long beside the ten posts below, so a loaded machine cannot blur them
    log = tmp_path / "worker.log"
    async with TrackingReceiver(always(Answer())) as rx:
        path = manifests(tmp_path, rx.url)
        env = {"HERALD_SHUTDOWN_DRAIN": f"{drain}s"}
        async with (
            worker_process(db_url, path, log, port, **env) as proc,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http,
        ):
            base = f"http://127.0.0.1:{port}"
            body = {"target": "hook", "payload": {"n": 0}}
            async with http.post(f"{base}/v1/jobs", json=body) as r:
                assert r.status == 201, await r.text()
                assert r.headers.get("Connection", "").lower() != "close"
                accepted = [(await r.json())["id"]]
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()

            async def unready() -> bool:
                async with http.get(f"{base}/readyz") as r:
                    return r.status == 503 and "shutting down" in await r.text()

            await wait_until(unready, timeout=drain / 2, what="/readyz 503 after SIGTERM")
            for n in range(1, 11):
                body = {"target": "hook", "payload": {"n": n}}
                async with http.post(f"{base}/v1/jobs", json=body) as r:
                    assert r.status == 201, await r.text()
                    assert r.headers["Connection"].lower() == "close", dict(r.headers)
                    accepted.append((await r.json())["id"])
            assert proc.returncode is None, "the worker stopped before its drain ended"
            assert await exit_status(proc, log, drain + 30) == 0
        waited = time.monotonic() - sent
        assert waited >= drain, f"exited {waited:.1f}s after SIGTERM, before the drain ended"
        text = log.read_text()
        assert '"action": "drain"' in text or "draining" in text, text[-2000:]
        async with await open_queue(db_url) as q:
            rows = await job_rows(q)
        assert len(accepted) == 11 and set(accepted) <= set(rows), "an accepted job is missing"


async def test_sigterm_drains_cleanly(db_url: str, tmp_path: Path) -> None:
    jobs = 120
    async with TrackingReceiver(always(Answer(delay=0.5))) as rx, await open_queue(db_url) as q:
        path = manifests(tmp_path, rx.url)
        log = tmp_path / "worker.log"
        async with worker_process(db_url, path, log, HERALD_SHUTDOWN_GRACE="10") as proc:
            ids = await _enqueue(q, jobs)
            # Mid-run: two rounds delivered, a third in flight.
            await wait_until(
                lambda: (
                    len(rx.delivered_ids()) >= 2 * CONCURRENCY and rx.in_flight >= CONCURRENCY // 2
                ),
                timeout=30,
                interval=0.005,
            )
            in_flight = set(rx.in_flight_ids)
            proc.send_signal(signal.SIGTERM)
            assert await exit_status(proc, log, 20) == 0, log.read_text()[-3000:]

        assert in_flight <= set(rx.delivered_ids()), "deliveries in flight were finished"
        rows = await job_rows(q)
        assert all(rows[i]["state"] == "succeeded" for i in in_flight), "and recorded as delivered"
        assert not [r for r in rows.values() if r["state"] == "running"], "nothing left running"
        delivered = collections.Counter(rx.delivered_ids())
        succeeded = {i for i, r in rows.items() if r["state"] == "succeeded"}
        assert succeeded == set(delivered), "succeeded exactly the jobs the receiver got"
        waiting = [r for r in rows.values() if r["state"] != "succeeded"]
        assert waiting, "the worker stopped mid-run"
        for r in waiting:
            assert (r["state"], r["attempts"], r["leased_by"], r["lease_expires_at"]) == (
                "queued",
                0,
                None,
                None,
            ), r

        # A second worker takes the rest at once (the lease is 300 s, far beyond this
        # wait: nothing is waiting for a lease to expire).
        async with worker(db_url, path, queue_settings=QueueSettings(lease=300)) as second:
            await wait_state(second.queue, "succeeded", jobs, timeout=60)
        delivered = collections.Counter(rx.delivered_ids())
        assert set(delivered) == set(ids)
        assert max(delivered.values()) == 1, "a clean shutdown delivers nothing twice"


async def test_grace_exceeded_cancels_and_releases(db_url: str, tmp_path: Path) -> None:
    jobs = 30
    async with TrackingReceiver() as rx, await open_queue(db_url) as q:
        rx.gate.clear()  # every request hangs until the end of the test
        path = manifests(tmp_path, rx.url)
        log = tmp_path / "worker.log"
        async with worker_process(db_url, path, log, HERALD_SHUTDOWN_GRACE="0.5") as proc:
            ids = await _enqueue(q, jobs)
            await wait_until(lambda: rx.in_flight == CONCURRENCY, timeout=30)
            hanging = set(rx.in_flight_ids)
            assert len(hanging) == CONCURRENCY
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await exit_status(proc, log, 15) == 0, log.read_text()[-3000:]
            assert time.monotonic() - stopped < 10, "the grace period bounds the shutdown"

        rows = await job_rows(q)
        assert await states(q) == {"queued": jobs}, "released, none left running"
        for i in hanging:
            assert (rows[i]["attempts"], rows[i]["leased_by"]) == (0, None), rows[i]
        log_text = log.read_text()
        assert "released" in log_text, log_text[-2000:]

        rx.gate.set()
        async with worker(db_url, path, queue_settings=QueueSettings(lease=300)) as second:
            await wait_state(second.queue, "succeeded", jobs, timeout=30)
        assert set(rx.delivered_ids()) == set(ids)


@pytest.mark.parametrize("kill_after", [0, 20])
async def test_sigkill_loses_nothing(db_url: str, tmp_path: Path, kill_after: int) -> None:
    jobs = 100
    async with TrackingReceiver(always(Answer(delay=0.2))) as rx, await open_queue(db_url) as q:
        path = manifests(tmp_path, rx.url)
        log = tmp_path / "worker.log"
        async with worker_process(db_url, path, log) as proc:
            ids = await _enqueue(q, jobs)
            await wait_until(
                lambda: len(rx.delivered_ids()) >= kill_after and rx.in_flight > 0,
                timeout=30,
                interval=0.005,
            )
            proc.kill()
            assert await exit_status(proc, log, 10) == -signal.SIGKILL

        before = await states(q)
        assert before.get("running", 0) > 0, f"killed with deliveries in flight: {before}"
        assert sum(before.values()) == jobs
        dead = {r["leased_by"] for r in await sql_rows(q, RUNNING_LEASES)}

        async def all_delivered() -> bool:
            # Its leases (300 s) expire now. A claim the killed worker had sent may still
            # commit after its death (the server finishes the statement), so this repeats.
            for name in dead:
                await expire_leases(q, name)
            return await all_in_state(q, "succeeded", jobs)

        async with worker(db_url, path):
            await wait_until(all_delivered, timeout=30, what="every job delivered")
        delivered = collections.Counter(rx.delivered_ids())
        assert set(delivered) == set(ids), "every job delivered at least once"
        assert await states(q) == {"succeeded": jobs}


async def _enqueue(queue: Any, n: int) -> list[str]:
    results = await queue.jobs.enqueue_many([job("hook", {"n": i}) for i in range(n)])
    return [str(r.id) for r in results]
