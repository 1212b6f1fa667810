"""Dead letters: list, show, replay (one, or a filtered set), purge by age, statistics."""

from __future__ import annotations

from aiohttp import web

from herald_core.errors import AlreadyReplayed, TargetsMissing
from herald_queue.dead_letters import DeadLetterFilter, one_off_tag
from herald_worker.api import models
from herald_worker.api.context import ctx, reply
from herald_worker.api.jobs import need_queue
from herald_worker.api.models import DeadLetterPath, DeadLettersQuery, PurgeQuery, ReplaySelector

HISTORY_PAGE = 100
"""Attempts shown with one dead letter (the first page of its job's attempts)."""


async def list_entries(request: web.Request, query: DeadLettersQuery) -> web.Response:
    ctx(request).metrics.dead_letter_reads.labels("list").inc()
    page = await need_queue(request).dead_letters.list(
        query.selector(), limit=query.limit, cursor=query.cursor
    )
    return reply(models.DeadLetterPage.from_record(page, with_payload=False))


async def get_entry(request: web.Request, path: DeadLetterPath) -> web.Response:
    entry_id = path.id
    ctx(request).metrics.dead_letter_reads.labels("show").inc()
    entry = await need_queue(request).dead_letters.get(entry_id)
    if entry is None:
        return web.json_response(
            {"error": {"status": 404, "field": "id", "message": f"no dead letter {entry_id}"}},
            status=404,
        )
    history = await need_queue(request).attempts.page(entry.job_id, limit=HISTORY_PAGE)
    return reply(models.DeadLetter.from_record(entry, history=history))


async def replay_one(request: web.Request, path: DeadLetterPath) -> web.Response:
    entry_id = path.id
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
        raise TargetsMissing([entry.target])
    return reply(models.ReplayResult.from_record(result))


async def replay_many(request: web.Request, body: ReplaySelector) -> web.Response:
    selector = body.selector()
    store = need_queue(request).dead_letters
    result = await store.replay(
        selector, limit=body.limit, dry_run=body.dry_run, replayed_by=one_off_tag("api")
    )
    if not body.dry_run and result.replayed == 0 and (selector.ids or selector.job_ids):
        # Named by id and none replayed: 404 or 409, as for one (and as the CLI).
        await store.explain_nothing_replayed(selector.ids or (), selector.job_ids or (), result)
    return reply(models.ReplayResult.from_record(result))


async def purge(request: web.Request, query: PurgeQuery) -> web.Response:
    result = await need_queue(request).dead_letters.purge(
        query.seconds, target=query.target, dry_run=query.dry_run
    )
    return reply(models.Purged.from_record(result))


async def stats(request: web.Request) -> web.Response:
    ctx(request).metrics.dead_letter_reads.labels("stats").inc()
    return reply(models.DeadLetterStats.from_record(await need_queue(request).dead_letters.stats()))
