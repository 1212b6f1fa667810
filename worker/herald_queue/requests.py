"""A job submission, checked field by field before anything is written.

The shape is the API's ``POST /v1/jobs`` body; the CLI's JSON lines use the same one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from herald_queue.errors import InvalidRequest
from herald_queue.states import Priority

TARGET_PATTERN = r"^(?:[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
"""A target reference: a PublishingTarget name, or namespace/name (also the API schema's)."""
_TARGET = re.compile(TARGET_PATTERN)
# RFC 3339's date-time, as JSON Schema's "date-time" format checks it; a leap second (:60)
# is read as the last second of its minute.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
KEY_MAX = 256
FIELDS = ("target", "payload", "priority", "idempotencyKey", "orderingKey", "runAt")


@dataclasses.dataclass(frozen=True)
class JobRequest:
    target: str
    payload_json: str
    """The payload, serialised once (compact JSON), as it will be stored and sent."""
    priority: Priority = Priority.MEDIUM
    idempotency_key: str | None = None
    ordering_key: str | None = None
    run_at: dt.datetime | None = None
    key_reuse_checked: bool = True
    """Refuse this request when its idempotency key already names a job created with other
    parameters (:class:`~herald_queue.errors.IdempotencyKeyReused`). False for keys Herald
    derives itself (the Alertmanager receiver's), where a re-sent notification with
    changed details is still the same event, a duplicate."""

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


def encode_payload(payload: Any, *, max_bytes: int, field: str = "payload") -> str:
    """Compact JSON of ``payload``; refuses what PostgreSQL's jsonb cannot hold."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise InvalidRequest(field, "NaN and Infinity are not valid JSON numbers") from None
    except TypeError as exc:
        raise InvalidRequest(field, f"is not JSON-serialisable ({exc})") from None
    except RecursionError:
        raise InvalidRequest(field, "is nested too deeply") from None
    if "\\u0000" in text:
        raise InvalidRequest(field, "contains a NUL character (\\u0000), which cannot be stored")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequest(
            field, "contains an unpaired surrogate (\\ud800-\\udfff), which is not Unicode text"
        ) from None
    if size > max_bytes:
        raise InvalidRequest(
            field,
            f"is {size} bytes of JSON, more than the limit of {max_bytes} bytes "
            "(HERALD_MAX_PAYLOAD_BYTES)",
        )
    return text


def _key(body: Mapping[str, Any], name: str, prefix: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{prefix}{name}", "must be a non-empty string")
    if len(value) > KEY_MAX:
        raise InvalidRequest(f"{prefix}{name}", f"must be at most {KEY_MAX} characters")
    if "\x00" in value:
        raise InvalidRequest(f"{prefix}{name}", "must not contain a NUL character")
    return value


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


def json_integer(value: Any) -> int | None:
    """``value`` as an integer if JSON (and JSON Schema) counts it as one: 5, and 5.0 too
    (a number with no fractional part). None for anything else, booleans included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_priority(value: Any, field: str = "priority") -> Priority:
    try:
        return Priority(value)
    except ValueError:
        choices = ", ".join(p.value for p in Priority)
        raise InvalidRequest(field, f"must be one of {choices}, got {value!r}") from None


def parse_job(body: Any, *, max_payload_bytes: int, prefix: str = "") -> JobRequest:
    """A :class:`JobRequest` from a decoded JSON body; ``prefix`` names it in a list."""
    if not isinstance(body, Mapping):
        raise InvalidRequest(prefix.rstrip(".: ") or "body", "must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidRequest(
            f"{prefix}{unknown[0]}", f"unknown field (accepted: {', '.join(FIELDS)})"
        )
    if body.get("target") is None:
        raise InvalidRequest(
            f"{prefix}target", "is required: the PublishingTarget name or namespace/name"
        )
    target = body["target"]
    if not isinstance(target, str):
        raise InvalidRequest(
            f"{prefix}target",
            "must be a string: the PublishingTarget name or namespace/name, got "
            + json.dumps(target)[:40],
        )
    if not _TARGET.fullmatch(target):
        raise InvalidRequest(
            f"{prefix}target", f"{target!r} is not a target name or namespace/name"
        )
    if "payload" not in body:
        raise InvalidRequest(f"{prefix}payload", "is required (any JSON value)")
    payload_json = encode_payload(
        body["payload"], max_bytes=max_payload_bytes, field=f"{prefix}payload"
    )
    priority = parse_priority(body.get("priority", "medium"), f"{prefix}priority")
    run_at = body.get("runAt")
    return JobRequest(
        target=target,
        payload_json=payload_json,
        priority=priority,
        idempotency_key=_key(body, "idempotencyKey", prefix),
        ordering_key=_key(body, "orderingKey", prefix),
        run_at=None if run_at is None else parse_time(run_at, f"{prefix}runAt"),
    )
