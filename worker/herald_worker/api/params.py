"""Query-string parameters, checked with the parameter named in every error."""

from __future__ import annotations

import datetime as dt
import uuid

from aiohttp import web

from herald_queue.config import parse_duration
from herald_queue.errors import InvalidRequest
from herald_queue.requests import parse_priority, parse_time
from herald_queue.states import ErrorClass, JobState, Priority


def optional(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    return value if value not in (None, "") else None


def limit(request: web.Request, default: int, maximum: int) -> int:
    raw = optional(request, "limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise InvalidRequest("limit", f"must be an integer from 1 to {maximum}, got {raw!r}")
    return int(raw)


def job_id(value: str, name: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequest(name, f"{value!r} is not a job id (a UUID)") from None


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
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidRequest(name, f"must be true or false, got {raw!r}")


def duration(raw: str | None, name: str) -> float | None:
    if raw is None:
        return None
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise InvalidRequest(name, str(exc)) from None
