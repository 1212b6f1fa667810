"""The queue benchmark's phases, run small against the test database: each one does the
work it reports on (every job enqueued, every job drained exactly once). The figures
themselves are never asserted; `herald bench` reports them."""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import pytest

from herald_queue.queue import Queue
from herald_tools.bench import deliver_bench, queue_bench
from tests.helpers import sql_value

COUNT_BY_STATE = "SELECT count(*) FROM herald.jobs WHERE state = %s"


@pytest.mark.slow
async def test_enqueue_phases_store_every_job(queue: Queue) -> None:
    await queue_bench.register_target(queue)
    assert await queue_bench.enqueue_batch(queue, 2_000, batch=500) > 0
    assert await sql_value(queue, COUNT_BY_STATE, ("queued",)) == 2_000
    assert await queue_bench.enqueue_single(queue, 200) > 0
    assert await sql_value(queue, COUNT_BY_STATE, ("queued",)) == 200


async def test_drain_completes_every_job_once(queue: Queue) -> None:
    await queue_bench.register_target(queue)
    assert await queue_bench.drain(queue, 1_000, batch=50, claimers=2) > 0
    assert await sql_value(queue, COUNT_BY_STATE, ("succeeded",)) == 1_000
    assert await sql_value(queue, "SELECT max(attempts) FROM herald.jobs") == 1


@pytest.mark.slow
async def test_latency_sees_every_job_and_the_floor_cleans_up(db_url: str, queue: Queue) -> None:
    await queue_bench.register_target(queue)
    lat = await queue_bench.latency(db_url, queue, rate=200, seconds=0.5)
    assert lat["jobs"] == 100
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert await sql_value(queue, COUNT_BY_STATE, ("succeeded",)) == 100
    floor = await queue_bench.commit_floor(queue, 20)
    assert 0 < floor["p50"] <= floor["p99"]
    assert await sql_value(queue, "SELECT to_regclass('herald_bench_commit_probe')") is None


async def test_the_delivery_receiver_counts_what_it_is_sent() -> None:
    """The delivery benchmark's receiver (its own process, a minimal HTTP/1.1 server):
    every request counted once per webhook-id, signed ones counted, latencies taken from
    the payload's t0 per path, keep-alive and chunked bodies understood, anything else
    answered with a 4xx."""
    port = deliver_bench.free_port()
    base = f"http://127.0.0.1:{port}"
    async with deliver_bench.process(sys.executable, "-m", "herald_tools.bench.sink", str(port)):
        await deliver_bench.wait_http(f"{base}/stats")
        t0 = time.monotonic_ns()
        async with aiohttp.ClientSession() as http:
            for i, path in enumerate(("/hook", "/hook", "/quiet")):
                headers = {"webhook-id": f"msg_{i}", "webhook-signature": "v1,x"}
                async with http.post(base + path, json={"t0": t0}, headers=headers) as r:
                    assert (r.status, await r.text()) == (200, "ok")
            async with http.post(base + "/hook", data=b"{}", headers={"webhook-id": "msg_0"}):
                pass
            async with http.post(base + "/elsewhere", data=b"{}") as r:
                assert r.status == 404
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /hook HTTP/1.1\r\nHost: x\r\nwebhook-id: msg_9\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n"
            b"NOT HTTP\r\n\r\n"
        )
        answers = await asyncio.wait_for(reader.read(), 10)  # read until it closes
        writer.close()
        assert answers.startswith(b"HTTP/1.1 200 OK\r\n"), answers
        assert b"HTTP/1.1 400 Bad Request" in answers, answers
        stats = await deliver_bench.sink_stats(base)
        assert (stats["count"], stats["unique"], stats["signed"]) == (5, 4, 3)
        assert sorted(stats["latencies_ms_by_path"]) == ["/hook", "/quiet"]
        assert len(stats["latencies_ms"]) == 3
        assert all(ms >= 0 for ms in stats["latencies_ms"])
        await deliver_bench.sink_reset(base)
        assert (await deliver_bench.sink_stats(base))["count"] == 0
