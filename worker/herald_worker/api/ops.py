"""Probes, /metrics, and the Alertmanager receiver (the OpenAPI document is served by
``routes.py``, which has the table it is built from)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from herald_core.errors import QueueFull
from herald_worker import alertmanager
from herald_worker.api.context import ctx, reply
from herald_worker.api.errors import error_response, read_json
from herald_worker.api.jobs import enqueue, need_queue
from herald_worker.api.models import (
    AlertmanagerAccepted,
    AlertmanagerNamespacedPath,
    AlertmanagerPath,
)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process works (a lost database does not make it unhealthy)."""
    health = ctx(request).health
    if health.failed:
        return web.json_response({"status": "failed", "reason": health.failed}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: reaches PostgreSQL, listens for jobs, not shutting down."""
    health = ctx(request).health
    if health.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready", "reasons": health.reasons()}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(ctx(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def alertmanager_receiver(request: web.Request, path: AlertmanagerPath) -> web.Response:
    return await _alertmanager(request, path.target)


async def alertmanager_namespaced(
    request: web.Request, path: AlertmanagerNamespacedPath
) -> web.Response:
    return await _alertmanager(request, f"{path.namespace}/{path.name}")


async def _alertmanager(request: web.Request, target: str) -> web.Response:
    body = await read_json(request)
    settings = need_queue(request).settings
    jobs = alertmanager.jobs_from_message(
        body,
        target,
        max_payload_bytes=settings.max_payload_bytes,
        max_payload_depth=settings.max_payload_depth,
    )
    try:
        results = await enqueue(request, jobs)
    except QueueFull as exc:
        # 503, not 429: Alertmanager retries a notification on 5xx, not on every 4xx.
        return error_response(503, str(exc), "target", headers={"Retry-After": exc.retry_after})
    created = sum(1 for r in results if not r.duplicate)
    return reply(
        AlertmanagerAccepted.of(jobs=results, created=created, duplicates=len(results) - created)
    )
