"""``GET /v1/tracker`` and ``DELETE /v1/tracker``: the LRU tracker of this worker process
(recent jobs it saw, in memory), listed and cleared. Each replica has its own."""

from __future__ import annotations

from aiohttp import web

from herald_worker.api.context import ctx, reply
from herald_worker.api.models import TrackerPage, TrackerQuery


async def list_recent(request: web.Request, query: TrackerQuery) -> web.Response:
    tracker = ctx(request).tracker
    items = tracker.recent(query.limit, state=query.state, target=query.target)
    return reply(TrackerPage.from_snapshots(items, size=len(tracker), capacity=tracker.maxsize))


async def clear(request: web.Request) -> web.Response:
    return web.json_response({"cleared": ctx(request).tracker.clear()})
