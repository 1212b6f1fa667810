"""``GET /v1/tracker`` and ``DELETE /v1/tracker``: the LRU tracker of this worker process
(recent jobs it saw, in memory), listed and cleared. Each replica has its own."""

from __future__ import annotations

from aiohttp import web

from herald_worker.api import params
from herald_worker.api.context import ctx


async def list_recent(request: web.Request) -> web.Response:
    tracker = ctx(request).tracker
    items = tracker.recent(
        params.limit(request, 100, 1000),
        state=params.state(request),
        target=params.target(request),
    )
    return web.json_response(
        {
            "size": len(tracker),
            "capacity": tracker.maxsize,
            "items": [s.to_json() for s in items],
        }
    )


async def clear(request: web.Request) -> web.Response:
    return web.json_response({"cleared": ctx(request).tracker.clear()})
