"""The one writer of an object's status conditions, for one handler run or timer tick.

What is written is compared with the object's status *as read* (the truth: anyone may have
overwritten it), never with what the operator remembers writing: a condition goes into the
status patch only when it differs from the one read (type, status, reason, message,
observedGeneration); ``lastTransitionTime`` moves only when its status changes (see
:func:`conditions.set_condition`). One exception covers a write in flight: kopf writes a
handler's patch only after the handler returns, so a timer tick that follows at once may
still read the conditions that run read. While they are exactly those, the conditions that
run wrote stand in for them (once: a tick that finds nothing to write forgets them, so a
status overwritten back to the very same conditions is set right by the next tick).

An Event is posted when a condition changes from the one last *announced* (kept in the
per-object memo, seeded from the status after a restart): a status set right again is not
news. What counts as news, and what the Event and the log line say, is the condition's own
:data:`Notice` (``readiness.notice``, ``disabling.notice``, ``status.capacity_notice``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import kopf

from herald_operator.conditions import Condition, Transition, find, set_condition, transitioned
from herald_operator.readiness import plain

Notice = Callable[[Mapping[str, Any] | None, Condition], Transition | None]
"""The Event a condition deserves, given the one last announced (or read), or None."""

IN_FLIGHT, ANNOUNCED = "herald_in_flight", "herald_announced"
"""The per-object memo's keys."""


@dataclasses.dataclass(frozen=True)
class Announced:
    was: Mapping[str, Any] | None
    """The condition of that type last announced (or as read), if any."""
    news: bool
    """Its status changed."""


@dataclasses.dataclass(frozen=True)
class InFlight:
    """Conditions written over ``over`` (the conditions read before), until read back."""

    over: list[dict[str, Any]]
    conditions: list[dict[str, Any]]


class ConditionWriter:
    """One object's conditions: ``status`` as read, the ``patch`` kopf writes, the
    per-object ``memo``, and ``post``, which posts (and logs) an Event."""

    def __init__(
        self,
        status: Mapping[str, Any],
        patch: kopf.Patch,
        memo: MutableMapping[str, Any],
        post: Callable[[Transition], None] | None = None,
    ) -> None:
        self._memo = memo
        self._post = post
        read = plain(status.get("conditions") or [])
        self._as_read: list[dict[str, Any]] = [c for c in read if isinstance(c, dict)]
        base = self._as_read
        in_flight = memo.get(IN_FLIGHT)
        if isinstance(in_flight, InFlight) and in_flight.over == self._as_read:
            base = in_flight.conditions
        self._read = base
        self.items: list[dict[str, Any]] = [dict(c) for c in base]
        self._patch = patch
        announced = memo.get(ANNOUNCED)
        if not isinstance(announced, dict):
            announced = memo[ANNOUNCED] = {}
        self._announced: dict[str, dict[str, Any]] = announced
        self._now = dt.datetime.now(dt.UTC)

    def find(self, kind: str) -> Mapping[str, Any] | None:
        """The condition of that type as read (or as a write in flight sets it)."""
        return find(self._read, kind)

    def set(
        self, condition: Condition, generation: int | None = None, notice: Notice | None = None
    ) -> Announced:
        """Set ``condition``, and post the Event ``notice`` makes of it; what was announced
        before, and whether its status changed."""
        was = self._announced.get(condition.type) or find(self._read, condition.type)
        self.items = set_condition(self.items, condition, now=self._now, generation=generation)
        self._announced[condition.type] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
        }
        self._write()
        event = None if notice is None else notice(was, condition)
        if event is not None and self._post is not None:
            self._post(event)
        return Announced(was, transitioned([was] if was else None, condition))

    def put(self, kind: str, condition: Condition | None, notice: Notice | None = None) -> None:
        """Set ``condition`` (with no observedGeneration), or remove the condition of type
        ``kind`` when there is none to show."""
        if condition is not None:
            self.set(condition, notice=notice)
        elif self.find(kind) is not None:
            self.remove(kind)

    def remove(self, kind: str) -> None:
        self.items = [c for c in self.items if c.get("type") != kind]
        self._announced.pop(kind, None)
        self._write()

    def _write(self) -> None:
        if self.items != self._read:
            self._patch.status["conditions"] = self.items
            self._memo[IN_FLIGHT] = InFlight(self._as_read, self.items)
        elif "conditions" not in self._patch.status:
            self._memo.pop(IN_FLIGHT, None)
