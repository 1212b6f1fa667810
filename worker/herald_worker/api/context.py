"""What the handlers share, stored on the aiohttp application."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from herald_queue.capacity import CapacityWatch
from herald_queue.queue import Queue
from herald_worker.api.models import Answer
from herald_worker.health import Health
from herald_worker.metrics import Metrics
from herald_worker.settings import WorkerSettings
from herald_worker.target_cache import TargetDirectory
from herald_worker.tracker import Tracker


@dataclasses.dataclass
class ApiContext:
    settings: WorkerSettings
    metrics: Metrics
    tracker: Tracker
    health: Health
    queue: Queue | None = None
    """None until the database has been reached (requests needing it get 503)."""
    directory: TargetDirectory | None = None
    """The worker's targets with their Secrets (None until the database is reached)."""
    capacity: CapacityWatch = dataclasses.field(default_factory=CapacityWatch)
    """The fill of the capacities, as last sampled (hard limits refuse submissions)."""


CONTEXT = web.AppKey("herald", ApiContext)


def ctx(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def reply(answer: Answer, status: int = 200) -> web.Response:
    """The response carrying ``answer`` (its model's JSON: what the document says)."""
    return web.json_response(answer.dump(), status=status)
