"""Alertmanager as a producer: a webhook message (payload version 4) becomes one job per
alert, each payload a version-4 message holding that one alert, so a receiver that speaks
Alertmanager's format takes it unchanged.

- priority: critical and firing -> high; resolved, or severity info -> low; else medium;
- idempotency key: fingerprint, status and startsAt, so a re-sent group (Alertmanager
  retries, or repeat_interval within the job retention) does not deliver twice;
- ordering key: the fingerprint, so an alert's resolve never overtakes its trigger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter

from herald_core.errors import InvalidRequest
from herald_core.json_depth import DEFAULT_MAX_DEPTH
from herald_core.states import Priority
from herald_core.validation import hints, validate
from herald_model.submission import JobRequest, encode_payload
from herald_worker.api.models import AlertmanagerMessage

MAX_ALERTS = 1000
_ENVELOPE = (
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "groupKey",
)
MESSAGE: TypeAdapter[AlertmanagerMessage] = TypeAdapter(AlertmanagerMessage)
_HINTS = hints(AlertmanagerMessage)


def priority_of(status: str, labels: Mapping[str, str]) -> Priority:
    severity = str(labels.get("severity", "")).lower()
    if status == "resolved" or severity == "info":
        return Priority.LOW
    if severity == "critical":
        return Priority.HIGH
    return Priority.MEDIUM


def fingerprint_of(alert: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    given = alert.get("fingerprint")
    if isinstance(given, str) and given:
        return given
    digest = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()
    return digest[:16]


def jobs_from_message(
    body: Any, target: str, *, max_payload_bytes: int, max_payload_depth: int = DEFAULT_MAX_DEPTH
) -> list[JobRequest]:
    """One job per alert of ``body`` (decoded JSON), validated by
    :class:`~herald_worker.api.models.AlertmanagerMessage`; each payload keeps the alert's
    fields as given."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("body", "must be an Alertmanager webhook message (a JSON object)")
    validate(MESSAGE, body, descriptions=_HINTS)
    envelope = {key: body[key] for key in _ENVELOPE if key in body}
    jobs = []
    for index, alert in enumerate(body["alerts"]):
        where = f"alerts[{index}]"
        status = alert["status"]
        labels = alert["labels"]
        starts_at = alert["startsAt"]
        fingerprint = fingerprint_of(alert, labels)
        one = dict(alert) | {"fingerprint": fingerprint}
        payload = {
            "version": "4",
            **envelope,
            "status": status,
            "truncatedAlerts": 0,
            "alerts": [one],
        }
        jobs.append(
            JobRequest(
                target=target,
                payload_json=encode_payload(
                    payload, max_bytes=max_payload_bytes, max_depth=max_payload_depth, field=where
                ),
                priority=priority_of(status, labels),
                idempotency_key=f"alertmanager:{fingerprint}:{status}:{starts_at}",
                ordering_key=f"alert:{fingerprint}",
                # The key is Herald's own (fingerprint, status, startsAt): a group re-sent
                # with changed annotations or group fields is the same event, a duplicate.
                key_reuse_checked=False,
            )
        )
    return jobs
