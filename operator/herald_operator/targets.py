"""PublishingTarget handlers: glue between kopf, the registry in PostgreSQL, the Secret and
the pure decisions of :mod:`readiness` and :mod:`status`.

- create / spec update / resume: check, register (upsert) the target, set Ready and
  observedGeneration;
- a timer (HERALD_STATUS_INTERVAL): re-read the Secret, keep the registration in step,
  write the live status (circuit, depth, counters) when it changed, post Events on
  transitions;
- delete (behind the herald.dev/finalizer finalizer): unregister; the registry moves the
  waiting jobs to the dead-letter queue with reason target-deleted (see docs/operator.md).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import kopf

from herald_operator import disabling, readiness
from herald_operator import status as target_status
from herald_operator.conditions import Condition, find, set_condition, transitioned
from herald_operator.runtime import DB_ERRORS, Runtime, counted, object_lock, runtime_of
from herald_queue.errors import TargetNotFound
from herald_queue.registry import TargetRow
from herald_queue.target_types.webhook import signing_public_keys

GROUP, VERSION, PLURAL = "herald.dev", "v1alpha1", "publishingtargets"
KIND = "PublishingTarget"


async def _evaluate(
    rt: Runtime, parsed: readiness.Parsed, patch: kopf.Patch, status: Mapping[str, Any]
) -> Condition:
    """The Ready condition; also publishes the Secret's signing public keys in the status
    (when the Secret was read and they changed)."""
    target = parsed.target
    if target is None:
        assert parsed.problem is not None
        return parsed.problem
    secret = None
    if target.spec.secret_name is not None:
        secret = await rt.kube.read_secret(target.namespace, target.spec.secret_name)
    if secret is None or secret.data is not None:
        data = secret.data if secret and secret.data and target.spec.type == "webhook" else {}
        keys = signing_public_keys(data)
        if list(status.get("signingPublicKeys") or []) != keys:
            patch.status["signingPublicKeys"] = keys
    return readiness.check(target, secret, rt.egress)


def _set_ready(
    rt: Runtime,
    *,
    body: kopf.Body,
    memo: Any,
    current: Mapping[str, Any],
    patch: kopf.Patch,
    condition: Condition,
    generation: int | None,
    logger: Any,
) -> None:
    """Write the Ready condition (when it changed) and post an Event on a transition.

    The per-object memo holds the conditions last written, fresher than the ``status``
    kopf passed in when a handler and the timer follow each other closely."""
    previous = memo.get("herald_conditions") or current.get("conditions")
    conditions = set_condition(
        previous, condition, now=dt.datetime.now(dt.UTC), generation=generation
    )
    if conditions != readiness.plain(previous):
        patch.status["conditions"] = conditions
    memo["herald_conditions"] = conditions
    ref = f"{body.metadata.namespace}/{body.metadata.name}"
    rt.metrics.targets.set(ref, condition.status)
    if not transitioned(previous, condition):
        return
    if condition.status == "True":
        logger.info(f"target is ready: {condition.message}")
        kopf.info(body, reason="Ready", message=condition.message)
    else:
        was = find(previous, condition.type)
        logger.warning(f"target is not ready ({condition.reason}): {condition.message}")
        kopf.warn(
            body,
            reason=condition.reason,
            message=("no longer ready: " if was and was.get("status") == "True" else "")
            + condition.message,
        )


def _set_disabled(
    *,
    body: kopf.Body,
    memo: Any,
    current: Mapping[str, Any],
    patch: kopf.Patch,
    row: TargetRow,
    generation: int | None,
    logger: Any,
) -> None:
    """Write the Disabled condition (when it changed) and post an Event on a transition."""
    previous = memo.get("herald_conditions") or current.get("conditions")
    condition = disabling.condition(row, previous)
    if condition is None:
        return
    conditions = set_condition(
        previous, condition, now=dt.datetime.now(dt.UTC), generation=generation
    )
    if conditions != readiness.plain(previous):
        patch.status["conditions"] = conditions
    memo["herald_conditions"] = conditions
    if not transitioned(previous, condition):
        return
    if condition.status == "True":
        logger.warning(f"target disabled: {condition.message}")
        kopf.warn(body, reason="Disabled", message=condition.message)
    else:
        logger.info("target enabled again")
        kopf.info(body, reason="Enabled", message="deliveries are enabled again")


@counted(KIND)
async def reconcile(
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Create, spec update, resume: register the target and set Ready."""
    rt = runtime_of(memo)
    generation = meta.get("generation")
    async with object_lock(memo):
        parsed = readiness.parse(body, rt.egress)
        condition = await _evaluate(rt, parsed, patch, status)
        if parsed.target is not None:
            try:
                result = await rt.queue.registry.apply(parsed.target)
            except DB_ERRORS as exc:
                down = readiness.database_unavailable(type(exc).__name__, rt.options.retry_delay)
                _set_ready(
                    rt,
                    body=body,
                    memo=memo,
                    current=status,
                    patch=patch,
                    condition=down,
                    generation=generation,
                    logger=logger,
                )
                raise kopf.TemporaryError(
                    f"cannot register the target: {exc}", delay=rt.options.retry_delay
                ) from None
            rt.snapshot.invalidate()
            logger.info(
                f"{'registered' if result.created else 'updated'} {result.ref} "
                f"(generation {parsed.target.generation})"
            )
        _set_ready(
            rt,
            body=body,
            memo=memo,
            current=status,
            patch=patch,
            condition=condition,
            generation=generation,
            logger=logger,
        )
        patch.status["observedGeneration"] = generation


def _set_capacity(
    memo: Any,
    current: Mapping[str, Any],
    patch: kopf.Patch,
    condition: Condition | None,
    body: kopf.Body,
    logger: Any,
) -> None:
    """Write the CapacityPressure condition when it changed (removed when the spec has no
    capacity); a Warning Event when the fill rises a level (80 %, 100 %), once per
    crossing."""
    previous = memo.get("herald_conditions") or current.get("conditions")
    was = find(previous, target_status.CAPACITY_CONDITION)
    if condition is None:
        if was is None:
            return
        conditions = [
            dict(c)
            for c in previous or ()
            if isinstance(c, Mapping) and c.get("type") != target_status.CAPACITY_CONDITION
        ]
    else:
        conditions = set_condition(previous, condition, now=dt.datetime.now(dt.UTC))
    if conditions != readiness.plain(previous):
        patch.status["conditions"] = conditions
    memo["herald_conditions"] = conditions
    if condition is None:
        return
    reasons = list(target_status.CAPACITY_REASONS.values())
    before = reasons.index(was["reason"]) if was and was.get("reason") in reasons else 0
    if reasons.index(condition.reason) > before:
        logger.warning(f"{condition.reason}: {condition.message}")
        kopf.warn(body, reason=condition.reason, message=condition.message)


async def refresh(
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """The status timer: what PostgreSQL and the Secret say now."""
    assert namespace is not None  # a namespaced resource
    if meta.get("deletionTimestamp"):
        return  # being deleted: never register it again
    rt = runtime_of(memo)
    generation = meta.get("generation")
    async with object_lock(memo):
        if memo.get("herald_unregistered"):
            return  # the delete handler ran while this tick waited for the lock
        try:
            snapshot = await rt.snapshot.refresh()
            parsed = readiness.parse(body, rt.egress)
            row = snapshot.targets.get((namespace, name))
            target = parsed.target
            if target is not None and (row is None or row.generation != target.generation):
                # Not registered yet (the timer may tick before the create handler runs; a
                # lost change; a restored database) or not in step with the spec: fix it.
                result = await rt.queue.registry.apply(target)
                rt.snapshot.invalidate()
                rows = await rt.queue.registry.list(namespace, name)
                row = rows[0] if rows else None
                logger.info(
                    f"{'registered' if result.created else 'brought in step'} {target.ref} "
                    f"(generation {target.generation})"
                )
                patch.status["observedGeneration"] = generation
        except DB_ERRORS:
            rt.metrics.refreshes.labels(result="retry").inc()
            return  # logged once by the snapshot; the next tick tries again
        condition = await _evaluate(rt, parsed, patch, status)
        if row is None:
            return
        if disabling.enable_requested(meta.get("annotations") or {}, row):
            try:
                await rt.queue.registry.enable(f"{namespace}/{name}")
                row = (await rt.queue.registry.list(namespace, name) or [row])[0]
            except DB_ERRORS:
                rt.metrics.refreshes.labels(result="retry").inc()
                return  # the next tick tries again
            rt.snapshot.invalidate()
            logger.info(f"enabled by the {disabling.ENABLE_ANNOTATION} annotation")
        known = find(memo.get("herald_conditions") or status.get("conditions"), "Ready")
        if condition.reason != "SecretUnavailable" or known is None:
            # An API hiccup while re-reading the Secret does not unsettle a known Ready.
            _set_ready(
                rt,
                body=body,
                memo=memo,
                current=status,
                patch=patch,
                condition=condition,
                generation=generation,
                logger=logger,
            )
        _set_disabled(
            body=body,
            memo=memo,
            current=status,
            patch=patch,
            row=row,
            generation=generation,
            logger=logger,
        )
        ref = (namespace, name)
        dead = snapshot.dead_letters.get(ref, target_status.DeadLetters())
        live_depth = snapshot.depth.get(ref, target_status.Depth())
        live = target_status.render(row, live_depth, dead)
        previous_circuit = memo.get("herald_circuit") or status.get("circuit")
        for key, value in target_status.changed(status, live).items():
            patch.status[key] = value
        _set_capacity(
            memo, status, patch, target_status.capacity_condition(row, live_depth), body, logger
        )
        memo["herald_circuit"] = live["circuit"]
        notice = memo.get("herald_dead_letter_notice") or target_status.DeadLetterNotice(
            # What the last status said (after a restart, letters written meanwhile count;
            # before the first refresh, every letter of the new target does).
            int(status.get("deadLettered") or 0)
        )
        dead_event, memo["herald_dead_letter_notice"] = target_status.dead_letter_event(
            notice,
            row,
            dead,
            now=time.monotonic(),
            interval=float(rt.settings.dead_letter_event_interval),
        )
        for event in (target_status.circuit_transition(previous_circuit, row), dead_event):
            if event is not None:
                logger.info(f"{event.reason}: {event.message}")
                kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    rt.metrics.refreshes.labels(result="success").inc()


@counted(KIND)
async def delete(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Unregister: waiting jobs go to the dead-letter queue (reason target-deleted), in
    the same transaction; deliveries in flight finish their attempt. Held by the finalizer
    until PostgreSQL has done it."""
    assert namespace is not None  # a namespaced resource
    rt = runtime_of(memo)
    ref = f"{namespace}/{name}"
    try:
        async with object_lock(memo):  # a status tick in progress finishes first
            result = await rt.queue.registry.delete(ref)
            memo["herald_unregistered"] = True
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
    kopf.info(body, reason="Unregistered", message=message)
