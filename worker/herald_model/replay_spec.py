"""The DeadLetterReplay spec: one pydantic model, from which come the operator's parser, its
error messages and the CRD's schema (``python -m herald_model.crd_gen`` writes
``crds/deadletterreplays.yaml``; see there how to add a field).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, Field, model_validator

from herald_core.states import ErrorClass, Priority
from herald_model.spec_base import SpecModel, check, object_name, problem, rules

DEFAULT_LIMIT = 1000
WINDOW_PROBLEM = "must be later than failedAfter"


# RFC 3339 date-time, as the API server's format check takes it; without the zone.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?(?P<zone>[Zz]|[+-]\d{2}:\d{2})?"
)


def _time_text(value: object) -> object:
    """Times are RFC 3339 strings, as the API server checks them (pydantic would also take
    a number of seconds, a space for the T, or no seconds)."""
    if isinstance(value, dt.datetime):
        return value
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        shown = repr(value[:64] if isinstance(value, str) else value)
        raise problem(f"must be an RFC 3339 time (e.g. 2026-11-20T00:00:00Z), got {shown}")
    if match["zone"] is None:
        raise problem("has no time zone (add Z or +00:00)")
    return value


Time = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_time_text)]


class ReplaySpec(SpecModel):
    """Which dead letters to replay. The spec is fixed at creation: to replay something
    else, create another DeadLetterReplay."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": rules(
            (
                "!has(self.failedAfter) || !has(self.failedBefore) || "
                "timestamp(self.failedBefore) > timestamp(self.failedAfter)",
                f"failedBefore {WINDOW_PROBLEM}",
            ),
            (
                "self == oldSelf",
                "a DeadLetterReplay is one-shot: its spec cannot change; create a new one",
            ),
        )
    }

    target: (
        object_name(  # type: ignore[valid-type]
            "a PublishingTarget in this namespace",
            "; no namespace/ prefix: a replay only reaches its own namespace",
        )
        | None
    ) = Field(
        default=None,
        description=(
            "Name of a PublishingTarget in this DeadLetterReplay's namespace. Absent: dead "
            "letters of every target in the namespace."
        ),
    )
    error_class: Annotated[ErrorClass, Field(strict=False)] | None = Field(
        default=None,
        alias="errorClass",
        description=(
            "Only dead letters whose last failure was of this class: transient, permanent or "
            "unknown."
        ),
    )
    priority: Annotated[Priority, Field(strict=False)] | None = Field(
        default=None,
        description="Only dead letters of jobs of this priority: high, medium or low.",
    )
    failed_after: Time | None = Field(
        default=None,
        alias="failedAfter",
        description="Only dead letters that failed after this time (RFC 3339).",
    )
    failed_before: Time | None = Field(
        default=None,
        alias="failedBefore",
        description=(
            "Only dead letters that failed before this time (RFC 3339); later than failedAfter."
        ),
    )
    job_ids: (
        tuple[Annotated[uuid.UUID, Field(strict=False, description="A job id (UUID).")], ...] | None
    ) = Field(
        default=None,
        alias="jobIds",
        strict=False,  # a list in the manifest, a tuple here
        max_length=10_000,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description=(
            "Only these jobs (their ids, as the API and `herald dlq list` show them). Empty or "
            "absent: no restriction by id. Cancelled jobs are replayed only when named here."
        ),
    )
    limit: int = Field(
        default=DEFAULT_LIMIT,
        ge=1,
        le=1_000_000,
        json_schema_extra={"format": "int64"},
        description="Most dead letters to replay.",
    )
    dry_run: bool = Field(
        default=False,
        alias="dryRun",
        description=(
            "Only count what would be replayed (status.matched); put nothing back on the queue."
        ),
    )

    @model_validator(mode="after")
    def _window(self) -> ReplaySpec:
        after, before = self.failed_after, self.failed_before
        if after is not None and before is not None and before <= after:
            raise problem(WINDOW_PROBLEM, field="failedBefore")
        return self


def parse_replay_spec(spec: object) -> ReplaySpec:
    """A DeadLetterReplay spec, checked and completed with defaults; :class:`SpecError`
    (``herald_model.spec_base``) naming every problem."""
    return check(ReplaySpec, spec)
