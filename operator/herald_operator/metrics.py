"""The operator's Prometheus metrics (prefix ``herald_operator_``), on its own registry and
served on HERALD_OPERATOR_METRICS_PORT at /metrics.

Labels are bounded: ``kind`` is PublishingTarget or DeadLetterReplay, ``result`` and
``outcome`` closed sets, ``ready`` True/False/Unknown.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from herald_core.errors import CannotListen
from herald_core.httplog import ServerLog

READY_VALUES = ("True", "False", "Unknown")


class _Targets(Collector):
    """PublishingTargets by the status of their Ready condition, as last written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, str] = {}

    def set(self, ref: str, ready: str) -> None:
        with self._lock:
            self._ready[ref] = ready

    def forget(self, ref: str) -> None:
        with self._lock:
            self._ready.pop(ref, None)

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily(
            "herald_operator_targets",
            "PublishingTargets served, by the status of their Ready condition.",
            labels=["ready"],
        )
        with self._lock:
            values = list(self._ready.values())
        for ready in READY_VALUES:
            family.add_metric([ready], values.count(ready))
        yield family


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.reconciliations = Counter(
            "herald_operator_reconciliations",
            "Reconciliations of custom resources, by kind and result (success, retry, error).",
            ("kind", "result"),
            registry=r,
        )
        self.refreshes = Counter(
            "herald_operator_status_refreshes",
            "PublishingTarget status refreshes (the timer), by result (success, retry).",
            ("result",),
            registry=r,
        )
        self.replays = Counter(
            "herald_operator_replays",
            "DeadLetterReplays finished, by outcome (succeeded, dry_run, failed).",
            ("outcome",),
            registry=r,
        )
        self.replayed = Counter(
            "herald_operator_replayed_dead_letters",
            "Dead letters put back on the queue by DeadLetterReplays.",
            registry=r,
        )
        self.desired_replicas = Gauge(
            "herald_operator_desired_worker_replicas",
            "Worker replicas the scaler wants now (after bounds, step, cooldown and "
            "stabilization).",
            registry=r,
        )
        self.recommended_replicas = Gauge(
            "herald_operator_recommended_worker_replicas",
            "clamp(ceil(ready jobs / jobs per replica), min, max), before step, cooldown and "
            "stabilization.",
            registry=r,
        )
        self.current_replicas = Gauge(
            "herald_operator_worker_replicas",
            "Replicas of the worker Deployment as last read (spec.replicas).",
            registry=r,
        )
        self.ready_jobs = Gauge(
            "herald_operator_ready_jobs",
            "Jobs ready to run now, leaving out paused targets and open circuits (what the "
            "scaler scales on).",
            registry=r,
        )
        self.scalings = Counter(
            "herald_operator_scaling_changes",
            "Changes of the worker Deployment's replicas, by direction (up, down).",
            ("direction",),
            registry=r,
        )
        self.active = Gauge(
            "herald_operator_active",
            "1 while this replica is the one acting (kopf peering), else 0.",
            registry=r,
        )
        self.targets = _Targets()
        r.register(self.targets)
        # Every series exists from the start, so rates and alert rules see zeros, not gaps.
        for kind in ("PublishingTarget", "DeadLetterReplay"):
            for result in ("success", "retry", "error"):
                self.reconciliations.labels(kind=kind, result=result)
        for result in ("success", "retry"):
            self.refreshes.labels(result=result)
        for outcome in ("succeeded", "dry_run", "failed"):
            self.replays.labels(outcome=outcome)
        for direction in ("up", "down"):
            self.scalings.labels(direction=direction)

    def reconciled(self, kind: str, result: str) -> None:
        self.reconciliations.labels(kind=kind, result=result).inc()


class MetricsServer:
    """/metrics over aiohttp, in the operator's event loop."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        response = web.Response(body=body)
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=ServerLog())
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise CannotListen(
                "/metrics",
                self._host,
                self._port,
                exc,
                port_setting="HERALD_OPERATOR_METRICS_PORT",
            ) from None
        addresses = self._runner.addresses
        return int(addresses[0][1]) if addresses else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
