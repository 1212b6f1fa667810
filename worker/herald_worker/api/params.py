"""Query-string and path parameters, checked with the parameter named in every error.

The rules are the OpenAPI document's (``openapi.py`` builds its parameter schemas from the
patterns here): a parameter given empty is refused, not read as absent, so that what the
document forbids the server refuses too.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

from aiohttp import web

from herald_queue.durations import parse_duration
from herald_queue.errors import InvalidRequest
from herald_queue.ids import parse_uuid
from herald_queue.requests import TARGET_PATTERN, parse_priority, parse_time
from herald_queue.states import ErrorClass, JobState, Priority

DURATION_PATTERN = (
    r"^(?:[0-9]{1,9}(?:\.[0-9]{1,3})?s?|[0-9]{1,7}(?:\.[0-9]{1,3})?m|"
    r"[0-9]{1,5}(?:\.[0-9]{1,3})?h|[0-9]{1,4}(?:\.[0-9]{1,3})?d)$"
)
"""A duration the API takes: a number of seconds (s), minutes (m), hours (h) or days (d),
bounded so that every match is within the 100 years any duration may be."""
_DURATION = re.compile(DURATION_PATTERN)
_TARGET = re.compile(TARGET_PATTERN)


def optional(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value == "":
        raise InvalidRequest(name, "is empty: give a value, or leave the parameter out")
    return value


def limit(request: web.Request, default: int, maximum: int) -> int:
    raw = optional(request, "limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise InvalidRequest("limit", f"must be an integer from 1 to {maximum}, got {raw!r}")
    return int(raw)


def job_id(value: str, name: str = "id", what: str = "job id") -> uuid.UUID:
    parsed = parse_uuid(value)
    if parsed is None:
        raise InvalidRequest(name, f"{value!r} is not a {what} (a UUID)")
    return parsed


def entry_id(value: str, name: str = "id") -> uuid.UUID:
    return job_id(value, name, "dead-letter id")


def target(request: web.Request) -> str | None:
    raw = optional(request, "target")
    if raw is not None and not _TARGET.match(raw):
        raise InvalidRequest("target", f"{raw!r} is not a target name or namespace/name")
    return raw


def state(request: web.Request) -> JobState | None:
    raw = optional(request, "state")
    if raw is None:
        return None
    try:
        return JobState(raw)
    except ValueError:
        choices = ", ".join(s.value for s in JobState)
        raise InvalidRequest("state", f"must be one of {choices}, got {raw!r}") from None


def priority(request: web.Request) -> Priority | None:
    raw = optional(request, "priority")
    return None if raw is None else parse_priority(raw)


def error_class(raw: str | None, name: str = "errorClass") -> ErrorClass | None:
    if raw is None:
        return None
    try:
        return ErrorClass(raw)
    except ValueError:
        choices = ", ".join(c.value for c in ErrorClass)
        raise InvalidRequest(name, f"must be one of {choices}, got {raw!r}") from None


def time(request: web.Request, name: str) -> dt.datetime | None:
    raw = optional(request, name)
    return None if raw is None else parse_time(raw, name)


def boolean(raw: str | None, name: str) -> bool | None:
    if raw is None:
        return None
    if raw in ("true", "false"):
        return raw == "true"
    raise InvalidRequest(name, f"must be true or false, got {raw!r}")


def duration(raw: str | None, name: str) -> float | None:
    if raw is None:
        return None
    if not _DURATION.match(raw):
        raise InvalidRequest(
            name, f"{raw!r} is not a duration: a number with a unit, e.g. 90s, 15m, 24h or 30d"
        )
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise InvalidRequest(name, str(exc)) from None
