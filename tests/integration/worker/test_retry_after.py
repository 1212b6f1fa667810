"""A receiver's ``Retry-After`` is obeyed: the next attempt is scheduled (``run_at`` in the
database) no earlier than it asks, and the receiver does not see the retry before then;
it is capped by HERALD_RETRY_AFTER_CAP (WorkerSettings.retry_after_cap)."""

from __future__ import annotations

import email.utils
import math
import time
from pathlib import Path
from typing import Any

import pytest

from herald_tools.receiver import Answer
from tests.helpers import sql_rows, wait_until
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    fail_first,
    per_id,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)


def manifests(tmp_path: Path, url: str) -> Path:
    return write_manifests(
        tmp_path / "targets.yaml",
        [
            target_doc(
                "hook", url, retry={"maxAttempts": 5, **FAST_RETRY}, circuitBreaker=NO_BREAKER
            )
        ],
    )


async def scheduled_delay(w: Any, job_id: str) -> dict[str, Any]:
    """While the job waits for its retry: the delay the database recorded, exactly
    (``run_at`` minus the failure's now(), which the same statement wrote to the target)."""

    async def retrying() -> list[dict[str, Any]]:
        return await sql_rows(
            w.queue,
            "SELECT extract(epoch FROM j.run_at - t.last_error_at)::float AS delay, j.state "
            "FROM herald.jobs j JOIN herald.targets t ON t.id = j.target_id "
            "WHERE j.id = %s AND j.state = 'retrying'",
            [job_id],
        )

    [row] = await wait_until(retrying, timeout=10, interval=0.01, what="job retrying")
    return row


@pytest.mark.slow
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_is_obeyed(db_url: str, tmp_path: Path, status: int) -> None:
    wait = 1
    answer = Answer(status, headers={"Retry-After": str(wait)}, body="slow down")
    async with (
        TrackingReceiver(fail_first(1, answer)) as rx,
        worker(db_url, manifests(tmp_path, rx.url)) as w,
    ):
        submitted = await w.submit("hook")
        row = await scheduled_delay(w, submitted["id"])
        assert row["delay"] >= wait, "run_at is at least Retry-After after the failure"
        assert row["delay"] < wait + 0.5, "and not much more (the backoff is 0.05 s)"
        await wait_state(w.queue, "succeeded", 1)
        first, second = rx.intervals
        assert second.started - first.ended >= wait * 0.98, (
            f"the retry came {second.started - first.ended:.3f}s after the 429/503"
        )
        assert rx.delivered_ids() == [submitted["id"]]


@pytest.mark.slow
async def test_retry_after_http_date_is_obeyed(db_url: str, tmp_path: Path) -> None:
    """An HTTP-date: the retry comes no earlier than that time (wall clock)."""
    not_before: list[float] = []
    answered: list[float] = []

    def script(n: int, body: bytes) -> Answer:
        if n == 0:
            answered.append(time.time())
            when = math.floor(answered[0]) + 2  # a whole second, 1 to 2 s from now
            not_before.append(when)
            return Answer(503, headers={"Retry-After": email.utils.formatdate(when, usegmt=True)})
        return Answer()

    async with (
        TrackingReceiver(per_id(script)) as rx,
        worker(db_url, manifests(tmp_path, rx.url)) as w,
    ):
        submitted = await w.submit("hook")
        row = await scheduled_delay(w, submitted["id"])
        seen = time.time()
        # The worker read the date between the answer and the row showing up: the delay it
        # turned it into lies between what was left of it at those two moments (measured,
        # so a slow machine does not make this fail).
        assert not_before[0] - seen - 0.01 <= row["delay"] <= not_before[0] - answered[0], row
        await wait_state(w.queue, "succeeded", 1)
        second = rx.intervals[1]
        assert second.wall >= not_before[0] - 0.01, (
            f"retried at {second.wall:.3f}, asked not before {not_before[0]}"
        )
        assert rx.delivered_ids() == [submitted["id"]]


async def test_retry_after_is_capped(db_url: str, tmp_path: Path) -> None:
    """Retry-After: 3600 with HERALD_RETRY_AFTER_CAP=0.5 waits 0.5 s, not an hour."""
    answer = Answer(429, headers={"Retry-After": "3600"})
    async with (
        TrackingReceiver(fail_first(1, answer)) as rx,
        worker(db_url, manifests(tmp_path, rx.url), retry_after_cap=0.5) as w,
    ):
        submitted = await w.submit("hook")
        row = await scheduled_delay(w, submitted["id"])
        assert 0.5 <= row["delay"] < 0.6, row
        await wait_state(w.queue, "succeeded", 1, timeout=10)
        first, second = rx.intervals
        assert second.started - first.ended >= 0.5 * 0.98


async def test_backoff_longer_than_retry_after_wins(db_url: str, tmp_path: Path) -> None:
    """Retry-After is a floor, not a replacement: a longer backoff is kept."""
    answer = Answer(503, headers={"Retry-After": "1"})
    async with TrackingReceiver(fail_first(1, answer)) as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc(
                    "hook",
                    rx.url,
                    retry={
                        "maxAttempts": 5,
                        "initialBackoffSeconds": 1.5,
                        "maxBackoffSeconds": 2,
                        "jitterSeconds": 0,
                    },
                    circuitBreaker=NO_BREAKER,
                )
            ],
        )
        async with worker(db_url, path) as w:
            submitted = await w.submit("hook")
            row = await scheduled_delay(w, submitted["id"])
            assert 1.5 <= row["delay"] < 1.6, row
