"""What one operator process holds while it runs: its settings, the queue (PostgreSQL
pool), the Kubernetes API client, metrics, the worker scaler's state. Built by the startup
handler, kept in kopf's memo (``memo["herald"]``), closed by the cleanup handler."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import kopf
import psycopg
import psycopg_pool

from herald_core.errors import DatabaseUnavailable
from herald_delivery.egress import EgressPolicy
from herald_delivery.settings import EgressSettings
from herald_operator import peering
from herald_operator.kube import KubeApi, KubeError
from herald_operator.metrics import Metrics
from herald_operator.scaling import Scaler, ScalingPolicy
from herald_operator.settings import OperatorSettings
from herald_operator.status import DeadLetters, Depth, depth_by_target
from herald_queue import sql, stats
from herald_queue.queue import Queue
from herald_queue.records import TargetRow
from herald_queue.settings import DatabaseSettings, QueueSettings

log = logging.getLogger("herald.operator")

DB_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    DatabaseUnavailable,
    OSError,
)
"""PostgreSQL is unreachable: handlers retry later (kopf.TemporaryError)."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How to run the operator: settings from the environment, plus what tests tune."""

    settings: OperatorSettings
    database: DatabaseSettings = dataclasses.field(default_factory=DatabaseSettings)
    queue: QueueSettings = dataclasses.field(default_factory=QueueSettings)
    egress: EgressSettings = dataclasses.field(default_factory=EgressSettings)
    """The workers' egress policy: a target whose URL it refuses is not Ready."""
    url: str | None = dataclasses.field(default=None, repr=False)  # it may hold a password
    """The database URL (default: HERALD_DATABASE_URL, else the embedded PostgreSQL)."""
    identity: str = dataclasses.field(default_factory=peering.identity)
    priority: int = dataclasses.field(default_factory=peering.random_priority)
    listen_host: str | None = None
    """Address of /metrics and /healthz (default: HERALD_OPERATOR_LISTEN_HOST)."""
    retry_delay: float = 10.0
    """Seconds before a handler that met an outage (PostgreSQL, the API) runs again."""
    api_backoffs: tuple[float, ...] = (1, 2, 4, 8, 15)
    """kopf's retries of a failed Kubernetes API request."""

    @property
    def host(self) -> str:
        """Where /metrics and /healthz listen."""
        return self.listen_host or self.settings.listen_host


class QueueSnapshot:
    """Registry rows and queue depths of every target, read at most once per ``max_age``
    however many status timers ask: one pair of queries per refresh, not one per target."""

    def __init__(
        self,
        queue: Queue,
        namespace: str | None,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self._namespace = namespace
        self._max_age = max_age
        self._clock = clock
        self._lock = asyncio.Lock()
        self._taken: float | None = None
        self.targets: dict[tuple[str, str], TargetRow] = {}
        self.depth: dict[tuple[str, str], Depth] = {}
        self.dead_letters: dict[tuple[str, str], DeadLetters] = {}
        self._down = False

    def invalidate(self) -> None:
        self._taken = None

    async def refresh(self) -> QueueSnapshot:
        async with self._lock:
            now = self._clock()
            if self._taken is not None and now - self._taken < self._max_age:
                return self
            try:
                rows = await self._queue.registry.list(namespace=self._namespace)
                counts = await stats.count_rows(self._queue.pool, live_only=True)
                waiting = await self._queue.dead_letters.waiting_by_target(self._namespace)
            except DB_ERRORS as exc:
                if not self._down:
                    log.warning(
                        "PostgreSQL is unreachable; target status is not refreshed until it is "
                        "back",
                        extra={"action": "refresh-status", "error": str(exc)},
                    )
                self._down = True
                raise
            if self._down:
                log.info("PostgreSQL is reachable again", extra={"action": "refresh-status"})
            self._down = False
            self.targets = {(r.namespace, r.name): r for r in rows}
            self.depth = depth_by_target(counts)
            self.dead_letters = {key: DeadLetters.of(n) for key, n in waiting.items()}
            self._taken = self._clock()
            return self


class Leadership:
    """Whether this replica acts (see :mod:`herald_operator.peering`); always when
    standalone (HERALD_PEERING empty)."""

    def __init__(
        self,
        kube: KubeApi,
        settings: OperatorSettings,
        identity: str,
        priority: int,
        metrics: Metrics,
    ) -> None:
        self._kube = kube
        self._settings = settings
        self._identity = identity
        self._priority = priority
        self._metrics = metrics
        self._last: bool | None = None
        self._missing = False

    async def active(self) -> bool:
        name = self._settings.peering
        if not name:
            self._metrics.active.set(1)
            return True
        namespace = self._settings.namespace
        plural = peering.NAMESPACED_PLURAL if namespace else peering.CLUSTER_PLURAL
        body = None
        try:
            for group in peering.GROUPS:
                body = await self._kube.get_custom(group, peering.VERSION, plural, namespace, name)
                if body is not None:
                    break
        except KubeError as exc:
            log.warning(
                "cannot read the peering object; not acting until it can be read",
                extra={"action": "peering", "peering": name, "error": str(exc)},
            )
        else:
            if body is None and not self._missing:
                where = f"in namespace {namespace}" if namespace else "(cluster-scoped)"
                log.warning(
                    f"the {'KopfPeering' if namespace else 'ClusterKopfPeering'} object {name} "
                    f"does not exist {where}: no operator replica acts until it does. Create "
                    "it (the Helm chart does), or set HERALD_PEERING= to run a single replica "
                    "standalone.",
                    extra={"action": "peering", "peering": name},
                )
            self._missing = body is None
        active = peering.is_active(body, self._identity, self._priority, dt.datetime.now(dt.UTC))
        self._metrics.active.set(1 if active else 0)
        if active != self._last:
            log.info(
                "this replica is active" if active else "this replica stands by",
                extra={"action": "peering", "peering": name, "identity": self._identity},
            )
            self._last = active
        return active

    async def watch(self, interval: float = 10.0) -> None:
        """Check now and then, so that the logs and herald_operator_active tell which
        replica acts even while nothing is scaled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.active()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the watch for good; it is logged
                log.exception("cannot tell whether this replica acts", extra={"action": "peering"})


@dataclasses.dataclass
class Runtime:
    options: Options
    queue: Queue
    kube: KubeApi
    metrics: Metrics
    snapshot: QueueSnapshot
    scaler: Scaler
    leadership: Leadership
    tasks: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)
    closers: list[Callable[[], Any]] = dataclasses.field(default_factory=list)

    @property
    def settings(self) -> OperatorSettings:
        return self.options.settings

    @functools.cached_property
    def egress(self) -> EgressPolicy:
        return self.options.egress.policy()

    @classmethod
    async def open(cls, options: Options) -> Runtime:
        queue = await Queue.open(options.database, options.queue, url=options.url)
        kube = KubeApi()
        settings = options.settings
        metrics = Metrics()
        return cls(
            options=options,
            queue=queue,
            kube=kube,
            metrics=metrics,
            snapshot=QueueSnapshot(
                queue, settings.namespace, max_age=float(settings.status_interval) / 2
            ),
            scaler=Scaler(ScalingPolicy.from_settings(settings)),
            leadership=Leadership(kube, settings, options.identity, options.priority, metrics),
        )

    async def database_now(self) -> dt.datetime:
        """PostgreSQL's clock (dead letters are stamped with it)."""
        async with self.queue.pool.connection() as conn:
            cur = await conn.execute(sql.query("jobs", "transaction_time"))
            row = await cur.fetchone()
        assert row is not None
        value = row[0]
        assert isinstance(value, dt.datetime)
        return value

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for closer in reversed(self.closers):
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        self.kube.close()
        await self.queue.close()


def runtime_of(memo: Any) -> Runtime:
    runtime = memo.get("herald") if hasattr(memo, "get") else None
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the operator's startup handler did not run (memo['herald'] unset)")
    return runtime


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[None]])


def counted(kind: str) -> Callable[[Handler], Handler]:
    """Count a change handler's runs in herald_operator_reconciliations_total by result:
    success, retry (kopf.TemporaryError: an outage) or error (anything else)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(**kwargs: Any) -> None:
            metrics = runtime_of(kwargs.get("memo")).metrics
            try:
                await handler(**kwargs)
            except kopf.TemporaryError:
                metrics.reconciled(kind, "retry")
                raise
            except Exception:
                metrics.reconciled(kind, "error")
                raise
            metrics.reconciled(kind, "success")

        return wrapper  # type: ignore[return-value]

    return decorate


def object_lock(memo: Any) -> asyncio.Lock:
    """A lock per object (kopf's per-object memo): its change handlers and its status timer
    never interleave, so one Event is posted per transition."""
    lock = memo.get("herald_lock")
    if lock is None:
        lock = memo["herald_lock"] = asyncio.Lock()
    assert isinstance(lock, asyncio.Lock)
    return lock
