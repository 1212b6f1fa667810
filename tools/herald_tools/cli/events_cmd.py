"""``herald events send``: publish one event, as ``POST /v1/events`` does: one job per
PublishingTarget of the namespace subscribed to its type whose filter it passes, written in
one transaction, idempotently by event id (docs/events.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from herald_core.errors import InvalidRequest
from herald_core.ids import uuid7
from herald_model.submission import RawPayload, check_depth, parse_event
from herald_tools.cli.context import open_queue, queue_settings
from herald_tools.cli.enqueue_cmd import _payload_text
from herald_tools.cli.output import emit_json

FLAGS = {
    "id": "--id",
    "type": "--type",
    "namespace": "--namespace",
    "payload": "--payload",
    "priority": "--priority",
    "orderingKey": "--ordering-key",
    "runAt": "--run-at",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    send = sub.add_parser(
        "send",
        help="publish an event: one job per subscribed target of its namespace",
    )
    send.add_argument("--type", required=True, help="the event type, e.g. incident.opened")
    send.add_argument(
        "--payload", required=True, help="the payload as JSON, or @FILE to read it from a file"
    )
    send.add_argument(
        "--id", help="the event id: sending it again never gives a target a second job"
    )
    send.add_argument("--namespace", help="whose targets receive it (default HERALD_NAMESPACE)")
    send.add_argument("--priority", default="medium", help="high, medium (default) or low")
    send.add_argument("--ordering-key", help="each target's jobs sharing it go in order")
    send.add_argument("--run-at", help="not before this RFC 3339 time")
    send.add_argument("--json", action="store_true", help="machine-readable output")


async def run(args: argparse.Namespace) -> int:
    from herald_worker.api import models
    from herald_worker.api.events import matching, subscribed

    settings = queue_settings()
    max_bytes, max_depth = settings.max_payload_bytes, settings.max_payload_depth
    text = _payload_text(args.payload, max_bytes)
    check_depth(text, max_depth, "--payload")
    try:
        payload = RawPayload(text.strip(" \t\r\n"), json.loads(text))
    except json.JSONDecodeError as exc:
        raise InvalidRequest("--payload", f"is not valid JSON: {exc}") from None
    body: dict[str, Any] = {"type": args.type, "payload": payload, "priority": args.priority}
    for flag, field in (
        ("id", "id"),
        ("namespace", "namespace"),
        ("ordering_key", "orderingKey"),
        ("run_at", "runAt"),
    ):
        if getattr(args, flag) is not None:
            body[field] = getattr(args, flag)
    try:
        event = parse_event(body, max_payload_bytes=max_bytes, max_payload_depth=max_depth)
    except InvalidRequest as exc:
        raise InvalidRequest(FLAGS.get(exc.field or "", exc.field), exc.problem) from None
    event_id = event.id or str(uuid7())
    async with open_queue() as queue:
        namespace = event.namespace or queue.registry.default_namespace
        rows = subscribed(await queue.registry.list(namespace), event.type)
        targets = await matching(rows, event, event_id=event_id, namespace=namespace)
        jobs = [event.job(event_id, t.ref) for t in targets]
        results = await queue.jobs.enqueue_many(jobs)
    accepted = [models.JobAccepted.from_record(r) for r in results]
    created = sum(1 for r in results if r.created)
    if args.json:
        emit_json(
            models.EventAccepted.of(
                id=event_id,
                type=event.type,
                namespace=namespace,
                jobs=accepted,
                created=created,
                duplicates=len(results) - created,
            ).dump()
        )
        return 0
    if not results:
        print(f"event {event_id} ({event.type}): no target in {namespace} subscribes to it")
        return 0
    for r in results:
        print(f"{r.id} {r.state.value} -> {r.target}" + ("" if r.created else " (duplicate)"))
    print(f"event {event_id}: {created} jobs created, {len(results) - created} duplicates")
    return 0
