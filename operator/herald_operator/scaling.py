"""How many worker replicas: the decision, with an injected clock. Pure code.

Each tick the operator counts the jobs ready to run now, leaving out targets whose circuit
is open and paused ones (their jobs wait whatever the number of workers, so they must not
add any), and asks :meth:`Scaler.decide`:

1. recommendation = clamp(ceil(ready / jobsPerReplica), min, max);
2. scale up to the recommendation at once; scale down only to the *highest*
   recommendation seen over the stabilization window (as the HorizontalPodAutoscaler
   does), so a dip between two bursts does not remove workers. Until the scaler has
   watched for a whole window (just after a start) it does not scale down at all;
3. move by at most ``maxStep`` replicas per change;
4. change nothing within ``cooldown`` seconds of the previous change.

A replica count outside [min, max] (the Deployment was scaled by hand, or the bounds
changed) is brought to the nearest bound at once: the bounds are hard limits.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Protocol


class _ScaleSettings(Protocol):
    @property
    def scale_min(self) -> int: ...
    @property
    def scale_max(self) -> int: ...
    @property
    def jobs_per_replica(self) -> int: ...
    @property
    def scale_max_step(self) -> int: ...
    @property
    def scale_cooldown(self) -> float: ...
    @property
    def scale_down_stabilization(self) -> float: ...


@dataclasses.dataclass(frozen=True)
class ScalingPolicy:
    minimum: int = 1
    maximum: int = 10
    jobs_per_replica: int = 500
    max_step: int = 2
    cooldown: float = 60.0
    down_stabilization: float = 300.0

    def __post_init__(self) -> None:
        if self.minimum < 0 or self.maximum < max(1, self.minimum):
            raise ValueError(f"need 0 <= min <= max, max >= 1: {self.minimum}/{self.maximum}")
        if self.jobs_per_replica < 1 or self.max_step < 1:
            raise ValueError("jobs per replica and max step must be at least 1")
        if self.cooldown < 0 or self.down_stabilization < 0:
            raise ValueError("cooldown and stabilization window must not be negative")

    @classmethod
    def from_settings(cls, settings: _ScaleSettings) -> ScalingPolicy:
        return cls(
            minimum=settings.scale_min,
            maximum=settings.scale_max,
            jobs_per_replica=settings.jobs_per_replica,
            max_step=settings.scale_max_step,
            cooldown=float(settings.scale_cooldown),
            down_stabilization=float(settings.scale_down_stabilization),
        )

    def clamp(self, replicas: int) -> int:
        return max(self.minimum, min(self.maximum, replicas))

    def recommend(self, ready: int) -> int:
        return self.clamp(math.ceil(max(0, ready) / self.jobs_per_replica))


@dataclasses.dataclass(frozen=True)
class Decision:
    ready: int
    current: int
    recommended: int
    """clamp(ceil(ready / jobsPerReplica), min, max)."""
    desired: int
    """The replica count to have now (``current`` when holding)."""
    reason: str
    """Why, in words, for logs and Events."""

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    @property
    def direction(self) -> str:
        if self.desired > self.current:
            return "up"
        return "down" if self.desired < self.current else "none"


class Scaler:
    """Remembers recommendations (for the stabilization window) and the time of the last
    change (for the cooldown). One per operator process; only the active replica uses it."""

    def __init__(self, policy: ScalingPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self._clock = clock
        self._started = clock()
        self._history: collections.deque[tuple[float, int]] = collections.deque()
        self._last_change: float | None = None

    def decide(self, ready: int, current: int) -> Decision:
        p = self.policy
        now = self._clock()
        recommended = p.recommend(ready)
        self._history.append((now, recommended))
        while self._history and self._history[0][0] < now - p.down_stabilization:
            self._history.popleft()

        def hold(reason: str) -> Decision:
            return Decision(ready, current, recommended, current, reason)

        def move(target: int, reason: str) -> Decision:
            step = max(-p.max_step, min(p.max_step, target - current))
            desired = current + step
            if desired != target:
                reason += f" (at most {p.max_step} per change: {current} -> {desired} of {target})"
            return Decision(ready, current, recommended, desired, reason)

        load = f"{ready} ready job(s) at {p.jobs_per_replica} per replica"
        if current != p.clamp(current):
            bound = p.clamp(current)
            return Decision(
                ready,
                current,
                recommended,
                bound,
                f"{current} replicas is outside the bounds [{p.minimum}, {p.maximum}]",
            )
        if self._last_change is not None and now - self._last_change < p.cooldown:
            wait = p.cooldown - (now - self._last_change)
            if recommended != current:
                return hold(f"cooldown: {wait:.0f}s until the next change ({load})")
            return hold(load)
        if recommended > current:
            return move(recommended, f"scale up: {load} -> {recommended}")
        if recommended < current:
            observed = now - self._started
            if observed < p.down_stabilization:
                return hold(
                    f"stabilizing: watched the queue for {observed:.0f}s of "
                    f"{p.down_stabilization:g}s before any scale-down ({load})"
                )
            highest = max(r for _, r in self._history)
            if highest >= current:
                return hold(
                    f"stabilizing: {highest} replicas were recommended within the last "
                    f"{p.down_stabilization:g}s ({load})"
                )
            return move(
                highest,
                f"scale down: {load}; highest recommendation over the last "
                f"{p.down_stabilization:g}s is {highest}",
            )
        return hold(load)

    def changed(self) -> None:
        """Record that the replica count was changed now (starts the cooldown)."""
        self._last_change = self._clock()
