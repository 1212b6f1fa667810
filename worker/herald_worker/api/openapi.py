"""The OpenAPI 3.1 document the worker serves at /openapi.json. A test keeps it in step with
the routes the server has and validates it (openapi-spec-validator)."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


BAD = _error("The request is malformed; the error names the field and the problem.")
UNAUTHORIZED = _error("HERALD_API_TOKEN is set and the bearer token is missing or wrong.")
UNAVAILABLE = _error("PostgreSQL is not reachable; nothing was written. Retry later.")
NOT_FOUND = _error("No such object.")
COMMON = {"400": BAD, "401": UNAUTHORIZED, "503": UNAVAILABLE}

PRIORITY = {"type": "string", "enum": ["high", "medium", "low"]}
STATE = {"type": "string", "enum": ["queued", "running", "retrying", "succeeded", "dead"]}
ERROR_CLASS = {"type": "string", "enum": ["transient", "permanent", "unknown"]}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_STRING = {"type": ["string", "null"]}

# Every listing pages the same way: `cursor` in, `nextCursor` out (null on the last page).
CURSOR = _query(
    "cursor",
    "The nextCursor of the previous page (opaque); omit it for the first page.",
    {"type": "string", "minLength": 1},
)
NEXT_CURSOR = {
    "type": ["string", "null"],
    "description": "Pass as `cursor` for the next page; null on the last page.",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "field": NULLABLE_STRING,
                    "message": {"type": "string"},
                },
            }
        },
    },
    "JobSubmission": {
        "type": "object",
        "required": ["target", "payload"],
        "additionalProperties": False,
        "properties": {
            "target": {
                "type": "string",
                "description": "PublishingTarget name, or namespace/name.",
                "examples": ["oncall-hook", "default/oncall-hook"],
            },
            "payload": {"description": "Any JSON value (at most HERALD_MAX_PAYLOAD_BYTES)."},
            "priority": {**PRIORITY, "default": "medium"},
            "idempotencyKey": {
                "type": "string",
                "maxLength": 256,
                "minLength": 1,
                "description": "A second submission with the same key (per target) and the "
                "same parameters returns the existing job (200, duplicate) instead of creating "
                "one; with other parameters (payload, priority, orderingKey, runAt) it is "
                "refused (409).",
            },
            "orderingKey": {
                "type": "string",
                "maxLength": 256,
                "description": "Jobs of a target sharing it are delivered one at a time, in order.",
            },
            "runAt": {**TIME, "description": "Not delivered before this time."},
        },
    },
    "JobAccepted": {
        "type": "object",
        "required": ["id", "target", "state", "duplicate"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "target": {"type": "string"},
            "state": STATE,
            "duplicate": {
                "type": "boolean",
                "description": "True when an existing job with the same idempotency key "
                "was returned.",
            },
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "target", "state"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "target": {"type": "string"},
            "priority": PRIORITY,
            "state": STATE,
            "attempts": {"type": "integer"},
            "idempotencyKey": NULLABLE_STRING,
            "orderingKey": NULLABLE_STRING,
            "waitingForOrderingKey": {"type": "boolean"},
            "runAt": NULLABLE_TIME,
            "createdAt": NULLABLE_TIME,
            "startedAt": NULLABLE_TIME,
            "finishedAt": NULLABLE_TIME,
            "updatedAt": NULLABLE_TIME,
            "lastError": NULLABLE_STRING,
            "lastErrorClass": {
                "type": ["string", "null"],
                "enum": ["transient", "permanent", "unknown", None],
            },
            "lastHttpStatus": {"type": ["integer", "null"]},
            "deadReason": NULLABLE_STRING,
            "payload": {"description": "The payload (lookups from the database only)."},
            "source": {
                "type": "string",
                "enum": ["tracker", "database"],
                "description": "Answered from the in-memory tracker or from PostgreSQL.",
            },
        },
    },
    "DeadLetter": {
        "type": "object",
        "required": ["id", "jobId", "target", "errorClass", "error", "reason"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "jobId": {"type": "string", "format": "uuid"},
            "target": {"type": "string"},
            "targetType": {"type": "string"},
            "fingerprint": NULLABLE_STRING,
            "errorClass": ERROR_CLASS,
            "error": {"type": "string"},
            "reason": {
                "type": "string",
                "enum": ["permanent-error", "attempts-exhausted", "target-deleted", "cancelled"],
            },
            "httpStatus": {"type": ["integer", "null"]},
            "attempts": {"type": "integer"},
            "lastAttemptAt": NULLABLE_TIME,
            "priority": PRIORITY,
            "idempotencyKey": NULLABLE_STRING,
            "orderingKey": NULLABLE_STRING,
            "jobCreatedAt": NULLABLE_TIME,
            "failedAt": TIME,
            "replayed": {"type": "boolean"},
            "replayedAt": NULLABLE_TIME,
            "replayResult": {
                "type": ["string", "null"],
                "enum": ["queued", "target-missing", None],
            },
            "replayedBy": NULLABLE_STRING,
            "payload": {},
            "targetConfig": {"type": "object"},
        },
    },
    "ReplaySelector": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "target": {"type": "string"},
            "errorClass": ERROR_CLASS,
            "failedAfter": TIME,
            "failedBefore": TIME,
            "ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "jobIds": {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "all": {
                "type": "boolean",
                "default": False,
                "description": "Required (true) to replay with no selector field: an empty "
                "selector matches every dead letter.",
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1000},
            "dryRun": {"type": "boolean", "default": False},
        },
    },
    "ReplayResult": {
        "type": "object",
        "required": ["matched", "replayed", "skipped", "dryRun"],
        "properties": {
            "matched": {"type": "integer"},
            "replayed": {"type": "integer"},
            "skipped": {"type": "integer"},
            "dryRun": {"type": "boolean"},
            "jobIds": {"type": "array", "items": {"type": "string"}},
        },
    },
    "AlertmanagerMessage": {
        "type": "object",
        "required": ["alerts"],
        "description": "Alertmanager's webhook payload, version 4.",
        "properties": {
            "version": {"type": "string", "enum": ["4"]},
            "groupKey": {"type": "string"},
            "status": {"type": "string"},
            "receiver": {"type": "string"},
            "groupLabels": {"type": "object"},
            "commonLabels": {"type": "object"},
            "commonAnnotations": {"type": "object"},
            "externalURL": {"type": "string"},
            "truncatedAlerts": {"type": "integer"},
            "alerts": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["status", "labels", "startsAt"],
                    "properties": {
                        "status": {"type": "string", "enum": ["firing", "resolved"]},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "annotations": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "startsAt": {"type": "string"},
                        "endsAt": {"type": "string"},
                        "generatorURL": {"type": "string"},
                        "fingerprint": {"type": "string"},
                    },
                },
            },
        },
    },
}

OK_JSON = {"type": "object"}
# POST /v1/jobs answers one job, or {"jobs": [...]} for a list.
ACCEPTED = {
    "oneOf": [
        _ref("JobAccepted"),
        {
            "type": "object",
            "required": ["jobs"],
            "properties": {"jobs": {"type": "array", "items": _ref("JobAccepted")}},
        },
    ]
}


def _alertmanager(parameters: list[dict[str, Any]], operation: str) -> dict[str, Any]:
    return {
        "summary": "Alertmanager webhook receiver: one job per alert",
        "description": "Priority: critical and firing -> high; resolved or severity info -> "
        "low; otherwise medium. Idempotency key from fingerprint, status and "
        "startsAt (a re-sent group does not duplicate); ordering key from the "
        "fingerprint (a resolve never overtakes its trigger).",
        "operationId": operation,
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("AlertmanagerMessage")}},
        },
        "responses": {
            "200": _json(OK_JSON, "The jobs (created or duplicates)."),
            "404": _error("The target is not registered."),
            **COMMON,
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    try:
        version = metadata.version("herald")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        version = "dev"
    job_id = _path("id", "Job id (UUID).")
    entry_id = _path("id", "Dead-letter id (UUID).")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald worker API",
            "version": version,
            "description": "Submit jobs, look them up, read queue statistics, manage dead "
            "letters, and receive Alertmanager notifications. JSON everywhere; errors are "
            '{"error": {"status", "field", "message"}}.',
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required when HERALD_API_TOKEN is set.",
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit one job, or a list of up to 1000 jobs",
                    "operationId": "submitJobs",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _ref("JobSubmission"),
                                        {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": 1000,
                                            "items": _ref("JobSubmission"),
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json(
                            ACCEPTED,
                            "Accepted (durably stored).",
                        ),
                        "200": _json(
                            ACCEPTED,
                            "Every job was a duplicate (idempotency key): the existing ones.",
                        ),
                        "404": _error("The target is not registered."),
                        "409": _error(
                            "An idempotency key was used before with different parameters "
                            "(payload, priority, orderingKey or runAt); nothing was written."
                        ),
                        "413": _error("The body or a payload is too large."),
                        **COMMON,
                    },
                },
                "get": {
                    "summary": "Recent jobs, newest first",
                    "operationId": "listJobs",
                    "parameters": [
                        _query("state", "Only this state.", STATE),
                        _query(
                            "target",
                            "Only this target (name or namespace/name).",
                            {"type": "string"},
                        ),
                        _query("priority", "Only this priority.", PRIORITY),
                        _query(
                            "limit",
                            "Page size.",
                            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                        ),
                        CURSOR,
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "items": {"type": "array", "items": _ref("Job")},
                                    "nextCursor": NEXT_CURSOR,
                                },
                            },
                            "A page of jobs.",
                        ),
                        **COMMON,
                    },
                },
            },
            "/v1/jobs/{id}": {
                "get": {
                    "summary": "One job (in-memory tracker first, PostgreSQL second)",
                    "operationId": "getJob",
                    "parameters": [job_id],
                    "responses": {
                        "200": _json(_ref("Job"), "The job."),
                        "404": NOT_FOUND,
                        **COMMON,
                    },
                },
                "delete": {
                    "summary": "Cancel a waiting job (it becomes a dead letter)",
                    "operationId": "cancelJob",
                    "parameters": [job_id],
                    "responses": {
                        "200": _json(OK_JSON, "Cancelled."),
                        "409": _error("The job is not waiting."),
                        **COMMON,
                    },
                },
            },
            "/v1/queue/stats": {
                "get": {
                    "summary": "Totals per state, then per priority and per target",
                    "operationId": "queueStats",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["queued", "running", "retrying", "succeeded", "dead"],
                                "properties": {s: {"type": "integer"} for s in STATE["enum"]},
                            },
                            "Statistics.",
                        ),
                        **COMMON,
                    },
                }
            },
            "/v1/targets": {
                "get": {
                    "summary": "Registered targets with their circuit state and counters",
                    "operationId": "listTargets",
                    "responses": {"200": _json(OK_JSON, "Targets."), **COMMON},
                }
            },
            "/v1/dead-letters": {
                "get": {
                    "summary": "Dead letters, newest first",
                    "operationId": "listDeadLetters",
                    "parameters": [
                        _query(
                            "target",
                            "namespace/name, or a name (any namespace).",
                            {"type": "string"},
                        ),
                        _query("errorClass", "Only this error class.", ERROR_CLASS),
                        _query("failedAfter", "Failed at or after.", TIME),
                        _query("failedBefore", "Failed before.", TIME),
                        _query("replayed", "Replayed or not.", {"type": "boolean"}),
                        _query(
                            "limit",
                            "Page size.",
                            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        ),
                        CURSOR,
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "items": {"type": "array", "items": _ref("DeadLetter")},
                                    "nextCursor": NEXT_CURSOR,
                                },
                            },
                            "A page.",
                        ),
                        **COMMON,
                    },
                },
                "delete": {
                    "summary": "Purge dead letters older than a duration",
                    "operationId": "purgeDeadLetters",
                    "parameters": [
                        {
                            **_query("olderThan", "e.g. 30d, 12h, 90m.", {"type": "string"}),
                            "required": True,
                        },
                        _query("target", "Only this target.", {"type": "string"}),
                        _query("dryRun", "Only count.", {"type": "boolean"}),
                    ],
                    "responses": {
                        "200": _json(OK_JSON, "What was (or would be) deleted."),
                        **COMMON,
                    },
                },
            },
            "/v1/dead-letters/stats": {
                "get": {
                    "summary": "Dead letters by target, error class and priority",
                    "operationId": "deadLetterStats",
                    "responses": {"200": _json(OK_JSON, "Statistics."), **COMMON},
                }
            },
            "/v1/dead-letters/replay": {
                "post": {
                    "summary": "Replay the dead letters a selector matches (each once, ever)",
                    "operationId": "replayDeadLetters",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ReplaySelector")}},
                    },
                    "responses": {
                        "200": _json(_ref("ReplayResult"), "Counts."),
                        "404": _error("An id in ids or jobIds has no dead letter."),
                        "409": _error(
                            "The dead letters named by ids or jobIds were all replayed before."
                        ),
                        **COMMON,
                    },
                }
            },
            "/v1/dead-letters/{id}": {
                "get": {
                    "summary": "One dead letter, with payload and target configuration",
                    "operationId": "getDeadLetter",
                    "parameters": [entry_id],
                    "responses": {
                        "200": _json(_ref("DeadLetter"), "The dead letter."),
                        "404": NOT_FOUND,
                        **COMMON,
                    },
                }
            },
            "/v1/dead-letters/{id}/replay": {
                "post": {
                    "summary": "Put one dead letter back on the queue",
                    "operationId": "replayDeadLetter",
                    "parameters": [entry_id],
                    "responses": {
                        "200": _json(_ref("ReplayResult"), "Replayed."),
                        "404": NOT_FOUND,
                        "409": _error("Already replayed, or its target is gone."),
                        **COMMON,
                    },
                }
            },
            "/v1/alertmanager/{target}": {
                "post": _alertmanager(
                    [_path("target", "Target name (namespace HERALD_NAMESPACE, or the only one).")],
                    "alertmanagerWebhook",
                )
            },
            "/v1/alertmanager/{namespace}/{name}": {
                "post": _alertmanager(
                    [_path("namespace", "Target namespace."), _path("name", "Target name.")],
                    "alertmanagerWebhookNamespaced",
                )
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "operationId": "healthz",
                    "security": [],
                    "responses": {
                        "200": _json(OK_JSON, "Alive."),
                        "503": _json(OK_JSON, "The worker failed."),
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness (PostgreSQL reachable, listening)",
                    "operationId": "readyz",
                    "security": [],
                    "responses": {
                        "200": _json(OK_JSON, "Ready."),
                        "503": _json(OK_JSON, "Not ready, with reasons."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": _json(OK_JSON, "OpenAPI 3.1.")},
                }
            },
        },
    }
