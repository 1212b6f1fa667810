"""Capacity, softly (seed 002): warnings at 80 % and 100 % as metrics and one log line per
crossing, capacityPct in the stats, and the optional hard limit as 429 + Retry-After (503
to Alertmanager), on a real worker over real HTTP and PostgreSQL.

The targets are paused, so their jobs wait: the fill only moves when the test enqueues."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from herald_queue.settings import QueueSettings
from tests.helpers import sql_value, wait_until
from tests.integration.worker.harness import Worker, metric, target_doc, worker, write_manifests
from tests.integration.worker.test_alertmanager import message, pod_alert

URL = "https://hooks.example.com/herald"


@pytest.fixture()
async def capped(db_url: str, tmp_path: Path) -> AsyncIterator[Worker]:
    docs = [
        target_doc("hard", URL, paused=True, capacity={"jobs": 5, "hardLimit": True}),
        target_doc("soft", URL, paused=True, capacity={"jobs": 2}),
        target_doc("free", URL, paused=True),
    ]
    async with worker(
        db_url,
        write_manifests(tmp_path / "targets.yaml", docs),
        queue_settings=QueueSettings(capacity=20),
    ) as w:
        yield w


async def sampled(w: Worker, name: str, ratio: float) -> dict[Any, float]:
    """/metrics once the sampler has seen ``name`` at ``ratio`` of its capacity."""

    async def check() -> dict[Any, float] | None:
        samples = await w.metrics()
        found = metric(samples, "herald_queue_capacity_ratio", target=f"default/{name}")
        return samples if found == pytest.approx(ratio) else None

    result: dict[Any, float] = await wait_until(check, what=f"{name} sampled at {ratio}")
    return result


def capacity_logs(caplog: pytest.LogCaptureFixture, target: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "herald.maintenance" and getattr(r, "target", None) == target
    ]


async def test_warnings_once_per_crossing_and_never_a_refusal_by_default(
    capped: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="herald.maintenance")
    ids = [(await capped.submit("soft", {"n": 1}))["id"]]
    await sampled(capped, "soft", 0.5)
    assert capacity_logs(caplog, "default/soft") == []
    for n in range(2, 5):  # beyond the capacity: still accepted (soft)
        ids.append((await capped.submit("soft", {"n": n}))["id"])
    samples = await sampled(capped, "soft", 2.0)
    assert metric(samples, "herald_queue_capacity_jobs", target="default/soft") == 2
    assert full_crossings(samples, "soft") == 1
    # Samples later (every 0.2 s, and two more here), still one line and one count.
    await capped.running.maintenance.sample_once()
    await capped.running.maintenance.sample_once()
    samples = await capped.metrics()
    assert full_crossings(samples, "soft") == 1
    assert capacity_logs(caplog, "default/soft") == ["queue at capacity"]
    [record] = [r for r in caplog.records if getattr(r, "target", None) == "default/soft"]
    # The sampler runs beside the submissions: its crossing count saw 2, 3 or 4 of them.
    assert record.levelname == "WARNING" and getattr(record, "percent", 0) >= 100.0
    assert metric(samples, "herald_jobs_refused_total", target="default/soft") == 0
    # A target without a capacity has no ratio series.
    assert not [
        k
        for k in samples
        if k[0] == "herald_queue_capacity_ratio" and ("target", "default/free") in k[1]
    ]
    # Draining below 80 % (cancelling here) is one line too, at INFO, and no count.
    for job_id in ids[1:]:
        status, _ = await capped.delete(f"/v1/jobs/{job_id}")
        assert status == 200
    samples = await sampled(capped, "soft", 0.5)
    assert full_crossings(samples, "soft") == 1
    assert capacity_logs(caplog, "default/soft") == [
        "queue at capacity",
        "capacity fill went down a level",
    ]


def full_crossings(samples: dict[Any, float], name: str) -> float:
    return metric(
        samples, "herald_queue_capacity_crossings_total", target=f"default/{name}", level="full"
    )


async def test_stats_carry_capacity_pct(capped: Worker) -> None:
    for n in range(4):
        await capped.submit("hard", {"n": n})
    await capped.submit("free", {"n": 0})
    status, stats = await capped.get("/v1/queue/stats")
    assert status == 200, stats
    assert stats["capacityPct"] == 25.0, "5 waiting of HERALD_QUEUE_CAPACITY=20"
    assert stats["byTarget"]["default/hard"]["capacityPct"] == 80.0
    assert stats["byTarget"]["default/free"]["capacityPct"] is None
    samples = await sampled(capped, "hard", 0.8)
    assert metric(samples, "herald_queue_total_capacity_ratio") == pytest.approx(0.25)
    assert metric(samples, "herald_queue_total_capacity_jobs") == 20
    assert (
        metric(
            samples, "herald_queue_capacity_crossings_total", target="default/hard", level="warning"
        )
        == 1
    )


async def test_a_hard_limit_is_exact_under_concurrent_submissions(capped: Worker) -> None:
    """Twenty requests at once, each checked before any is written: exactly the capacity
    (5) is accepted, whenever the worker's counts interleave with them."""
    answers = await asyncio.gather(
        *(capped.post("/v1/jobs", json={"target": "hard", "payload": {"n": n}}) for n in range(20))
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] * 5 + [429] * 15, answers
    count = await sql_value(
        capped.queue,
        "SELECT count(*) FROM herald.jobs j JOIN herald.targets t ON t.id = j.target_id "
        "WHERE t.name = 'hard'",
    )
    assert count == 5
    for _ in range(3):  # counts later, still full
        await capped.running.maintenance.sample_once()
        status, body = await capped.post("/v1/jobs", json={"target": "hard", "payload": 1})
        assert status == 429, body


async def test_a_hard_limit_answers_429_with_retry_after(capped: Worker) -> None:
    await capped.submit("hard", {"n": 0})
    status, batch = await capped.post(
        "/v1/jobs", json=[{"target": "hard", "payload": {"n": n}} for n in range(1, 5)]
    )
    assert status == 201, batch  # 5 of 5: at the capacity, not beyond
    async with capped.http.post(
        f"{capped.base}/v1/jobs", json={"target": "hard", "payload": {"n": 5}}
    ) as r:
        body = await r.json()
        assert r.status == 429, body
        assert r.headers["Retry-After"] == "1"  # the sample interval (0.2 s), rounded up
    assert body["error"]["field"] == "target"
    assert "target default/hard is full: 5 jobs waiting of 5" in body["error"]["message"]
    # A batch is refused whole, even when only one of its targets is full.
    status, mixed = await capped.post(
        "/v1/jobs",
        json=[{"target": "free", "payload": 1}, {"target": "hard", "payload": 2}],
    )
    assert status == 429, mixed
    # The Alertmanager receiver answers 503 (Alertmanager retries 5xx), Retry-After too.
    async with capped.http.post(
        f"{capped.base}/v1/alertmanager/hard",
        json=message(pod_alert("api-1", "critical", "f1")),
    ) as r:
        answer = await r.json()
        assert r.status == 503, answer
        assert r.headers["Retry-After"] == "1"
    assert "is full" in answer["error"]["message"]
    count = await sql_value(
        capped.queue,
        "SELECT count(*) FROM herald.jobs j JOIN herald.targets t ON t.id = j.target_id "
        "WHERE t.name IN ('hard', 'free')",
    )
    assert count == 5, "nothing refused was written"
    samples = await capped.metrics()
    assert metric(samples, "herald_jobs_refused_total", target="default/hard") == 3
    assert metric(samples, "herald_jobs_refused_total", target="default/free") == 1
    # Other targets are not limited.
    await capped.submit("free", {"n": 1})
