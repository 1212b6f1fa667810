"""Records the queue hands out: typed and frozen, each built from its row here
(``from_row``) and read by attribute. How they are shown is not theirs: the API's answer
models (``herald_worker.api.models``) serialise them, for the API and the CLI alike."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any, NamedTuple

from herald_core.states import CircuitState, ErrorClass, JobState, Priority
from herald_model.target_spec import TargetSpec, parse_spec


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class EnqueueResult(NamedTuple):
    # A NamedTuple rather than a frozen dataclass: a batch makes thousands of them.
    id: uuid.UUID
    target: str
    state: JobState
    created: bool
    """False when an earlier job had the same idempotency key: this is that job."""


@dataclasses.dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    target_id: int
    priority: Priority
    payload_json: str
    """The payload exactly as stored (and as a webhook receiver gets it)."""
    attempts: int
    """Attempts including this one (1 on the first delivery)."""
    idempotency_key: str | None
    ordering_key: str | None
    created_at: dt.datetime
    run_at: dt.datetime
    lease_expires_at: dt.datetime
    traceparent: str | None = None
    """The producer's W3C trace context (herald_core.trace_context), None without one."""
    tracestate: str | None = None

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)


@dataclasses.dataclass(frozen=True)
class AttemptNote:
    """What the attempt record (herald.attempts) keeps of one attempt beyond its decision:
    written with the statement that settles it."""

    started: float | None = None
    """When the request went out: the worker's clock, seconds since the epoch."""
    duration: float | None = None
    """Seconds until the answer (or the failure)."""
    http_status: int | None = None
    response: str | None = None
    """The first characters of the receiver's answer."""
    message: str | None = None
    """Why it failed, or was given back (failures carry theirs in :class:`Failure`)."""


NO_NOTE = AttemptNote()


@dataclasses.dataclass(frozen=True)
class Failure:
    """A failed delivery attempt of a claimed job."""

    job: ClaimedJob
    error_class: ErrorClass
    message: str
    http_status: int | None = None
    retry_after: float | None = None
    """Seconds the receiver asked to wait (Retry-After), if it did."""
    counts_for_breaker: bool = True
    note: AttemptNote = NO_NOTE
    """When it was sent, how long it took and the answer's first characters."""


@dataclasses.dataclass(frozen=True)
class FailureOutcome:
    id: uuid.UUID
    target: str
    state: JobState
    attempts: int
    run_at: dt.datetime
    refunded: bool
    """The target's circuit is open: the attempt was given back and the job waits."""
    tripped: bool
    """This batch of failures opened the target's circuit."""
    circuit_before: CircuitState
    circuit_after: CircuitState


@dataclasses.dataclass(frozen=True)
class CompleteOutcome:
    completed: list[uuid.UUID]
    lost: list[uuid.UUID]
    """Jobs this worker no longer held (its lease expired and another took them)."""
    recovered: list[str]
    """Targets whose half-open circuit these successes closed."""


@dataclasses.dataclass(frozen=True)
class JobRecord:
    id: uuid.UUID
    target: str
    priority: Priority
    state: JobState
    payload_json: str | None
    """The payload's text as stored (shown through :func:`shown_payload`)."""
    idempotency_key: str | None
    ordering_key: str | None
    held: bool
    attempts: int
    run_at: dt.datetime
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_error: str | None
    last_error_class: ErrorClass | None
    last_http_status: int | None
    dead_reason: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        return cls(
            id=row["id"],
            target=f"{row['namespace']}/{row['target_name']}",
            priority=Priority(row["priority"]),
            state=JobState(row["state"]),
            payload_json=row["payload"],
            idempotency_key=row["idempotency_key"],
            ordering_key=row["ordering_key"],
            held=row["held"],
            attempts=row["attempts"],
            run_at=row["run_at"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            last_error=row["last_error"],
            last_error_class=ErrorClass(row["last_error_class"])
            if row["last_error_class"]
            else None,
            last_http_status=row["last_http_status"],
            dead_reason=row["dead_reason"],
        )


DISABLED_CAUSE = "failing"
"""The ``auto_paused_cause`` of a target disabled after failing for its disable period."""


@dataclasses.dataclass(frozen=True)
class TargetRow:
    """A registered target with its shared live state."""

    id: int
    namespace: str
    name: str
    type: str
    spec: TargetSpec
    generation: int
    paused: bool
    auto_paused_reason: str | None
    auto_paused_at: dt.datetime | None
    circuit_state: CircuitState
    consecutive_failures: int
    circuit_changed_at: dt.datetime | None
    circuit_open_until: dt.datetime | None
    circuit_trips_total: int
    circuit_recoveries_total: int
    delivered_total: int
    failed_attempts_total: int
    dead_lettered_total: int
    last_delivery_at: dt.datetime | None
    last_error: str | None
    last_error_class: str | None
    last_error_at: dt.datetime | None
    registered_at: dt.datetime
    updated_at: dt.datetime
    auto_paused_cause: str | None = None
    """Why a worker holds the jobs: "gone" (410) or "failing" (disabled), else None."""
    failing_since: dt.datetime | None = None
    """First failed attempt of the current failure streak (None after a success)."""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def holding(self) -> bool:
        """Jobs wait: paused by spec, or paused after the receiver answered 410 Gone."""
        return self.paused or self.auto_paused_reason is not None

    @property
    def disabled(self) -> bool:
        """Disabled after failing continuously for its disable period."""
        return self.auto_paused_cause == DISABLED_CAUSE

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TargetRow:
        values = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row}
        values["spec"] = parse_spec(row["config"])
        values["circuit_state"] = CircuitState(row["circuit_state"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class JobPage:
    items: list[JobRecord]
    next_cursor: str | None
    """The ``cursor`` of the next page; None on the last one."""


@dataclasses.dataclass(frozen=True)
class DeadLetterRecord:
    """One dead letter: a job that died, as it was then."""

    id: uuid.UUID
    job_id: uuid.UUID
    target_namespace: str
    target_name: str
    target_type: str
    fingerprint: str | None
    error_class: ErrorClass
    error: str
    """The last error message."""
    reason: str
    """permanent-error, attempts-exhausted, target-deleted or cancelled."""
    http_status: int | None
    attempts: int
    last_attempt_at: dt.datetime | None
    priority: Priority
    idempotency_key: str | None
    ordering_key: str | None
    job_created_at: dt.datetime
    failed_at: dt.datetime
    replayed: bool
    replayed_at: dt.datetime | None
    replay_result: str | None
    """queued, or target-missing (the replay found no target)."""
    replayed_by: str | None
    run_at: dt.datetime | None
    """The runAt of a job that died before its first attempt."""
    payload_json: str | None
    """The payload's text as stored (shown through :func:`shown_payload`)."""
    target_config: dict[str, Any] | None = None
    """The target's configuration when the job died: only read for one dead letter
    (:meth:`DeadLetterStore.get`), None in a list."""

    @property
    def target(self) -> str:
        return f"{self.target_namespace}/{self.target_name}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeadLetterRecord:
        return cls(
            id=uuid.UUID(str(row["id"])),
            job_id=uuid.UUID(str(row["job_id"])),
            target_namespace=row["target_namespace"],
            target_name=row["target_name"],
            target_type=row["target_type"],
            fingerprint=row["fingerprint"],
            error_class=ErrorClass(row["error_type"]),
            error=row["error_message"],
            reason=row["reason"],
            http_status=row["http_status"],
            attempts=row["retry_count"],
            last_attempt_at=row["last_retry_at"],
            priority=Priority(row["priority"]),
            idempotency_key=row["idempotency_key"],
            ordering_key=row["ordering_key"],
            job_created_at=row["job_created_at"],
            failed_at=row["failed_at"],
            replayed=row["replayed"],
            replayed_at=row["replayed_at"],
            replay_result=row["replay_result"],
            replayed_by=row["replayed_by"],
            run_at=row["run_at"],
            payload_json=row["payload"],
            target_config=row.get("target_config"),
        )


@dataclasses.dataclass(frozen=True)
class DeadLetterPage:
    items: list[DeadLetterRecord]
    next_cursor: str | None
    """The ``cursor`` of the next page; None on the last one."""


@dataclasses.dataclass(frozen=True)
class StateCount:
    """Jobs of one target, priority and state (:func:`herald_queue.stats.count_rows`)."""

    namespace: str
    name: str
    priority: Priority
    state: JobState
    n: int
    ready: int
    """Of them, ready to run (``sql/stats.sql``)."""
    oldest_ready_age_seconds: float | None
    """Seconds the oldest ready one has waited; None when none is ready."""

    @property
    def target(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StateCount:
        return cls(
            namespace=row["namespace"],
            name=row["name"],
            priority=Priority(row["priority"]),
            state=JobState(row["state"]),
            n=int(row["n"]),
            ready=int(row["ready"] or 0),
            oldest_ready_age_seconds=row["oldest_ready_age_seconds"],
        )


@dataclasses.dataclass(frozen=True)
class StateTotals:
    """Jobs per state."""

    queued: int = 0
    running: int = 0
    retrying: int = 0
    succeeded: int = 0
    dead: int = 0

    def count(self, state: JobState) -> int:
        return int(getattr(self, state.value))


@dataclasses.dataclass(frozen=True)
class PriorityStats(StateTotals):
    ready: int = 0


@dataclasses.dataclass(frozen=True)
class TargetStats(StateTotals):
    ready: int = 0
    oldest_ready_age_seconds: float | None = None
    by_priority: dict[str, int] = dataclasses.field(default_factory=dict)
    """Waiting jobs (queued or retrying) per priority."""
    capacity_pct: float | None = None
    """Fill of spec.capacity by waiting jobs; None without one."""


@dataclasses.dataclass(frozen=True)
class QueueStats(StateTotals):
    """Totals per state, then per priority and per target
    (:func:`herald_queue.stats.queue_stats`)."""

    capacity_pct: float | None = None
    """Fill of HERALD_QUEUE_CAPACITY by waiting jobs; None without one."""
    ready: int = 0
    oldest_ready_age_seconds: float | None = None
    by_priority: dict[str, PriorityStats] = dataclasses.field(default_factory=dict)
    by_target: dict[str, TargetStats] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DeadLetterStats:
    """Dead letters: totals, then the waiting ones by target, error class and priority."""

    total: int
    waiting: int
    replayed: int
    by_target: dict[str, int]
    by_error_class: dict[str, int]
    by_priority: dict[str, int]
    oldest_failed_at: dt.datetime | None
    newest_failed_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """One delivery attempt of a job, as recorded (herald.attempts)."""

    seq: int
    job_id: uuid.UUID
    attempt: int
    recorded_at: dt.datetime
    target: str | None
    worker: str | None
    started_at: dt.datetime | None
    duration: float | None
    http_status: int | None
    error_class: ErrorClass | None
    message: str | None
    response: str | None
    retry_after: float | None
    decision: str
    """succeeded, retry, dead, circuit-open, withheld, target-paused or lease-lost."""
    retry_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AttemptRecord:
        return cls(
            seq=row["seq"],
            job_id=row["job_id"],
            attempt=row["attempt"],
            recorded_at=row["recorded_at"],
            target=row["target"],
            worker=row["worker"],
            started_at=row["started_at"],
            duration=row["duration_seconds"],
            http_status=row["http_status"],
            error_class=None if row["error_class"] is None else ErrorClass(row["error_class"]),
            message=row["message"],
            response=row["response"],
            retry_after=row["retry_after_seconds"],
            decision=row["decision"],
            retry_at=row["retry_at"],
        )


@dataclasses.dataclass(frozen=True)
class AttemptPage:
    items: list[AttemptRecord]
    next_cursor: str | None
    """The ``cursor`` of the next page; None on the last one."""
