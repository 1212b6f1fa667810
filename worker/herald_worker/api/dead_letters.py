"""Dead letters: list, show, replay (one, or a filtered set), purge by age, statistics."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from herald_queue.dead_letters import DeadLetterFilter, one_off_tag
from herald_queue.errors import AlreadyReplayed, InvalidRequest, TargetsMissing
from herald_queue.requests import TARGET_PATTERN, json_integer, parse_priority, parse_time
from herald_worker.api import params
from herald_worker.api.context import ctx
from herald_worker.api.errors import read_json
from herald_worker.api.jobs import need_queue

TARGET = re.compile(TARGET_PATTERN)
SELECTOR_FIELDS = (
    "target",
    "errorClass",
    "priority",
    "failedAfter",
    "failedBefore",
    "ids",
    "jobIds",
)
REPLAY_FIELDS = (*SELECTOR_FIELDS, "all", "limit", "dryRun")


def _filter(request: web.Request) -> DeadLetterFilter:
    return DeadLetterFilter(
        target=params.target(request),
        error_class=params.error_class(params.optional(request, "errorClass")),
        priority=params.priority(request),
        failed_after=params.time(request, "failedAfter"),
        failed_before=params.time(request, "failedBefore"),
        replayed=params.boolean(params.optional(request, "replayed"), "replayed"),
    )


async def list_entries(request: web.Request) -> web.Response:
    ctx(request).metrics.dead_letter_reads.labels("list").inc()
    page = await need_queue(request).dead_letters.list(
        _filter(request),
        limit=params.limit(request, 100, 1000),
        cursor=params.optional(request, "cursor"),
    )
    return web.json_response(
        {
            "items": [d.to_json(with_payload=False) for d in page.items],
            "nextCursor": page.next_cursor,
        }
    )


async def get_entry(request: web.Request) -> web.Response:
    entry_id = params.entry_id(request.match_info["id"])
    ctx(request).metrics.dead_letter_reads.labels("show").inc()
    entry = await need_queue(request).dead_letters.get(entry_id)
    if entry is None:
        return web.json_response(
            {"error": {"status": 404, "field": "id", "message": f"no dead letter {entry_id}"}},
            status=404,
        )
    return web.json_response(entry.to_json())


async def replay_one(request: web.Request) -> web.Response:
    entry_id = params.entry_id(request.match_info["id"])
    store = need_queue(request).dead_letters
    entry = await store.get(entry_id)
    if entry is None:
        return web.json_response(
            {"error": {"status": 404, "field": "id", "message": f"no dead letter {entry_id}"}},
            status=404,
        )
    result = await store.replay(
        DeadLetterFilter(ids=(entry_id,)), limit=1, replayed_by=one_off_tag("api")
    )
    if result.matched == 0:
        return web.json_response(
            {
                "error": {
                    "status": 409,
                    "field": "id",
                    "message": str(AlreadyReplayed([str(entry_id)])),
                }
            },
            status=409,
        )
    if result.skipped:
        raise TargetsMissing([entry.to_json()["target"]])
    return web.json_response(result.to_json())


async def replay_many(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object (a selector)")
    unknown = sorted(set(body) - set(REPLAY_FIELDS))
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field (accepted: {', '.join(REPLAY_FIELDS)})")
    nulls = sorted(name for name, value in body.items() if value is None)
    if nulls:
        raise InvalidRequest(nulls[0], "is null: give a value, or leave the field out")
    selector = _selector(body)
    given = body.get("limit", 1000)
    limit = json_integer(given)
    if limit is None or not 1 <= limit <= 1_000_000:
        raise InvalidRequest("limit", f"must be an integer from 1 to 1000000, got {given!r}")
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise InvalidRequest("dryRun", "must be true or false")
    everything = body.get("all", False)
    if not isinstance(everything, bool):
        raise InvalidRequest("all", "must be true or false")
    if not everything and all(body.get(name) is None for name in SELECTOR_FIELDS):
        # An empty selector matches every dead letter: too much to do by accident (the
        # CLI asks for --all likewise).
        raise InvalidRequest(
            "all",
            "the selector is empty, which would replay every dead letter: pass "
            f'"all": true to mean that, or a selector ({", ".join(SELECTOR_FIELDS)})',
        )
    store = need_queue(request).dead_letters
    result = await store.replay(
        selector, limit=limit, dry_run=dry_run, replayed_by=one_off_tag("api")
    )
    if not dry_run and result.replayed == 0 and (selector.ids or selector.job_ids):
        # Named by id and none replayed: 404 or 409, as for one (and as the CLI).
        await store.explain_nothing_replayed(selector.ids or (), selector.job_ids or (), result)
    return web.json_response(result.to_json())


def _selector(body: dict[str, Any]) -> DeadLetterFilter:
    def ids(name: str) -> tuple[Any, ...] | None:
        value = body.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidRequest(name, "must be a list of ids")
        if not value:
            raise InvalidRequest(name, "is empty; list at least one id, or leave it out")
        check = params.entry_id if name == "ids" else params.job_id
        return tuple(check(v, name) for v in value)

    def time(name: str) -> Any:
        value = body.get(name)
        return None if value is None else parse_time(value, name)

    target = body.get("target")
    if target is not None and (not isinstance(target, str) or not TARGET.match(target)):
        raise InvalidRequest("target", f"{target!r} is not a target name or namespace/name")
    return DeadLetterFilter(
        target=target,
        error_class=params.error_class(body.get("errorClass")),
        priority=None if body.get("priority") is None else parse_priority(body["priority"]),
        failed_after=time("failedAfter"),
        failed_before=time("failedBefore"),
        ids=ids("ids"),
        job_ids=ids("jobIds"),
    )


async def purge(request: web.Request) -> web.Response:
    older_than = params.duration(params.optional(request, "olderThan"), "olderThan")
    if older_than is None:
        raise InvalidRequest("olderThan", "is required, e.g. olderThan=30d")
    dry_run = params.boolean(params.optional(request, "dryRun"), "dryRun") or False
    result = await need_queue(request).dead_letters.purge(
        older_than, target=params.target(request), dry_run=dry_run
    )
    return web.json_response(result.to_json())


async def stats(request: web.Request) -> web.Response:
    ctx(request).metrics.dead_letter_reads.labels("stats").inc()
    return web.json_response(await need_queue(request).dead_letters.stats())
