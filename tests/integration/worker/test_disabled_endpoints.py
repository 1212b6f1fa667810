"""Targets failing for days are disabled (HERALD_DISABLE_AFTER, spec.disableAfterSeconds),
their jobs held, not dead-lettered; `herald targets enable` brings them back.

Real PostgreSQL, a real receiver answering 503, the worker's own rescuer loop making the
decision; only the time it decides by is the test's clock (moved days ahead, no sleeping).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from herald_tools.receiver import Answer, Receiver
from herald_worker.api import models
from tests.helpers import wait_until
from tests.integration.cli.cli import herald
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    Worker,
    states,
    target_doc,
    worker,
    write_manifests,
)

DAY = 86_400.0


class Clock:
    """The time the worker's disable check goes by; counts how often it is read, so a
    test can wait for the rescuer loop to have run (instead of sleeping)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()
        self.reads = 0

    def __call__(self) -> dt.datetime:
        self.reads += 1
        return dt.datetime.now(dt.UTC) + self.offset

    async def passes(self, n: int) -> None:
        """Until the rescuer has read the clock ``n`` more times."""
        start = self.reads
        await wait_until(lambda: self.reads >= start + n, timeout=10, what="rescuer passes")


async def row(w: Worker, ref: str = "default/hook") -> dict[str, object]:
    [found] = [
        models.Target.from_record(t).dump() for t in await w.queue.registry.list() if t.ref == ref
    ]
    return found


@pytest.mark.slow
async def test_a_target_failing_for_days_is_disabled_and_one_command_enables_it(
    db_url: str, tmp_path: Path
) -> None:
    failing = True

    def script(receiver: Receiver, request: object, body: bytes) -> Answer:
        return Answer(503) if failing else Answer()

    clock = Clock()
    async with TrackingReceiver(script) as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                # Retried for ever (in tens of ms) and no breaker: only disabling stops it.
                target_doc(
                    "hook",
                    rx.url,
                    retry={"maxAttempts": 100, **FAST_RETRY},
                    circuitBreaker=NO_BREAKER,
                ),
                # Same failures, but its spec says never disable.
                target_doc(
                    "never",
                    rx.url,
                    retry={"maxAttempts": 100, **FAST_RETRY},
                    circuitBreaker=NO_BREAKER,
                    disableAfterSeconds=0,
                ),
            ],
        )
        async with worker(db_url, path, disable_after=5 * DAY) as w:
            w.running.maintenance.clock = clock
            job = (await w.submit("hook", {"n": 1}))["id"]
            await w.submit("never", {"n": 2})
            await wait_until(
                lambda: rx.counts().get(job, 0) >= 3, timeout=20, what="three attempts"
            )
            first = await row(w)
            assert first["failingSince"] is not None and first["disabled"] is False

            # Four days later: still failing, not yet disabled.
            clock.offset = dt.timedelta(days=4)
            await clock.passes(3)
            assert (await row(w))["disabled"] is False

            # Five days and a second: disabled by the rescuer loop; "never" is not.
            clock.offset = dt.timedelta(days=5, seconds=1)

            async def disabled() -> bool:
                return bool((await row(w))["disabled"])

            await wait_until(disabled, timeout=10, what="hook disabled")
            assert (await row(w, "default/never"))["disabled"] is False
            reason = str((await row(w))["autoPausedReason"])
            assert reason.startswith("deliveries have failed continuously since ")
            assert "disabled after 432000 s; last error: HTTP 503" in reason

            # No deliveries any more; the job waits (not dead-lettered).
            await wait_until(lambda: job not in rx.in_flight_ids, what="nothing in flight")
            before = rx.counts().get(job, 0)
            later = (await w.submit("hook", {"n": 3}))["id"]
            await clock.passes(5)
            assert rx.counts().get(job, 0) == before
            assert later not in rx.counts()
            waiting = await states(w.queue, "hook")
            assert set(waiting) <= {"queued", "retrying"} and sum(waiting.values()) == 2, waiting
            samples = await w.metrics()
            assert samples[("herald_targets_disabled_total", (("target", "default/hook"),))] == 1

            listed = await herald("targets", "list", url=db_url)
            assert "default/hook" in listed.out and "disabled" in listed.out

            # The endpoint is fixed; one command brings the target back.
            failing = False
            enabled = await herald("targets", "enable", "hook", url=db_url)
            assert enabled.code == 0, enabled.err
            assert enabled.out.strip() == "enabled hook: its jobs are delivered again"
            await wait_until(
                lambda: rx.counts().get(later, 0) >= 1, timeout=20, what="delivered again"
            )
            after = await row(w)
            assert after["disabled"] is False and after["failingSince"] is None

            again = await herald("targets", "enable", "hook", url=db_url)
            assert "hook is not disabled, nothing done" in again.error
