"""The in-memory tracker (an LRU of recent jobs) and /metrics.

- Tracker: bounded size; a lookup hits only when the entry cannot be stale (the job
  succeeded, or this process is delivering it); hits and misses are counted in
  herald_tracker_lookups_total.
- /metrics exposes what the design names (enqueued, claimed, delivered, failures by
  class, retries, backoff, delivery duration, latency, sampled depth per priority and
  target, DLQ size, circuit state, trips/recoveries, tracker size); label values are
  bounded (no job id anywhere); ``promtool check metrics`` accepts the exposition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from pathlib import Path

import pytest

from herald_core.states import JobState
from herald_tools.receiver import Answer, Receiver, always
from herald_worker.tracker import Snapshot, Tracker
from tests.conftest import need_binary
from tests.helpers import wait_until
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    UUID_RE,
    TrackingReceiver,
    fail_first,
    metric,
    parse_metrics,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

NOW = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)


def snap(state: JobState, *, local: bool = False, job_id: uuid.UUID | None = None) -> Snapshot:
    return Snapshot(
        job_id or uuid.uuid4(), "default/hook", "medium", state, 1, NOW, NOW, local=local
    )


# -- the tracker, alone ------------------------------------------------------------------------


def test_tracker_is_bounded_and_least_recently_used_goes_first() -> None:
    tracker = Tracker(3)
    snaps = [snap(JobState.SUCCEEDED) for _ in range(3)]
    for s in snaps:
        tracker.record(s)
    assert len(tracker) == 3 and tracker.maxsize == 3
    assert tracker.lookup(snaps[0].id) == snaps[0]  # now the most recently used
    tracker.record(snap(JobState.SUCCEEDED))
    assert len(tracker) == 3
    assert tracker.lookup(snaps[1].id) is None, "the least recently used was evicted"
    assert tracker.lookup(snaps[0].id) == snaps[0]
    for _ in range(100):
        tracker.record(snap(JobState.SUCCEEDED))
    assert len(tracker) == 3


def test_tracker_answers_only_what_cannot_be_stale() -> None:
    tracker = Tracker(100)
    authoritative = [snap(JobState.SUCCEEDED), snap(JobState.RUNNING, local=True)]
    stale_prone = [
        snap(JobState.QUEUED),
        snap(JobState.RETRYING),
        snap(JobState.DEAD),
        snap(JobState.RUNNING),
    ]  # running elsewhere: may have finished since
    for s in authoritative + stale_prone:
        tracker.record(s)
    for s in authoritative:
        assert tracker.lookup(s.id) == s
    for s in stale_prone:
        assert tracker.lookup(s.id) is None, s.state
    assert tracker.lookup(uuid.uuid4()) is None
    assert (tracker.hits, tracker.misses) == (2, 5)

    job_id = uuid.uuid4()  # a later transition replaces the entry
    tracker.record(snap(JobState.RUNNING, local=True, job_id=job_id))
    tracker.record(snap(JobState.RETRYING, job_id=job_id))
    assert tracker.lookup(job_id) is None
    tracker.record(snap(JobState.SUCCEEDED, job_id=job_id))
    assert tracker.lookup(job_id).state is JobState.SUCCEEDED  # type: ignore[union-attr]


# -- the tracker in the worker ------------------------------------------------------------------


async def test_lookups_through_the_api(db_url: str, tmp_path: Path) -> None:
    async with TrackingReceiver() as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [target_doc("hook", rx.url), target_doc("held", rx.url, paused=True)],
        )
        async with worker(db_url, path, tracker_size=5) as w:
            ids = [j for j in await w.submit_many("hook", [{"n": i} for i in range(10)])]
            await wait_state(w.queue, "succeeded", 10)

            async def lookups() -> tuple[float, float]:
                m = await w.metrics()
                return (
                    metric(m, "herald_tracker_lookups_total", result="hit"),
                    metric(m, "herald_tracker_lookups_total", result="miss"),
                )

            samples = await w.metrics()
            assert metric(samples, "herald_tracker_jobs") <= 5
            assert metric(samples, "herald_tracker_capacity_jobs") == 5
            assert await lookups() == (0, 0)

            recent = rx.delivered_ids()[-1]
            status, body = await w.get(f"/v1/jobs/{recent}")
            assert (status, body["source"], body["state"]) == (200, "tracker", "succeeded")
            assert await lookups() == (1, 0)

            evicted = rx.delivered_ids()[0]  # ten deliveries through a tracker of five
            status, body = await w.get(f"/v1/jobs/{evicted}")
            assert (status, body["source"], body["state"]) == (200, "database", "succeeded")
            assert await lookups() == (1, 1)

            queued = await w.submit("held", {"q": 1})
            status, body = await w.get(f"/v1/jobs/{queued['id']}")
            assert (body["source"], body["state"]) == ("database", "queued")
            assert await lookups() == (1, 2)
            assert set(rx.delivered_ids()) == set(ids)


async def test_a_job_being_delivered_here_is_answered_from_the_tracker(
    db_url: str, tmp_path: Path
) -> None:
    async with TrackingReceiver() as rx:
        rx.gate.clear()  # hold the delivery
        path = write_manifests(tmp_path / "targets.yaml", [target_doc("hook", rx.url)])
        async with worker(db_url, path) as w:
            submitted = await w.submit("hook")
            await wait_until(lambda: rx.in_flight == 1)
            status, body = await w.get(f"/v1/jobs/{submitted['id']}")
            assert status == 200, body
            assert (body["source"], body["state"], body["attempts"]) == ("tracker", "running", 1)
            rx.gate.set()
            await wait_state(w.queue, "succeeded", 1)
            _, body = await w.get(f"/v1/jobs/{submitted['id']}")
            assert (body["source"], body["state"]) == ("tracker", "succeeded")


# -- /metrics --------------------------------------------------------------------------------


async def exercised_worker_metrics(db_url: str, tmp_path: Path) -> tuple[str, list[str]]:
    """Run traffic of every kind through a worker; its exposition and the job ids."""
    retry = {"maxAttempts": 5, **FAST_RETRY}

    def down_then_up(receiver: Receiver, request: object, body: bytes) -> Answer:
        return Answer(503) if len(receiver.received) < 2 else Answer()

    async with (
        TrackingReceiver() as ok,
        TrackingReceiver(fail_first(1, Answer(503, headers={"Retry-After": "0"}))) as flaky,
        TrackingReceiver(always(Answer(400))) as bad,
        TrackingReceiver(down_then_up) as outage,
    ):
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc("ok", ok.url, retry=retry),
                target_doc("flaky", flaky.url, retry=retry, circuitBreaker=NO_BREAKER),
                target_doc("bad", bad.url, retry=retry),
                target_doc(
                    "outage",
                    outage.url,
                    retry=retry,
                    circuitBreaker={"failureThreshold": 2, "openSeconds": 0.3},
                ),
                target_doc("held", ok.url, paused=True),
            ],
        )
        async with worker(db_url, path) as w:
            ids = []
            for priority in ("high", "medium", "low"):
                ids += [(await w.submit("ok", {"p": priority}, priority=priority))["id"]]
            ids += await w.submit_many("flaky", [{"f": i} for i in range(3)])
            ids += [(await w.submit("bad", {"b": 1}))["id"]]
            ids += [(await w.submit("outage", {"o": i}))["id"] for i in range(2)]
            ids += await w.submit_many("held", [{"h": i} for i in range(4)])
            ids += [(await w.submit("held", {"h": "hi"}, priority="high"))["id"]]
            await wait_state(w.queue, "succeeded", 3 + 3 + 2, timeout=20)
            await wait_state(w.queue, "dead", 1)
            for job_id in ids[:3]:  # tracker lookups: hits
                await w.get(f"/v1/jobs/{job_id}")
            await w.get(f"/v1/jobs/{ids[-1]}")  # a miss
            await w.get(f"/v1/nowhere/{ids[-1]}")  # an unmatched route, with an id in it

            async def sampled() -> str | None:
                text = await w.metrics_text()
                m = parse_metrics(text)
                ready = (
                    metric(m, "herald_dead_letters", target="default/bad") == 1
                    and metric(
                        m,
                        "herald_queue_depth",
                        target="default/held",
                        priority="medium",
                        state="queued",
                    )
                    == 4
                    and metric(m, "herald_circuit_state", target="default/outage", state="closed")
                    == 1
                )
                return text if ready else None

            text = await wait_until(
                sampled, timeout=10, interval=0.1, what="the sampler ran after the traffic"
            )
            return text, ids


@pytest.mark.slow
async def test_metrics_exposition(db_url: str, tmp_path: Path) -> None:
    text, _ = await exercised_worker_metrics(db_url, tmp_path)
    m = parse_metrics(text)

    def value(name: str, **labels: str) -> float:
        return metric(m, name, **labels)

    assert value("herald_jobs_enqueued_total") == 3 + 3 + 1 + 2 + 5
    assert value("herald_jobs_enqueued_total", target="default/ok", priority="high") == 1
    assert value("herald_jobs_claimed_total", target="default/ok") == 3
    assert value("herald_jobs_delivered_total") == 8
    assert value("herald_jobs_delivered_total", target="default/flaky", priority="medium") == 3
    assert value("herald_delivery_attempts_total", target="default/flaky") == 6
    assert (
        value("herald_delivery_failures_total", target="default/flaky", error_class="transient")
        == 3
    )
    assert (
        value("herald_delivery_failures_total", target="default/bad", error_class="permanent") == 1
    )
    assert (
        value("herald_retries_scheduled_total", target="default/flaky", error_class="transient")
        == 3
    )
    assert (
        value(
            "herald_dead_letters_written_total",
            target="default/bad",
            error_class="permanent",
            reason="permanent-error",
        )
        == 1
    )
    assert value("herald_retry_backoff_seconds_count", target="default/flaky") == 3
    assert value("herald_retry_backoff_seconds_bucket", target="default/flaky", le="0.5") == 3
    assert (
        value("herald_delivery_duration_seconds_count", target="default/ok", outcome="success") == 3
    )
    assert (
        value("herald_delivery_duration_seconds_count", target="default/bad", outcome="failure")
        == 1
    )
    assert value("herald_delivery_latency_seconds_count", target="default/ok", priority="low") == 1
    assert value("herald_delivery_latency_seconds_bucket", target="default/ok", le="+Inf") == 3
    # sampled from PostgreSQL
    assert (
        value("herald_queue_depth", target="default/held", priority="medium", state="queued") == 4
    )
    assert value("herald_queue_depth", target="default/held", priority="high", state="queued") == 1
    assert value("herald_queue_depth", target="default/ok", state="queued") == 0
    assert value("herald_dead_letters", target="default/bad") == 1
    assert value("herald_dead_letters", target="default/ok") == 0
    assert value("herald_circuit_state", target="default/ok", state="closed") == 1
    assert value("herald_circuit_state", target="default/ok", state="open") == 0
    assert value("herald_target_paused", target="default/held") == 1
    # the circuit of "outage" opened and closed again (exact counts: test_outage.py)
    assert value("herald_circuit_trips_total", target="default/outage") >= 1
    assert value("herald_circuit_recoveries_total", target="default/outage") == 1
    assert value("herald_circuit_trips_total", target="default/ok") == 0
    assert value("herald_attempts_refunded_total", target="default/outage") >= 1
    # the tracker
    assert value("herald_tracker_jobs") > 0
    assert value("herald_tracker_capacity_jobs") == 10_000
    assert value("herald_tracker_lookups_total", result="hit") == 3
    assert value("herald_tracker_lookups_total", result="miss") == 1
    assert value("herald_worker_ready") == 1
    assert (
        value("herald_api_requests_total", route="/v1/jobs/{id}", method="GET", status="200") == 4
    )


async def test_metric_labels_are_bounded(db_url: str, tmp_path: Path) -> None:
    text, ids = await exercised_worker_metrics(db_url, tmp_path)
    allowed = {
        "target": {f"default/{t}" for t in ("ok", "flaky", "bad", "outage", "held")},
        "priority": {"high", "medium", "low"},
        "error_class": {"transient", "permanent", "unknown"},
        "reason": {"permanent-error", "attempts-exhausted", "target-deleted", "cancelled"},
        "state": {
            "queued",
            "running",
            "retrying",
            "succeeded",
            "dead",
            "closed",
            "open",
            "half_open",
        },
        "outcome": {"success", "failure"},
        "result": {"hit", "miss", "allowed", "denied", "error"},
        "review": {"TokenReview", "SubjectAccessReview"},
        "method": {"GET", "POST", "DELETE"},
        "operation": {"list", "show", "stats"},
        "level": {"warning", "full"},
    }
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        assert not UUID_RE.search(line), f"a job id in a metric: {line}"
        assert not any(job_id in line for job_id in ids), line
    for (name, labels), _ in parse_metrics(text).items():
        for key, label_value in labels:
            if key in allowed:
                assert label_value in allowed[key], f"{name}: {key}={label_value!r}"
            elif key == "le":
                float(label_value)
            elif key == "route":
                assert label_value == "unmatched" or label_value.startswith("/"), label_value
                assert not re.search(r"[0-9a-f]{8}-", label_value), label_value
            elif key == "status":
                assert label_value.isdigit() and len(label_value) == 3
            else:
                raise AssertionError(f"{name}: unexpected label {key}={label_value!r}")


@pytest.mark.slow
async def test_promtool_accepts_the_exposition(db_url: str, tmp_path: Path) -> None:
    promtool = need_binary("promtool", "checks the /metrics exposition")
    text, _ = await exercised_worker_metrics(db_url, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode == 0, out.decode()
