"""The local hold-back: a breaker that does not wait for the database.

A target this worker has seen fail failureThreshold times in a row is held locally until
those failures are written (when the shared circuit opens): nothing more of it is claimed,
and what was claimed but not sent yet is given back without counting an attempt. So a
failing target gets at most a threshold plus one wave of requests, not a wave per settle
round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from herald_core.states import ErrorClass
from herald_delivery.outcome import Outcome
from herald_worker.target_cache import RuntimeTarget

log = logging.getLogger("herald.worker")

WITHHELD = "not sent: this worker saw the target reach its failure threshold"


class HoldBack:
    def __init__(self) -> None:
        self._streak: dict[int, int] = {}
        """Per target: failures in a row this worker saw (not permanent ones), since its
        last success there."""
        self._unwritten: dict[int, int] = {}
        """Per target: failures counted in the streak whose outcome is not written yet."""
        self._held_back: set[int] = set()
        """Targets whose streak reached their failureThreshold, until those failures are
        written: nothing of them is claimed or sent meanwhile (see observe)."""

    def __contains__(self, target_id: int) -> bool:
        return target_id in self._held_back

    @property
    def targets(self) -> frozenset[int]:
        """The targets held back now (claimed with a limit of 0)."""
        return frozenset(self._held_back)

    def observe(self, target_id: int, target: RuntimeTarget | None, outcome: Outcome) -> bool:
        """Keep the target's local streak; hold the target back once the streak reaches its
        failureThreshold (without waiting for the shared circuit to be written). True if
        this failure counted."""
        t = target_id
        if outcome.withheld or outcome.gone or target is None:
            return False
        if outcome.delivered:
            self._streak[t] = 0
            return False
        if outcome.error_class is ErrorClass.PERMANENT:  # the breaker does not count these
            return False
        self._streak[t] = self._streak.get(t, 0) + 1
        self._unwritten[t] = self._unwritten.get(t, 0) + 1
        threshold = target.row.spec.circuit_breaker.failure_threshold
        if self._streak[t] >= threshold and t not in self._held_back:
            self._held_back.add(t)
            log.info(
                "target failing: claiming and sending nothing more of it until its "
                "failures are written",
                extra={"action": "hold-back", "target": target.ref, "failures": self._streak[t]},
            )
        return True

    def written(self, counted: Iterable[int]) -> None:
        """Counted failures of these targets (one id per failure) written: the shared
        circuit state has them, and decides from now on."""
        for t in counted:
            self._unwritten[t] -= 1
            if not self._unwritten[t]:
                del self._unwritten[t]
                if t in self._held_back:
                    self._held_back.discard(t)
                    self._streak[t] = 0
