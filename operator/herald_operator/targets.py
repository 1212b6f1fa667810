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

import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import kopf

from herald_core.errors import TargetNotFound
from herald_delivery.target_types.webhook import signing_public_keys
from herald_operator import disabling, readiness
from herald_operator import status as target_status
from herald_operator.conditions import Condition, find, set_condition, transitioned
from herald_operator.runtime import DB_ERRORS, Runtime, counted, object_lock, runtime_of
from herald_queue.records import TargetRow

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


@dataclasses.dataclass(frozen=True)
class Announced:
    was: Mapping[str, Any] | None
    """The condition of that type last announced (or as read), if any."""
    news: bool
    """Its status changed: an Event is due."""


class Conditions:
    """One object's conditions during one handler run or timer tick.

    What is written is compared with the object's status *as read* (the truth: anyone may
    have overwritten it), never with what the operator remembers writing. One exception
    covers a write in flight: kopf writes a handler's patch only after the handler
    returns, so a timer tick that follows at once may still read the conditions that run
    read. While they are exactly those, the conditions that run wrote stand in for them
    (once: a tick that finds nothing to write forgets them, so a status overwritten back
    to the very same conditions is set right by the next tick).

    An Event is posted when a condition changes from the one last *announced* (kept in the
    per-object memo, seeded from the status after a restart): a status set right again is
    not news."""

    def __init__(self, status: Mapping[str, Any], patch: kopf.Patch, memo: Any) -> None:
        self._memo = memo
        read = readiness.plain(status.get("conditions") or [])
        self._as_read: list[dict[str, Any]] = [c for c in read if isinstance(c, dict)]
        base = self._as_read
        in_flight = memo.get("herald_in_flight")
        if isinstance(in_flight, InFlight) and in_flight.over == self._as_read:
            base = in_flight.conditions
        self._read = base
        self.items: list[dict[str, Any]] = [dict(c) for c in base]
        self._patch = patch
        announced = memo.get("herald_announced")
        if not isinstance(announced, dict):
            announced = memo["herald_announced"] = {}
        self._announced: dict[str, dict[str, Any]] = announced
        self._now = dt.datetime.now(dt.UTC)

    def find(self, kind: str) -> Mapping[str, Any] | None:
        """The condition of that type as read (or as a write in flight sets it)."""
        return find(self._read, kind)

    def set(self, condition: Condition, generation: int | None = None) -> Announced:
        """Set ``condition``; what was announced before, and whether this is news."""
        was = self._announced.get(condition.type) or find(self._read, condition.type)
        self.items = set_condition(self.items, condition, now=self._now, generation=generation)
        self._announced[condition.type] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
        }
        self._write()
        return Announced(was, transitioned([was] if was else None, condition))

    def remove(self, kind: str) -> None:
        self.items = [c for c in self.items if c.get("type") != kind]
        self._announced.pop(kind, None)
        self._write()

    def _write(self) -> None:
        if self.items != self._read:
            self._patch.status["conditions"] = self.items
            self._memo["herald_in_flight"] = InFlight(self._as_read, self.items)
        elif "conditions" not in self._patch.status:
            self._memo.pop("herald_in_flight", None)


@dataclasses.dataclass(frozen=True)
class InFlight:
    """Conditions written over ``over`` (the conditions read before), until read back."""

    over: list[dict[str, Any]]
    conditions: list[dict[str, Any]]


def _observe(status: Mapping[str, Any], patch: kopf.Patch, generation: int | None) -> None:
    """``observedGeneration``: this generation of the spec is handled (written when the
    status as read says otherwise)."""
    if generation is not None and status.get("observedGeneration") != generation:
        patch.status["observedGeneration"] = generation


def _set_ready(
    rt: Runtime,
    conditions: Conditions,
    *,
    body: kopf.Body,
    condition: Condition,
    generation: int | None,
    logger: Any,
) -> None:
    """Set the Ready condition; an Event on a transition."""
    announced = conditions.set(condition, generation)
    ref = f"{body.metadata.namespace}/{body.metadata.name}"
    rt.metrics.targets.set(ref, condition.status)
    if not announced.news:
        return
    if condition.status == "True":
        logger.info(f"target is ready: {condition.message}")
        kopf.info(body, reason="Ready", message=condition.message)
    else:
        was = announced.was
        logger.warning(f"target is not ready ({condition.reason}): {condition.message}")
        kopf.warn(
            body,
            reason=condition.reason,
            message=("no longer ready: " if was and was.get("status") == "True" else "")
            + condition.message,
        )


def _set_disabled(
    conditions: Conditions,
    *,
    body: kopf.Body,
    row: TargetRow,
    generation: int | None,
    logger: Any,
) -> None:
    """Set the Disabled condition (none for a target never disabled); an Event on a
    transition."""
    condition = disabling.condition(row, conditions.items)
    if condition is None:
        return
    if not conditions.set(condition, generation).news:
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
        conditions = Conditions(status, patch, memo)
        parsed = readiness.parse(body, rt.egress)
        condition = await _evaluate(rt, parsed, patch, status)
        if parsed.target is not None:
            try:
                result = await rt.queue.registry.apply(parsed.target)
            except DB_ERRORS as exc:
                down = readiness.database_unavailable(type(exc).__name__, rt.options.retry_delay)
                _set_ready(
                    rt, conditions, body=body, condition=down, generation=generation, logger=logger
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
            rt, conditions, body=body, condition=condition, generation=generation, logger=logger
        )
        patch.status["observedGeneration"] = generation


def _set_capacity(
    conditions: Conditions, condition: Condition | None, body: kopf.Body, logger: Any
) -> None:
    """Set the CapacityPressure condition (removed when the spec has no capacity); a
    Warning Event when the fill rises a level (80 %, 100 %), once per crossing."""
    if condition is None:
        if conditions.find(target_status.CAPACITY_CONDITION) is not None:
            conditions.remove(target_status.CAPACITY_CONDITION)
        return
    was = conditions.set(condition).was
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
        except DB_ERRORS:
            rt.metrics.refreshes.labels(result="retry").inc()
            return  # logged once by the snapshot; the next tick tries again
        conditions = Conditions(status, patch, memo)
        condition = await _evaluate(rt, parsed, patch, status)
        if row is None:  # an invalid spec, never registered: its problem is its status
            _set_ready(
                rt, conditions, body=body, condition=condition, generation=generation, logger=logger
            )
            _observe(status, patch, generation)
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
        if condition.reason != "SecretUnavailable" or conditions.find("Ready") is None:
            # An API hiccup while re-reading the Secret does not unsettle a known Ready.
            _set_ready(
                rt, conditions, body=body, condition=condition, generation=generation, logger=logger
            )
        # This generation is handled: registered in step with the spec (or, for an invalid
        # spec, its problem is reported just above).
        _observe(status, patch, generation)
        _set_disabled(conditions, body=body, row=row, generation=generation, logger=logger)
        ref = (namespace, name)
        dead = snapshot.dead_letters.get(ref, target_status.DeadLetters())
        live_depth = snapshot.depth.get(ref, target_status.Depth())
        live = target_status.render(row, live_depth, dead)
        previous_circuit = memo.get("herald_circuit") or status.get("circuit")
        for key, value in target_status.changed(status, live).items():
            patch.status[key] = value
        _set_capacity(conditions, target_status.capacity_condition(row, live_depth), body, logger)
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
