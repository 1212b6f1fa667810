"""Leases: every job this worker holds (delivering, or waiting to be settled) has its lease
extended every third of the lease, so no other worker takes it. A lease lost meanwhile (a
database away for longer than the lease) means another worker may deliver the job again:
at-least-once, never lost."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Container, Mapping

from herald_queue.queue import Queue
from herald_queue.records import ClaimedJob
from herald_worker.health import Health
from herald_worker.supervision import DB_ERRORS
from herald_worker.tracker import Tracker

log = logging.getLogger("herald.worker")


async def renew_forever(
    queue: Queue,
    worker: str,
    held: Mapping[uuid.UUID, ClaimedJob],
    delivering: Container[uuid.UUID],
    *,
    tracker: Tracker,
    health: Health,
) -> None:
    """Side task: extend the leases of the jobs ``held``, every third of the lease."""
    interval = queue.settings.lease / 3
    while True:
        await asyncio.sleep(interval)
        ids = list(held)
        if not ids:
            continue
        try:
            lost = await queue.jobs.heartbeat(worker, ids)
        except DB_ERRORS as exc:
            health.database_error(exc)
            continue
        tracker.let_go(lost)
        for job_id in lost:
            if job_id in held and job_id in delivering:
                log.warning(
                    "lost the lease of a job in flight",
                    extra={"action": "heartbeat", "job": str(job_id)},
                )
