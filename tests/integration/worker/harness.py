"""What the worker suites share: target manifests, a worker started in-process with small
intervals, a webhook receiver that also records when each request started and how many
were in flight, API and /metrics helpers.

Everything is real: PostgreSQL (the ``db_url`` fixture), HTTP on 127.0.0.1, the worker of
``herald_worker.process.start``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from herald_delivery.settings import EgressSettings
from herald_queue.queue import Queue
from herald_queue.settings import DatabaseSettings, QueueSettings
from herald_tools.receiver import Answer, Receiver, Script
from herald_worker.process import Options, Running, start
from herald_worker.settings import WorkerSettings
from tests.helpers import LOCAL_EGRESS, bounded, sql_rows, sql_value, target_manifest, wait_until
from tests.helpers import (
    free_port as free_port,  # the worker tests import it from here
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

# Retries in tens of milliseconds and a breaker that does not open, unless a test says so.
FAST_RETRY = {"initialBackoffSeconds": 0.05, "maxBackoffSeconds": 0.2, "jitterSeconds": 0}
NO_BREAKER = {"failureThreshold": 1000}
DEFAULT_PAYLOAD = {"n": 0}
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def fast_settings(**overrides: Any) -> WorkerSettings:
    """Worker settings for tests: a free port on 127.0.0.1 and short intervals."""
    values: dict[str, Any] = {
        "http_host": "127.0.0.1",
        "http_port": 0,
        "poll_interval": 0.05,
        "rescue_interval": 0.2,
        "sample_interval": 0.2,
        "targets_refresh": 1.0,
        "cleanup_interval": 3600.0,
        "shutdown_grace": 5.0,
        "kubernetes_secrets": False,
    }
    values.update(overrides)
    return WorkerSettings(**values)


def target_doc(
    name: str, url: str | None = None, namespace: str = "default", **spec: Any
) -> dict[str, Any]:
    """A PublishingTarget manifest (webhook unless ``type=`` says otherwise)."""
    return target_manifest(name, namespace, url=url, **spec)


def secret_doc(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


def write_manifests(path: Path, docs: Iterable[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs)))
    return path


# -- the receiver ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Interval:
    """One request as the receiver saw it: when it arrived and when it was answered."""

    webhook_id: str
    started: float
    ended: float
    wall: float
    """time.time() at arrival (comparable with PostgreSQL's now())."""


class TrackingReceiver(Receiver):
    """The worker's test receiver, plus: arrival times, requests in flight, and a gate
    that holds every request while closed (so a test can keep deliveries in flight as long
    as it likes, and release them at the end instead of sleeping)."""

    def __init__(self, script: Script | None = None, **kw: Any) -> None:
        super().__init__(script, **kw)
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.intervals: list[Interval] = []
        self.arrived = 0
        self.in_flight_ids: collections.Counter[str] = collections.Counter()
        """webhook-ids of the requests being answered now."""

    async def _handle(self, request: web.Request) -> web.Response:
        started, wall = time.monotonic(), time.time()
        webhook_id = request.headers.get("webhook-id", "")
        self.in_flight += 1
        self.in_flight_ids[webhook_id] += 1
        self.arrived += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            return await super()._handle(request)
        finally:
            self.in_flight -= 1
            self.in_flight_ids[webhook_id] -= 1
            if not self.in_flight_ids[webhook_id]:
                del self.in_flight_ids[webhook_id]
            self.intervals.append(Interval(webhook_id, started, time.monotonic(), wall))

    async def stop(self) -> None:
        self.gate.set()  # let held requests finish, so the server stops at once
        await bounded(super().stop(), f"the test receiver on port {self.port} to stop", 30)

    def counts(self) -> dict[str, int]:
        """Requests per webhook-id."""
        out: dict[str, int] = {}
        for r in self.received:
            out[r.webhook_id] = out.get(r.webhook_id, 0) + 1
        return out


def per_id(script: Callable[[int, bytes], Answer]) -> Script:
    """A script that sees how many times this webhook-id came before (0 on the first)."""
    seen: dict[str, int] = {}

    def answer(receiver: Receiver, request: web.Request, body: bytes) -> Answer:
        key = request.headers.get("webhook-id", "")
        n = seen.get(key, 0)
        seen[key] = n + 1
        return script(n, body)

    return answer


def fail_first(times: int, answer: Answer) -> Script:
    """``answer`` to the first ``times`` requests of every job, 200 afterwards."""
    return per_id(lambda n, body: answer if n < times else Answer())


# -- a worker in this process -------------------------------------------------------------


@dataclasses.dataclass
class Worker:
    running: Running
    stop: asyncio.Event
    task: asyncio.Task[None]
    http: aiohttp.ClientSession
    base: str

    @property
    def queue(self) -> Queue:
        return self.running.queue

    async def submit(
        self, target: str, payload: Any = DEFAULT_PAYLOAD, *, expect: int = 201, **fields: Any
    ) -> dict[str, Any]:
        body = {"target": target, "payload": payload, **fields}
        async with self.http.post(f"{self.base}/v1/jobs", json=body) as r:
            answer = await r.json()
            assert r.status == expect, answer
            return dict(answer)

    async def submit_many(self, target: str, payloads: Iterable[Any], **fields: Any) -> list[str]:
        ids: list[str] = []
        items = [{"target": target, "payload": p, **fields} for p in payloads]
        for chunk in range(0, len(items), 1000):
            async with self.http.post(
                f"{self.base}/v1/jobs", json=items[chunk : chunk + 1000]
            ) as r:
                answer = await r.json()
                assert r.status == 201, answer
                ids += [j["id"] for j in answer["jobs"]]
        return ids

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.get(f"{self.base}{path}", **kw) as r:
            return r.status, await _body(r)

    async def post(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}{path}", **kw) as r:
            return r.status, await _body(r)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.delete(f"{self.base}{path}", **kw) as r:
            return r.status, await _body(r)

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The /metrics samples: {(name, sorted labels): value}."""
        return parse_metrics(await self.metrics_text())

    async def metrics_text(self) -> str:
        async with self.http.get(f"{self.base}/metrics") as r:
            assert r.status == 200
            return await r.text()


async def _body(r: aiohttp.ClientResponse) -> Any:
    if r.content_type == "application/json":
        return await r.json()
    return await r.text()


@contextlib.asynccontextmanager
async def worker(
    db_url: str,
    manifests: Path | None = None,
    *,
    settings: WorkerSettings | None = None,
    queue_settings: QueueSettings | None = None,
    db_settings: DatabaseSettings | None = None,
    egress_settings: EgressSettings | None = None,
    name: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Worker]:
    """A worker started in this process (``herald worker --targets manifests``)."""
    ws = settings or fast_settings(**overrides)
    started = start(
        Options(targets=manifests, name=name),
        worker_settings=ws,
        db_settings=db_settings or DatabaseSettings(pool_min=1, pool_max=8),
        queue_settings=queue_settings or QueueSettings(),
        egress_settings=egress_settings or LOCAL_EGRESS,
        url=db_url,
    )
    running, stop, task = await started.__aenter__()
    try:
        async with aiohttp.ClientSession() as http:
            w = Worker(running, stop, task, http, f"http://127.0.0.1:{running.port}")
            await wait_until(lambda: running.health.ready, timeout=10, what="worker ready")
            yield w
            assert not task.done() or task.exception() is None, task.exception()
    finally:
        # The shutdown: the grace period for deliveries in flight, writing their outcomes,
        # stopping the side tasks; bounded, and loud about what it waited for.
        await bounded(
            started.__aexit__(None, None, None),
            f"the in-process worker {running.worker.id} to stop (process.start's shutdown)",
            ws.shutdown_grace + 30,
        )


# -- database views -----------------------------------------------------------------------


async def states(queue: Queue, target: str | None = None) -> dict[str, int]:
    """Jobs per state (of one target name, or all)."""
    rows = await sql_rows(
        queue,
        "SELECT j.state, count(*)::int AS n FROM herald.jobs j "
        "JOIN herald.targets t ON t.id = j.target_id "
        "WHERE %(t)s::text IS NULL OR t.name = %(t)s GROUP BY j.state",
        {"t": target},
    )
    return {r["state"]: r["n"] for r in rows}


async def job(queue: Queue, job_id: str | uuid.UUID) -> dict[str, Any]:
    rows = await sql_rows(queue, "SELECT * FROM herald.jobs WHERE id = %s", [str(job_id)])
    assert rows, f"no job {job_id}"
    return rows[0]


async def dead_letters(queue: Queue) -> list[dict[str, Any]]:
    return await sql_rows(queue, "SELECT * FROM herald.dead_letters ORDER BY failed_at")


async def all_in_state(queue: Queue, state: str, n: int, target: str | None = None) -> bool:
    return (await states(queue, target)).get(state, 0) == n


async def wait_state(
    queue: Queue, state: str, n: int, *, target: str | None = None, timeout: float = 30.0
) -> None:
    async def check() -> bool:
        return await all_in_state(queue, state, n, target)

    try:
        await wait_until(check, timeout=timeout, interval=0.05, what=f"{n} jobs {state}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; states now: {await states(queue, target)}") from None


async def circuit(queue: Queue, target: str) -> str:
    return str(
        await sql_value(
            queue,
            "SELECT circuit_state FROM herald.targets WHERE name = %s AND deleted_at IS NULL",
            [target],
        )
    )


# -- /metrics ------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))
