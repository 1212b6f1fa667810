"""Targets change under a running worker:

- a spec change (a new URL) applies without a restart, by notification;
- a 410 Gone pauses the target: its jobs are held (not dead-lettered, attempt not
  counted) until ``herald targets resume`` or a spec change;
- a missing Secret key (PagerDuty without routingKey) makes deliveries fail transiently and
  opens the circuit instead of dead-lettering jobs; fixed, the jobs are delivered;
- a rate limit (requestsPerSecond 20, burst 5) spaces deliveries as a token bucket does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from herald_model.target_spec import parse_target
from herald_tools.receiver import Answer, Receiver
from tests.helpers import open_queue, sql_rows, wait_until
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    circuit,
    dead_letters,
    metric,
    secret_doc,
    states,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

RETRY = {"maxAttempts": 3, **FAST_RETRY}
ROUTING_KEY = "0123456789abcdef0123456789ABCDEF"


async def target(queue: Any, name: str = "hook") -> dict[str, Any]:
    [row] = await sql_rows(
        queue, "SELECT * FROM herald.targets WHERE name = %s AND deleted_at IS NULL", [name]
    )
    return row


async def test_a_new_url_applies_without_restart(db_url: str, tmp_path: Path) -> None:
    async with TrackingReceiver() as old, TrackingReceiver() as new:
        path = write_manifests(
            tmp_path / "targets.yaml", [target_doc("hook", old.url, retry=RETRY)]
        )
        # Only a notification can tell the worker in time: the periodic refresh is 1 min.
        async with (
            worker(db_url, path, targets_refresh=60.0) as w,
            await open_queue(db_url) as operator,
        ):
            first = await w.submit("hook", {"to": "old"})
            await wait_state(w.queue, "succeeded", 1)
            assert old.delivered_ids() == [first["id"]]

            await operator.registry.apply(
                parse_target(target_doc("hook", new.url, retry=RETRY, headers={"X-Version": "2"}))
            )
            await wait_until(
                lambda: [t.row.spec.url for t in w.running.worker.directory.all()] == [new.url],
                timeout=5,
                what="the worker sees the new spec",
            )
            second = await w.submit("hook", {"to": "new"})
            await wait_state(w.queue, "succeeded", 2)
            assert new.delivered_ids() == [second["id"]]
            assert new.received[0].headers["x-version"] == "2"
            assert old.delivered_ids() == [first["id"]], "nothing more to the old URL"


async def test_a_deleted_target_is_refused_at_once(db_url: str, tmp_path: Path) -> None:
    """The operator deletes a target: the worker hears it by notification (its periodic
    refresh is a minute away) and refuses submissions for it from then on; a target of the
    same name created again takes submissions, for the new target."""
    async with TrackingReceiver() as rx:
        path = write_manifests(tmp_path / "targets.yaml", [target_doc("hook", rx.url)])
        async with (
            worker(db_url, path, targets_refresh=60.0) as w,
            await open_queue(db_url) as operator,
        ):
            await w.submit("hook", {"n": 1})  # the name is now in the worker's cache
            old_id = (await target(w.queue))["id"]
            await operator.registry.delete("hook")
            await wait_until(
                lambda: w.running.worker.directory.all() == [],
                timeout=5,
                what="the worker hears of the deletion",
            )
            status, body = await w.post("/v1/jobs", json={"target": "hook", "payload": 2})
            assert status == 404, body
            await operator.registry.apply(parse_target(target_doc("hook", rx.url)))
            await wait_until(
                lambda: len(w.running.worker.directory.all()) == 1,
                timeout=5,
                what="the worker hears of the new target",
            )
            status, body = await w.post("/v1/jobs", json={"target": "hook", "payload": 3})
            assert status == 201, body
            [row] = await sql_rows(
                w.queue, "SELECT target_id FROM herald.jobs WHERE id = %s", [body["id"]]
            )
            assert row["target_id"] != old_id


@pytest.mark.slow
@pytest.mark.parametrize("resume", ["cli", "spec-change"])
async def test_gone_pauses_the_target_until_resumed(
    db_url: str, tmp_path: Path, resume: str
) -> None:
    gone = True

    def script(receiver: Receiver, request: object, body: bytes) -> Answer:
        return Answer(410, body="this hook was deleted") if gone else Answer()

    async with TrackingReceiver(script) as rx:
        path = write_manifests(tmp_path / "targets.yaml", [target_doc("hook", rx.url, retry=RETRY)])
        async with worker(db_url, path) as w, await open_queue(db_url) as other:
            ids = await w.submit_many("hook", [{"n": i} for i in range(5)])

            async def paused_and_settled() -> bool:
                row = await target(w.queue)
                return (
                    row["auto_paused_reason"] is not None
                    and (await states(w.queue)).get("running", 0) == 0
                )

            await wait_until(paused_and_settled, timeout=10, what="auto-paused")
            row = await target(w.queue)
            assert "410" in row["auto_paused_reason"], row["auto_paused_reason"]
            assert row["circuit_state"] == "closed", "not an outage: a pause"
            jobs = await sql_rows(w.queue, "SELECT state, attempts, leased_by FROM herald.jobs")
            assert {(j["state"], j["attempts"], j["leased_by"]) for j in jobs} == {
                ("queued", 0, None)
            }, "held, the attempt not counted"
            assert await dead_letters(w.queue) == []
            for job_id in ids:  # the API says so too (not a stale "running" from the tracker)
                _, shown = await w.get(f"/v1/jobs/{job_id}")
                assert shown["state"] == "queued", shown
            assert 1 <= len(rx.received) <= 5
            requests_when_paused = len(rx.received)
            assert await other.jobs.claim("someone-else", 10) == [], "nothing is claimable"
            _, targets = await w.get("/v1/targets")
            assert "410" in targets["items"][0]["autoPausedReason"]
            samples = await w.metrics()
            assert metric(samples, "herald_targets_auto_paused_total", target="default/hook") == 1
            await wait_until(lambda: _paused_sampled(w), timeout=5)
            assert len(rx.received) == requests_when_paused, "held while paused"

            gone = False
            if resume == "cli":
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "herald_tools.cli.main",
                    "targets",
                    "resume",
                    "hook",
                    env={**os.environ, "HERALD_DATABASE_URL": db_url},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                out, _ = await proc.communicate()
                assert proc.returncode == 0, out.decode()
            else:
                await other.registry.apply(
                    parse_target(
                        target_doc("hook", rx.url, retry=RETRY, headers={"X-Fixed": "yes"})
                    )
                )
            await wait_state(w.queue, "succeeded", 5, timeout=15)
            assert sorted(rx.delivered_ids()) == sorted(ids)
            assert (await target(w.queue))["auto_paused_reason"] is None
            assert await dead_letters(w.queue) == []


async def _paused_sampled(w: Any) -> bool:
    return metric(await w.metrics(), "herald_target_paused", target="default/hook") == 1


@pytest.mark.slow
async def test_missing_secret_key_rides_out_like_an_outage(db_url: str, tmp_path: Path) -> None:
    async with TrackingReceiver() as rx:
        spec = {
            "type": "pagerduty",
            "secretRef": {"name": "pd"},
            "retry": RETRY,
            "circuitBreaker": {"failureThreshold": 3, "openSeconds": 0.3},
        }
        broken = write_manifests(
            tmp_path / "broken.yaml",
            [target_doc("pager", rx.url, **spec), secret_doc("pd", integrationKey="oops")],
        )
        fixed = write_manifests(
            tmp_path / "fixed.yaml",
            [target_doc("pager", rx.url, **spec), secret_doc("pd", routingKey=ROUTING_KEY)],
        )

        async with worker(db_url, broken) as w:
            ids = await w.submit_many(
                "pager",
                [{"summary": f"s{i}", "severity": "error", "source": "db-1"} for i in range(10)],
            )
            await wait_until(lambda: _opened(w.queue), timeout=10, what="circuit open")
            row = await target(w.queue, "pager")
            assert row["last_error_class"] == "transient"
            assert "routingKey" in row["last_error"], row["last_error"]
            assert ROUTING_KEY not in row["last_error"]
            # several open/probe rounds: still nothing dead, nothing sent
            deadline = time.monotonic() + 1.2
            while time.monotonic() < deadline:
                counts = await states(w.queue)
                assert "dead" not in counts, counts
                await asyncio.sleep(0.05)
            assert rx.received == [], "nothing can be sent without the routing key"
            assert await dead_letters(w.queue) == []
            assert (await target(w.queue, "pager"))["circuit_trips_total"] >= 1
            _, stats = await w.get("/v1/queue/stats")
            assert stats["dead"] == 0 and stats["succeeded"] == 0

        async with worker(db_url, fixed) as w:  # the Secret is fixed (restart with it)
            await wait_state(w.queue, "succeeded", 10, timeout=15)
            assert await circuit(w.queue, "pager") == "closed"
            events = [json.loads(r.body) for r in rx.received]
            assert len(events) == 10
            assert {e["routing_key"] for e in events} == {ROUTING_KEY}
            assert {e["dedup_key"] for e in events} == set(ids)
            assert {e["event_action"] for e in events} == {"trigger"}
            assert await dead_letters(w.queue) == []


async def _opened(queue: Any) -> bool:
    return await circuit(queue, "pager") in ("open", "half_open")


@pytest.mark.slow
async def test_rate_limit_spaces_deliveries(db_url: str, tmp_path: Path) -> None:
    rate, burst, jobs = 20.0, 5, 60
    async with TrackingReceiver() as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc(
                    "hook",
                    rx.url,
                    circuitBreaker=NO_BREAKER,
                    rateLimit={"requestsPerSecond": rate, "burst": burst},
                )
            ],
        )
        async with worker(db_url, path) as w:
            ids = await w.submit_many("hook", [{"n": i} for i in range(jobs)])
            await wait_state(w.queue, "succeeded", jobs, timeout=60)
            assert sorted(rx.delivered_ids()) == sorted(ids)
            # When each job was claimed, on the database's clock (the one the bucket runs
            # on): the bound is exact there, whatever the delays between claim and request.
            claimed = await sql_rows(
                w.queue,
                "SELECT extract(epoch FROM started_at)::float AS t FROM herald.jobs "
                "ORDER BY started_at",
            )
    starts = [r["t"] for r in claimed]
    t0 = starts[0]
    for k, t in enumerate(starts):
        allowed = burst + rate * (t - t0) + 1  # + 1: a token partly refilled
        assert k + 1 <= allowed, (
            f"{k + 1} claims within {t - t0:.3f}s: more than burst + rate * t = {allowed:.1f}"
        )
    span = starts[-1] - t0
    assert span >= (jobs - burst - 1) / rate, f"{jobs} claims in {span:.2f}s"
    assert len(rx.intervals) == jobs, "one request per claim"


async def test_target_concurrency_bounds_deliveries_in_flight(db_url: str, tmp_path: Path) -> None:
    """HERALD_TARGET_CONCURRENCY: at most this many deliveries to one target at once, per
    worker process, from the first claim on."""
    async with TrackingReceiver() as rx:
        rx.gate.clear()  # hold every request: what is in flight stays in flight
        path = write_manifests(
            tmp_path / "targets.yaml", [target_doc("hook", rx.url, circuitBreaker=NO_BREAKER)]
        )
        async with worker(
            db_url, path, concurrency=64, target_concurrency=4, claim_batch=50, shutdown_grace=0.5
        ) as w:
            try:
                await w.submit_many("hook", [{"n": i} for i in range(20)])
                await wait_until(lambda: rx.in_flight >= 4, timeout=10)
                for _ in range(10):  # watch a few claim rounds (poll interval 0.05 s)
                    running = (await states(w.queue)).get("running", 0)
                    assert running <= 4, f"{running} jobs of one target running at once"
                    await asyncio.sleep(0.05)
                assert rx.max_in_flight == 4, f"{rx.max_in_flight} deliveries at once"
            finally:
                rx.gate.set()
            await wait_state(w.queue, "succeeded", 20)
            assert rx.max_in_flight == 4
