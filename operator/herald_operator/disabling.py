"""The Disabled condition of a PublishingTarget, and the kubectl way to enable it again.
Pure code.

A worker disables a target whose deliveries have failed continuously for its disable
period (HERALD_DISABLE_AFTER, or spec.disableAfterSeconds): its jobs wait. The condition
``Disabled=True`` (reason ``FailingTooLong``) says so and what to do; once enabled it turns
``False`` (reason ``Enabled``). A target never disabled has no such condition.

Enabling with kubectl: ``kubectl annotate pt NAME herald.dev/enabled-at=<RFC 3339 time>
--overwrite``; a time at or after the disable enables it (so an old annotation never
undoes a later disable). ``herald targets enable NAME`` does the same from the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from herald_operator.conditions import (
    FALSE,
    TRUE,
    Condition,
    Transition,
    find,
    normal,
    parse_timestamp,
    transitioned,
    warning,
)
from herald_queue.registry import TargetRow

DISABLED = "Disabled"
ENABLE_ANNOTATION = "herald.dev/enabled-at"


def condition(row: TargetRow, previous: Sequence[Mapping[str, Any]] | None) -> Condition | None:
    """The Disabled condition to write, or None (never disabled: no condition)."""
    if row.disabled:
        return Condition(
            DISABLED,
            TRUE,
            "FailingTooLong",
            f"{row.auto_paused_reason}. Jobs are held, none is dead-lettered. Fix the "
            f"endpoint, then `herald targets enable {row.ref}` or `kubectl annotate pt "
            f'{row.name} {ENABLE_ANNOTATION}="$(date -u +%Y-%m-%dT%H:%M:%SZ)" --overwrite`.',
        )
    if find(previous, DISABLED) is None:
        return None
    return Condition(DISABLED, FALSE, "Enabled", "deliveries are enabled")


def notice(was: Mapping[str, Any] | None, now: Condition) -> Transition | None:
    """The Event for a Disabled condition whose status changed from ``was`` (the one last
    announced), or None."""
    if not transitioned([was] if was else None, now):
        return None
    if now.status == TRUE:
        return warning("Disabled", now.message, f"target disabled: {now.message}")
    return normal("Enabled", "deliveries are enabled again", "target enabled again")


def enable_requested(annotations: Mapping[str, str], row: TargetRow) -> bool:
    """Whether the annotation asks to enable this disabled target."""
    if not row.disabled or row.auto_paused_at is None:
        return False
    when = parse_timestamp(annotations.get(ENABLE_ANNOTATION))
    # metav1-style times have whole seconds: a time in the disable's second counts.
    return when is not None and when >= row.auto_paused_at.replace(microsecond=0)
