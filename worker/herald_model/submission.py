"""A job submission: :class:`JobSubmission`, the API's ``POST /v1/jobs`` body (one, or a
list), which the CLI's JSON lines use too; :func:`parse_jobs` is the one place a body is
read into :class:`JobRequest` values.

To add a field: add it to :class:`JobSubmission` (type, constraints, description; its
JSON name through ``alias``) and carry it into :class:`JobRequest` in
:meth:`JobSubmission.to_request`. The parser, its error messages and the published OpenAPI
schema all follow from the model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Strict,
    StrictStr,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from herald_core.errors import InvalidRequest, PayloadTooLarge
from herald_core.json_depth import DEFAULT_MAX_DEPTH, deeper_than, too_deep
from herald_core.states import Priority
from herald_core.trace_context import TraceContext
from herald_core.validation import hints, pattern, validate
from herald_model import events

TARGET_PATTERN = pattern(
    r"^(?:[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
    "is not a target name or namespace/name",
)
"""A target reference: a PublishingTarget name, or namespace/name (also the API schema's)."""
NO_NUL = pattern(r"^[^\u0000]*$", "contains a NUL character (\\u0000), which cannot be stored")
"""Strings PostgreSQL can hold (no NUL character)."""
# RFC 3339's date-time, as JSON Schema's "date-time" format checks it; a leap second (:60)
# is read as the last second of its minute.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
KEY_MAX = 256
MAX_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class JobRequest:
    target: str
    payload_json: str
    """The payload's JSON text as it will be stored, signed and sent: the submitted text
    itself when it came as a :class:`RawPayload`, else compact JSON."""
    priority: Priority = Priority.MEDIUM
    idempotency_key: str | None = None
    ordering_key: str | None = None
    run_at: dt.datetime | None = None
    key_reuse_checked: bool = True
    """Refuse this request when its idempotency key already names a job created with other
    parameters (:class:`~herald_core.errors.IdempotencyKeyReused`). False for keys Herald
    derives itself (the Alertmanager receiver's), where a re-sent notification with
    changed details is still the same event, a duplicate."""
    trace: TraceContext | None = None
    """The producer's W3C trace context (its request's ``traceparent`` and ``tracestate``
    headers), kept with the job so its delivery attempts continue that trace. Not part of
    :attr:`request_hash`: a producer's retry is the same job whatever trace it is in."""

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)

    @functools.cached_property
    def request_hash(self) -> str | None:
        """With an idempotency key, a digest of what the request asks for: the payload (as
        JSON, whatever its key order or spacing), priority, ordering key and runAt (as an
        instant). None without a key."""
        if self.idempotency_key is None:
            return None
        run_at = self.run_at.astimezone(dt.UTC).isoformat() if self.run_at else None
        canonical = json.dumps(
            [self.payload, self.priority.value, self.ordering_key, run_at],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class RawPayload:
    """A submitted payload with the exact JSON text it came as, which is what is stored,
    signed and delivered (``1.0E2`` stays ``1.0E2``, duplicate keys and spacing stay)."""

    text: str
    value: Any
    """The text decoded, for the checks that need the value."""


class _Malformed(Exception):
    """The walk met something that is not JSON; the stdlib decoder says what."""


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# Texts that may hold what PostgreSQL cannot store (NaN, Infinity, a lone surrogate escape):
# only those are decoded again and checked.
_SUSPECT = re.compile(r"NaN|Infinity|\\u[dD][89a-fA-F]")


def decode_submission(raw: bytes | str) -> Any:
    """``raw`` decoded as :func:`json.loads` does, except that the ``payload`` member of the
    top-level object, or of each object of a top-level list (a batch), is a
    :class:`RawPayload` holding its exact text. Invalid JSON raises the stdlib decoder's
    :class:`json.JSONDecodeError` (or :class:`UnicodeDecodeError`)."""
    text = raw if isinstance(raw, str) else raw.decode(json.detect_encoding(raw))
    try:
        pos = _skip(text, 0)
        value: Any
        if text.startswith("{", pos):
            value, pos = _walk_object(text, pos)
        elif text.startswith("[", pos):
            value, pos = _walk_list(text, pos)
        else:
            return json.loads(text)
        if _skip(text, pos) != len(text):
            raise _Malformed
        return value
    except (_Malformed, json.JSONDecodeError):
        json.loads(text)  # raises the stdlib's error, with its position
        raise  # pragma: no cover - the walk refused what the stdlib takes


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def _walk_list(text: str, pos: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    pos = _skip(text, pos + 1)
    if text.startswith("]", pos):
        return items, pos + 1
    while True:
        if text.startswith("{", pos):
            item, pos = _walk_object(text, pos)
        else:
            item, pos = _DECODER.raw_decode(text, pos)
        items.append(item)
        pos = _skip(text, pos)
        if text.startswith("]", pos):
            return items, pos + 1
        if not text.startswith(",", pos):
            raise _Malformed
        pos = _skip(text, pos + 1)


def _walk_object(text: str, pos: int) -> tuple[dict[str, Any], int]:
    members: dict[str, Any] = {}
    pos = _skip(text, pos + 1)
    if text.startswith("}", pos):
        return members, pos + 1
    while True:
        if not text.startswith('"', pos):
            raise _Malformed
        key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
        pos = _skip(text, pos)
        if not text.startswith(":", pos):
            raise _Malformed
        start = _skip(text, pos + 1)
        value, pos = _DECODER.raw_decode(text, start)
        members[key] = RawPayload(text[start:pos], value) if key == "payload" else value
        pos = _skip(text, pos)
        if text.startswith("}", pos):
            return members, pos + 1
        if not text.startswith(",", pos):
            raise _Malformed
        pos = _skip(text, pos + 1)


def _serialise(payload: Any, field: str) -> str:
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise InvalidRequest(field, "NaN and Infinity are not valid JSON numbers") from None
    except TypeError as exc:
        raise InvalidRequest(field, f"is not JSON-serialisable ({exc})") from None
    except RecursionError:
        raise InvalidRequest(field, "is nested too deeply") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            field, "contains an unpaired surrogate (\\ud800-\\udfff), which is not Unicode text"
        ) from None
    return text


def encode_payload(
    payload: Any, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH, field: str = "payload"
) -> str:
    """The JSON text stored for ``payload``: a :class:`RawPayload`'s own text, untouched,
    or compact JSON of a value; refuses what PostgreSQL cannot hold, and payloads nested
    deeper than ``max_depth`` (HERALD_MAX_PAYLOAD_DEPTH), which could not be hashed or
    read back."""
    if isinstance(payload, RawPayload):
        text = payload.text
        check_depth(text, max_depth, field)
        if _SUSPECT.search(text):
            _serialise(payload.value, field)
    else:
        text = _serialise(payload, field)
        check_depth(text, max_depth, field)
    if "\\u0000" in text:
        raise InvalidRequest(field, "contains a NUL character (\\u0000), which cannot be stored")
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise PayloadTooLarge(
            field,
            f"is {size} bytes of JSON, more than the limit of {max_bytes} bytes "
            "(HERALD_MAX_PAYLOAD_BYTES)",
        )
    return text


def check_depth(text: str | bytes, max_depth: int, field: str) -> None:
    """:class:`InvalidRequest` naming HERALD_MAX_PAYLOAD_DEPTH when the JSON ``text`` nests
    deeper than ``max_depth`` (read from the text; nothing is decoded)."""
    depth = deeper_than(text, max_depth)
    if depth is not None:
        raise InvalidRequest(field, too_deep(depth, max_depth))


def parse_time(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise InvalidRequest(
            field, "must be an RFC 3339 timestamp string, e.g. 2026-11-20T10:00:00Z"
        )
    match = _RFC3339.match(value)
    if match is None:
        if re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", value):
            raise InvalidRequest(field, f"{value!r} has no time zone offset (add Z or +00:00)")
        raise InvalidRequest(
            field, f"{value!r} is not an RFC 3339 timestamp (e.g. 2026-11-20T10:00:00Z)"
        )
    leap = match[1] == "60"
    text = value[: match.start(1)] + ("59" if leap else match[1]) + value[match.end(1) :]
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        parsed += dt.timedelta(seconds=1 if leap else 0)
        parsed.astimezone(dt.UTC)  # in range in UTC too (year 1 at +01:00 is not)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            field, f"{value!r} is not a valid time (a date, hour or offset is out of range)"
        ) from None
    return parsed


def parse_priority(value: Any, field: str = "priority") -> Priority:
    try:
        return Priority(value)
    except ValueError:
        choices = ", ".join(p.value for p in Priority)
        raise InvalidRequest(field, f"must be one of {choices}, got {value!r}") from None


def _timestamp(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "timestamp", "must be an RFC 3339 timestamp string, e.g. 2026-11-20T10:00:00Z"
        )
    try:
        return parse_time(value, "")
    except InvalidRequest as exc:
        raise PydanticCustomError("timestamp", exc.problem) from None


def _integral(value: Any) -> Any:
    """5.0 is the integer 5 in JSON (and JSON Schema); booleans are not integers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Timestamp = Annotated[
    dt.datetime,
    PlainValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An RFC 3339 date-time with an offset (a leap second is the last second of its minute)."""
JSON_INT = (BeforeValidator(_integral), Strict())
"""An integer as JSON has it: 5 or 5.0; not "5", not true (``Annotated[int, ..., *JSON_INT]``,
after its bounds)."""
TargetRef = Annotated[StrictStr, StringConstraints(pattern=TARGET_PATTERN, max_length=317)]
Key = Annotated[StrictStr, StringConstraints(min_length=1, max_length=KEY_MAX, pattern=NO_NUL)]
PAYLOAD_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value (at most HERALD_MAX_PAYLOAD_BYTES, nested at most "
    "HERALD_MAX_PAYLOAD_DEPTH arrays and objects deep), without NUL characters "
    "(\\u0000) in its strings or keys: PostgreSQL cannot hold them.",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": "#/components/schemas/Payload"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": "#/components/schemas/Payload"},
        },
    ],
}
"""Any JSON value PostgreSQL can hold, as the API document names it (``Payload``)."""
PAYLOAD_MARK = "x-herald-payload"
PAYLOAD_REF = WithJsonSchema({PAYLOAD_MARK: True})
"""A field holding a payload; the API document refers to ``Payload`` there."""


def _encoded(value: Any, info: ValidationInfo) -> str:
    context = info.context or {}
    limit = context.get("max_payload_bytes", 1 << 62)
    depth = context.get("max_payload_depth", DEFAULT_MAX_DEPTH)
    try:
        return encode_payload(value, max_bytes=limit, max_depth=depth)
    except PayloadTooLarge as exc:
        raise PydanticCustomError(PayloadTooLarge.error_type, exc.problem) from None
    except InvalidRequest as exc:
        raise PydanticCustomError("payload", exc.problem) from None


class ApiModel(BaseModel):
    """A JSON body of the API: camelCase names, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=False, extra="forbid", frozen=True
    )


class JobSubmission(ApiModel):
    """One job to submit."""

    target: TargetRef = Field(
        description="PublishingTarget name, or namespace/name.",
        examples=["oncall-hook", "default/oncall-hook"],
    )
    payload_json: Annotated[str, BeforeValidator(_encoded), PAYLOAD_REF] = Field(
        alias="payload",
        description="any JSON value",
    )
    """The payload, serialised once (compact JSON), as it will be stored and sent."""
    priority: Priority = Field(Priority.MEDIUM, description="high, medium or low.")
    idempotency_key: Key | None = Field(
        None,
        description="A second submission with the same key (per target) and the same "
        "parameters returns the existing job (200, duplicate) instead of creating one; with "
        "other parameters (payload, priority, orderingKey, runAt) it is refused (409).",
    )
    ordering_key: Key | None = Field(
        None, description="Jobs of a target sharing it are delivered one at a time, in order."
    )
    run_at: Timestamp | None = Field(None, description="Not delivered before this time.")

    def to_request(self) -> JobRequest:
        return JobRequest(
            target=self.target,
            payload_json=self.payload_json,
            priority=self.priority,
            idempotency_key=self.idempotency_key,
            ordering_key=self.ordering_key,
            run_at=self.run_at,
        )


def _one_or_many(value: Any) -> str | None:
    return "<many>" if isinstance(value, list) else "<one>" if isinstance(value, dict) else None


Submission = Annotated[
    Annotated[JobSubmission, Tag("<one>")]
    | Annotated[list[JobSubmission], Tag("<many>"), Field(min_length=1, max_length=MAX_BATCH)],
    Discriminator(
        _one_or_many,
        custom_error_type="submission",
        custom_error_message="must be a JSON object (one job) or a list of objects "
        f"(several jobs, at most {MAX_BATCH})",
    ),
]
"""The ``POST /v1/jobs`` body: one job, or a list of 1 to 1000."""
SUBMISSION: TypeAdapter[JobSubmission | list[JobSubmission]] = TypeAdapter(Submission)
_ONE: TypeAdapter[JobSubmission] = TypeAdapter(JobSubmission)
_HINTS = hints(JobSubmission)


def parse_jobs(
    body: object, *, max_payload_bytes: int, max_payload_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[list[JobRequest], bool]:
    """The jobs of a ``POST /v1/jobs`` body (decoded JSON), and whether it was a list: the
    one place a submission is read. What a job stores and delivers is its
    ``JobSubmission.payload_json``, made here (the ``_encoded`` validator)."""
    parsed = validate(
        SUBMISSION,
        body,
        context={"max_payload_bytes": max_payload_bytes, "max_payload_depth": max_payload_depth},
        descriptions=_HINTS,
    )
    if isinstance(parsed, list):
        return [job.to_request() for job in parsed], True
    return [parsed.to_request()], False


def parse_job(
    body: Any,
    *,
    max_payload_bytes: int,
    max_payload_depth: int = DEFAULT_MAX_DEPTH,
    prefix: str = "",
) -> JobRequest:
    """A :class:`JobRequest` from one decoded JSON object; ``prefix`` names it in a list."""
    return validate(
        _ONE,
        body,
        prefix=prefix,
        context={"max_payload_bytes": max_payload_bytes, "max_payload_depth": max_payload_depth},
        descriptions=_HINTS,
    ).to_request()


# -- events (POST /v1/events) --------------------------------------------------------------

NAMESPACE_PATTERN = pattern(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", "is not a namespace name (a DNS-1123 label)"
)
EVENT_TYPE = pattern(
    events.EVENT_TYPE_PATTERN,
    "is not an event type (dot-separated: letters, digits, '_' and '-' between the dots)",
)
EventType = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=events.EVENT_TYPE_MAX, pattern=EVENT_TYPE)
]
Namespace = Annotated[StrictStr, StringConstraints(max_length=63, pattern=NAMESPACE_PATTERN)]


@dataclasses.dataclass(frozen=True)
class EventRequest:
    """An event to fan out: one job per subscribed target of its namespace."""

    id: str | None
    type: str
    namespace: str | None
    payload_json: str
    priority: Priority = Priority.MEDIUM
    ordering_key: str | None = None
    run_at: dt.datetime | None = None
    key_reuse_checked: bool = True
    """Refuse a resent id with other parameters (409); False for ids Herald derives itself
    (the Alertmanager fan-out's), as :attr:`JobRequest.key_reuse_checked`."""

    def job(self, event_id: str, target: str) -> JobRequest:
        """The job of this event for ``target`` (namespace/name): its idempotency key is the
        event id, so one event id gives one job per target however often it is sent."""
        return JobRequest(
            target=target,
            payload_json=self.payload_json,
            priority=self.priority,
            idempotency_key=f"event:{event_id}",
            ordering_key=self.ordering_key,
            run_at=self.run_at,
            key_reuse_checked=self.key_reuse_checked,
        )


class EventSubmission(ApiModel):
    """One event, fanned out to every PublishingTarget of its namespace that subscribes to
    its type (spec.subscriptions) and whose filter it passes."""

    id: Key | None = Field(
        None,
        description="The event's id, chosen by the producer (at most 256 characters). Sending "
        "the same id again gives the same jobs (one per target, never two); with another "
        "payload, priority, orderingKey or runAt it is refused (409). Absent: Herald makes "
        "one (then a resend is a new event).",
    )
    type: EventType = Field(
        description="The event type, dot-separated (incident.opened), matched against each "
        "target's spec.subscriptions.eventTypes.",
        examples=["incident.opened"],
    )
    namespace: Namespace | None = Field(
        None,
        description="The namespace whose targets receive the event (default: the worker's "
        "HERALD_NAMESPACE).",
    )
    payload_json: Annotated[str, BeforeValidator(_encoded), PAYLOAD_REF] = Field(
        alias="payload",
        description="any JSON value: each job's payload, delivered as sent",
    )
    priority: Priority = Field(Priority.MEDIUM, description="high, medium or low.")
    ordering_key: Key | None = Field(
        None,
        description="Each target's jobs sharing it are delivered one at a time, in order.",
    )
    run_at: Timestamp | None = Field(None, description="Not delivered before this time.")

    def to_request(self) -> EventRequest:
        return EventRequest(
            id=self.id,
            type=self.type,
            namespace=self.namespace,
            payload_json=self.payload_json,
            priority=self.priority,
            ordering_key=self.ordering_key,
            run_at=self.run_at,
        )


_EVENT: TypeAdapter[EventSubmission] = TypeAdapter(EventSubmission)
_EVENT_HINTS = hints(EventSubmission)


def parse_event(
    body: object, *, max_payload_bytes: int, max_payload_depth: int = DEFAULT_MAX_DEPTH
) -> EventRequest:
    """The event of a ``POST /v1/events`` body (decoded JSON, payload kept as sent)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object (one event)")
    return validate(
        _EVENT,
        body,
        context={"max_payload_bytes": max_payload_bytes, "max_payload_depth": max_payload_depth},
        descriptions=_EVENT_HINTS,
    ).to_request()
