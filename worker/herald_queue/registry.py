"""The target registry in PostgreSQL: register PublishingTargets, look them up by name,
remove them without dropping their jobs, and read their shared live state."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from cachetools import TTLCache
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from herald_core.errors import LISTED_TARGETS, AmbiguousTarget, TargetNotFound
from herald_model.target_spec import PublishingTarget
from herald_queue import sql
from herald_queue.db import AsyncConn
from herald_queue.records import TargetRow

TARGETS_SQL = sql.load("targets")
NAMESPACES_CACHED = 256
"""Namespaces whose target lists :meth:`TargetRegistry.in_namespace` keeps (the least
recently used go first): a caller naming ever new namespaces cannot grow it."""
JOBS_SQL = sql.load("jobs")


def _upsert_params(target: PublishingTarget) -> dict[str, Any]:
    spec = target.spec
    return {
        "namespace": target.namespace,
        "name": target.name,
        "type": spec.type,
        "config": Jsonb(spec.to_config()),
        "generation": target.generation,
        "paused": spec.paused,
        "max_attempts": spec.retry.max_attempts,
        "failure_threshold": spec.circuit_breaker.failure_threshold,
        "open_seconds": spec.circuit_breaker.open_seconds,
        "half_open_probes": spec.circuit_breaker.half_open_probes,
        "rate_per_second": spec.rate_limit.requests_per_second if spec.rate_limit else None,
        "rate_burst": spec.rate_limit.burst if spec.rate_limit else None,
    }


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    id: int
    ref: str
    created: bool


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    deleted: bool
    dead_lettered: int
    """Waiting jobs moved to the dead-letter queue with reason target-deleted."""
    running: int
    """Deliveries in flight; they finish their attempt (a failure goes to the DLQ)."""


class TargetRegistry:
    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConn],
        *,
        default_namespace: str = "default",
        cache_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self.default_namespace = default_namespace
        self._cache_seconds = cache_seconds
        self._ids: dict[str, tuple[float, int, str]] = {}
        self._namespaces: TTLCache[str, Sequence[TargetRow]] = TTLCache(
            maxsize=NAMESPACES_CACHED, ttl=cache_seconds
        )
        self._generation = 0
        """Bumped by :meth:`invalidate`: a list read before it is not kept."""

    async def apply(self, target: PublishingTarget) -> ApplyResult:
        return (await self.apply_many([target]))[0]

    async def apply_many(self, targets: Sequence[PublishingTarget]) -> list[ApplyResult]:
        """Register or update targets, all in one transaction."""
        results = []
        async with self._pool.connection() as conn, conn.transaction():
            for target in targets:
                cur = await conn.cursor(row_factory=dict_row).execute(
                    TARGETS_SQL["upsert_target"], _upsert_params(target)
                )
                row = await cur.fetchone()
                assert row is not None
                results.append(ApplyResult(id=row["id"], ref=target.ref, created=row["created"]))
        self.invalidate()
        return results

    async def list(self, namespace: str | None = None, name: str | None = None) -> list[TargetRow]:
        async with self._pool.connection() as conn:
            cur = await conn.cursor(row_factory=dict_row).execute(
                TARGETS_SQL["list_targets"], {"namespace": namespace, "name": name}
            )
            return [TargetRow.from_row(r) for r in await cur.fetchall()]

    async def in_namespace(self, namespace: str) -> Sequence[TargetRow]:
        """The targets of ``namespace``, cached for a few seconds as :meth:`resolve`'s
        answers are, and dropped at once when a target changes (:meth:`invalidate`, which the
        worker calls on the registry's notification). An event fans out over them."""
        cached = self._namespaces.get(namespace)
        if cached is not None:
            return cached
        generation = self._generation
        rows = await self.list(namespace)
        if generation == self._generation:  # no change announced while it was read
            self._namespaces[namespace] = rows
        return rows

    def split(self, ref: str) -> tuple[str | None, str]:
        namespace, _, name = ref.rpartition("/")
        return (namespace or None), name

    async def get(self, ref: str) -> TargetRow:
        """The target named ``namespace/name``, or ``name`` (see :meth:`resolve`)."""
        _, full = await self.resolve(ref)
        namespace, name = full.split("/", 1)
        rows = await self.list(namespace, name)
        if not rows:
            raise TargetNotFound(ref)
        return rows[0]

    async def resolve(self, ref: str) -> tuple[int, str]:
        """(id, ``namespace/name``) of a target named ``namespace/name`` or ``name``.

        A bare name means the default namespace's target of that name; failing that, the
        only target of that name in any namespace. Answers are cached for a few seconds.
        """
        if "\x00" in ref:  # no Kubernetes name holds one, and PostgreSQL text cannot
            raise TargetNotFound(ref)
        cached = self._ids.get(ref)
        now = time.monotonic()
        if cached and now - cached[0] < self._cache_seconds:
            return cached[1], cached[2]
        namespace, name = self.split(ref)
        async with self._pool.connection() as conn:
            cur = await conn.execute(TARGETS_SQL["find_target_namespaces"], {"name": name})
            found = {str(ns): int(i) for i, ns in await cur.fetchall()}  # type: ignore[call-overload]
        if namespace is not None:
            chosen = namespace if namespace in found else None
        elif self.default_namespace in found:
            chosen = self.default_namespace
        elif len(found) == 1:
            chosen = next(iter(found))
        elif found:
            raise AmbiguousTarget(name, sorted(found))
        else:
            chosen = None
        if chosen is None:
            raise TargetNotFound(ref)
        result = (found[chosen], f"{chosen}/{name}")
        self._ids[ref] = (now, *result)
        return result

    async def _existing(self, ref: str) -> int:
        try:
            return (await self.resolve(ref))[0]
        except TargetNotFound:
            raise TargetNotFound(ref, LISTED_TARGETS) from None

    def invalidate(self) -> None:
        self._ids.clear()
        self._namespaces.clear()
        self._generation += 1

    async def delete(self, ref: str) -> DeleteResult:
        """Delete a target. Its waiting jobs go to the dead-letter queue (reason
        ``target-deleted``), so nothing is dropped and they can be replayed to a recreated
        target; deliveries in flight finish their attempt (a failed one goes to the DLQ
        too, via the sweeper). The name is free for a new target at once."""
        target_id = await self._existing(ref)
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(TARGETS_SQL["mark_target_deleted"], {"id": target_id})
            deleted = await cur.fetchone() is not None
            cur = await conn.execute(
                JOBS_SQL["bury_deleted_targets_jobs"], {"target_id": target_id}
            )
            buried = len(await cur.fetchall())
            cur = await conn.execute(JOBS_SQL["count_running_for_target"], {"target_id": target_id})
            row = await cur.fetchone()
            running = int(row[0]) if row else 0  # type: ignore[call-overload]
        self.invalidate()
        return DeleteResult(deleted=deleted, dead_lettered=buried, running=running)

    async def sweep_deleted(self) -> int:
        """Move waiting jobs of deleted targets to the DLQ (the sweeper's job)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(JOBS_SQL["bury_deleted_targets_jobs"], {"target_id": None})
            return len(await cur.fetchall())

    async def purge_tombstones(self, older_than: float, *, now: dt.datetime | None = None) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                TARGETS_SQL["purge_tombstones"], {"older_than": older_than, "now": now}
            )
            return len(await cur.fetchall())

    async def auto_pause(self, target_id: int, reason: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                TARGETS_SQL["auto_pause_target"], {"id": target_id, "reason": reason}
            )
            return await cur.fetchone() is not None

    async def disable_failing(
        self, now: dt.datetime, default_seconds: float
    ) -> Sequence[TargetRow]:
        """Disable the targets failing continuously for their disable period as of
        ``now`` (spec.disableAfterSeconds, else ``default_seconds``; 0 never); the targets
        disabled by this call."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                TARGETS_SQL["disable_failing_targets"],
                {"now": now, "default_seconds": default_seconds},
            )
            ids = [int(r[0]) for r in await cur.fetchall()]  # type: ignore[call-overload]
        return [t for t in await self.list() if t.id in ids] if ids else []

    async def enable(self, ref: str) -> bool:
        """Bring back a target disabled after failing for days; False if it was not."""
        target_id = await self._existing(ref)
        async with self._pool.connection() as conn:
            cur = await conn.execute(TARGETS_SQL["enable_target"], {"id": target_id})
            return await cur.fetchone() is not None

    async def resume(self, ref: str) -> None:
        """Clear a 410 auto-pause and close the circuit (an operator's explicit word)."""
        target_id = await self._existing(ref)
        async with self._pool.connection() as conn:
            await conn.execute(TARGETS_SQL["resume_target"], {"id": target_id})
