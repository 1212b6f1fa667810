"""Events: ``POST /v1/events`` and the Alertmanager fan-out route. An event becomes one job
per PublishingTarget of its namespace that subscribes to its type and whose filter it
passes (spec.subscriptions, ``herald_model.events``); the jobs are written in one
transaction (all or none) under the capacity rules of ``POST /v1/jobs``, each with the
idempotency key ``event:<id>``, so a resent event gives the same jobs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from herald_core.errors import InvalidRequest, Overloaded, PayloadTooLarge, QueueFull
from herald_core.ids import uuid7
from herald_model import events
from herald_model.submission import EventRequest, decode_submission, parse_event
from herald_queue.records import TargetRow
from herald_worker import alertmanager
from herald_worker.api import models
from herald_worker.api.access import authorize_publish
from herald_worker.api.context import reply
from herald_worker.api.errors import error_response, read_json
from herald_worker.api.jobs import enqueue, need_queue

if TYPE_CHECKING:
    from herald_model.event_filter import Filter

MATCH_TIMEOUT = 30.0
"""Seconds the filters of one event may take (their cost is bounded: events.MATCH_BUDGET)."""


async def publish(request: web.Request) -> web.Response:
    """202 when a job was created; 200 when none was (a resend, or no target matched)."""
    body = await read_json(request, decode_submission)  # the payload kept as sent
    settings = need_queue(request).settings
    event = parse_event(
        body,
        max_payload_bytes=settings.max_payload_bytes,
        max_payload_depth=settings.max_payload_depth,
    )
    answer = await fan_out(request, event)
    created = answer.created > 0
    return reply(answer, status=202 if created else 200)


async def fan_out(request: web.Request, event: EventRequest) -> models.EventAccepted:
    queue = need_queue(request)
    event_id = event.id or str(uuid7())
    namespace = event.namespace or queue.registry.default_namespace
    rows = subscribed(await queue.registry.in_namespace(namespace), event.type)
    # In Kubernetes mode the caller must be allowed to publish to every target subscribed
    # to the type, checked before any filter runs: a caller who may not publish here spends
    # no filter's CPU, and learns nothing from which targets a filter would pick.
    await authorize_publish(request, [row.ref for row in rows])
    targets = await matching(rows, event, event_id=event_id, namespace=namespace)
    jobs = [event.job(event_id, t.ref) for t in targets]
    results = await enqueue(request, jobs) if jobs else []
    created = sum(1 for r in results if not r.duplicate)
    return models.EventAccepted.of(
        id=event_id,
        type=event.type,
        namespace=namespace,
        jobs=results,
        created=created,
        duplicates=len(results) - created,
    )


async def matching(
    rows: Sequence[TargetRow], event: EventRequest, *, event_id: str, namespace: str
) -> list[TargetRow]:
    """The targets of ``rows`` (those :func:`subscribed` to the event's type) whose filters
    the event passes. Filters run in a thread (the API keeps answering), within a bounded
    cost."""
    filters = {row.id: f for row in rows if (f := _filter_of(row)) is not None}
    if not filters:
        return list(rows)
    payload = json.loads(event.payload_json)
    values = events.payload_values(payload, events.MATCH_BUDGET)
    cost = events.cost(filters.values(), values)
    if cost > events.MATCH_BUDGET:
        held = str(values) if values <= events.MATCH_BUDGET else f"more than {values - 1}"
        raise PayloadTooLarge(
            "payload",
            f"holds {held} JSON values: too many for the filters of the {len(filters)} "
            "subscribed targets "
            f"(estimated cost {cost}, at most {events.MATCH_BUDGET}: the values times one "
            "plus the filters' comprehensions). Send a smaller payload, or narrow the "
            "targets' eventTypes",
        )
    view = events.event_view(
        event_id=event_id,
        event_type=event.type,
        namespace=namespace,
        priority=event.priority.value,
        payload=payload,
    )
    try:
        async with asyncio.timeout(MATCH_TIMEOUT):
            passed = await asyncio.to_thread(_passing, filters, view)
    except TimeoutError:
        raise Overloaded(
            f"the filters of the targets subscribed to {event.type!r} did not finish within "
            f"{MATCH_TIMEOUT:g} s (the worker is overloaded); nothing was written"
        ) from None
    return [row for row in rows if row.id not in filters or row.id in passed]


def subscribed(rows: Sequence[TargetRow], event_type: str) -> list[TargetRow]:
    """The targets of ``rows`` that subscribe to ``event_type`` (before their filters)."""
    return [
        row
        for row in rows
        if row.spec.subscriptions is not None
        and events.any_type_matches(row.spec.subscriptions.event_types, event_type)
    ]


def _filter_of(row: TargetRow) -> Filter | None:
    subscriptions = row.spec.subscriptions
    if subscriptions is None or subscriptions.filter is None:
        return None
    return events.compile_filter(subscriptions.filter)


def _passing(filters: Mapping[int, Filter], view: dict[str, Any]) -> set[int]:
    """The ids of ``filters`` (target id to filter) that ``view`` passes."""
    try:
        converted = events.to_cel(view)  # once for all the filters
    except ValueError:  # cel-python's integers are 64-bit
        raise InvalidRequest(
            "payload",
            "holds an integer outside CEL's 64-bit range, which the filters of the subscribed "
            "targets cannot read: send it as a string",
        ) from None
    return {target_id for target_id, f in filters.items() if f.matches_cel(converted)}


async def alertmanager_events(
    request: web.Request, path: models.AlertmanagerEventsPath
) -> web.Response:
    """An Alertmanager notification fanned out: each alert becomes an event of type
    ``alertmanager.alert.firing`` or ``alertmanager.alert.resolved``."""
    body = await read_json(request)
    settings = need_queue(request).settings
    jobs = alertmanager.jobs_from_message(
        body,
        "",
        max_payload_bytes=settings.max_payload_bytes,
        max_payload_depth=settings.max_payload_depth,
    )
    answers = []
    try:
        for job in jobs:
            status = json.loads(job.payload_json)["status"]
            event = EventRequest(
                id=job.idempotency_key,
                type=f"alertmanager.alert.{status}",
                namespace=path.namespace,
                payload_json=job.payload_json,
                priority=job.priority,
                ordering_key=job.ordering_key,
                key_reuse_checked=False,  # as the per-target receiver: a resend is a duplicate
            )
            answers.append(await fan_out(request, event))
    except QueueFull as exc:
        # 503, not 429: Alertmanager retries a notification on 5xx, not on every 4xx.
        return error_response(503, str(exc), "target", headers={"Retry-After": exc.retry_after})
    created = sum(a.created for a in answers)
    duplicates = sum(a.duplicates for a in answers)
    return reply(
        models.AlertmanagerEventsAccepted.of(
            events=answers, created=created, duplicates=duplicates
        ),
        status=202 if created else 200,
    )
