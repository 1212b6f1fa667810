"""Recent jobs in memory (cachetools LRU), updated at every transition this process sees.

A lookup is answered from here when the answer cannot be stale: the job is being delivered
by this process, or it succeeded (final). Anything else (a queued job may have been taken
by another replica since) is read from the database. Hits and misses are counted."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from collections.abc import Iterable

from cachetools import LRUCache

from herald_core.states import JobState


@dataclasses.dataclass(frozen=True)
class Snapshot:
    id: uuid.UUID
    target: str
    priority: str
    state: JobState
    attempts: int
    created_at: dt.datetime | None
    updated_at: dt.datetime
    last_error: str | None = None
    local: bool = False
    """This process is delivering it right now."""


class Tracker:
    def __init__(self, size: int) -> None:
        self._cache: LRUCache[uuid.UUID, Snapshot] = LRUCache(maxsize=size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def record(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._cache[snapshot.id] = snapshot

    def record_new(self, snapshot: Snapshot) -> None:
        """Record a job just accepted, unless this process already has a later word on it
        (its delivery may start before the API's answer is written)."""
        with self._lock:
            if snapshot.id not in self._cache:
                self._cache[snapshot.id] = snapshot

    def let_go(self, job_ids: Iterable[uuid.UUID]) -> None:
        """This process no longer holds these jobs: a snapshot still marked local (no
        outcome of its own replaced it: released, or the lease was lost) stops being
        authoritative, and the next lookup reads the database."""
        with self._lock:
            for job_id in job_ids:
                snapshot = self._cache.get(job_id)
                if snapshot is not None and snapshot.local:
                    del self._cache[job_id]

    def lookup(self, job_id: uuid.UUID) -> Snapshot | None:
        """The snapshot if it is authoritative (see module doc), counting hit or miss."""
        with self._lock:
            snapshot = self._cache.get(job_id)
            if snapshot is not None and (snapshot.local or snapshot.state is JobState.SUCCEEDED):
                self.hits += 1
                return snapshot
            self.misses += 1
            return None

    def recent(
        self, limit: int, state: JobState | None = None, target: str | None = None
    ) -> list[Snapshot]:
        """Up to ``limit`` snapshots, most recently updated first, optionally of one state
        and one target (``namespace/name``, or a name in any namespace). What this process
        saw last, not the database's word: a queued job may have moved on since on another
        replica."""
        with self._lock:
            snapshots = list(self._cache.values())

        def of_target(s: Snapshot) -> bool:
            if target is None:
                return True
            return s.target == target if "/" in target else s.target.endswith("/" + target)

        chosen = [s for s in snapshots if (state is None or s.state is state) and of_target(s)]
        chosen.sort(key=lambda s: s.updated_at, reverse=True)
        return chosen[:limit]

    def clear(self) -> int:
        """Forget every snapshot (lookups then read the database); how many there were."""
        with self._lock:
            n = len(self._cache)
            self._cache.clear()
            return n

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def maxsize(self) -> int:
        return int(self._cache.maxsize)
