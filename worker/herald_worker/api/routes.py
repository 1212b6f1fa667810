"""The route table: each endpoint once, with the models of its path, query and body and
its answers. The application's routes (``app.py``) and the OpenAPI document
(``openapi.build``, served by :func:`openapi_document` below) are both built from it.

A handler takes the request and, as keyword arguments, what its row declares: ``path``,
``query`` and ``body`` (each validated by its model before the handler runs). A row whose
``body`` the handler reads itself (``reads_body=True``: the job submission, whose payload
keeps its bytes) only documents it. Adding an endpoint: write the handler, its models in
``models.py``, and one row below; 400, 401, 413 and 503 answers are added to its document
as its inputs call for.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from herald_model.submission import EventSubmission, Submission
from herald_worker.api import (
    dead_letters,
    events,
    jobs,
    models,
    openapi,
    ops,
    signing_keys,
    tracker,
)
from herald_worker.api.route import Handler, Reply, Route

NOT_FOUND = "No such object."
UNREGISTERED = "The target is not registered."
TRACE_CONTEXT = (
    "A W3C trace context (traceparent and tracestate headers) is kept with the jobs and sent "
    "on with their deliveries; an invalid one is ignored (docs/tracing.md)."
)


def _alertmanager(path: str, handler: Handler, operation_id: str, params: type[BaseModel]) -> Route:
    return Route(
        "POST",
        path,
        handler,
        operation_id,
        "Alertmanager webhook receiver: one job per alert",
        description="Priority: critical and firing -> high; resolved or severity info -> low; "
        "otherwise medium. Idempotency key from fingerprint, status and startsAt (a re-sent "
        "group does not duplicate); ordering key from the fingerprint (a resolve never "
        "overtakes its trigger). " + TRACE_CONTEXT,
        replies={200: Reply(models.AlertmanagerAccepted, "The jobs (created or duplicates).")},
        errors={
            404: UNREGISTERED,
            503: "PostgreSQL is not reachable, or a capacity with a hard limit is full (503, "
            "not 429: Alertmanager retries on 5xx); nothing was written. Retry-After says when.",
        },
        params=params,
        body=models.AlertmanagerMessage,
        reads_body=True,  # alertmanager.jobs_from_message validates it
    )


DEAD_LETTER_LINKS = {
    name: {
        "operationId": name,
        "parameters": {"id": "$response.body#/items/0/id"},
        "description": "The first dead letter of the page.",
    }
    for name in ("getDeadLetter", "replayDeadLetter")
}
ACCEPTED = models.JobAccepted | models.JobsAccepted


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document of :data:`ROUTES`."""
    return openapi.build(ROUTES)


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(document())


ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/jobs",
        jobs.submit,
        "submitJobs",
        "Submit one job, or a list of up to 1000 jobs",
        description=TRACE_CONTEXT,
        replies={
            201: Reply(ACCEPTED, "Accepted (durably stored)."),
            200: Reply(ACCEPTED, "Every job was a duplicate (idempotency key): the existing ones."),
        },
        errors={
            404: UNREGISTERED,
            409: "An idempotency key was used before with different parameters (payload, "
            "priority, orderingKey or runAt); nothing was written.",
            429: "A target's (or the queue's) capacity is full and has a hard limit "
            "(spec.capacity.hardLimit, HERALD_QUEUE_CAPACITY_HARD_LIMIT); nothing was "
            "written. Retry after the Retry-After header's seconds.",
        },
        body=Submission,
        reads_body=True,
    ),
    Route(
        "POST",
        "/v1/events",
        events.publish,
        "publishEvent",
        "Publish an event: one job per target of its namespace subscribed to its type",
        description="Targets subscribe with spec.subscriptions (event types with wildcards, "
        "an optional CEL filter); the jobs are written in one transaction, all or none, under "
        "the capacity rules of POST /v1/jobs. The same event id gives the same jobs, one per "
        "target (docs/events.md).",
        replies={
            202: Reply(models.EventAccepted, "Accepted: at least one job was created."),
            200: Reply(
                models.EventAccepted,
                "Nothing new was written: no target subscribes (jobs is empty), or the event "
                "id was sent before (the existing jobs).",
            ),
        },
        errors={
            409: "The event id was sent before with other parameters (payload, priority, "
            "orderingKey or runAt); nothing was written.",
            429: "A matching target's (or the queue's) capacity is full and has a hard limit; "
            "nothing was written for any target. Retry after the Retry-After header's seconds.",
            503: "PostgreSQL is not reachable, or the filters did not finish in time; nothing "
            "was written.",
        },
        body=EventSubmission,
        reads_body=True,
    ),
    Route(
        "GET",
        "/v1/jobs",
        jobs.list_jobs,
        "listJobs",
        "Recent jobs, newest first",
        replies={200: Reply(models.JobPage, "A page of jobs.")},
        errors={404: UNREGISTERED},
        query=models.JobsQuery,
    ),
    Route(
        "GET",
        "/v1/jobs/{id}",
        jobs.get_job,
        "getJob",
        "One job (in-memory tracker first, PostgreSQL second)",
        replies={200: Reply(models.Job, "The job.")},
        errors={404: NOT_FOUND},
        params=models.JobPath,
    ),
    Route(
        "GET",
        "/v1/jobs/{id}/attempts",
        jobs.job_attempts,
        "listJobAttempts",
        "A job's delivery attempts on record, oldest first",
        replies={200: Reply(models.AttemptPage, "A page of attempts.")},
        errors={404: NOT_FOUND},
        params=models.JobPath,
        query=models.AttemptsQuery,
    ),
    Route(
        "DELETE",
        "/v1/jobs/{id}",
        jobs.cancel_job,
        "cancelJob",
        "Cancel a waiting job (it becomes a dead letter)",
        replies={200: Reply(models.Cancelled, "Cancelled.")},
        errors={409: "The job is not waiting (running, finished or unknown)."},
        params=models.JobPath,
    ),
    Route(
        "GET",
        "/v1/queue/stats",
        jobs.stats,
        "queueStats",
        "Totals per state, then per priority and per target",
        replies={200: Reply(models.QueueStats, "Statistics.")},
    ),
    Route(
        "GET",
        "/v1/targets",
        jobs.targets,
        "listTargets",
        "Registered targets with their circuit state and counters",
        replies={200: Reply(models.Listing, "Targets.")},
    ),
    Route(
        "GET",
        "/v1/tracker",
        tracker.list_recent,
        "listTracked",
        "Jobs this worker process saw lately (its in-memory LRU tracker), most recently "
        "updated first",
        replies={200: Reply(models.TrackerPage, "The tracked jobs.")},
        query=models.TrackerQuery,
    ),
    Route(
        "DELETE",
        "/v1/tracker",
        tracker.clear,
        "clearTracker",
        "Forget every job this worker process tracks (lookups then read PostgreSQL)",
        replies={200: Reply(models.TrackerCleared, "Cleared.")},
    ),
    Route(
        "GET",
        "/v1/dead-letters",
        dead_letters.list_entries,
        "listDeadLetters",
        "Dead letters, newest first",
        replies={200: Reply(models.DeadLetterPage, "A page.", links=DEAD_LETTER_LINKS)},
        query=models.DeadLettersQuery,
    ),
    Route(
        "DELETE",
        "/v1/dead-letters",
        dead_letters.purge,
        "purgeDeadLetters",
        "Purge dead letters older than a duration",
        replies={200: Reply(models.Purged, "What was (or would be) deleted.")},
        query=models.PurgeQuery,
    ),
    Route(
        "GET",
        "/v1/dead-letters/stats",
        dead_letters.stats,
        "deadLetterStats",
        "Dead letters by target, error class and priority",
        replies={200: Reply(models.DeadLetterStats, "Statistics.")},
    ),
    Route(
        "POST",
        "/v1/dead-letters/replay",
        dead_letters.replay_many,
        "replayDeadLetters",
        "Replay the dead letters a selector matches (each once, ever; cancelled jobs only "
        "when named by id)",
        replies={200: Reply(models.ReplayResult, "Counts.")},
        errors={
            404: "An id in ids or jobIds has no dead letter.",
            409: "None of the dead letters named by ids or jobIds could be replayed: each was "
            "replayed before, or their targets are gone.",
        },
        body=models.ReplaySelector,
    ),
    Route(
        "GET",
        "/v1/dead-letters/{id}",  # see app.ROUTE_PATTERNS
        dead_letters.get_entry,
        "getDeadLetter",
        "One dead letter, with payload and target configuration",
        replies={200: Reply(models.DeadLetter, "The dead letter.")},
        errors={404: NOT_FOUND},
        params=models.DeadLetterPath,
    ),
    Route(
        "POST",
        "/v1/dead-letters/{id}/replay",
        dead_letters.replay_one,
        "replayDeadLetter",
        "Put one dead letter back on the queue",
        replies={200: Reply(models.ReplayResult, "Replayed.")},
        errors={404: NOT_FOUND, 409: "Already replayed, or its target is gone."},
        params=models.DeadLetterPath,
    ),
    _alertmanager(
        "/v1/alertmanager/{target}",
        ops.alertmanager_receiver,
        "alertmanagerWebhook",
        models.AlertmanagerPath,
    ),
    _alertmanager(
        "/v1/alertmanager/{namespace}/{name}",
        ops.alertmanager_namespaced,
        "alertmanagerWebhookNamespaced",
        models.AlertmanagerNamespacedPath,
    ),
    Route(
        "POST",
        "/v1/events/alertmanager/{namespace}",
        events.alertmanager_events,
        "alertmanagerEvents",
        "Alertmanager webhook receiver, fanned out: one event per alert",
        description="Each alert becomes an event of type alertmanager.alert.firing or "
        "alertmanager.alert.resolved in the namespace, delivered to every target subscribed "
        "to it (spec.subscriptions). Priority, idempotency and ordering as the per-target "
        "receiver.",
        replies={
            202: Reply(models.AlertmanagerEventsAccepted, "At least one job was created."),
            200: Reply(
                models.AlertmanagerEventsAccepted,
                "Nothing new: no target subscribes, or every job existed.",
            ),
        },
        errors={
            503: "PostgreSQL is not reachable, or a capacity with a hard limit is full (503, "
            "not 429: Alertmanager retries on 5xx). Retry-After says when.",
        },
        params=models.AlertmanagerEventsPath,
        body=models.AlertmanagerMessage,
        reads_body=True,
    ),
    Route(
        "GET",
        "/signing-keys/{namespace}/{name}",
        signing_keys.signing_keys,
        "signingKeys",
        "The ed25519 public keys a target's v1a signatures verify with",
        description="Open without a token: public keys are not secrets. An unknown target "
        "and one without a whsk_ key both answer 404, so it does not tell which targets exist.",
        replies={200: Reply(models.SigningKeys, "The public keys.")},
        errors={404: "No published signing keys for this target."},
        params=models.SigningKeysPath,
        public=True,
    ),
    Route(
        "GET",
        "/healthz",
        ops.healthz,
        "healthz",
        "Liveness",
        replies={200: Reply(models.Health, "Alive."), 503: Reply(models.Health, "Failed.")},
        public=True,
    ),
    Route(
        "GET",
        "/readyz",
        ops.readyz,
        "readyz",
        "Readiness (PostgreSQL reachable, listening)",
        replies={
            200: Reply(models.Health, "Ready."),
            503: Reply(models.Health, "Not ready, with reasons."),
        },
        public=True,
    ),
    Route(
        "GET",
        "/metrics",
        ops.metrics,
        "metrics",
        "Prometheus metrics",
        replies={200: Reply(str, "Prometheus text format.", media="text/plain")},
        public=True,
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi_document,
        "openapi",
        "This document",
        replies={200: Reply(dict[str, Any], "OpenAPI 3.1.")},
        public=True,
    ),
]
