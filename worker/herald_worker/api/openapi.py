"""The OpenAPI 3.1 document the worker serves at /openapi.json. A test keeps it in step with
the routes the server has and validates it (openapi-spec-validator)."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from herald_queue.dead_letters import CURSOR_PATTERN
from herald_queue.ids import UUID_PATTERN
from herald_queue.requests import KEY_MAX, TARGET_PATTERN
from herald_worker.api.dead_letters import SELECTOR_FIELDS
from herald_worker.api.params import DURATION_PATTERN


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


def _path(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


# What the server checks, written once (params.py and requests.py use the same patterns).
UUID = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
TARGET_REF = {"type": "string", "pattern": TARGET_PATTERN, "maxLength": 317}
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"}
NAMESPACE = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}
NO_NUL = r"^[^\u0000]*$"
"""Strings PostgreSQL can hold (no NUL character)."""
TEXT = {"type": "string", "pattern": NO_NUL}
KEY = {"type": "string", "minLength": 1, "maxLength": KEY_MAX, "pattern": NO_NUL}
STRING_MAP = {
    "type": ["object", "null"],
    "propertyNames": {"pattern": NO_NUL},
    "additionalProperties": TEXT,
}


BAD = _error(
    "The request is malformed; the error names the field and the problem. Rules a schema "
    "cannot state are in the descriptions (a time window's failedBefore after its "
    "failedAfter; a payload without NUL characters)."
)
UNAUTHORIZED = _error("HERALD_API_TOKEN is set and the bearer token is missing or wrong.")
UNAVAILABLE = _error("PostgreSQL is not reachable; nothing was written. Retry later.")
NOT_FOUND = _error("No such object.")
TOO_LARGE = _error(
    "The request body (16 MiB) or a payload (HERALD_MAX_PAYLOAD_BYTES) is too large."
)
COMMON = {"400": BAD, "401": UNAUTHORIZED, "503": UNAVAILABLE}
WITH_BODY = {**COMMON, "413": TOO_LARGE}

PRIORITY = {"type": "string", "enum": ["high", "medium", "low"]}
STATE = {"type": "string", "enum": ["queued", "running", "retrying", "succeeded", "dead"]}
ERROR_CLASS = {"type": "string", "enum": ["transient", "permanent", "unknown"]}
TIME = {"type": "string", "format": "date-time"}
PAYLOAD_DESCRIPTION = (
    "Any JSON value (at most HERALD_MAX_PAYLOAD_BYTES), without NUL characters (\\u0000) "
    "in its strings or keys: PostgreSQL cannot hold them."
)
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_STRING = {"type": ["string", "null"]}

# Every listing pages the same way: `cursor` in, `nextCursor` out (null on the last page).
CURSOR_DESCRIPTION = "The nextCursor of the previous page; omit it for the first page."
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
                **TARGET_REF,
                "description": "PublishingTarget name, or namespace/name.",
                "examples": ["oncall-hook", "default/oncall-hook"],
            },
            "payload": {"$ref": "#/components/schemas/Payload"},
            "priority": {**PRIORITY, "default": "medium"},
            "idempotencyKey": {
                **KEY,
                "type": ["string", "null"],
                "description": "A second submission with the same key (per target) and the "
                "same parameters returns the existing job (200, duplicate) instead of creating "
                "one; with other parameters (payload, priority, orderingKey, runAt) it is "
                "refused (409).",
            },
            "orderingKey": {
                **KEY,
                "type": ["string", "null"],
                "description": "Jobs of a target sharing it are delivered one at a time, in order.",
            },
            "runAt": {**NULLABLE_TIME, "description": "Not delivered before this time."},
        },
    },
    "Payload": {
        "description": PAYLOAD_DESCRIPTION,
        "anyOf": [
            {"type": ["null", "boolean", "number"]},
            {"type": "string", "pattern": NO_NUL},
            {"type": "array", "items": {"$ref": "#/components/schemas/Payload"}},
            {
                "type": "object",
                "propertyNames": {"pattern": NO_NUL},
                "additionalProperties": {"$ref": "#/components/schemas/Payload"},
            },
        ],
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
            "runAt": {
                **NULLABLE_TIME,
                "description": "The runAt of a job that died before its first attempt; a "
                "replay keeps it while it is in the future.",
            },
            "payload": {},
            "targetConfig": {"type": "object"},
        },
    },
    "ReplaySelector": {
        "type": "object",
        "additionalProperties": False,
        "description": "Which dead letters to replay. At least one selector field, or "
        '"all": true: an empty selector would replay every dead letter.',
        "anyOf": [
            {"required": ["all"], "properties": {"all": {"const": True}}},
            *({"required": [name]} for name in SELECTOR_FIELDS),
        ],
        "properties": {
            "target": TARGET_REF,
            "errorClass": ERROR_CLASS,
            "priority": PRIORITY,
            "failedAfter": TIME,
            "failedBefore": {**TIME, "description": "Later than failedAfter, when both are given."},
            "ids": {"type": "array", "minItems": 1, "items": UUID},
            "jobIds": {"type": "array", "minItems": 1, "items": UUID},
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
            "cancelledLeftOut": {
                "type": "integer",
                "description": "Cancelled jobs the selector matched but the replay left out: "
                "only a replay naming them by id (ids or jobIds) puts them back.",
            },
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
            "groupKey": TEXT,
            "status": TEXT,
            "receiver": TEXT,
            "groupLabels": STRING_MAP,
            "commonLabels": STRING_MAP,
            "commonAnnotations": STRING_MAP,
            "externalURL": TEXT,
            "truncatedAlerts": {"type": "integer", "minimum": 0},
            "alerts": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "required": ["status", "labels", "startsAt"],
                    "propertyNames": {"pattern": NO_NUL},
                    "additionalProperties": {"$ref": "#/components/schemas/Payload"},
                    "properties": {
                        "status": {"type": "string", "enum": ["firing", "resolved"]},
                        "labels": {
                            "type": "object",
                            "minProperties": 1,
                            "propertyNames": {"pattern": NO_NUL},
                            "additionalProperties": TEXT,
                        },
                        "annotations": STRING_MAP,
                        "startsAt": {**TEXT, "minLength": 1},
                        "endsAt": TEXT,
                        "generatorURL": TEXT,
                        "fingerprint": TEXT,
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
            "200": _json(
                {
                    "type": "object",
                    "required": ["jobs", "created", "duplicates"],
                    "properties": {
                        "jobs": {"type": "array", "items": _ref("JobAccepted")},
                        "created": {"type": "integer"},
                        "duplicates": {"type": "integer"},
                    },
                },
                "The jobs (created or duplicates).",
            ),
            "404": _error("The target is not registered."),
            **WITH_BODY,
            "503": _error(
                "PostgreSQL is not reachable, or a hard capacity limit is reached (503 rather "
                "than 429, so Alertmanager retries); nothing was written. Retry-After says "
                "when to try again."
            ),
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    try:
        version = metadata.version("herald")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        version = "dev"
    job_id = _path("id", "Job id (UUID).", UUID)
    entry_id = _path("id", "Dead-letter id (UUID).", UUID)
    target_query = _query("target", "Only this target: name, or namespace/name.", TARGET_REF)
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
                        **WITH_BODY,
                        "429": _error(
                            "A hard capacity limit (a target's spec.capacity, or "
                            "HERALD_QUEUE_CAPACITY) is reached; nothing was written (a batch is "
                            "refused whole). Retry after the Retry-After header's seconds."
                        ),
                    },
                },
                "get": {
                    "summary": "Recent jobs, newest first",
                    "operationId": "listJobs",
                    "parameters": [
                        _query("state", "Only this state.", STATE),
                        target_query,
                        _query("priority", "Only this priority.", PRIORITY),
                        _query(
                            "limit",
                            "Page size.",
                            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                        ),
                        _query("cursor", CURSOR_DESCRIPTION, UUID),
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items", "nextCursor"],
                                "properties": {
                                    "items": {"type": "array", "items": _ref("Job")},
                                    "nextCursor": NEXT_CURSOR,
                                },
                            },
                            "A page of jobs.",
                        ),
                        "404": _error("The target is not registered."),
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
                                "properties": {s: {"type": "integer"} for s in STATE["enum"]}
                                | {
                                    "capacityPct": {
                                        "type": ["number", "null"],
                                        "description": "Waiting jobs (queued, retrying) in "
                                        "percent of HERALD_QUEUE_CAPACITY; null when unset. "
                                        "byTarget entries carry their spec.capacity's.",
                                    }
                                },
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
                            "target", "Only this target: namespace/name, or a name.", TARGET_REF
                        ),
                        _query("errorClass", "Only this error class.", ERROR_CLASS),
                        _query("priority", "Only jobs of this priority.", PRIORITY),
                        _query("failedAfter", "Failed at or after.", TIME),
                        _query("failedBefore", "Failed before (later than failedAfter).", TIME),
                        _query("replayed", "Replayed or not.", {"type": "boolean"}),
                        _query(
                            "limit",
                            "Page size.",
                            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        ),
                        _query(
                            "cursor",
                            CURSOR_DESCRIPTION,
                            {"type": "string", "pattern": CURSOR_PATTERN},
                        ),
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["items", "nextCursor"],
                                "properties": {
                                    "items": {"type": "array", "items": _ref("DeadLetter")},
                                    "nextCursor": NEXT_CURSOR,
                                },
                            },
                            "A page.",
                        )
                        | {
                            "links": {
                                name: {
                                    "operationId": name,
                                    "parameters": {"id": "$response.body#/items/0/id"},
                                    "description": "The first dead letter of the page.",
                                }
                                for name in ("getDeadLetter", "replayDeadLetter")
                            }
                        },
                        **COMMON,
                    },
                },
                "delete": {
                    "summary": "Purge dead letters older than a duration",
                    "operationId": "purgeDeadLetters",
                    "parameters": [
                        {
                            **_query(
                                "olderThan",
                                "Failed longer ago than this: seconds, or a number with a unit "
                                "(s, m, h, d), e.g. 30d, 12h, 90m; at most 100 years.",
                                {"type": "string", "pattern": DURATION_PATTERN},
                            ),
                            "required": True,
                        },
                        target_query,
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
                    "summary": "Replay the dead letters a selector matches (each once, ever; "
                    "cancelled jobs only when named by id)",
                    "operationId": "replayDeadLetters",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ReplaySelector")}},
                    },
                    "responses": {
                        "200": _json(_ref("ReplayResult"), "Counts."),
                        "404": _error("An id in ids or jobIds has no dead letter."),
                        "409": _error(
                            "None of the dead letters named by ids or jobIds could be replayed: "
                            "each was replayed before, or their targets are gone."
                        ),
                        **WITH_BODY,
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
                    [
                        _path(
                            "target",
                            "Target name (namespace HERALD_NAMESPACE, or the only one).",
                            NAME,
                        )
                    ],
                    "alertmanagerWebhook",
                )
            },
            "/v1/alertmanager/{namespace}/{name}": {
                "post": _alertmanager(
                    [
                        _path("namespace", "Target namespace.", NAMESPACE),
                        _path("name", "Target name.", NAME),
                    ],
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
