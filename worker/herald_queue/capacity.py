"""Soft capacity: how full a target's queue (spec.capacity) and the whole queue
(HERALD_QUEUE_CAPACITY) are. Pure code, no I/O (an event says when the first count is in).

What fills a capacity is the jobs *waiting* for delivery, queued or retrying (held behind an
ordering key and scheduled ones included): ``status.depth.total``, the DEPTH column of
``kubectl get publishingtargets``. Levels: ``ok`` below 80 %, ``warning`` from 80 %,
``full`` from 100 %. By default nothing is ever refused; with a hard limit the worker's API
refuses a submission that would take the count beyond the capacity.

The count is cheap: no enqueue counts rows. Each worker counts waiting jobs per target once
per HERALD_SAMPLE_INTERVAL (the sampler's grouped count, which it makes anyway for
``herald_queue_depth``) and adds what its own API has accepted or is accepting since the
count began. With one worker a hard limit is exact: a submission is checked and reserved in
one step (no two requests in flight can both take the last place), nothing is decided
before the first count (the API waits for it), and a job accepted while a count runs is
added to it whether or not the count saw it (so it may be counted twice until the next
count, never missed). Counts only err on the full side: a refused producer may find room
up to one interval before this worker sees it (Retry-After says so).

With N replicas each knows its own submissions at once and the others' at its next count,
so the queue may hold up to (N - 1) x what one replica accepts in one interval beyond the
limit (at most N - 1 times the room left at the last count): backpressure, not an exact
quota. One replica per target (or a small HERALD_SAMPLE_INTERVAL) makes it tight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence

from herald_model.target_spec import CapacityPolicy

WARNING_RATIO = 0.8
ALL = ""
"""The scope of the whole queue (a target's scope is its namespace/name)."""


class Level(enum.IntEnum):
    OK = 0
    WARNING = 1
    """At least 80 % of the capacity."""
    FULL = 2
    """At least 100 %."""

    @property
    def label(self) -> str:
        return self.name.lower()


def level_of(waiting: int, capacity: int) -> Level:
    if waiting >= capacity:
        return Level.FULL
    if waiting >= WARNING_RATIO * capacity:
        return Level.WARNING
    return Level.OK


def percent(waiting: int, capacity: int | None) -> float | None:
    """Fill in percent, one decimal (``capacityPct``); None without a capacity."""
    if not capacity:
        return None
    return round(100.0 * waiting / capacity, 1)


@dataclasses.dataclass(frozen=True)
class Crossing:
    """The fill of a capacity moved from one level to another between two samples."""

    scope: str
    """A target's namespace/name, or :data:`ALL`."""
    before: Level
    after: Level
    waiting: int
    capacity: int

    @property
    def rising(self) -> bool:
        return self.after > self.before

    def describe(self) -> str:
        where = "the queue" if self.scope == ALL else f"target {self.scope}"
        pct = percent(self.waiting, self.capacity)
        return f"{where} holds {self.waiting} of {self.capacity} jobs ({pct} %)"


@dataclasses.dataclass(frozen=True)
class Refusal:
    scope: str
    waiting: int
    adding: int
    capacity: int

    def message(self) -> str:
        if self.scope == ALL:
            where, setting = "the queue", "HERALD_QUEUE_CAPACITY"
        else:
            where, setting = f"target {self.scope}", "its spec.capacity"
        return (
            f"{where} is full: {self.waiting} jobs waiting of {self.capacity} ({setting}, hard "
            f"limit), {self.adding} more refused; nothing was written. Try again after "
            "Retry-After seconds."
        )


@dataclasses.dataclass(frozen=True)
class CountStart:
    """What this worker had accepted when a count began (see :meth:`CapacityWatch.begin`)."""

    accepted: Mapping[str, int]
    total: int


class CapacityWatch:
    """What one worker knows of the fill of each capacity: the waiting jobs counted by the
    last count, plus those its own API accepted since it began, plus those in flight."""

    def __init__(self, capacity: int = 0, hard_limit: bool = False) -> None:
        self.total_capacity = capacity
        self.total_hard_limit = hard_limit and capacity > 0
        self.limits: dict[str, CapacityPolicy] = {}
        self.waiting: dict[str, int] = {}
        self.total = 0
        self.levels: dict[str, Level] = {}
        self.counted = asyncio.Event()
        """Set once a count has been observed: refusals can be decided."""
        self._accepted: dict[str, int] = {}
        """Jobs this worker's API created, per target, since it started (never reset)."""
        self._accepted_total = 0
        self._in_flight: dict[str, int] = {}
        self._in_flight_total = 0

    def begin(self) -> CountStart:
        """A count is about to be sent: what has been accepted so far."""
        return CountStart(dict(self._accepted), self._accepted_total)

    def observe(
        self,
        waiting: Mapping[str, int],
        limits: Mapping[str, CapacityPolicy],
        since: CountStart | None = None,
    ) -> list[Crossing]:
        """A new count, begun at ``since``: waiting jobs per target and each target's
        capacity. Jobs accepted after ``since`` are added, the count may or may not have
        seen them. Returns the capacities whose level changed since the last count (the
        first count compares with ``ok``, so a queue that is already full is reported
        once)."""
        since = since or self.begin()
        self.waiting = {
            ref: waiting.get(ref, 0) + self._accepted.get(ref, 0) - since.accepted.get(ref, 0)
            for ref in waiting.keys() | self._accepted.keys()
        }
        self.total = sum(waiting.values()) + self._accepted_total - since.total
        self.limits = dict(limits)
        self.counted.set()
        now: dict[str, tuple[int, int]] = {
            ref: (self.waiting.get(ref, 0), policy.jobs) for ref, policy in limits.items()
        }
        if self.total_capacity:
            now[ALL] = (self.total, self.total_capacity)
        crossings = []
        levels: dict[str, Level] = {}
        for scope, (count, capacity) in now.items():
            levels[scope] = level = level_of(count, capacity)
            before = self.levels.get(scope, Level.OK)
            if level != before:
                crossings.append(Crossing(scope, before, level, count, capacity))
        self.levels = levels
        return crossings

    def refusal(self, refs: Sequence[str]) -> Refusal | None:
        """Whether a submission of jobs for ``refs`` (one entry per job) goes beyond a hard
        limit, counting the submissions in flight. A batch is accepted or refused whole."""
        adding: dict[str, int] = {}
        for ref in refs:
            adding[ref] = adding.get(ref, 0) + 1
        for ref, n in sorted(adding.items()):
            policy = self.limits.get(ref)
            if policy is not None and policy.hard_limit:
                count = self.waiting.get(ref, 0) + self._in_flight.get(ref, 0)
                if count + n > policy.jobs:
                    return Refusal(ref, count, n, policy.jobs)
        total = self.total + self._in_flight_total
        if self.total_hard_limit and total + len(refs) > self.total_capacity:
            return Refusal(ALL, total, len(refs), self.total_capacity)
        return None

    def reserve(self, refs: Sequence[str]) -> Refusal | None:
        """Check a submission and, when it may go in, hold its places until
        :meth:`settle` (in the same step: two submissions in flight cannot both take the
        last place)."""
        refused = self.refusal(refs)
        if refused is None:
            self._shift(self._in_flight, refs, +1)
            self._in_flight_total += len(refs)
        return refused

    def settle(self, reserved: Sequence[str], created: Sequence[str]) -> None:
        """A reserved submission ended: ``created`` are the jobs it wrote (duplicates and
        failed submissions write none). Call it however the submission ended."""
        self._shift(self._in_flight, reserved, -1)
        self._in_flight_total -= len(reserved)
        self.accepted(created)

    def accepted(self, refs: Sequence[str]) -> None:
        """Jobs this worker just enqueued: counted until a count that began after them."""
        self._shift(self._accepted, refs, +1)
        self._accepted_total += len(refs)
        self._shift(self.waiting, refs, +1)
        self.total += len(refs)

    @staticmethod
    def _shift(counts: dict[str, int], refs: Sequence[str], step: int) -> None:
        for ref in refs:
            counts[ref] = counts.get(ref, 0) + step


def retry_after(sample_interval: float) -> str:
    """Seconds a refused producer should wait: until the next count."""
    return str(max(1, math.ceil(sample_interval)))
