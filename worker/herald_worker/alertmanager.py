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

from herald_queue.errors import InvalidRequest
from herald_queue.requests import JobRequest, encode_payload, json_integer
from herald_queue.states import Priority

MAX_ALERTS = 1000
_ENVELOPE = (
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "groupKey",
)
_ENVELOPE_STRINGS = ("receiver", "externalURL", "groupKey", "status")
_ALERT_STRINGS = ("endsAt", "generatorURL", "fingerprint")


def priority_of(status: str, labels: Mapping[str, str]) -> Priority:
    severity = str(labels.get("severity", "")).lower()
    if status == "resolved" or severity == "info":
        return Priority.LOW
    if severity == "critical":
        return Priority.HIGH
    return Priority.MEDIUM


def _string_map(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidRequest(field, "must be an object of string values")
    return dict(value)


def fingerprint_of(alert: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    given = alert.get("fingerprint")
    if isinstance(given, str) and given:
        return given
    digest = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()
    return digest[:16]


def jobs_from_message(body: Any, target: str, *, max_payload_bytes: int) -> list[JobRequest]:
    if not isinstance(body, Mapping):
        raise InvalidRequest("body", "must be an Alertmanager webhook message (a JSON object)")
    version = body.get("version", "4")
    if version != "4":
        raise InvalidRequest(
            "version", f'must be "4" (Alertmanager\'s webhook payload), got {version!r}'
        )
    for key in _ENVELOPE_STRINGS:
        if key in body and not isinstance(body[key], str):
            raise InvalidRequest(key, "must be a string")
    truncated = json_integer(body.get("truncatedAlerts", 0))
    if truncated is None or truncated < 0:
        raise InvalidRequest("truncatedAlerts", "must be an integer, at least 0")
    alerts = body.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise InvalidRequest("alerts", "must be a non-empty list of alerts")
    if len(alerts) > MAX_ALERTS:
        raise InvalidRequest("alerts", f"at most {MAX_ALERTS} alerts per message")
    envelope = {key: body[key] for key in _ENVELOPE if key in body}
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        if key in envelope:
            _string_map(envelope[key], key)
    jobs = []
    for index, alert in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(alert, Mapping):
            raise InvalidRequest(where, "must be an object")
        status = alert.get("status")
        if status not in ("firing", "resolved"):
            raise InvalidRequest(f"{where}.status", f"must be firing or resolved, got {status!r}")
        labels = _string_map(alert.get("labels"), f"{where}.labels")
        if not labels:
            raise InvalidRequest(f"{where}.labels", "must have at least one label")
        _string_map(alert.get("annotations"), f"{where}.annotations")
        for key in _ALERT_STRINGS:
            if key in alert and not isinstance(alert[key], str):
                raise InvalidRequest(f"{where}.{key}", "must be a string")
        starts_at = alert.get("startsAt")
        if not isinstance(starts_at, str) or not starts_at:
            raise InvalidRequest(f"{where}.startsAt", "must be an RFC 3339 timestamp")
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
                payload_json=encode_payload(payload, max_bytes=max_payload_bytes, field=f"{where}"),
                priority=priority_of(status, labels),
                idempotency_key=f"alertmanager:{fingerprint}:{status}:{starts_at}",
                ordering_key=f"alert:{fingerprint}",
                # The key is Herald's own (fingerprint, status, startsAt): a group re-sent
                # with changed annotations or group fields is the same event, a duplicate.
                key_reuse_checked=False,
            )
        )
    return jobs
