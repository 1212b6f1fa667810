"""A PublishingTarget's status from what PostgreSQL knows of it. Pure code.

:func:`render` turns the registry row (shared circuit state, counters, last outcomes) and
the target's queue depth into the ``status`` fields the CRD declares, and nothing else: a
real apiserver prunes unknown status fields. :func:`circuit_transition`,
:func:`dead_letter_event` and :func:`capacity_notice` say which Events a change of status
deserves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from herald_core.states import CircuitState, JobState, Priority
from herald_operator.conditions import Condition, Transition, warning
from herald_queue.capacity import Level, level_of, percent
from herald_queue.records import iso
from herald_queue.registry import TargetRow

WAITING = (JobState.QUEUED.value, JobState.RETRYING.value)
MAX_ERROR_MESSAGE = 1024


@dataclasses.dataclass(frozen=True)
class Depth:
    """Jobs waiting for one target (queued or retrying), per priority."""

    high: int = 0
    medium: int = 0
    low: int = 0
    ready: int = 0
    """Of those, due now (not scheduled for later, not backing off, not held)."""

    @property
    def total(self) -> int:
        return self.high + self.medium + self.low

    def to_json(self) -> dict[str, int]:
        return {
            "high": self.high,
            "medium": self.medium,
            "low": self.low,
            "total": self.total,
            "ready": self.ready,
        }


@dataclasses.dataclass(frozen=True)
class DeadLetters:
    """Dead letters of one target waiting for a replay (cancelled jobs left out), per
    error class."""

    transient: int = 0
    permanent: int = 0
    unknown: int = 0

    @property
    def waiting(self) -> int:
        return self.transient + self.permanent + self.unknown

    @classmethod
    def of(cls, counts: Mapping[str, int] | None) -> DeadLetters:
        counts = counts or {}
        return cls(**{k: int(counts.get(k, 0)) for k in ("transient", "permanent", "unknown")})

    def to_json(self) -> dict[str, int]:
        return {
            "waiting": self.waiting,
            "transient": self.transient,
            "permanent": self.permanent,
            "unknown": self.unknown,
        }


def depth_by_target(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Depth]:
    """Depths keyed by (namespace, name), from ``herald_queue.stats.count_rows`` rows."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        if row["state"] not in WAITING:
            continue
        entry = counts.setdefault(
            (row["namespace"], row["name"]), {p.value: 0 for p in Priority} | {"ready": 0}
        )
        entry[row["priority"]] += int(row["n"])
        entry["ready"] += int(row["ready"] or 0)
    return {key: Depth(**value) for key, value in counts.items()}


def _truncate(text: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(row: TargetRow, depth: Depth, dead_letters: DeadLetters | None = None) -> dict[str, Any]:
    """The live part of a PublishingTarget's status (everything but conditions and
    observedGeneration)."""
    last_error: dict[str, Any] | None = None
    if row.last_error is not None and row.last_error_at is not None:
        last_error = {"message": _truncate(row.last_error), "time": iso(row.last_error_at)}
        if row.last_error_class is not None:
            last_error["class"] = row.last_error_class
    paused_reason: str | None = None
    if row.paused:
        paused_reason = "spec.paused is true"
    elif row.auto_paused_reason is not None:
        paused_reason = row.auto_paused_reason
    return {
        "circuit": {
            "state": row.circuit_state.value,
            "consecutiveFailures": row.consecutive_failures,
            "changedAt": iso(row.circuit_changed_at),
            "openUntil": iso(row.circuit_open_until),
            "trips": row.circuit_trips_total,
            "recoveries": row.circuit_recoveries_total,
        },
        "depth": depth.to_json(),
        "deadLetters": (dead_letters or DeadLetters()).to_json(),
        "paused": row.holding,
        "pausedReason": paused_reason,
        "lastDeliveryTime": iso(row.last_delivery_at),
        "lastError": last_error,
        "delivered": row.delivered_total,
        "deadLettered": row.dead_lettered_total,
        "failedAttempts": row.failed_attempts_total,
    }


CAPACITY_CONDITION = "CapacityPressure"
CAPACITY_REASONS = {
    Level.OK: "BelowCapacity",
    Level.WARNING: "NearCapacity",
    Level.FULL: "AtCapacity",
}


def capacity_condition(row: TargetRow, depth: Depth) -> Condition | None:
    """``CapacityPressure``: True from 80 % of spec.capacity.jobs (reason NearCapacity; at
    100 % AtCapacity), False below; None for a target without a capacity (no condition)."""
    policy = row.spec.capacity
    if policy is None:
        return None
    level = level_of(depth.total, policy.jobs)
    fill = f"{depth.total} of {policy.jobs} jobs waiting ({percent(depth.total, policy.jobs)} %)"
    if level is Level.OK:
        message = f"{fill}; warnings start at 80 %"
    elif policy.hard_limit and level is Level.FULL:
        message = f"{fill}: the API refuses new jobs for it (429, hard limit) until it drains"
    elif policy.hard_limit:
        message = f"{fill}: at 100 % the API refuses new jobs for it (hard limit)"
    else:
        message = f"{fill}: jobs are still accepted (no hard limit); check the receiver"
    return Condition(
        type=CAPACITY_CONDITION,
        status="False" if level is Level.OK else "True",
        reason=CAPACITY_REASONS[level],
        message=message,
    )


def capacity_notice(was: Mapping[str, Any] | None, now: Condition) -> Transition | None:
    """The Warning for a fill that rose a level (80 %, 100 %) from the CapacityPressure
    condition ``was`` (the one last announced): one per crossing."""
    reasons = list(CAPACITY_REASONS.values())
    before = reasons.index(was["reason"]) if was and was.get("reason") in reasons else 0
    if reasons.index(now.reason) > before:
        return warning(now.reason, now.message, f"{now.reason}: {now.message}")
    return None


def changed(current: Mapping[str, Any], rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``rendered`` that differ from the object's current status (so a quiet
    target costs no API write per refresh). The status is written as a JSON merge patch,
    where null removes a key: a null rendered field equals an absent stored one."""
    return {k: v for k, v in rendered.items() if _plain(current.get(k)) != _plain(v)}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def circuit_transition(previous: Mapping[str, Any] | None, row: TargetRow) -> Transition | None:
    """The Event for a change of the circuit between two status refreshes.

    ``previous`` is the ``status.circuit`` last written (None before the first refresh).
    The trip and recovery counters catch a circuit that opened and closed again between two
    refreshes; a first refresh reports an open circuit, not a closed one."""
    state = row.circuit_state
    before = CircuitState(previous["state"]) if previous and previous.get("state") else None
    trips_before = int(previous.get("trips") or 0) if previous else row.circuit_trips_total
    recoveries_before = (
        int(previous.get("recoveries") or 0) if previous else row.circuit_recoveries_total
    )
    failures = row.consecutive_failures
    if state is not CircuitState.CLOSED and before in (None, CircuitState.CLOSED):
        until = f" until {iso(row.circuit_open_until)}" if row.circuit_open_until else ""
        return Transition(
            "Warning",
            "CircuitOpened",
            f"the circuit breaker opened after {failures} consecutive failures: jobs wait in "
            f"the queue{until} without spending attempts, then probes test the receiver",
        )
    if state is CircuitState.CLOSED and before in (CircuitState.OPEN, CircuitState.HALF_OPEN):
        return Transition(
            "Normal", "CircuitClosed", "the circuit breaker closed: the receiver answers again"
        )
    if (
        state is CircuitState.CLOSED
        and row.circuit_trips_total > trips_before
        and row.circuit_recoveries_total > recoveries_before
    ):
        return Transition(
            "Warning",
            "CircuitFlapped",
            "the circuit breaker opened and closed again since the last status refresh",
        )
    return None


@dataclasses.dataclass(frozen=True)
class DeadLetterNotice:
    """What the dead-letter Event of a target last reported: the target's deadLettered
    counter then, and when (monotonic seconds; None: never)."""

    counted: int
    at: float | None = None


def dead_letter_event(
    notice: DeadLetterNotice,
    row: TargetRow,
    dead_letters: DeadLetters,
    *,
    now: float,
    interval: float,
) -> tuple[Transition | None, DeadLetterNotice]:
    """The Warning for jobs dead-lettered since the last one, at most one per ``interval``
    per target: a storm of failures makes one Event that counts them, not thousands."""
    fresh = row.dead_lettered_total - notice.counted
    if fresh <= 0:
        return None, DeadLetterNotice(row.dead_lettered_total, notice.at)
    if notice.at is not None and now - notice.at < interval:
        return None, notice  # counted in the next Event
    cause = ""
    if row.last_error is not None:
        kind = f"{row.last_error_class} " if row.last_error_class else ""
        cause = f"; last {kind}error: {_truncate(row.last_error, 256)}"
    message = (
        f"{fresh} job(s) went to the dead-letter queue{cause}. {dead_letters.waiting} wait "
        "for a replay (column DEAD of `kubectl get publishingtargets`): create a "
        "DeadLetterReplay once the receiver is fixed"
    )
    return Transition("Warning", "DeadLettered", message), DeadLetterNotice(
        row.dead_lettered_total, now
    )
