"""``GET /v1/tracker`` and ``DELETE /v1/tracker``: the LRU tracker of this worker process
(recent jobs it saw, in memory), listed and cleared. Each replica has its own."""

from __future__ import annotations

from aiohttp import web

from herald_worker.api.context import ctx
from herald_worker.api.models import TrackerQuery


async def list_recent(request: web.Request, query: TrackerQuery) -> web.Response:
    tracker = ctx(request).tracker
    items = tracker.recent(query.limit, state=query.state, target=query.target)
    return web.json_response(
        {
            "size": len(tracker),
            "capacity": tracker.maxsize,
            "items": [s.to_json() for s in items],
        }
    )


async def clear(request: web.Request) -> web.Response:
    return web.json_response({"cleared": ctx(request).tracker.clear()})
