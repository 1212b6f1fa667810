"""The metrics the seeds name (001, 004), read from a real worker's /metrics: retry
successes, dead-letter reads, and dead-letter writes and replays counted on every path,
whichever process takes it (the worker's delivery loop and rescuer, the API, the CLI; the
operator's replays: tests/integration/operator/test_replays.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from herald_tools.receiver import Answer, Receiver
from tests.helpers import sql_exec, wait_until
from tests.integration.cli.cli import ok
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    Worker,
    metric,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

WRITTEN = "herald_dead_letters_written_total"
REPLAYED = "herald_dead_letters_replayed_total"


@pytest.fixture()
async def rx() -> AsyncIterator[TrackingReceiver]:
    seen: set[str] = set()

    def script(receiver: Receiver, request: Any, body: bytes) -> Answer:
        if request.query.get("reject"):
            return Answer(400, body="no thanks")
        job = request.headers["webhook-id"]
        if request.query.get("flaky") and job not in seen:
            seen.add(job)
            return Answer(503, body="try again")
        return Answer()

    async with TrackingReceiver(script) as receiver:
        yield receiver


@pytest.fixture()
async def w(db_url: str, tmp_path: Path, rx: TrackingReceiver) -> AsyncIterator[Worker]:
    retry = {"retry": {"maxAttempts": 3, **FAST_RETRY}, "circuitBreaker": NO_BREAKER}
    once = {"retry": {"maxAttempts": 1, **FAST_RETRY}, "circuitBreaker": NO_BREAKER}
    docs = [
        target_doc("ok", rx.url, **retry),
        target_doc("flaky", rx.url + "?flaky=1", **retry),
        target_doc("reject", rx.url + "?reject=1", **retry),
        target_doc("held", rx.url, paused=True, **once),
        target_doc("doomed", rx.url, paused=True, **once),
    ]
    async with worker(db_url, write_manifests(tmp_path / "targets.yaml", docs)) as running:
        yield running


async def scraped(w: Worker, name: str, value: float, **labels: str) -> dict[Any, float]:
    """/metrics once ``name`` with ``labels`` reads ``value`` (the sampler's next tick)."""

    async def check() -> dict[Any, float] | None:
        samples = await w.metrics()
        return samples if metric(samples, name, **labels) == value else None

    found: dict[Any, float] = await wait_until(check, timeout=10, what=f"{name}{labels} == {value}")
    return found


async def _with(samples: Any, check: Any) -> Any:
    value = await samples
    return value if check(value) else None


async def test_retry_successes_and_dead_letter_reads(w: Worker) -> None:
    await w.submit("ok", {"n": 1})
    await w.submit("flaky", {"n": 1})
    await wait_state(w.queue, "succeeded", 2)
    samples = await w.metrics()
    assert metric(samples, "herald_retry_successes_total", target="default/flaky") == 1
    assert metric(samples, "herald_retry_successes_total", target="default/ok") == 0
    assert metric(samples, "herald_jobs_delivered_total") == 2

    await w.submit("reject", {"n": 1})
    await wait_state(w.queue, "dead", 1)
    reads = "herald_dead_letter_reads_total"
    assert metric(samples, reads, operation="list") == 0
    _, page = await w.get("/v1/dead-letters")
    await w.get(f"/v1/dead-letters/{page['items'][0]['id']}")
    await w.get("/v1/dead-letters/stats")
    await w.get("/v1/dead-letters", params={"priority": "high"})
    samples = await w.metrics()
    assert metric(samples, reads, operation="list") == 2
    assert metric(samples, reads, operation="show") == 1
    assert metric(samples, reads, operation="stats") == 1


@pytest.mark.slow
async def test_dead_letter_writes_and_replays_are_counted_on_every_path(
    w: Worker, db_url: str
) -> None:
    # Every live target shows its series at zero, from the first sample on.
    zero = (WRITTEN, (("error_class", "permanent"), ("reason", "permanent-error"),
                      ("target", "default/ok")))  # fmt: skip
    samples = await wait_until(
        lambda: _with(w.metrics(), lambda s: zero in s), what="the first sample"
    )
    assert samples[zero] == 0
    assert samples[(REPLAYED, (("target", "default/held"),))] == 0

    # 1. A delivery failure (permanent: 400), in the worker's loop.
    await w.submit("reject", {"n": 1})
    await scraped(w, WRITTEN, 1, target="default/reject", reason="permanent-error")

    # 2. Cancels: through the API (this worker), and through the CLI (another process).
    held = [(await w.submit("held", {"n": n}))["id"] for n in range(4)]
    status, _ = await w.delete(f"/v1/jobs/{held[0]}")
    assert status == 200
    await ok("jobs", "cancel", held[1], url=db_url)
    await scraped(w, WRITTEN, 2, target="default/held", error_class="permanent", reason="cancelled")

    # 3. The lease rescuer: a job whose worker vanished mid-delivery, out of attempts.
    moved = await sql_exec(
        w.queue,
        "UPDATE herald.jobs SET state = 'running', attempts = 1, leased_by = 'vanished', "
        "started_at = now(), lease_expires_at = now() - interval '1 second' "
        "WHERE id = %(id)s",
        {"id": held[2]},
    )
    assert moved == 1
    await scraped(
        w, WRITTEN, 1, target="default/held", error_class="transient", reason="attempts-exhausted"
    )

    # 4. A target deleted with jobs waiting (the CLI here; the operator takes the same path).
    await w.submit("doomed", {"n": 1})
    await w.submit("doomed", {"n": 2})
    await ok("targets", "delete", "doomed", url=db_url)
    samples = await scraped(w, WRITTEN, 2, target="default/doomed", reason="target-deleted")
    assert metric(samples, WRITTEN) == 1 + 2 + 1 + 2, "nothing counted twice"

    # Replays, with their target: through the API and through the CLI.
    assert metric(samples, REPLAYED, target="default/held") == 0
    _, cancelled = await w.get(
        "/v1/dead-letters", params={"target": "held", "errorClass": "permanent"}
    )
    first, second = (i["id"] for i in cancelled["items"])
    status, result = await w.post(f"/v1/dead-letters/{first}/replay")
    assert (status, result["replayed"]) == (200, 1), result
    await scraped(w, REPLAYED, 1, target="default/held")
    await ok("dlq", "replay", second, url=db_url)
    samples = await scraped(w, REPLAYED, 2, target="default/held")
    assert metric(samples, REPLAYED) == 2
    # A replay that finds no target counts nothing (the entry stays unreplayed).
    replay = await ok("dlq", "replay", "--target", "doomed", "--json", url=db_url)
    assert replay.json()["replayed"] == 0
    samples = await w.metrics()
    assert metric(samples, REPLAYED) == 2
