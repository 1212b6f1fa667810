"""Soft capacity: how full a target's queue (spec.capacity) and the whole queue
(HERALD_QUEUE_CAPACITY) are. Pure code, no I/O.

What fills a capacity is the jobs *waiting* for delivery, queued or retrying (held behind an
ordering key and scheduled ones included): ``status.depth.total``, the DEPTH column of
``kubectl get publishingtargets``. Levels: ``ok`` below 80 %, ``warning`` from 80 %,
``full`` from 100 %. By default nothing is ever refused; with a hard limit the worker's API
refuses a submission that would take the count beyond the capacity.

The count is cheap: no enqueue counts rows. Each worker counts waiting jobs per target once
per HERALD_SAMPLE_INTERVAL (the sampler's grouped count, which it makes anyway for
``herald_queue_depth``) and adds the jobs its own API accepted since. Other replicas'
submissions arrive with the next sample, so a hard limit may be overshot by what the other
replicas accept within one interval (and a worker refuses nothing before its first sample);
it is backpressure, not an exact quota.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence

from herald_queue.spec import CapacityPolicy

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


class CapacityWatch:
    """What one worker knows of the fill of each capacity: the waiting jobs counted by the
    last sample, plus those its own API accepted since."""

    def __init__(self, capacity: int = 0, hard_limit: bool = False) -> None:
        self.total_capacity = capacity
        self.total_hard_limit = hard_limit and capacity > 0
        self.limits: dict[str, CapacityPolicy] = {}
        self.waiting: dict[str, int] = {}
        self.total = 0
        self.levels: dict[str, Level] = {}

    def observe(
        self, waiting: Mapping[str, int], limits: Mapping[str, CapacityPolicy]
    ) -> list[Crossing]:
        """A new sample: waiting jobs per target and each target's capacity. Returns the
        capacities whose level changed since the last sample (the first sample compares
        with ``ok``, so a queue that is already full is reported once)."""
        self.waiting = dict(waiting)
        self.total = sum(waiting.values())
        self.limits = dict(limits)
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
        limit. A batch is accepted or refused whole."""
        adding: dict[str, int] = {}
        for ref in refs:
            adding[ref] = adding.get(ref, 0) + 1
        for ref, n in sorted(adding.items()):
            policy = self.limits.get(ref)
            if policy is not None and policy.hard_limit:
                count = self.waiting.get(ref, 0)
                if count + n > policy.jobs:
                    return Refusal(ref, count, n, policy.jobs)
        if self.total_hard_limit and self.total + len(refs) > self.total_capacity:
            return Refusal(ALL, self.total, len(refs), self.total_capacity)
        return None

    def accepted(self, refs: Sequence[str]) -> None:
        """Jobs this worker just enqueued: counted until the next sample."""
        for ref in refs:
            self.waiting[ref] = self.waiting.get(ref, 0) + 1
        self.total += len(refs)


def retry_after(sample_interval: float) -> str:
    """Seconds a refused producer should wait: until the next count."""
    return str(max(1, math.ceil(sample_interval)))
