"""The closed vocabularies of the queue: job states, priorities, error classes.

The database enforces the same sets with CHECK constraints (``sql/schema.sql``).
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """Where a job is in its life. Each member says who moves a job out of it."""

    QUEUED = "queued"
    """Waiting for its first attempt (possibly until ``run_at``, or behind an earlier job
    with the same ordering key). A worker's claim moves it to ``running``; a cancel or the
    deletion of its target moves it to ``dead``."""

    RUNNING = "running"
    """Claimed by a worker under a lease. That worker moves it to ``succeeded``,
    ``retrying`` or ``dead``, or releases it to ``queued``/``retrying`` on shutdown; if the
    worker dies, the lease rescuer moves it to ``retrying`` (or ``dead`` once its attempts
    are spent) after the lease expires."""

    RETRYING = "retrying"
    """Failed at least once and waits for ``run_at``, the time its backoff (or the
    receiver's ``Retry-After``) allows the next attempt. A claim moves it to ``running``."""

    SUCCEEDED = "succeeded"
    """Delivered. Final; the retention cleaner deletes it after the job retention period."""

    DEAD = "dead"
    """In the dead-letter queue. Only a replay moves it back, to ``queued``; the retention
    cleaner deletes the job row after the job retention period (the dead letter itself is
    kept for the dead-letter retention period and can still be replayed)."""

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.DEAD)


class Priority(enum.StrEnum):
    """Delivery priority. Claims take the earliest *deadline*: the time the job became
    ready plus its priority's latency budget (high 0 s, medium and low configurable), so a
    high job goes first while a low job still has a bounded wait (see docs/delivery.md)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class ErrorClass(enum.StrEnum):
    """How a failed delivery is treated."""

    TRANSIENT = "transient"
    """The receiver is unwell or busy (timeouts, connection errors, 408, 425, 429, 5xx):
    retried with backoff, counts towards the circuit breaker."""

    PERMANENT = "permanent"
    """The request itself is wrong (400, 401, 403, 404, 405, 413, 422, invalid payload):
    dead-lettered at once, does not count towards the circuit breaker."""

    UNKNOWN = "unknown"
    """Anything else: retried with a smaller budget, counts towards the circuit breaker."""


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class DeadLetterReason(enum.StrEnum):
    """Why a job entered the dead-letter queue."""

    PERMANENT_ERROR = "permanent-error"
    ATTEMPTS_EXHAUSTED = "attempts-exhausted"
    TARGET_DELETED = "target-deleted"
    CANCELLED = "cancelled"
