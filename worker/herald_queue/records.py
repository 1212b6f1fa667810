"""Records the queue hands out. ``to_json`` gives the API's (camelCase) shape."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any, NamedTuple

from herald_core.json_depth import shown_payload
from herald_core.states import CircuitState, ErrorClass, JobState, Priority


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class EnqueueResult(NamedTuple):
    # A NamedTuple rather than a frozen dataclass: a batch makes thousands of them.
    id: uuid.UUID
    target: str
    state: JobState
    created: bool
    """False when an earlier job had the same idempotency key: this is that job."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "target": self.target,
            "state": self.state.value,
            "duplicate": not self.created,
        }


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

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)


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

    def to_json(self, *, with_payload: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(self.id),
            "target": self.target,
            "priority": self.priority.value,
            "state": self.state.value,
            "attempts": self.attempts,
            "idempotencyKey": self.idempotency_key,
            "orderingKey": self.ordering_key,
            "waitingForOrderingKey": self.held,
            "runAt": iso(self.run_at),
            "createdAt": iso(self.created_at),
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at),
            "lastError": self.last_error,
            "lastErrorClass": self.last_error_class.value if self.last_error_class else None,
            "lastHttpStatus": self.last_http_status,
            "deadReason": self.dead_reason,
        }
        if with_payload:
            body |= shown_payload(self.payload_json)
        return body
