"""``herald worker``: wires the queue, the targets, the delivery loop, the side services
and the HTTP API into one process, and runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import tenacity
from aiohttp import web
from pydantic import SecretStr

from herald_core.errors import CannotListen
from herald_core.httplog import ServerLog
from herald_delivery.send import Sender
from herald_delivery.settings import EgressSettings
from herald_model import manifests
from herald_queue import db, migrate
from herald_queue.capacity import CapacityWatch
from herald_queue.listener import Listener
from herald_queue.queue import Queue
from herald_queue.settings import DatabaseSettings, QueueSettings
from herald_worker import tracing
from herald_worker.api.app import make_app
from herald_worker.api.context import ApiContext
from herald_worker.api.protocol import ApiRunner
from herald_worker.health import Health
from herald_worker.loop import Worker
from herald_worker.maintenance import Maintenance
from herald_worker.metrics import Metrics
from herald_worker.secrets import KubernetesSecrets, SecretSource, StaticSecrets
from herald_worker.settings import WorkerSettings
from herald_worker.supervision import DB_ERRORS, supervise
from herald_worker.target_cache import TargetDirectory
from herald_worker.tracker import Tracker

log = logging.getLogger("herald.worker")


@dataclasses.dataclass
class Options:
    targets: Path | None = None
    """PublishingTarget (and Secret) manifests to register before starting."""
    migrate: bool = False
    """Run migrations first (the default with the embedded database)."""
    name: str | None = None


@dataclasses.dataclass
class Running:
    """A started worker process (used by tests and the demo to run one in-process)."""

    worker: Worker
    queue: Queue
    health: Health
    metrics: Metrics
    tracker: Tracker
    port: int
    maintenance: Maintenance


def _secret_source(settings: WorkerSettings, found: manifests.Manifests | None) -> SecretSource:
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    use_kubernetes = settings.kubernetes_secrets
    if use_kubernetes is None:
        use_kubernetes = in_cluster and found is None
    if use_kubernetes:
        return KubernetesSecrets()
    return StaticSecrets(found.secrets if found else {})


async def _open_queue(
    db_settings: DatabaseSettings,
    queue_settings: QueueSettings,
    worker_settings: WorkerSettings,
    options: Options,
    health: Health,
) -> Queue:
    """Connect, retrying with backoff while PostgreSQL is not there yet."""
    url = db.resolve_url(db_settings, announce=db_settings.url is None)
    run_migrations = options.migrate or db_settings.url is None

    def waiting(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            health.database_error(exc)
        log.warning(
            "cannot reach PostgreSQL yet; retrying",
            extra={"action": "connect", "attempt": state.attempt_number, "error": str(exc)},
        )

    async for attempt in tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(DB_ERRORS),
        wait=tenacity.wait_exponential(multiplier=0.5, max=10),
        before_sleep=waiting,
    ):
        with attempt:
            if run_migrations:
                report = await migrate.migrate_url(url, db_settings)
                if report.applied:
                    log.info(
                        "migrated the database",
                        extra={"action": "migrate", "applied": report.applied},
                    )
            return await Queue.open(
                db_settings,
                queue_settings,
                url=url,
                retry_after_cap=worker_settings.retry_after_cap,
            )
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def start(
    options: Options,
    *,
    worker_settings: WorkerSettings | None = None,
    db_settings: DatabaseSettings | None = None,
    queue_settings: QueueSettings | None = None,
    egress_settings: EgressSettings | None = None,
    url: str | None = None,
) -> AsyncIterator[tuple[Running, asyncio.Event, asyncio.Task[None]]]:
    """Start the HTTP API, connect, register --targets, and run the worker in a task.
    Yields (running, stop event, task); on exit, stops it and waits for the shutdown."""
    ws = worker_settings or WorkerSettings.from_env()
    dbs = db_settings or DatabaseSettings.from_env()
    if url is not None:
        dbs = dbs.model_copy(update={"url": SecretStr(url)})
    qs = queue_settings or QueueSettings.from_env()
    egress = (egress_settings or EgressSettings.from_env()).policy()
    found = (
        manifests.load(
            options.targets,
            egress=egress,
            default_namespace=qs.default_namespace,
            recursive=True,
        )
        if options.targets
        else None
    )
    tracker = Tracker(ws.tracker_size)
    metrics = Metrics(tracker)
    health = Health(metrics)
    capacity = CapacityWatch(qs.capacity, qs.capacity_hard_limit)
    context = ApiContext(
        settings=ws, metrics=metrics, tracker=tracker, health=health, capacity=capacity
    )
    runner = ApiRunner(  # aiohttp's own errors (a request line too long...) in JSON too
        make_app(context),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2,
        logger=ServerLog(),  # a malformed request is one quiet line, not a traceback
    )
    await runner.setup()
    site = web.TCPSite(runner, ws.http_host, ws.http_port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(
            "the HTTP API",
            ws.http_host,
            ws.http_port,
            exc,
            port_setting="HERALD_HTTP_PORT",
            host_setting="HERALD_HTTP_HOST",
        ) from None
    port = runner.addresses[0][1] if runner.addresses else ws.http_port
    log.info("HTTP API listening", extra={"action": "listen", "host": ws.http_host, "port": port})
    log.info("egress policy", extra={"action": "egress", "policy": egress.describe()})
    sender = Sender(concurrency=ws.concurrency, egress=egress)
    tracer = tracing.start()  # None (and no OpenTelemetry import) unless OTEL_* configure it
    queue: Queue | None = None
    try:
        queue = await _open_queue(dbs, qs, ws, options, health)
        context.queue = queue
        queue.jobs.group_commit.on_group = metrics.ingest_group_size.observe
        if found is not None:
            for line in found.skipped:
                log.info(
                    "skipped a manifest that is not a PublishingTarget or Secret",
                    extra={"action": "load-targets", "document": line},
                )
            applied = await queue.registry.apply_many(found.targets)
            log.info(
                "registered targets from manifests",
                extra={"action": "load-targets", "targets": [r.ref for r in applied]},
            )
        directory = TargetDirectory(queue.registry, _secret_source(ws, found))
        await directory.refresh()
        context.directory = directory
        listener = Listener(queue.url)
        health.listener = listener
        worker = Worker(
            queue,
            directory,
            ws,
            sender=sender,
            tracker=tracker,
            metrics=metrics,
            health=health,
            listener=listener,
            name=options.name,
            tracer=tracer,
        )
        maintenance = Maintenance(
            queue, directory, metrics, health, listener, capacity, disable_after=ws.disable_after
        )
        stop = asyncio.Event()
        side = {
            "listener": listener.run,
            "settler": worker.settle_forever,
            "leases": worker.renew_leases_forever,
            "rescuer": lambda: maintenance.rescuer(ws.rescue_interval),
            "cleaner": lambda: maintenance.cleaner(ws.cleanup_interval),
            "sampler": lambda: maintenance.sampler(ws.sample_interval),
            "targets": lambda: maintenance.refresher(ws.targets_refresh),
        }
        task = asyncio.create_task(supervise(side, worker.run(stop)), name="herald-worker")
        log.info(
            "worker started",
            extra={"action": "start", "worker": worker.id, "concurrency": ws.concurrency},
        )
        running = Running(
            worker=worker,
            queue=queue,
            health=health,
            metrics=metrics,
            tracker=tracker,
            port=port,
            maintenance=maintenance,
        )
        try:
            yield running, stop, task
        finally:
            try:
                await _close_api(runner, health, ws.shutdown_drain, task)
            finally:  # the deliveries stop and finish whatever became of the API
                stop.set()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        await sender.close()
        await tracing.stop(tracer)
        if queue is not None:
            await queue.close()
        if runner.server is not None:
            await runner.cleanup()


async def _close_api(
    runner: web.AppRunner, health: Health, drain: float, task: asyncio.Task[None]
) -> None:
    """Stop serving, first telling the Service and the producers: unready and answering
    ``Connection: close`` for ``drain`` seconds (kube-proxy and load balancers take a few to
    drop the endpoint), then the listener closes, requests in progress finish and idle
    connections close. The API stops before the deliveries and the database pool, so no
    request meets a closed pool."""
    health.stop()
    if drain > 0 and not task.done():
        log.info(
            "draining: unready, answering with Connection: close until the listener closes",
            extra={"action": "drain", "seconds": drain},
        )
        await asyncio.wait({task}, timeout=drain)  # a worker that fails ends it early
    await runner.cleanup()


async def serve(options: Options) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean shutdown, 1 if the worker failed."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()  # not the worker's stop: the API drains first (_close_api)
    async with start(options) as (running, _, task):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        stopper = asyncio.ensure_future(signalled.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task.done() and task.exception() is not None:
            running.health.failed = repr(task.exception())
            log.critical("worker failed", extra={"action": "stop", "error": repr(task.exception())})
            return 1
        log.info("stopping", extra={"action": "stop", "in_flight": running.worker.in_flight})
    log.info("stopped", extra={"action": "stop"})
    return 0
