"""The operator as kopf runs it: its settings, its lifecycle (startup, cleanup, liveness
probe), the registry of handlers, and :func:`run`.

Handlers are registered on a registry built from the settings (:func:`build_registry`)
rather than at import, because the status timer's interval is a setting
(HERALD_STATUS_INTERVAL).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import kopf
import yaml

from herald_core.errors import CannotListen, ConfigError, HeraldError, SchemaOutOfDate
from herald_operator import replay_handlers as replays
from herald_operator import targets
from herald_operator.autoscaler import COMPONENT, WorkerAutoscaler
from herald_operator.kube import KubeError
from herald_operator.metrics import MetricsServer
from herald_operator.runtime import DB_ERRORS, Options, Runtime, runtime_of
from herald_operator.settings import OperatorSettings
from herald_queue import migrate

log = logging.getLogger("herald.operator")

FINALIZER = "herald.dev/finalizer"
ANNOTATIONS_PREFIX = "herald.dev"


def configure(settings: kopf.OperatorSettings, options: Options) -> None:
    """Every kopf setting the operator changes, in one place."""
    ours = options.settings
    # Deletions of our objects wait for Herald's finalizer, named after our group.
    settings.persistence.finalizer = FINALIZER
    # Handler progress (retries, done) in annotations herald.dev/<handler-id>, not in status
    # (the CRDs declare no such status fields: an apiserver would prune them).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATIONS_PREFIX
    )
    # The last handled spec, to compute diffs: herald.dev/last-handled-configuration.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
    )
    # Events: what handlers post with kopf.info/warn (Normal and Warning), not every log
    # line; signed as Herald's operator replica.
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.posting.loggers = False
    settings.posting.reporting_component = COMPONENT
    settings.posting.reporting_instance = options.identity[:128]
    settings.posting.event_name_prefix = "herald-"
    # Peering: with HERALD_PEERING set, the KopfPeering object of that name must exist
    # (mandatory: without it no replica acts), and the replica with the highest (random)
    # priority acts while the others stand by. Empty: standalone, run one replica only.
    if ours.peering:
        settings.peering.standalone = False
        settings.peering.mandatory = True
        settings.peering.name = ours.peering
        settings.peering.priority = options.priority
        settings.peering.stealth = True  # keep-alives are not logged
        settings.peering.lifetime = max(1, round(float(ours.peering_lifetime)))
    else:
        settings.peering.standalone = True
        settings.peering.mandatory = False
    # No cluster scanning: the CRDs are installed before the operator starts (the chart
    # does it), and watching CRDs and namespaces would need cluster-wide RBAC.
    settings.scanning.disabled = True
    # Watch streams: the apiserver ends each after HERALD_WATCH_TIMEOUT (5 minutes; then
    # kopf resumes from its last resourceVersion, and lists again if that expired: 410
    # Gone); a stream that carries nothing (not even a bookmark) for 70 s is presumed dead.
    settings.watching.server_timeout = max(1, round(float(ours.watch_timeout)))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 70
    # API requests: a request may take 30 s; a failed one (no answer, 5xx, 403 or 429) is
    # retried with these backoffs, then every last backoff for as long as the API is away
    # (none longer than the status interval: the status is live within about one interval
    # of the API's return). A status or annotation write is never given up (kopf would
    # drop it, and a timer whose write failed would die), so handlers and timers resume
    # where they were once the API is back, however long the outage.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = RetryForever(
        options.api_backoffs, cap=float(ours.status_interval)
    )
    # An unexpected exception in a handler is retried after this long (outages we expect
    # raise kopf.TemporaryError with their own delay).
    settings.execution.default_backoff = options.retry_delay
    # Daemons and timers are told to stop on deletion and shutdown: no long polling.
    settings.background.cancellation_polling = 5


class RetryForever:
    """Backoffs (seconds) that never run out: ``first`` in turn, then its last one again
    and again, none longer than ``cap`` (a request waiting out an outage goes through at
    most ``cap`` after the API is back). Iterable afresh for every request; not Sized, so
    kopf counts the attempts without a total."""

    def __init__(self, first: Sequence[float], *, cap: float = float("inf")) -> None:
        if not first:
            raise ValueError("RetryForever needs at least one backoff")
        self.first = tuple(min(float(b), cap) for b in first)

    def __iter__(self) -> Iterator[float]:
        yield from self.first
        yield from itertools.repeat(self.first[-1])

    def __repr__(self) -> str:
        return f"RetryForever({', '.join(f'{b:g}' for b in self.first)}, ...)"


class _QuietTimers(logging.Filter):
    """kopf logs every successful timer run at INFO: once per target per status refresh.
    Those lines say nothing; failures and our handlers' own lines still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Timer '") and message.endswith("' succeeded."))


class _QuietRetries(logging.Filter):
    """kopf logs every failed attempt of an API request at ERROR; requests are retried for
    as long as the API is away, so an outage of minutes would log one line per object per
    backoff. The first failure and every ``every``-th retry of one request pass."""

    ATTEMPT = re.compile(r"^Request attempt #(\d+) failed; will retry")

    def __init__(self, every: int = 60) -> None:
        super().__init__()
        self.every = every

    def filter(self, record: logging.LogRecord) -> bool:
        found = self.ATTEMPT.match(record.getMessage())
        if found is None:
            return True
        attempt = int(found.group(1))
        return attempt == 1 or attempt % self.every == 0


def _quiet_logs() -> None:
    for name in (
        "kopf.objects",
        "kopf._cogs.clients.watching",
        "kopf._core.engines.peering",
        "kopf._core.engines.posting",  # the Events' poster
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietRetries) for f in logger.filters):
            logger.addFilter(_QuietRetries())
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietTimers) for f in objects.filters):
        objects.addFilter(_QuietTimers())


async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options: Options = memo["herald_options"]
    configure(settings, options)
    _quiet_logs()
    try:
        rt = await Runtime.open(options)
    except SchemaOutOfDate as exc:
        raise kopf.PermanentError(str(exc)) from None
    except DB_ERRORS as exc:
        log.warning(
            "cannot reach PostgreSQL yet; retrying", extra={"action": "connect", "error": str(exc)}
        )
        raise kopf.TemporaryError(str(exc), delay=options.retry_delay) from None
    except HeraldError as exc:
        raise kopf.PermanentError(str(exc)) from None
    memo["herald"] = rt
    server = MetricsServer(rt.metrics, options.host, rt.settings.metrics_port)
    try:
        port = await server.start()
    except CannotListen as exc:  # taken since check_ports: the operator cannot run
        await rt.close()
        raise kopf.PermanentError(str(exc)) from None
    rt.closers.append(server.stop)
    log.info("serving /metrics", extra={"action": "listen", "port": port})
    if rt.settings.scaling:
        rt.tasks.append(asyncio.create_task(WorkerAutoscaler(rt).run(), name="herald-scaler"))
    if rt.settings.peering:
        interval = min(10.0, float(rt.settings.status_interval) * 3)
        rt.tasks.append(asyncio.create_task(rt.leadership.watch(interval), name="herald-peering"))
    log.info(
        "operator started",
        extra={
            "action": "start",
            "namespace": rt.settings.namespace or "*",
            "peering": rt.settings.peering or "(standalone)",
            "identity": options.identity,
        },
    )


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt = memo.get("herald")
    if isinstance(rt, Runtime):
        await rt.close()
    log.info("operator stopped", extra={"action": "stop"})


PROBE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *DB_ERRORS)
PROBE_TIMEOUT = 2.0
"""Each probe's bound: kopf runs them one after the other, and both fit inside the chart's
liveness timeoutSeconds (5)."""

# The probes report what they found and never fail /healthz: it is the liveness endpoint,
# and restarting the operator brings back neither PostgreSQL nor the Kubernetes API (the
# operator rides their outages out by itself); the kubelet's back-off between restarts
# would only delay its recovery once they are back.


async def probe_database(memo: kopf.Memo, **_: Any) -> str:
    """/healthz's "database": "ok" when PostgreSQL answers with the schema this Herald
    needs, else what is wrong."""
    rt = runtime_of(memo)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            async with rt.queue.pool.connection() as conn:
                await migrate.check_schema(conn)
    except PROBE_ERRORS as exc:
        return f"PostgreSQL is unreachable: {exc or type(exc).__name__}"
    except SchemaOutOfDate as exc:
        return str(exc)
    return "ok"


async def probe_api(memo: kopf.Memo, **_: Any) -> str:
    """/healthz's "api": "ok" when the Kubernetes API answers, else what is wrong."""
    rt = runtime_of(memo)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await rt.kube.reachable(timeout=PROBE_TIMEOUT)
    except (KubeError, TimeoutError) as exc:
        return f"the Kubernetes API is unreachable: {exc or type(exc).__name__}"
    return "ok"


LoginFn = Callable[..., Any]


def build_registry(
    settings: OperatorSettings, *, login: LoginFn | None = kopf.login_via_client
) -> kopf.OperatorRegistry:
    """Every handler of the operator on a new registry. ``login`` logs in to the API
    (default: in-cluster ServiceAccount, else kubeconfig, through the kubernetes client,
    whose default configuration the operator's own API calls then use)."""
    r = kopf.OperatorRegistry()
    kopf.on.startup(registry=r)(startup)
    kopf.on.cleanup(registry=r)(cleanup)
    kopf.on.probe(registry=r, id="database")(probe_database)
    kopf.on.probe(registry=r, id="api")(probe_api)
    if login is not None:
        kopf.on.login(registry=r)(login)

    # Change handlers are retried until they succeed, however long an outage lasts: an
    # exception is temporary (retried after HERALD's retry delay, kopf's default backoff),
    # with no limit on retries nor on the time they take.
    retried: dict[str, Any] = {"errors": kopf.ErrorsMode.TEMPORARY, "retries": None}
    pt = (targets.GROUP, targets.VERSION, targets.PLURAL)
    kopf.on.resume(*pt, registry=r, **retried)(targets.reconcile)
    kopf.on.create(*pt, registry=r, **retried)(targets.reconcile)
    kopf.on.update(*pt, field="spec", registry=r, **retried)(targets.reconcile)
    kopf.on.delete(*pt, registry=r, **retried)(targets.delete)
    # The status timer ticks for as long as the object exists: a tick that raises is
    # tried again one interval later, and the next ticks follow as usual.
    interval = float(settings.status_interval)
    kopf.timer(
        *pt,
        registry=r,
        interval=interval,
        initial_delay=min(interval, 1.0),
        errors=kopf.ErrorsMode.TEMPORARY,
        retries=None,
        backoff=interval,
    )(targets.refresh)

    dlr = (replays.GROUP, replays.VERSION, replays.PLURAL)
    kopf.on.resume(*dlr, registry=r, **retried)(replays.run)
    kopf.on.create(*dlr, registry=r, **retried)(replays.run)
    return r


def check_kubernetes() -> None:
    """Fail in one line, before kopf starts, when there are no Kubernetes credentials to
    log in with (kopf would log a traceback every 10 s and never act)."""
    import os

    from kubernetes import config as kube_config

    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
        return
    except kube_config.ConfigException:
        pass
    try:
        kube_config.load_kube_config()  # type: ignore[no-untyped-call]
    except (kube_config.ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"cannot log in to Kubernetes: not in a cluster (no service account), and the "
            f"kubeconfig {where} cannot be used ({reason}); run the operator in the cluster, "
            "or point KUBECONFIG at a working kubeconfig"
        ) from None


def check_ports(options: Options) -> None:
    """Fail in one line, before kopf starts, when a port the operator serves is taken (kopf
    would otherwise die with a traceback binding its liveness endpoint, and the metrics
    server's startup handler would retry forever)."""
    settings = options.settings
    for what, port, setting in (
        ("/metrics", settings.metrics_port, "HERALD_OPERATOR_METRICS_PORT"),
        ("/healthz", settings.health_port, "HERALD_OPERATOR_HEALTH_PORT"),
    ):
        if not port:
            continue
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            try:
                probe.bind((options.host, port))
            except OSError as exc:
                raise CannotListen(
                    what,
                    options.host,
                    port,
                    exc,
                    port_setting=setting,
                ) from None


async def run(
    options: Options,
    *,
    registry: kopf.OperatorRegistry | None = None,
    stop_flag: Any = None,
    ready_flag: Any = None,
) -> None:
    """Run until stopped (SIGTERM/SIGINT in the main thread, or ``stop_flag``)."""
    settings = options.settings
    namespace = settings.namespace
    host = options.host
    authority = f"[{host}]" if ":" in host else host  # an IPv6 address
    await kopf.operator(
        registry=registry if registry is not None else build_registry(settings),
        clusterwide=namespace is None,
        namespaces=[namespace] if namespace is not None else (),
        identity=options.identity,  # type: ignore[arg-type]
        liveness_endpoint=f"http://{authority}:{settings.health_port}/healthz",
        memo=kopf.Memo(herald_options=options),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
