"""PublishingTarget handlers: glue between kopf, the registry in PostgreSQL, the Secret and
the pure decisions of :mod:`readiness` and :mod:`status`.

- create / spec update / resume: check, register (upsert) the target, set Ready and
  observedGeneration;
- a timer (HERALD_STATUS_INTERVAL): re-read the Secret, keep the registration in step,
  derive the whole status (conditions, observedGeneration, circuit, depth, counters) from
  the truth and write what differs from the status as read (so a status overwritten by
  anyone is set right within one interval), post Events on transitions;
- delete (behind the herald.dev/finalizer finalizer): unregister; the registry moves the
  waiting jobs to the dead-letter queue with reason target-deleted (see docs/operator.md).
"""

from __future__ import annotations

import time
from typing import Any

import kopf

from herald_core.errors import TargetNotFound
from herald_delivery.target_types.webhook import signing_public_keys
from herald_model.target_spec import PublishingTarget
from herald_operator import disabling, readiness
from herald_operator import status as target_status
from herald_operator.condition_writer import ConditionWriter
from herald_operator.conditions import Condition, Transition
from herald_operator.context import ObjectContext
from herald_operator.runtime import DB_ERRORS, QueueSnapshot, counted
from herald_queue.registry import TargetRow

GROUP, VERSION, PLURAL = "herald.dev", "v1alpha1", "publishingtargets"
KIND = "PublishingTarget"


@counted(KIND)
async def reconcile(**kwargs: Any) -> None:
    """Create, spec update, resume: register the target and set Ready."""
    ctx = ObjectContext.of(**kwargs)
    async with ctx.lock():
        conditions = ctx.conditions()
        parsed = readiness.parse(ctx.body, ctx.rt.egress)
        condition = await _evaluate(ctx, parsed)
        if parsed.target is not None:
            await _register(ctx, conditions, parsed.target)
        _set_ready(ctx, conditions, condition)
        ctx.patch.status["observedGeneration"] = ctx.generation


async def _register(
    ctx: ObjectContext, conditions: ConditionWriter, target: PublishingTarget
) -> None:
    """Register (upsert) the target; Ready=Unknown and a retry when PostgreSQL is down."""
    rt = ctx.rt
    try:
        result = await rt.queue.registry.apply(target)
    except DB_ERRORS as exc:
        down = readiness.database_unavailable(type(exc).__name__, rt.options.retry_delay)
        _set_ready(ctx, conditions, down)
        raise kopf.TemporaryError(
            f"cannot register the target: {exc}", delay=rt.options.retry_delay
        ) from None
    rt.snapshot.invalidate()
    ctx.logger.info(
        f"{'registered' if result.created else 'updated'} {result.ref} "
        f"(generation {target.generation})"
    )


async def _evaluate(ctx: ObjectContext, parsed: readiness.Parsed) -> Condition:
    """The Ready condition; also publishes the Secret's signing public keys in the status
    (when the Secret was read and they changed)."""
    target = parsed.target
    if target is None:
        assert parsed.problem is not None
        return parsed.problem
    secret = None
    if target.spec.secret_name is not None:
        secret = await ctx.rt.kube.read_secret(target.namespace, target.spec.secret_name)
    if secret is None or secret.data is not None:
        data = secret.data if secret and secret.data and target.spec.type == "webhook" else {}
        keys = signing_public_keys(data)
        if list(ctx.status.get("signingPublicKeys") or []) != keys:
            ctx.patch.status["signingPublicKeys"] = keys
    return readiness.check(target, secret, ctx.rt.egress)


def _set_ready(ctx: ObjectContext, conditions: ConditionWriter, condition: Condition) -> None:
    """Set the Ready condition (an Event on a transition) and the targets gauge."""
    conditions.set(condition, ctx.generation, readiness.notice)
    ctx.rt.metrics.targets.set(ctx.ref, condition.status)


def _observe(ctx: ObjectContext) -> None:
    """``observedGeneration``: this generation of the spec is handled (written when the
    status as read says otherwise)."""
    generation = ctx.generation
    if generation is not None and ctx.status.get("observedGeneration") != generation:
        ctx.patch.status["observedGeneration"] = generation


async def refresh(**kwargs: Any) -> None:
    """The status timer: what PostgreSQL and the Secret say now."""
    ctx = ObjectContext.of(**kwargs)
    if ctx.meta.get("deletionTimestamp"):
        return  # being deleted: never register it again
    async with ctx.lock():
        if ctx.memo.get("herald_unregistered"):
            return  # the delete handler ran while this tick waited for the lock
        refreshed = await _tick(ctx)
    if refreshed:
        ctx.rt.metrics.refreshes.labels(result="success").inc()


async def _tick(ctx: ObjectContext) -> bool:
    """One status refresh, under the object's lock; whether it went through."""
    try:
        snapshot = await ctx.rt.snapshot.refresh()
        parsed = readiness.parse(ctx.body, ctx.rt.egress)
        row = await _in_step(ctx, snapshot, parsed.target)
    except DB_ERRORS:
        return _retry(ctx)  # logged once by the snapshot; the next tick tries again
    conditions = ctx.conditions()
    condition = await _evaluate(ctx, parsed)
    if row is None:  # an invalid spec, never registered: its problem is its status
        _set_ready(ctx, conditions, condition)
        _observe(ctx)
        return False
    try:
        row = await _enable_if_asked(ctx, row)
    except DB_ERRORS:
        return _retry(ctx)  # the next tick tries again
    if condition.reason != "SecretUnavailable" or conditions.find(readiness.READY) is None:
        # An API hiccup while re-reading the Secret does not unsettle a known Ready.
        _set_ready(ctx, conditions, condition)
    # This generation is handled: registered in step with the spec (or, for an invalid
    # spec, its problem is reported just above).
    _observe(ctx)
    disabled = disabling.condition(row, conditions.items)
    if disabled is not None:  # none for a target never disabled
        conditions.set(disabled, ctx.generation, disabling.notice)
    _live_status(ctx, conditions, snapshot, row)
    return True


def _retry(ctx: ObjectContext) -> bool:
    ctx.rt.metrics.refreshes.labels(result="retry").inc()
    return False


async def _in_step(
    ctx: ObjectContext, snapshot: QueueSnapshot, target: PublishingTarget | None
) -> TargetRow | None:
    """The target's registry row, registered or brought in step with the spec first when
    it is not (the timer may tick before the create handler runs; a lost change; a restored
    database)."""
    row = snapshot.targets.get(ctx.key)
    if target is None or (row is not None and row.generation == target.generation):
        return row
    result = await ctx.rt.queue.registry.apply(target)
    ctx.rt.snapshot.invalidate()
    rows = await ctx.rt.queue.registry.list(ctx.namespace, ctx.name)
    ctx.logger.info(
        f"{'registered' if result.created else 'brought in step'} {target.ref} "
        f"(generation {target.generation})"
    )
    return rows[0] if rows else None


async def _enable_if_asked(ctx: ObjectContext, row: TargetRow) -> TargetRow:
    """Enable a disabled target when the herald.dev/enabled-at annotation asks to."""
    if not disabling.enable_requested(ctx.meta.get("annotations") or {}, row):
        return row
    registry = ctx.rt.queue.registry
    await registry.enable(ctx.ref)
    row = (await registry.list(ctx.namespace, ctx.name) or [row])[0]
    ctx.rt.snapshot.invalidate()
    ctx.logger.info(f"enabled by the {disabling.ENABLE_ANNOTATION} annotation")
    return row


def _live_status(
    ctx: ObjectContext, conditions: ConditionWriter, snapshot: QueueSnapshot, row: TargetRow
) -> None:
    """Circuit, depth, dead letters and counters where they differ from the status as
    read; CapacityPressure; the Events of the circuit and of new dead letters."""
    dead = snapshot.dead_letters.get(ctx.key, target_status.DeadLetters())
    depth = snapshot.depth.get(ctx.key, target_status.Depth())
    live = target_status.render(row, depth, dead)
    previous_circuit = ctx.memo.get("herald_circuit") or ctx.status.get("circuit")
    for key, value in target_status.changed(ctx.status, live).items():
        ctx.patch.status[key] = value
    capacity = target_status.capacity_condition(row, depth)
    conditions.put(target_status.CAPACITY_CONDITION, capacity, target_status.capacity_notice)
    ctx.memo["herald_circuit"] = live["circuit"]
    dead_event = _dead_letter_event(ctx, row, dead)
    for event in (target_status.circuit_transition(previous_circuit, row), dead_event):
        if event is not None:
            ctx.post(event)


def _dead_letter_event(
    ctx: ObjectContext, row: TargetRow, dead: target_status.DeadLetters
) -> Transition | None:
    """The Warning for jobs dead-lettered since the last one (at most one per
    HERALD_DEAD_LETTER_EVENT_INTERVAL)."""
    notice = ctx.memo.get("herald_dead_letter_notice") or target_status.DeadLetterNotice(
        # What the last status said (after a restart, letters written meanwhile count;
        # before the first refresh, every letter of the new target does).
        int(ctx.status.get("deadLettered") or 0)
    )
    event, ctx.memo["herald_dead_letter_notice"] = target_status.dead_letter_event(
        notice,
        row,
        dead,
        now=time.monotonic(),
        interval=float(ctx.rt.settings.dead_letter_event_interval),
    )
    return event


@counted(KIND)
async def delete(**kwargs: Any) -> None:
    """Unregister: waiting jobs go to the dead-letter queue (reason target-deleted), in
    the same transaction; deliveries in flight finish their attempt. Held by the finalizer
    until PostgreSQL has done it."""
    ctx = ObjectContext.of(**kwargs)
    rt, ref, logger = ctx.rt, ctx.ref, ctx.logger
    try:
        async with ctx.lock():  # a status tick in progress finishes first
            result = await rt.queue.registry.delete(ref)
            ctx.memo["herald_unregistered"] = True
    except TargetNotFound:
        logger.info(f"{ref} was not registered; nothing to remove")
        rt.metrics.targets.forget(ref)
        return
    except DB_ERRORS as exc:
        raise kopf.TemporaryError(
            f"cannot unregister {ref} (PostgreSQL: {exc}); the deletion waits until it can",
            delay=rt.options.retry_delay,
        ) from None
    rt.snapshot.invalidate()
    rt.metrics.targets.forget(ref)
    message = f"unregistered {ref}"
    if result.dead_lettered:
        message += (
            f"; moved {result.dead_lettered} waiting job(s) to the dead-letter queue with "
            "reason target-deleted (replay them to a recreated target with a "
            "DeadLetterReplay)"
        )
    else:
        message += "; no job was waiting"
    if result.running:
        message += (
            f"; {result.running} delivery(ies) in flight finish their attempt (a failure goes "
            "to the dead-letter queue)"
        )
    logger.info(message)
    kopf.info(ctx.body, reason="Unregistered", message=message)
