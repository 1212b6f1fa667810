"""DeadLetterReplay decisions. Pure code: which dead letters a replay selects, the tag it
leaves on them, and the status it shows at each step.

A replay is one-shot (its spec is immutable, and a finished one never runs again) and
resumable: every dead letter it puts back is tagged with :func:`replayed_by`, unique to the
object (its uid), in the same transaction that requeues it, so a restarted operator counts
what is done from PostgreSQL and carries on with what is left. Its selection is fixed at
its start: only dead letters that failed before ``status.startTime`` are eligible, so a
replayed job that fails again is not picked up again by the same replay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from herald_core.errors import InvalidRequest
from herald_model.replay_spec import DEFAULT_LIMIT as DEFAULT_LIMIT
from herald_model.replay_spec import parse_replay_spec
from herald_model.spec_base import SpecError
from herald_operator.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    Condition,
    parse_timestamp,
    set_condition,
    timestamp,
)
from herald_queue.dead_letters import DeadLetterFilter

COMPLETE = "Complete"
FAILED = "Failed"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


def phase_of(status: Mapping[str, Any] | None) -> Phase | None:
    raw = (status or {}).get("phase")
    try:
        return Phase(raw) if raw else None
    except ValueError:
        return None


class InvalidSelection(Exception):
    """The spec cannot select dead letters; the message says which field and why."""


@dataclasses.dataclass(frozen=True)
class Selection:
    filter: DeadLetterFilter
    target: str | None
    """Name of the PublishingTarget (in the replay's namespace), if the spec names one."""
    limit: int
    dry_run: bool
    empty: bool = False
    """Nothing can match (failedAfter is not before the replay started)."""
    failed_before: dt.datetime | None = None
    """spec.failedBefore as written (the filter's is also capped at the start time)."""

    @property
    def target_ref(self) -> str | None:
        return None if self.target is None else f"{self.filter.namespace}/{self.target}"

    def describe(self) -> str:
        where = (
            f"of target {self.target_ref}"
            if self.target
            else f"of every target in namespace {self.filter.namespace}"
        )
        parts = [f"dead letters {where}"]
        if self.filter.error_class:
            parts.append(f"error class {self.filter.error_class.value}")
        if self.filter.priority:
            parts.append(f"priority {self.filter.priority.value}")
        if self.filter.failed_after:
            parts.append(f"failed after {timestamp(self.filter.failed_after)}")
        if self.failed_before:
            parts.append(f"failed before {timestamp(self.failed_before)}")
        if self.filter.job_ids is not None:
            parts.append(f"{len(self.filter.job_ids)} job id(s)")
        return ", ".join(parts) + f", at most {self.limit}"


def select(spec: Mapping[str, Any], namespace: str, started_at: dt.datetime) -> Selection:
    """The dead letters a DeadLetterReplay in ``namespace`` selects, once started at
    ``started_at``. The target, when named, is the PublishingTarget of that name in the
    replay's own namespace; a replay never reaches into another namespace."""
    try:
        parsed = parse_replay_spec(spec)
    except SpecError as exc:
        raise InvalidSelection(str(exc)) from None
    failed_after, failed_before = parsed.failed_after, parsed.failed_before
    # Fixed at the start: later failures (a replayed job dying again) are not this replay's.
    cutoff = started_at if failed_before is None else min(failed_before, started_at)
    # failedAfter at or after the start: nothing can match (not an error: zero counts).
    empty = failed_after is not None and failed_after >= cutoff
    try:
        selector = DeadLetterFilter(
            target=parsed.target,
            namespace=namespace,
            error_class=parsed.error_class,
            priority=parsed.priority,
            failed_after=failed_after,
            failed_before=None if empty else cutoff,
            job_ids=parsed.job_ids or None,
        )
        selector.params()
    except InvalidRequest as exc:
        raise InvalidSelection(f"spec.{exc.field}: {exc.problem}") from None
    return Selection(
        filter=selector,
        target=parsed.target,
        limit=parsed.limit,
        dry_run=parsed.dry_run,
        empty=empty,
        failed_before=failed_before,
    )


def replayed_by(namespace: str, name: str, uid: str) -> str:
    """The tag a replay leaves on the dead letters it puts back (unique to the object, so a
    new replay of the same name is a new replay)."""
    return f"DeadLetterReplay/{namespace}/{name}/{uid}"


@dataclasses.dataclass(frozen=True)
class Progress:
    matched: int
    replayed: int = 0
    skipped: int = 0

    @property
    def done(self) -> int:
        return self.replayed + self.skipped


def remaining(selection: Selection, progress: Progress) -> int:
    """How many more dead letters this replay may take."""
    return max(0, selection.limit - progress.done)


def _conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    new: Sequence[Condition],
    now: dt.datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [dict(c) for c in existing or () if isinstance(c, Mapping)]
    for condition in new:
        result = set_condition(result, condition, now=now, generation=generation)
    return result


def running(
    status: Mapping[str, Any],
    progress: Progress,
    selection: Selection,
    *,
    now: dt.datetime,
    started_at: dt.datetime,
    generation: int | None,
) -> dict[str, Any]:
    message = (
        f"replaying {selection.describe()}: {progress.replayed} of {progress.matched} put "
        f"back on the queue so far"
    )
    return {
        "phase": Phase.RUNNING.value,
        "matched": progress.matched,
        "replayed": progress.replayed,
        "skipped": progress.skipped,
        "startTime": timestamp(started_at, precise=True),
        "observedGeneration": generation,
        "message": message,
        "conditions": _conditions(
            status.get("conditions"),
            [Condition(COMPLETE, FALSE, "Running", message)],
            now,
            generation,
        ),
    }


def succeeded(
    status: Mapping[str, Any],
    progress: Progress,
    selection: Selection,
    *,
    now: dt.datetime,
    started_at: dt.datetime,
    generation: int | None,
    target_missing: int = 0,
    cancelled_left_out: int = 0,
) -> dict[str, Any]:
    """The final status of a replay that ran to its end (also a dry run, and one that
    matched nothing). ``cancelled_left_out``: cancelled jobs the selector matched, which a
    replay only puts back when spec.jobIds names them."""
    if selection.dry_run:
        would = max(0, progress.matched - target_missing)
        reason = "DryRun"
        message = (
            f"dry run: {progress.matched} dead letter(s) match ({selection.describe()}); "
            f"{would} would be put back on the queue"
        )
        if target_missing:
            message += f", {target_missing} skipped because their target no longer exists"
        replayed, skipped = 0, 0
    elif progress.matched == 0 and progress.done == 0:
        reason, replayed, skipped = "NothingMatched", 0, 0
        message = f"no dead letter matched ({selection.describe()}); nothing to replay"
    else:
        reason = "Replayed"
        replayed = progress.replayed
        # Matched but not replayed: target gone, or taken meanwhile by another replay/purge.
        skipped = max(progress.skipped, progress.matched - progress.replayed)
        message = f"put {replayed} dead letter(s) back on the queue"
        if skipped:
            message += f"; {skipped} skipped (their target no longer exists, or already replayed)"
    if cancelled_left_out:
        message += (
            f"; {cancelled_left_out} cancelled job(s) left out (a replay puts a cancelled "
            "job back only when spec.jobIds names it)"
        )
    return {
        "phase": Phase.SUCCEEDED.value,
        "matched": progress.matched,
        "replayed": replayed,
        "skipped": skipped,
        "startTime": timestamp(started_at, precise=True),
        "completionTime": timestamp(now, precise=True),
        "observedGeneration": generation,
        "message": message,
        "conditions": _conditions(
            status.get("conditions"),
            [Condition(COMPLETE, TRUE, reason, message)],
            now,
            generation,
        ),
    }


def failed(
    status: Mapping[str, Any],
    reason: str,
    message: str,
    *,
    now: dt.datetime,
    started_at: dt.datetime | None,
    generation: int | None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The final status of a replay that cannot run (or cannot go on)."""
    body: dict[str, Any] = {
        "phase": Phase.FAILED.value,
        "startTime": timestamp(started_at or now, precise=True),
        "completionTime": timestamp(now, precise=True),
        "observedGeneration": generation,
        "message": message,
        "conditions": _conditions(
            status.get("conditions"),
            [Condition(COMPLETE, FALSE, reason, message), Condition(FAILED, TRUE, reason, message)],
            now,
            generation,
        ),
    }
    if progress is not None:
        body |= {
            "matched": progress.matched,
            "replayed": progress.replayed,
            "skipped": progress.skipped,
        }
    else:
        body |= {"matched": 0, "replayed": 0, "skipped": 0}
    return body


def waiting(
    status: Mapping[str, Any], message: str, *, now: dt.datetime, generation: int | None
) -> dict[str, Any]:
    """Status while the replay cannot start yet (PostgreSQL unreachable): Pending."""
    phase = phase_of(status) or Phase.PENDING
    return {
        "phase": phase.value,
        "observedGeneration": generation,
        "message": message,
        "conditions": _conditions(
            status.get("conditions"),
            [Condition(COMPLETE, UNKNOWN if phase is Phase.PENDING else FALSE, "Waiting", message)],
            now,
            generation,
        ),
    }


def started_at_of(status: Mapping[str, Any]) -> dt.datetime | None:
    return parse_timestamp(status.get("startTime"))
