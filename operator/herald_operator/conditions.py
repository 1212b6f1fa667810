"""Standard status conditions (``metav1.Condition``): set one in a list the way Kubernetes
controllers do. Pure code, no I/O.

``lastTransitionTime`` moves only when a condition's *status* changes; a new reason or
message alone keeps it, so ``kubectl describe`` tells how long a target has been (not)
ready.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def parse_timestamp(raw: Any) -> dt.datetime | None:
    """A time the API wrote (``metav1.Time``, RFC 3339 with Z), or None when absent or not
    a time; a time without a zone is taken as UTC."""
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def timestamp(when: dt.datetime, *, precise: bool = False) -> str:
    """RFC 3339 in UTC with second precision, as ``metav1.Time`` is serialised (with
    microseconds when ``precise``: a time that is read back and compared)."""
    when = when.astimezone(dt.UTC)
    if not precise:
        when = when.replace(microsecond=0)
    return when.isoformat(timespec="microseconds" if precise else "seconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str
    """True, False or Unknown."""
    reason: str
    """CamelCase, machine-readable."""
    message: str
    """For people: what is wrong and what to do about it."""

    def __post_init__(self) -> None:
        if self.status not in (TRUE, FALSE, UNKNOWN):
            raise ValueError(f"condition status must be True, False or Unknown: {self.status!r}")
        if not self.reason or not self.reason[0].isalpha() or not self.reason.isalnum():
            raise ValueError(f"condition reason must be CamelCase: {self.reason!r}")


def find(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> Mapping[str, Any] | None:
    """The condition of type ``kind`` in a status' list, or None."""
    for item in conditions or ():
        if isinstance(item, Mapping) and item.get("type") == kind:
            return item
    return None


def status_of(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> str | None:
    found = find(conditions, kind)
    return None if found is None else str(found.get("status"))


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    new: Condition,
    *,
    now: dt.datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """The list with ``new`` in place of the condition of its type (appended if absent).

    The whole list is returned because a JSON merge patch replaces lists: the status patch
    must carry every condition. Other conditions are kept as they are."""
    previous = find(conditions, new.type)
    changed = previous is None or previous.get("status") != new.status
    since = timestamp(now) if changed or not previous else previous.get("lastTransitionTime")
    item: dict[str, Any] = {
        "type": new.type,
        "status": new.status,
        "reason": new.reason,
        "message": new.message,
        "lastTransitionTime": since or timestamp(now),
    }
    if generation is not None:
        item["observedGeneration"] = generation
    result: list[dict[str, Any]] = []
    placed = False
    for existing in conditions or ():
        if isinstance(existing, Mapping) and existing.get("type") == new.type:
            if not placed:
                result.append(item)
                placed = True
        elif isinstance(existing, Mapping):
            result.append(dict(existing))
    if not placed:
        result.append(item)
    return result


def transitioned(conditions: Sequence[Mapping[str, Any]] | None, new: Condition) -> bool:
    """Whether ``new`` changes the status of its type (a first condition counts)."""
    return status_of(conditions, new.type) != new.status


@dataclasses.dataclass(frozen=True)
class Transition:
    """An Event to post: type (Normal or Warning), reason (CamelCase) and message; and the
    line the operator logs with it (by default ``reason: message`` at INFO)."""

    type: str
    reason: str
    message: str
    log: str | None = None
    level: int = logging.INFO

    @property
    def line(self) -> str:
        return self.log if self.log is not None else f"{self.reason}: {self.message}"


def normal(reason: str, message: str, log: str) -> Transition:
    """A Normal Event, logged at INFO."""
    return Transition("Normal", reason, message, log, logging.INFO)


def warning(reason: str, message: str, log: str) -> Transition:
    """A Warning Event, logged at WARNING."""
    return Transition("Warning", reason, message, log, logging.WARNING)
