"""Every query, path and body of the HTTP API, and every answer, as a pydantic model: the
server parses through these (``inputs.py``) and ``/openapi.json`` is generated from them
(``openapi.py``) and from the route table (``routes.py``).

To add a query parameter or a body field: add a field to its model here (type,
constraints, ``description``; the JSON name is the camelCase of the Python name unless an
``alias`` says otherwise) and use it in the handler. A new endpoint: a handler, its models
here, and one ``Route`` row in ``routes.py``. Nothing else is written by hand.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    PlainValidator,
    StrictBool,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from herald_core.durations import parse_duration
from herald_core.errors import InvalidRequest
from herald_core.ids import UUID_PATTERN, parse_uuid
from herald_core.json_depth import shown_payload
from herald_core.states import CircuitState, ErrorClass, JobState, Priority
from herald_core.validation import pattern
from herald_model.submission import (
    JSON_INT,
    NO_NUL,
    PAYLOAD_MARK,
    PAYLOAD_REF,
    TargetRef,
    Timestamp,
)
from herald_queue import dead_letters as dlq
from herald_queue import records
from herald_queue.attempts import CURSOR_PATTERN as ATTEMPTS_CURSOR
from herald_queue.dead_letters import CURSOR_PATTERN, DeadLetterFilter
from herald_queue.records import TargetRow
from herald_worker.tracker import Snapshot

T = TypeVar("T")

DURATION_PATTERN = pattern(
    r"^(?:[0-9]{1,9}(?:\.[0-9]{1,3})?s?|[0-9]{1,7}(?:\.[0-9]{1,3})?m|"
    r"[0-9]{1,5}(?:\.[0-9]{1,3})?h|[0-9]{1,4}(?:\.[0-9]{1,3})?d)$",
    "is not a duration: a number with a unit, e.g. 90s, 15m, 24h or 30d",
)
"""A duration the API takes: a number of seconds (s), minutes (m), hours (h) or days (d),
bounded so that every match is within the 100 years any duration may be."""
pattern(UUID_PATTERN, "is not a UUID (8-4-4-4-12 hexadecimal digits)")
pattern(CURSOR_PATTERN, "is not a cursor this server gave out (use nextCursor from a page)")
pattern(ATTEMPTS_CURSOR, "is not a cursor this server gave out (use nextCursor from a page)")
NAME_PATTERN = pattern(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", "is not a target name")
NAMESPACE_PATTERN = pattern(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", "is not a namespace")


def _uuid(value: Any) -> uuid.UUID:
    parsed = parse_uuid(value) if isinstance(value, str) else None
    if parsed is None:
        raise PydanticCustomError(
            "uuid",
            "{given} is not an id (a UUID: 8-4-4-4-12 hexadecimal digits)",
            {"given": repr(value)},
        )
    return parsed


Id = Annotated[
    uuid.UUID,
    PlainValidator(_uuid),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
]
"""A job or dead-letter id, written 8-4-4-4-12."""
Text = Annotated[StrictStr, StringConstraints(pattern=NO_NUL)]
"""A string PostgreSQL can hold."""
_TEXT_MAP_SCHEMA = {
    "type": "object",
    "propertyNames": {"pattern": NO_NUL},
    "additionalProperties": {"type": "string", "pattern": NO_NUL},
}
TextMap = Annotated[
    dict[Annotated[str, StringConstraints(pattern=NO_NUL)], Text],
    WithJsonSchema(_TEXT_MAP_SCHEMA),
]
"""An object of strings (labels, annotations)."""
Labels = Annotated[
    dict[Annotated[str, StringConstraints(pattern=NO_NUL)], Text],
    Field(min_length=1),
    WithJsonSchema({**_TEXT_MAP_SCHEMA, "minProperties": 1}),
]


def _digits(value: Any) -> Any:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError(
            "integer", "must be an integer, got {given}", {"given": repr(value)}
        )
    return int(value) if isinstance(value, str) else value


def _boolean(value: Any) -> Any:
    if value in ("true", "false"):
        return value == "true"
    raise PydanticCustomError(
        "boolean", "must be true or false, got {given}", {"given": repr(value)}
    )


QueryBool = Annotated[bool, PlainValidator(_boolean), WithJsonSchema({"type": "boolean"})]


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("null", "is null: give a value, or leave the field out")
    return value


class _NullNotInSchema:
    """The schema of an optional field that may be left out but not given as null."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        options = [s for s in schema.get("anyOf", []) if s != {"type": "null"}]
        if len(options) == 1:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            return {**options[0], **rest}
        return schema


Omittable = Annotated[T | None, BeforeValidator(_refuse_null), _NullNotInSchema()]
"""May be left out; null is refused (it would mean nothing)."""


class Query(BaseModel):
    """Query parameters: camelCase names; a parameter given empty is refused (``inputs``),
    not read as absent; unknown parameters are ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=False, extra="ignore", frozen=True
    )


class Body(BaseModel):
    """A JSON body: camelCase names, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=False, extra="forbid", frozen=True
    )


class Answer(BaseModel):
    """A JSON answer: the handlers build it (``of``, or a model's ``from_record``) and send
    its :meth:`dump`, so what the document says is what is answered (the tests validate
    real answers against it too)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=False, extra="forbid")

    @classmethod
    def of(cls, **values: Any) -> Self:
        """The answer of ``values`` by Python name: exactly these fields are answered (a
        None given is answered as null; a field not given is left out)."""
        return cls.model_validate(values, by_name=True)

    def dump(self) -> dict[str, Any]:
        """The JSON body: camelCase names, the fields it was built with (a field given as
        None is null, one not given is left out)."""
        body = self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude=_PAYLOADS)
        if isinstance(items := getattr(self, "items", None), list):
            body["items"] = [
                _with_payload(item, shown) for item, shown in zip(items, body["items"], strict=True)
            ]
        return _with_payload(self, body)


_PAYLOADS: Any = {"payload": True, "items": {"__all__": {"payload"}}}
"""A payload is decoded JSON already, and may nest deeper (up to MAX_DEPTH_CEILING) than
pydantic serialises (255 levels): :meth:`Answer.dump` leaves it to pydantic's care and puts
it back in its place as it is (``_with_payload``)."""


def _with_payload(model: Any, body: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(model, BaseModel) or "payload" not in model.model_fields_set:
        return body
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        if name == "payload":
            out[key] = getattr(model, name)
        elif key in body:
            out[key] = body[key]
    return out


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


Time = Annotated[dt.datetime, AfterValidator(_utc)]
"""A time as answered: in UTC, ``2030-01-01T00:00:00Z`` (microseconds when there are)."""


def _shown_payload(text: str | None) -> dict[str, Any]:
    """``payload`` (and ``payload_text``, ``payload_note`` when it cannot be decoded) of a
    stored payload's text (:func:`herald_core.json_depth.shown_payload`)."""
    names = {"payload": "payload", "payloadText": "payload_text", "payloadNote": "payload_note"}
    return {names[key]: value for key, value in shown_payload(text).items()}


CURSOR_DESCRIPTION = "The nextCursor of the previous page; omit it for the first page."
TARGET_DESCRIPTION = "Only this target: name, or namespace/name."

# -- paths ---------------------------------------------------------------------------------


class JobPath(BaseModel):
    id: Id = Field(description="Job id (UUID).")


class DeadLetterPath(BaseModel):
    id: Id = Field(description="Dead-letter id (UUID).")


class AlertmanagerPath(BaseModel):
    target: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] = Field(
        description="Target name (namespace HERALD_NAMESPACE, or the only one)."
    )


class AlertmanagerNamespacedPath(BaseModel):
    namespace: Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN)] = Field(
        description="Target namespace."
    )
    name: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] = Field(
        description="Target name."
    )


class AlertmanagerEventsPath(BaseModel):
    namespace: Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN)] = Field(
        description="The namespace whose subscribed targets receive the alerts."
    )


# -- queries -------------------------------------------------------------------------------


class JobsQuery(Query):
    state: JobState | None = Field(None, description="Only this state.")
    target: TargetRef | None = Field(None, description=TARGET_DESCRIPTION)
    priority: Priority | None = Field(None, description="Only this priority.")
    limit: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_digits)] = Field(
        50, description="Page size."
    )
    cursor: Annotated[str, StringConstraints(pattern=UUID_PATTERN)] | None = Field(
        None, description=CURSOR_DESCRIPTION, json_schema_extra={"format": "uuid"}
    )


class AttemptsQuery(Query):
    limit: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_digits)] = Field(
        100, description="Page size."
    )
    cursor: Annotated[str, StringConstraints(pattern=ATTEMPTS_CURSOR)] | None = Field(
        None, description=CURSOR_DESCRIPTION
    )


class DeadLettersQuery(Query):
    target: TargetRef | None = Field(None, description=TARGET_DESCRIPTION)
    error_class: ErrorClass | None = Field(None, description="Only this error class.")
    priority: Priority | None = Field(None, description="Only dead letters of this priority.")
    failed_after: Timestamp | None = Field(None, description="Failed at or after.")
    failed_before: Timestamp | None = Field(
        None, description="Failed before (later than failedAfter)."
    )
    replayed: QueryBool | None = Field(None, description="Replayed or not.")
    limit: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_digits)] = Field(
        100, description="Page size."
    )
    cursor: Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)] | None = Field(
        None, description=CURSOR_DESCRIPTION
    )

    def selector(self) -> DeadLetterFilter:
        return DeadLetterFilter(
            target=self.target,
            error_class=self.error_class,
            priority=self.priority,
            failed_after=self.failed_after,
            failed_before=self.failed_before,
            replayed=self.replayed,
        )


def _checked_duration(value: str) -> str:
    try:
        parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from None
    return value


class PurgeQuery(Query):
    older_than: Annotated[
        str, StringConstraints(pattern=DURATION_PATTERN), AfterValidator(_checked_duration)
    ] = Field(
        description="Failed longer ago than this: seconds, or a number with a unit "
        "(s, m, h, d), e.g. 30d, 12h, 90m; at most 100 years.",
        examples=["30d"],
    )
    target: TargetRef | None = Field(None, description=TARGET_DESCRIPTION)
    dry_run: QueryBool = Field(False, description="Only count.")

    @property
    def seconds(self) -> float:
        return parse_duration(self.older_than)


# -- bodies --------------------------------------------------------------------------------

SELECTOR_FIELDS = (
    "target",
    "errorClass",
    "priority",
    "failedAfter",
    "failedBefore",
    "ids",
    "jobIds",
)


_SELECTOR_RULE: list[JsonValue] = [{"required": ["all"], "properties": {"all": {"const": True}}}]
_SELECTOR_RULE += [{"required": [name]} for name in SELECTOR_FIELDS]


class ReplaySelector(Body):
    """Which dead letters to replay. At least one selector field, or "all": true: an empty
    selector would replay every dead letter."""

    target: Omittable[TargetRef] = None
    error_class: Omittable[ErrorClass] = None
    priority: Omittable[Priority] = None
    failed_after: Omittable[Timestamp] = None
    failed_before: Omittable[Timestamp] = Field(
        None, description="Later than failedAfter, when both are given."
    )
    ids: Omittable[Annotated[list[Id], Field(min_length=1)]] = None
    job_ids: Omittable[Annotated[list[Id], Field(min_length=1)]] = None
    all: StrictBool = Field(
        False,
        description="Required (true) to replay with no selector field: an empty selector "
        "matches every dead letter.",
    )
    limit: Annotated[int, Field(ge=1, le=1_000_000), *JSON_INT] = 1000
    dry_run: StrictBool = False

    model_config = ConfigDict(json_schema_extra={"anyOf": _SELECTOR_RULE})

    @model_validator(mode="after")
    def _not_everything_by_accident(self) -> ReplaySelector:
        empty = all(getattr(self, name) is None for name in _SELECTOR_ATTRS)
        if empty and not self.all:
            # An empty selector matches every dead letter: too much to do by accident (the
            # CLI asks for --all likewise).
            raise InvalidRequest(
                "all",
                "the selector is empty, which would replay every dead letter: pass "
                f'"all": true to mean that, or a selector ({", ".join(SELECTOR_FIELDS)})',
            )
        return self

    def selector(self) -> DeadLetterFilter:
        return DeadLetterFilter(
            target=self.target,
            error_class=self.error_class,
            priority=self.priority,
            failed_after=self.failed_after,
            failed_before=self.failed_before,
            ids=tuple(self.ids) if self.ids else None,
            job_ids=tuple(self.job_ids) if self.job_ids else None,
        )


_SELECTOR_ATTRS = tuple(to_snake(name) for name in SELECTOR_FIELDS)

StringMap = TextMap | None
"""Labels or annotations of the envelope; null is read as none."""


class Alert(BaseModel):
    """One alert; other fields are kept in the job's payload as given."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "propertyNames": {"pattern": NO_NUL},
            # Other fields are kept in the payload: JSON PostgreSQL can hold (no NUL).
            "additionalProperties": {PAYLOAD_MARK: True},
        },
    )

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: StringMap = None
    starts_at: Annotated[Text, StringConstraints(min_length=1)] = Field(alias="startsAt")
    ends_at: Omittable[Text] = Field(None, alias="endsAt")
    generator_url: Omittable[Text] = Field(None, alias="generatorURL")
    fingerprint: Omittable[Text] = None


class AlertmanagerMessage(BaseModel):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"] = "4"
    group_key: Omittable[Text] = Field(None, alias="groupKey")
    status: Omittable[Text] = None
    receiver: Omittable[Text] = None
    group_labels: StringMap = Field(None, alias="groupLabels")
    common_labels: StringMap = Field(None, alias="commonLabels")
    common_annotations: StringMap = Field(None, alias="commonAnnotations")
    external_url: Omittable[Text] = Field(None, alias="externalURL")
    truncated_alerts: Annotated[int, Field(ge=0), *JSON_INT] = Field(0, alias="truncatedAlerts")
    alerts: Annotated[list[Alert], Field(min_length=1, max_length=1000)]


# -- answers -------------------------------------------------------------------------------

NextCursor = Annotated[
    str | None, Field(description="Pass as `cursor` for the next page; null on the last page.")
]


class ErrorDetail(BaseModel):
    status: int
    field: str | None = Field(description="The field, parameter or header at fault, if one.")
    message: str = Field(description="What is wrong and what to do, naming the field.")


class Error(BaseModel):
    """Every error answer: ``{"error": {"status", "field", "message"}}``."""

    error: ErrorDetail


class JobAccepted(Answer):
    id: uuid.UUID
    target: str
    state: JobState
    duplicate: bool = Field(
        description="True when an existing job with the same idempotency key was returned."
    )

    @classmethod
    def from_record(cls, result: records.EnqueueResult) -> JobAccepted:
        return cls.of(
            id=result.id, target=result.target, state=result.state, duplicate=not result.created
        )


class JobsAccepted(Answer):
    jobs: list[JobAccepted]


class AlertmanagerAccepted(Answer):
    jobs: list[JobAccepted]
    created: int
    duplicates: int


class EventAccepted(Answer):
    id: str = Field(description="The event's id (given, or made by Herald).")
    type: str
    namespace: str = Field(description="The namespace whose targets were matched.")
    jobs: list[JobAccepted] = Field(
        description="One job per target the event is for (empty when none subscribes)."
    )
    created: int
    duplicates: int = Field(description="Jobs an earlier send of the same event id created.")


class AlertmanagerEventsAccepted(Answer):
    events: list[EventAccepted] = Field(description="One event per alert.")
    created: int
    duplicates: int


PAYLOAD_TEXT = (
    "Only for a stored payload that cannot be decoded safely (nested deeper than any read "
    "decodes, stored before HERALD_MAX_PAYLOAD_DEPTH refused it): its JSON text as stored; "
    "payload is then null."
)
PAYLOAD_NOTE = "Only with payloadText: why the payload is shown as its text."


class Job(Answer):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    target: str
    priority: Priority | None = None
    state: JobState
    attempts: int | None = None
    idempotency_key: str | None = None
    ordering_key: str | None = None
    waiting_for_ordering_key: bool | None = None
    run_at: Time | None = None
    created_at: Time | None = None
    started_at: Time | None = None
    finished_at: Time | None = None
    updated_at: Time | None = None
    last_error: str | None = None
    last_error_class: ErrorClass | None = None
    last_http_status: int | None = None
    dead_reason: str | None = None
    payload: Annotated[Any, Field(description="The payload (lookups from the database only).")] = (
        None
    )
    payload_text: str | None = Field(None, description=PAYLOAD_TEXT)
    payload_note: str | None = Field(None, description=PAYLOAD_NOTE)
    source: Literal["tracker", "database"] | None = Field(
        None, description="Answered from the in-memory tracker or from PostgreSQL."
    )

    @classmethod
    def from_record(
        cls,
        job: records.JobRecord,
        *,
        with_payload: bool = True,
        source: Literal["database"] | None = None,
    ) -> Job:
        """A job read from PostgreSQL: every column (null included), its payload unless
        ``with_payload`` is false (pages), and ``source`` when given."""
        values: dict[str, Any] = {
            "id": job.id,
            "target": job.target,
            "priority": job.priority,
            "state": job.state,
            "attempts": job.attempts,
            "idempotency_key": job.idempotency_key,
            "ordering_key": job.ordering_key,
            "waiting_for_ordering_key": job.held,
            "run_at": job.run_at,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "last_error": job.last_error,
            "last_error_class": job.last_error_class,
            "last_http_status": job.last_http_status,
            "dead_reason": job.dead_reason,
        }
        if with_payload:
            values |= _shown_payload(job.payload_json)
        if source is not None:
            values["source"] = source
        return cls.of(**values)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> Job:
        """A job as this worker process's tracker last saw it."""
        return cls.of(
            id=snapshot.id,
            target=snapshot.target,
            priority=snapshot.priority,
            state=snapshot.state,
            attempts=snapshot.attempts,
            created_at=snapshot.created_at,
            updated_at=snapshot.updated_at,
            last_error=snapshot.last_error,
            source="tracker",
        )


class JobPage(Answer):
    items: list[Job]
    next_cursor: NextCursor

    @classmethod
    def from_record(cls, page: records.JobPage) -> JobPage:
        return cls.of(
            items=[Job.from_record(job, with_payload=False) for job in page.items],
            next_cursor=page.next_cursor,
        )


class Attempt(Answer):
    """One delivery attempt of a job, as recorded when it was settled."""

    attempt: int = Field(
        description="The attempt's number (1 for the first delivery; an attempt given back, "
        "withheld or target-paused, keeps its number for the next one)."
    )
    decision: Literal[
        "succeeded", "retry", "dead", "circuit-open", "withheld", "target-paused", "lease-lost"
    ] = Field(
        description="What became of it: succeeded; retry (at retryAt); dead (to the "
        "dead-letter queue); circuit-open (the target's circuit is open: given back, the "
        "job waits, not counted); withheld (not sent: the worker held the target back); "
        "target-paused (410 Gone: the target is paused, the job held); lease-lost (the "
        "worker's lease had expired first: another attempt may have been made)."
    )
    recorded_at: Time = Field(description="When it was settled (the database's clock).")
    started_at: Time | None = Field(None, description="When the request went out (worker).")
    duration_seconds: float | None = Field(None, description="Until the answer or failure.")
    worker: str | None = None
    target: str | None = Field(None, description="namespace/name; null once purged.")
    http_status: int | None = None
    error_class: ErrorClass | None = None
    message: str | None = None
    response: str | None = Field(None, description="The answer's first 200 characters.")
    retry_after_seconds: float | None = Field(
        None, description="The Retry-After the receiver asked for (honoured by retryAt)."
    )
    retry_at: Time | None = Field(None, description="When the job is tried again.")

    @classmethod
    def from_record(cls, a: records.AttemptRecord) -> Attempt:
        return cls.of(
            attempt=a.attempt,
            decision=a.decision,
            recorded_at=a.recorded_at,
            started_at=a.started_at,
            duration_seconds=a.duration,
            worker=a.worker,
            target=a.target,
            http_status=a.http_status,
            error_class=a.error_class,
            message=a.message,
            response=a.response,
            retry_after_seconds=a.retry_after,
            retry_at=a.retry_at,
        )


class AttemptPage(Answer):
    job_id: uuid.UUID
    items: list[Attempt] = Field(description="Oldest first.")
    next_cursor: NextCursor

    @classmethod
    def from_record(cls, job_id: uuid.UUID, page: records.AttemptPage) -> AttemptPage:
        return cls.of(
            job_id=job_id,
            items=[Attempt.from_record(a) for a in page.items],
            next_cursor=page.next_cursor,
        )


class Cancelled(Answer):
    id: uuid.UUID
    state: Literal["dead"]
    dead_reason: Literal["cancelled"]


class StateCounts(Answer):
    queued: int
    running: int
    retrying: int
    succeeded: int
    dead: int


class PriorityStats(StateCounts):
    ready: int


class TargetStats(StateCounts):
    ready: int
    oldest_ready_age_seconds: float | None
    by_priority: dict[str, int] = Field(description="Waiting jobs per priority.")
    capacity_pct: float | None = Field(
        description="Fill of spec.capacity by waiting jobs, in percent; null without one."
    )


class QueueStats(StateCounts):
    capacity_pct: float | None = Field(
        description="Fill of HERALD_QUEUE_CAPACITY by waiting jobs, in percent; null without one."
    )
    ready: int
    oldest_ready_age_seconds: float | None
    by_priority: dict[str, PriorityStats]
    by_target: dict[str, TargetStats]

    @classmethod
    def from_record(cls, stats: records.QueueStats) -> QueueStats:
        return cls.model_validate(stats, from_attributes=True, by_name=True)


class TargetCircuit(Answer):
    state: CircuitState
    consecutive_failures: int
    changed_at: Time | None
    open_until: Time | None
    trips: int
    recoveries: int


class Target(Answer):
    """A registered target with its circuit and counters."""

    namespace: str
    name: str
    type: str
    url: str | None
    generation: int
    paused: bool
    auto_paused_reason: str | None
    disabled: bool
    failing_since: Time | None
    circuit: TargetCircuit
    delivered: int
    failed_attempts: int
    dead_lettered: int
    last_delivery_at: Time | None
    last_error: str | None
    last_error_class: str | None
    last_error_at: Time | None

    @classmethod
    def from_record(cls, target: TargetRow) -> Target:
        return cls.of(
            namespace=target.namespace,
            name=target.name,
            type=target.type,
            url=target.spec.url,
            generation=target.generation,
            paused=target.paused,
            auto_paused_reason=target.auto_paused_reason,
            disabled=target.disabled,
            failing_since=target.failing_since,
            circuit=TargetCircuit.of(
                state=target.circuit_state,
                consecutive_failures=target.consecutive_failures,
                changed_at=target.circuit_changed_at,
                open_until=target.circuit_open_until,
                trips=target.circuit_trips_total,
                recoveries=target.circuit_recoveries_total,
            ),
            delivered=target.delivered_total,
            failed_attempts=target.failed_attempts_total,
            dead_lettered=target.dead_lettered_total,
            last_delivery_at=target.last_delivery_at,
            last_error=target.last_error,
            last_error_class=target.last_error_class,
            last_error_at=target.last_error_at,
        )


class Listing(Answer):
    """The registered targets."""

    items: list[Target]


class DeadLetterStats(Answer):
    total: int
    waiting: int
    replayed: int
    by_target: dict[str, int] = Field(description="Waiting dead letters per target.")
    by_error_class: dict[str, int]
    by_priority: dict[str, int]
    oldest_failed_at: Time | None
    newest_failed_at: Time | None

    @classmethod
    def from_record(cls, stats: records.DeadLetterStats) -> DeadLetterStats:
        return cls.model_validate(stats, from_attributes=True, by_name=True)


class DeadLetter(Answer):
    id: uuid.UUID
    job_id: uuid.UUID
    target: str
    target_type: str | None = None
    fingerprint: str | None = None
    error_class: ErrorClass
    error: str
    reason: Literal["permanent-error", "attempts-exhausted", "target-deleted", "cancelled"]
    http_status: int | None = None
    attempts: int | None = None
    last_attempt_at: Time | None = None
    priority: Priority | None = None
    idempotency_key: str | None = None
    ordering_key: str | None = None
    job_created_at: Time | None = None
    failed_at: Time | None = None
    replayed: bool | None = None
    replayed_at: Time | None = None
    replay_result: Literal["queued", "target-missing"] | None = None
    replayed_by: str | None = None
    run_at: Time | None = Field(
        None,
        description="The runAt of a job that died before its first attempt; a replay keeps "
        "it while it is in the future.",
    )
    payload: Annotated[Any, PAYLOAD_REF] = None
    payload_text: str | None = Field(None, description=PAYLOAD_TEXT)
    payload_note: str | None = Field(None, description=PAYLOAD_NOTE)
    target_config: dict[str, Any] | None = None
    attempt_history: AttemptPage | None = Field(
        None,
        description="One dead letter only: its job's attempts on record, oldest first (a "
        "first page: GET /v1/jobs/{jobId}/attempts pages through all of them).",
    )

    @classmethod
    def from_record(
        cls,
        entry: records.DeadLetterRecord,
        *,
        with_payload: bool = True,
        history: records.AttemptPage | None = None,
    ) -> DeadLetter:
        """Every column (null included), the payload unless ``with_payload`` is false
        (the API's pages), and the target's configuration when it was read (one entry)."""
        values: dict[str, Any] = {
            "id": entry.id,
            "job_id": entry.job_id,
            "target": entry.target,
            "target_type": entry.target_type,
            "fingerprint": entry.fingerprint,
            "error_class": entry.error_class,
            "error": entry.error,
            "reason": entry.reason,
            "http_status": entry.http_status,
            "attempts": entry.attempts,
            "last_attempt_at": entry.last_attempt_at,
            "priority": entry.priority,
            "idempotency_key": entry.idempotency_key,
            "ordering_key": entry.ordering_key,
            "job_created_at": entry.job_created_at,
            "failed_at": entry.failed_at,
            "replayed": entry.replayed,
            "replayed_at": entry.replayed_at,
            "replay_result": entry.replay_result,
            "replayed_by": entry.replayed_by,
            "run_at": entry.run_at,
        }
        if with_payload:
            values |= _shown_payload(entry.payload_json)
        if entry.target_config is not None:
            values["target_config"] = entry.target_config
        if history is not None:
            values["attempt_history"] = AttemptPage.from_record(entry.job_id, history)
        return cls.of(**values)


class DeadLetterPage(Answer):
    items: list[DeadLetter]
    next_cursor: NextCursor

    @classmethod
    def from_record(
        cls, page: records.DeadLetterPage, *, with_payload: bool = False
    ) -> DeadLetterPage:
        return cls.of(
            items=[DeadLetter.from_record(d, with_payload=with_payload) for d in page.items],
            next_cursor=page.next_cursor,
        )


class ReplayResult(Answer):
    matched: int
    replayed: int
    skipped: int
    cancelled_left_out: int | None = Field(
        None,
        description="Cancelled jobs the selector matched but the replay left out: only a "
        "replay naming them by id (ids or jobIds) puts them back.",
    )
    dry_run: bool
    job_ids: list[str] | None = None

    @classmethod
    def from_record(cls, result: dlq.ReplayResult) -> ReplayResult:
        return cls.of(
            matched=result.matched,
            replayed=result.replayed,
            skipped=result.skipped,
            cancelled_left_out=result.cancelled_left_out,
            dry_run=result.dry_run,
            job_ids=[str(i) for i in result.job_ids],
        )


class Purged(Answer):
    matched: int = Field(description="Dead letters that failed before olderThan.")
    deleted: int = Field(description="Of them, deleted (0 on a dry run).")
    older_than: Time = Field(description="The cut-off: failed before this time.")
    dry_run: bool

    @classmethod
    def from_record(cls, result: dlq.PurgeResult) -> Purged:
        return cls.of(
            matched=result.matched,
            deleted=result.deleted,
            older_than=result.cutoff,
            dry_run=result.dry_run,
        )


class Health(Answer):
    model_config = ConfigDict(extra="allow")

    status: str


# -- the tracker and the published signing keys ---------------------------------------------


class TrackerQuery(Query):
    state: JobState | None = Field(None, description="Only this state.")
    target: TargetRef | None = Field(None, description=TARGET_DESCRIPTION)
    limit: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_digits)] = Field(
        100, description="How many, most recently updated first."
    )


class TrackerPage(Answer):
    size: int = Field(description="Jobs this worker process tracks now.")
    capacity: int = Field(description="Jobs it tracks at most (HERALD_TRACKER_SIZE).")
    items: list[Job]

    @classmethod
    def from_snapshots(cls, snapshots: list[Snapshot], *, size: int, capacity: int) -> TrackerPage:
        return cls.of(size=size, capacity=capacity, items=[Job.from_snapshot(s) for s in snapshots])


class TrackerCleared(Answer):
    cleared: int = Field(description="Jobs forgotten.")


class SigningKeysPath(AlertmanagerNamespacedPath):
    pass


class SigningKeys(Answer):
    target: str = Field(description="namespace/name.")
    public_keys: list[str] = Field(
        description="The ed25519 public keys (whpk_...) that verify its v1a signatures."
    )
