"""DeadLetterReplay handler: glue between kopf, the dead-letter store and the pure
decisions of :mod:`replay`.

One handler for create and resume. It never runs a finished replay again (status.phase
Succeeded or Failed); otherwise it records ``startTime`` (PostgreSQL's clock) and
``matched`` with phase Running *before* it replays anything, then replays in batches of
HERALD_REPLAY_BATCH, each one transaction that tags its dead letters with the replay's
uid, and writes the progress to ``/status`` between batches. After a restart (or an
outage) it reads startTime and matched back from the status and counts what is already
done from PostgreSQL, so nothing is queued twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import kopf

from herald_operator import replay_decisions as replay
from herald_operator.conditions import parse_timestamp
from herald_operator.context import ObjectContext
from herald_operator.kube import KubeError
from herald_operator.replay_decisions import InvalidSelection, Phase, Progress, Selection
from herald_operator.runtime import DB_ERRORS, counted

GROUP, VERSION, PLURAL = "herald.dev", "v1alpha1", "deadletterreplays"
KIND = "DeadLetterReplay"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _write(ctx: ObjectContext, status: dict[str, Any]) -> bool:
    """Progress, written now (kopf writes a handler's patch only when it returns)."""
    return await ctx.rt.kube.patch_status(GROUP, VERSION, PLURAL, ctx.namespace, ctx.name, status)


@counted(KIND)
async def run(**kwargs: Any) -> None:
    ctx = ObjectContext.of(**kwargs)
    rt, status = ctx.rt, ctx.status
    phase = replay.phase_of(status)
    if phase is not None and phase.finished:
        ctx.logger.info(f"replay is {phase.value}; a finished replay never runs again")
        return
    started_at = replay.started_at_of(status)
    try:
        if started_at is None:
            started_at = await rt.database_now()
        try:
            selection = replay.select(ctx.spec, ctx.namespace, started_at)
        except InvalidSelection as exc:
            _fail(ctx, "InvalidSelector", str(exc), started_at)
            return
        if selection.target is not None and not await _target_found(
            ctx, selection.target, phase, started_at
        ):
            return
        await _replay(ctx, selection, started_at, resuming=phase is Phase.RUNNING)
    except DB_ERRORS as exc:
        message = f"waiting for PostgreSQL ({type(exc).__name__}); retrying"
        ctx.patch.status.update(
            replay.waiting(status, message, now=_now(), generation=ctx.generation)
        )
        raise kopf.TemporaryError(
            f"PostgreSQL is unreachable: {exc}", delay=rt.options.retry_delay
        ) from None
    except KubeError as exc:  # progress could not be written: resume from PostgreSQL later
        raise kopf.TemporaryError(str(exc), delay=rt.options.retry_delay) from None


async def _target_found(
    ctx: ObjectContext, target: str, phase: Phase | None, started_at: dt.datetime
) -> bool:
    """Whether the PublishingTarget the spec names is registered; a replay created before
    its target waits for it a while (kopf.TemporaryError), then fails."""
    rt, namespace = ctx.rt, ctx.namespace
    if await rt.queue.registry.list(namespace, target):
        return True
    waited = _age(ctx.meta, started_at)
    if phase is not Phase.RUNNING and waited < rt.settings.replay_target_wait:
        # Created before its target (`kubectl apply -f dir/` goes by file name):
        # wait for the target to be registered rather than fail for good.
        wait = float(rt.settings.replay_target_wait)
        message = (
            f"PublishingTarget {namespace}/{target} does not exist yet; "
            f"waiting up to {wait:.0f} s for it (then the replay fails)"
        )
        ctx.patch.status.update(
            replay.waiting(ctx.status, message, now=_now(), generation=ctx.generation)
        )
        raise kopf.TemporaryError(message, delay=min(2.0, rt.options.retry_delay))
    _fail(
        ctx,
        "TargetNotFound",
        f"PublishingTarget {namespace}/{target} does not exist (it is not "
        "registered with Herald): nothing was replayed. Create the target, then "
        "create a new DeadLetterReplay.",
        started_at,
        progress=_progress_of(ctx.status) if phase is Phase.RUNNING else None,
    )
    return False


def _age(meta: kopf.Meta, now: dt.datetime) -> float:
    """Seconds since the object was created (0 when the API did not say)."""
    created = parse_timestamp(meta.get("creationTimestamp"))
    return 0.0 if created is None else max(0.0, (now - created).total_seconds())


def _progress_of(status: Any) -> Progress:
    return Progress(
        matched=int(status.get("matched") or 0),
        replayed=int(status.get("replayed") or 0),
        skipped=int(status.get("skipped") or 0),
    )


def _fail(
    ctx: ObjectContext,
    reason: str,
    message: str,
    started_at: dt.datetime | None,
    *,
    progress: Progress | None = None,
) -> None:
    ctx.patch.status.update(
        replay.failed(
            ctx.status,
            reason,
            message,
            now=_now(),
            started_at=started_at,
            generation=ctx.generation,
            progress=progress,
        )
    )
    kopf.warn(ctx.body, reason="ReplayFailed", message=message)
    ctx.rt.metrics.replays.labels(outcome="failed").inc()


async def _replay(
    ctx: ObjectContext, selection: Selection, started_at: dt.datetime, *, resuming: bool
) -> None:
    rt, status, logger, generation = ctx.rt, ctx.status, ctx.logger, ctx.generation
    store = rt.queue.dead_letters
    tag = replay.replayed_by(ctx.namespace, ctx.name, ctx.uid)
    missing = cancelled = 0
    if resuming:
        matched = int(status.get("matched") or 0)
    elif selection.empty:
        matched = 0
    else:
        counted = await store.replay(selection.filter, limit=selection.limit, dry_run=True)
        matched, missing = counted.matched, counted.skipped
        cancelled = counted.cancelled_left_out
    if selection.dry_run:
        final = replay.succeeded(
            status,
            Progress(matched),
            selection,
            now=_now(),
            started_at=started_at,
            generation=generation,
            target_missing=missing,
            cancelled_left_out=cancelled,
        )
        ctx.patch.status.update(final)
        logger.info(final["message"])
        kopf.info(ctx.body, reason="DryRunCompleted", message=final["message"])
        rt.metrics.replays.labels(outcome="dry_run").inc()
        return
    done_replayed, done_skipped = await store.replay_counts(tag)
    progress = Progress(matched, done_replayed, done_skipped)
    if resuming:
        logger.info(f"resuming: {progress.done} of {matched} dead letter(s) already handled")
    elif matched:
        kopf.info(
            ctx.body,
            reason="ReplayStarted",
            message=f"replaying {matched} dead letter(s): {selection.describe()}",
        )

    state = dict(status)  # the status as last written (its conditions keep their times)

    async def write_progress() -> bool:
        written = replay.running(
            state, progress, selection, now=_now(), started_at=started_at, generation=generation
        )
        state.update(written)
        return await _write(ctx, written)

    # startTime and matched are stored before anything is replayed: a resume needs both.
    if matched and not await write_progress():
        return  # deleted meanwhile
    left = replay.remaining(selection, progress) if matched else 0
    batch_size = rt.settings.replay_batch
    while left > 0:
        size = min(batch_size, left)
        result = await store.replay_batch(selection.filter, limit=size, replayed_by=tag)
        progress = Progress(
            matched, progress.replayed + result.replayed, progress.skipped + result.skipped
        )
        rt.metrics.replayed.inc(result.replayed)
        left -= result.matched
        if result.matched < size:
            break
        if left > 0 and not await write_progress():
            logger.info("the DeadLetterReplay was deleted; stopping")
            return
    final = replay.succeeded(
        state,
        progress,
        selection,
        now=_now(),
        started_at=started_at,
        generation=generation,
        cancelled_left_out=cancelled,
    )
    ctx.patch.status.update(final)
    logger.info(final["message"])
    kopf.info(ctx.body, reason="ReplaySucceeded", message=final["message"])
    rt.metrics.replays.labels(outcome="succeeded").inc()
