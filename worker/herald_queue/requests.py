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
    """The payload's JSON text as it will be stored, signed and sent: the submitted text
    itself when it came as a :class:`RawPayload`, else compact JSON."""
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


def encode_payload(payload: Any, *, max_bytes: int, field: str = "payload") -> str:
    """The JSON text stored for ``payload``: a :class:`RawPayload`'s own text, untouched,
    or compact JSON of a value; refuses what PostgreSQL cannot hold."""
    if isinstance(payload, RawPayload):
        text = payload.text
        if _SUSPECT.search(text):
            _serialise(payload.value, field)
    else:
        text = _serialise(payload, field)
    if "\\u0000" in text:
        raise InvalidRequest(field, "contains a NUL character (\\u0000), which cannot be stored")
    size = len(text.encode("utf-8"))
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
