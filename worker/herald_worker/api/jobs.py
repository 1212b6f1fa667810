"""Jobs: submit one or many, look one up, list recent ones, cancel; queue statistics;
registered targets."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from aiohttp import web

from herald_core.errors import DatabaseUnavailable, QueueFull
from herald_core.states import JobState
from herald_core.trace_context import from_headers
from herald_model.submission import JobRequest, decode_submission, parse_jobs
from herald_queue.capacity import CapacityWatch, retry_after
from herald_queue.queue import Queue
from herald_worker.api import models
from herald_worker.api.access import authorize_publish
from herald_worker.api.context import ctx, reply
from herald_worker.api.errors import read_json
from herald_worker.api.models import AttemptsQuery, JobAccepted, JobPath, JobsQuery
from herald_worker.tracker import Snapshot

COUNT_WAIT = 10.0
"""Seconds a submission waits for the worker's first count of its queue."""


def need_queue(request: web.Request) -> Queue:
    queue = ctx(request).queue
    if queue is None:
        raise DatabaseUnavailable("the worker has not reached PostgreSQL yet")
    return queue


async def submit(request: web.Request) -> web.Response:
    """One job (201, or 200 for a duplicate) or a list (201 if any was created)."""
    body = await read_json(request, decode_submission)  # payloads kept as sent
    settings = need_queue(request).settings
    jobs, many = parse_jobs(
        body,
        max_payload_bytes=settings.max_payload_bytes,
        max_payload_depth=settings.max_payload_depth,
    )
    results = await enqueue(request, jobs, many=many)
    if many:
        created = any(not r.duplicate for r in results)
        return reply(models.JobsAccepted.of(jobs=results), status=201 if created else 200)
    [result] = results
    return reply(result, status=200 if result.duplicate else 201)


async def enqueue(
    request: web.Request, jobs: list[JobRequest], *, many: bool = True
) -> list[JobAccepted]:
    c = ctx(request)
    queue = need_queue(request)
    # Kubernetes mode: a target named with its namespace is authorised before it is looked
    # up (no 404 tells a caller who may not publish there whether it exists), one named
    # alone once its namespace is known.
    named = {j.target for j in jobs}
    await authorize_publish(request, [t for t in named if queue.registry.split(t)[0] is not None])
    resolved = {t: (await queue.registry.resolve(t))[1] for t in named}
    await authorize_publish(request, resolved.values())
    # The producer's trace context (W3C traceparent/tracestate; an invalid one is ignored)
    # goes with every job the request creates: their attempts continue that trace.
    trace = from_headers(request.headers)
    if trace is not None:
        jobs = [dataclasses.replace(j, trace=trace) for j in jobs]
    # Hard capacity limits, against the last count (herald_queue.capacity): no row count.
    refs = [resolved[j.target] for j in jobs]
    await _counted(c.capacity, c.settings.sample_interval)
    refused = c.capacity.reserve(refs)
    if refused is not None:
        for ref in refs:
            c.metrics.refused.labels(ref).inc()
        raise QueueFull(refused.message(), retry_after(c.settings.sample_interval))
    created: list[str] = []
    try:
        if many:
            results = await queue.jobs.enqueue_many(jobs)
        else:  # one job: shares a transaction with those sent at the same time
            results = [await queue.jobs.enqueue(jobs[0])]
        created = [r.target for r in results if r.created]
    finally:
        c.capacity.settle(refs, created)
    now = dt.datetime.now(dt.UTC)
    out = []
    for job, result in zip(jobs, results, strict=True):
        if result.created:
            c.metrics.enqueued.labels(result.target, job.priority.value).inc()
            c.tracker.record_new(
                Snapshot(result.id, result.target, job.priority.value, JobState.QUEUED, 0, now, now)
            )
        else:
            c.metrics.duplicates.labels(result.target).inc()
        out.append(JobAccepted.from_record(result))
    return out


async def _counted(capacity: CapacityWatch, interval: float) -> None:
    """Wait for the worker's first count of its queue (it starts with the worker and takes
    milliseconds): before it, a hard limit cannot be decided."""
    if capacity.counted.is_set():
        return
    try:
        async with asyncio.timeout(max(COUNT_WAIT, 2 * interval)):
            await capacity.counted.wait()
    except TimeoutError:
        raise DatabaseUnavailable(
            "the worker has not counted its queue yet (the count capacity limits need); "
            "PostgreSQL may be slow or away"
        ) from None


async def get_job(request: web.Request, path: JobPath) -> web.Response:
    job_id = path.id
    c = ctx(request)
    snapshot = c.tracker.lookup(job_id)
    if snapshot is not None:
        c.metrics.tracker_lookups.labels("hit").inc()
        return reply(models.Job.from_snapshot(snapshot))
    c.metrics.tracker_lookups.labels("miss").inc()
    record = await need_queue(request).jobs.get(job_id)
    if record is None:
        return web.json_response(
            {
                "error": {
                    "status": 404,
                    "field": "id",
                    "message": f"no job {job_id}: unknown, or finished longer ago than the job "
                    "retention (its dead letter, if any, is under /v1/dead-letters)",
                }
            },
            status=404,
        )
    return reply(models.Job.from_record(record, source="database"))


async def job_attempts(request: web.Request, path: JobPath, query: AttemptsQuery) -> web.Response:
    page = await need_queue(request).attempts.page(path.id, cursor=query.cursor, limit=query.limit)
    if page is None:
        return web.json_response(
            {
                "error": {
                    "status": 404,
                    "field": "id",
                    "message": f"no job {path.id}: unknown, or its job, dead letter and "
                    "attempts are past their retention",
                }
            },
            status=404,
        )
    return reply(models.AttemptPage.from_record(path.id, page))


async def list_jobs(request: web.Request, query: JobsQuery) -> web.Response:
    page = await need_queue(request).jobs.page(
        state=query.state,
        target=query.target,
        priority=query.priority,
        cursor=query.cursor,
        limit=query.limit,
    )
    return reply(models.JobPage.from_record(page))


async def cancel_job(request: web.Request, path: JobPath) -> web.Response:
    job_id = path.id
    cancelled = await need_queue(request).jobs.cancel([job_id])
    if not cancelled:
        return web.json_response(
            {
                "error": {
                    "status": 409,
                    "field": "id",
                    "message": f"job {job_id} is not waiting (it is running, finished or unknown) "
                    "and was not cancelled",
                }
            },
            status=409,
        )
    return reply(models.Cancelled.of(id=job_id, state="dead", dead_reason="cancelled"))


async def stats(request: web.Request) -> web.Response:
    return reply(models.QueueStats.from_record(await need_queue(request).stats()))


async def targets(request: web.Request) -> web.Response:
    rows = await need_queue(request).registry.list()
    return reply(models.Listing.of(items=[models.Target.from_record(t) for t in rows]))
