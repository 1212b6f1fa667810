"""``herald demo``: Herald riding out a misbehaving receiver, end to end, on one machine.

A private embedded PostgreSQL, a local webhook receiver that verifies signatures and
misbehaves on purpose (503s, 429s with Retry-After, 400s, and a short outage that opens the
circuit), a real worker, and a few thousand mixed-priority jobs submitted through the HTTP
API. It prints live progress, then a summary; it exits 0 when every job is accounted for
(delivered, or dead-lettered for its 400) and every signature verified."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml
from aiohttp import web

from herald_delivery.settings import EgressSettings
from herald_queue.settings import DatabaseSettings, QueueSettings
from herald_tools import scratch
from herald_tools.receiver import Answer, Receiver
from herald_worker.process import Options, Running, start
from herald_worker.settings import WorkerSettings

SECRET = "whsec_" + "ZGVtby1zaWduaW5nLXNlY3JldC1mb3ItaGVyYWxkIQ=="  # a demo-only key


@dataclasses.dataclass(frozen=True)
class Plan:
    jobs: int = 3000
    transient: float = 0.05
    """Share of requests answered 503."""
    throttled: float = 0.03
    """Share answered 429 with Retry-After: 1."""
    rejected: float = 0.01
    """Share of jobs whose payload the receiver rejects with 400 (they end in the DLQ)."""
    outage_after: int = 1000
    """The receiver goes down (503 to everything) after this many requests..."""
    outage_seconds: float = 3.0
    """...for this long."""
    seed: int = 7


class Misbehaviour:
    """The receiver's script: deterministic faults from a seeded generator."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.random = random.Random(plan.seed)
        self.requests = 0
        self.outage_until: float | None = None
        self.outage_started: float | None = None

    def __call__(self, receiver: Receiver, request: web.Request, body: bytes) -> Answer:
        self.requests += 1
        now = time.monotonic()
        if self.outage_started is None and self.requests > self.plan.outage_after:
            self.outage_started = now
            self.outage_until = now + self.plan.outage_seconds
        if self.outage_until is not None and now < self.outage_until:
            return Answer(503, body="down for maintenance")
        if _rejected(body):
            return Answer(400, body="payload rejected: field 'reject' is not allowed")
        roll = self.random.random()
        if roll < self.plan.transient:
            return Answer(503, body="busy")
        if roll < self.plan.transient + self.plan.throttled:
            return Answer(429, headers={"Retry-After": "1"}, body="slow down")
        return Answer(200)


def _rejected(body: bytes) -> bool:
    """The payload asks to be rejected (``"reject": true``), however it is spaced: a
    webhook body is the payload's JSON exactly as submitted."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("reject") is True


def _manifests(folder: Path, url: str) -> Path:
    path = folder / "demo-target.yaml"
    path.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "herald.dev/v1alpha1",
                    "kind": "PublishingTarget",
                    "metadata": {"name": "demo-hook", "namespace": "default"},
                    "spec": {
                        "type": "webhook",
                        "url": url,
                        "secretRef": {"name": "demo-hook"},
                        "headers": {"X-Team": "demo"},
                        "timeoutSeconds": 5,
                        "retry": {
                            "maxAttempts": 8,
                            "initialBackoffSeconds": 0.2,
                            "maxBackoffSeconds": 2,
                            "multiplier": 2,
                            "jitterSeconds": 0.1,
                        },
                        "circuitBreaker": {
                            "failureThreshold": 5,
                            "openSeconds": 1,
                            "halfOpenProbes": 1,
                        },
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "demo-hook"},
                    "stringData": {"signingSecret": SECRET},
                },
            ]
        )
    )
    return path


def _submissions(plan: Plan) -> list[dict[str, Any]]:
    rng = random.Random(plan.seed + 1)
    jobs = []
    for i in range(plan.jobs):
        priority = rng.choices(["high", "medium", "low"], weights=[2, 5, 3])[0]
        payload: dict[str, Any] = {"event": "demo", "n": i, "severity": priority}
        if rng.random() < plan.rejected:
            payload["reject"] = True
        jobs.append({"target": "demo-hook", "payload": payload, "priority": priority})
    return jobs


PACED_RATE = 50
PACED_JOBS = 100


def _percentiles(values: list[float]) -> list[float]:
    if len(values) > 1:
        return statistics.quantiles(values, n=100, method="inclusive")
    return [values[0] if values else 0.0] * 99


async def _paced(
    http: aiohttp.ClientSession, base: str, plan: Plan, receiver: Receiver, out: TextIO
) -> dict[str, float]:
    """After the burst: jobs one at a time at PACED_RATE per second, until each is
    delivered, so latency is measured where there is no backlog."""
    out.write(f"herald demo: now {PACED_JOBS} jobs at a steady {PACED_RATE}/s\n")
    out.flush()
    submitted: dict[str, float] = {}
    for n in range(PACED_JOBS):
        t = time.monotonic()
        body = {"target": "demo-hook", "payload": {"event": "paced", "n": n}, "priority": "high"}
        async with http.post(f"{base}/v1/jobs", json=body) as r:
            submitted[(await r.json())["id"]] = t
        await asyncio.sleep(max(0.0, t + 1 / PACED_RATE - time.monotonic()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = {r.webhook_id for r in receiver.received if 200 <= r.answer.status < 300}
        if set(submitted) <= done:
            break
        await asyncio.sleep(0.1)
    return submitted


def _retried(receiver: Receiver) -> str | None:
    """A job the receiver refused at least once before it took it (the story worth telling)."""
    refused: set[str] = set()
    for received in receiver.received:
        if 200 <= received.answer.status < 300:
            if received.webhook_id in refused:
                return received.webhook_id
        else:
            refused.add(received.webhook_id)
    return None


async def _story(base: str, receiver: Receiver, out: TextIO) -> None:
    """Every attempt on record of one job that was retried, as ``herald jobs show`` has them."""
    job_id = _retried(receiver)
    if job_id is None:
        return
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"{base}/v1/jobs/{job_id}/attempts") as r,
    ):
        if r.status != 200:
            out.write(f"herald demo: attempts of {job_id}: HTTP {r.status} {await r.text()}\n")
            return
        page = await r.json()
    out.write(
        f"\nherald demo: one job's attempts on record (GET /v1/jobs/{job_id}/attempts, "
        "what `herald jobs show ID` prints)\n"
    )
    for a in page["items"]:
        status = a.get("httpStatus") or "-"
        took = a.get("durationSeconds")
        line = f"  attempt {a['attempt']}  HTTP {status}  {a['decision']}"
        if took is not None:
            line += f"  in {took * 1000:.0f} ms"
        if a.get("retryAt"):
            line += f"  (again at {a['retryAt']})"
        out.write(line + "\n")


async def _metric(running: Running, name: str) -> float:
    total = 0.0
    for family in running.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


async def run(plan: Plan, *, out: TextIO = sys.stdout, database_url: str | None = None) -> int:
    started = time.monotonic()
    script = Misbehaviour(plan)
    out.write(
        "herald demo: starting a private PostgreSQL (a few seconds; longer the first time), a "
        "receiver that misbehaves on purpose, and a worker\n"
    )
    out.flush()
    with tempfile.TemporaryDirectory(prefix="herald-demo-") as tmp:
        async with (
            Receiver(script, secret=SECRET) as receiver,
            scratch.scratch_database(database_url, prefix="herald_demo") as url,
        ):
            out.write(f"herald demo: PostgreSQL ready, receiver on {receiver.url}\n")
            ws = WorkerSettings(
                http_host="127.0.0.1",
                http_port=0,
                poll_interval=0.2,
                rescue_interval=1.0,
                sample_interval=0.5,
                concurrency=64,
            )
            async with start(
                Options(targets=_manifests(Path(tmp), receiver.url)),
                worker_settings=ws,
                db_settings=DatabaseSettings(pool_min=2, pool_max=12),
                queue_settings=QueueSettings(),
                # The demo's receiver is on 127.0.0.1: loopback is allowed explicitly.
                egress_settings=EgressSettings(allow_loopback=True),
                url=url,
            ) as (running, _, _task):
                return await _drive(plan, running, receiver, script, out, started)


async def _drive(
    plan: Plan,
    running: Running,
    receiver: Receiver,
    script: Misbehaviour,
    out: TextIO,
    started: float,
) -> int:
    base = f"http://127.0.0.1:{running.port}"
    submissions = _submissions(plan)
    enqueued_at: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:
        for start in range(0, len(submissions), 250):
            t = time.monotonic()
            async with http.post(f"{base}/v1/jobs", json=submissions[start : start + 250]) as r:
                if r.status not in (200, 201):
                    out.write(f"herald demo: submission failed: HTTP {r.status} {await r.text()}\n")
                    return 1
                for item in (await r.json())["jobs"]:
                    enqueued_at[item["id"]] = t
        out.write(
            f"herald demo: submitted {len(submissions)} jobs through POST /v1/jobs "
            f"({sum(1 for s in submissions if 'reject' in s['payload'])} will be "
            "rejected with 400)\n"
        )
        rejected = {
            i for i, s in zip(enqueued_at, submissions, strict=True) if "reject" in s["payload"]
        }
        deadline = time.monotonic() + 300
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            async with http.get(f"{base}/v1/queue/stats") as r:
                stats = await r.json()
            target = (await running.queue.registry.list())[0]
            line = (
                f"  {time.monotonic() - started:5.1f}s  delivered {stats['succeeded']:5d}  "
                f"waiting {stats['queued'] + stats['retrying']:5d}  running "
                f"{stats['running']:3d}  dead {stats['dead']:3d}  circuit "
                f"{target.circuit_state.value:9} (trips {target.circuit_trips_total})"
            )
            out.write(line + ("\r" if out.isatty() else "\n"))
            out.flush()
            if stats["succeeded"] + stats["dead"] >= len(submissions):
                break
            await asyncio.sleep(0.5 if out.isatty() else 2.0)
        out.write("\n")
        paced = await _paced(http, base, plan, receiver, out)
    delivered_at: dict[str, float] = {}
    for received in receiver.received:
        if 200 <= received.answer.status < 300:
            delivered_at.setdefault(received.webhook_id, received.at)
    latencies = sorted(
        (delivered_at[i] - enqueued_at[i]) * 1000 for i in delivered_at if i in enqueued_at
    )
    paced_latencies = sorted(
        (delivered_at[i] - at) * 1000 for i, at in paced.items() if i in delivered_at
    )
    target = (await running.queue.registry.list())[0]
    retried = await _metric(running, "herald_retries_scheduled_total")
    refunded = await _metric(running, "herald_attempts_refunded_total")
    duplicates = sum(1 for r in receiver.received if 200 <= r.answer.status < 300) - len(
        delivered_at
    )
    missing = (set(enqueued_at) | set(paced)) - set(delivered_at) - rejected
    q, pq = _percentiles(latencies), _percentiles(paced_latencies)
    rows = [
        ("jobs submitted", len(enqueued_at) + len(paced)),
        ("delivered", len(delivered_at)),
        ("dead-lettered (400)", stats.get("dead", 0)),
        ("retries scheduled", int(retried)),
        ("attempts given back (circuit open)", int(refunded)),
        ("circuit trips", target.circuit_trips_total),
        ("receiver requests", len(receiver.received)),
        (
            "receiver answers",
            ", ".join(f"{k}: {v}" for k, v in sorted(receiver.statuses().items())),
        ),
        ("bad signatures", receiver.bad_signatures),
        ("duplicate deliveries", duplicates),
        (f"burst latency p50, p99 ({len(enqueued_at)} at once)", f"{q[49]:.0f}, {q[98]:.0f} ms"),
        (
            f"paced latency p50, p99 ({len(paced)} at {PACED_RATE}/s)",
            f"{pq[49]:.0f}, {pq[98]:.0f} ms",
        ),
        ("elapsed", f"{time.monotonic() - started:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    out.write("\nherald demo: summary\n")
    for name, value in rows:
        out.write(f"  {name.ljust(width)}  {value}\n")
    await _story(f"http://127.0.0.1:{running.port}", receiver, out)
    ok = (
        not missing
        and receiver.bad_signatures == 0
        and duplicates == 0
        and stats.get("dead") == len(rejected)
    )
    if ok:
        out.write(
            f"\nBurst latency is mostly waiting behind the other {len(enqueued_at)} jobs "
            "submitted at once (a backlog, not slowness); paced latency is enqueue to delivery "
            "at a steady rate, retries included.\n"
        )
        out.write(
            "\nEvery job was delivered or dead-lettered for its 400, through 503s, "
            "429s and an outage; no signature failed.\n"
        )
        out.write(
            'Next, on this machine (README, "Try it on your machine"): `herald receive` in '
            "one terminal, `HERALD_EGRESS_ALLOW_LOOPBACK=true herald worker --targets "
            "examples/local/` in another, then `herald enqueue --target local-hook "
            '--payload \'{"hello": "world"}\'`; in a cluster, `helm install` (README, '
            '"Running in a cluster").\n'
        )
        return 0
    out.write(
        f"\nherald demo: FAILED: {len(missing)} jobs neither delivered nor "
        f"dead-lettered, {receiver.bad_signatures} bad signatures, {duplicates} duplicate "
        "deliveries\n"
    )
    return 1
