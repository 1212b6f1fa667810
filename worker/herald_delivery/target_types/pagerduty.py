"""PagerDuty Events API v2 (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/).

The endpoint is ``https://events.pagerduty.com/v2/enqueue`` unless the Secret's ``url``
or ``spec.url`` says otherwise. The Secret's ``routingKey`` (the service integration key)
is required; it never appears in a message Herald writes.

``check`` is strict about the key's form: an Events API v2 integration key is 32 letters
and digits, and anything else (a REST API token, a key with a stray quote) is reported.
Surrounding whitespace is ignored (``echo`` into a Secret adds a newline). Rendering only
needs a non-empty key: a key of a form PagerDuty introduces later is still sent, and
PagerDuty is the judge.

What is sent:

- an Alertmanager alert (see :mod:`.alerts`): a ``trigger`` for a firing alert, a
  ``resolve`` for a resolved one, ``dedup_key`` the alert's fingerprint (else a hash of
  its sorted labels) so that the resolve closes the incident the trigger opened;
- a payload that already is an Events v2 event (it has ``event_action``): that event, its
  ``routing_key`` set from the Secret (replacing any given);
- anything else: a ``trigger`` whose ``dedup_key`` is the job id (retries deduplicate),
  summary ``payload["summary"]`` (else the payload's JSON, cut to 1024 characters), source
  ``payload["source"]`` (else the target's name), severity ``payload["severity"]`` read
  through the table below, and the payload as ``custom_details`` when it is an object.

Severity labels map to PagerDuty's four levels (case-insensitively; see
``alerts.SEVERITY_LEVELS``): critical -> critical; error, high, major -> error; warning,
warn, medium -> warning; info, low, none, minor -> info; anything else, or none at all ->
warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from herald_delivery.target_types import alerts
from herald_delivery.target_types.base import (
    URL_KEY,
    InvalidPayload,
    OutgoingRequest,
    RenderContext,
    TargetType,
    json_body,
    secret_label,
    secret_value,
    truncate,
)
from herald_model.target_spec import TargetSpec, check_url

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
ROUTING_KEY = "routingKey"
SEVERITIES = ("critical", "error", "warning", "info")
DEFAULT_SEVERITY = "warning"
ACTIONS = ("trigger", "acknowledge", "resolve")
MAX_SUMMARY = 1024
MAX_SOURCE = 255
MAX_DEDUP_KEY = 255
MAX_EVENT_BYTES = 512 * 1024
"""PagerDuty refuses events larger than 512 KB."""
_INTEGRATION_KEY = re.compile(r"[A-Za-z0-9]{32}")


def severity(value: Any) -> str:
    return (alerts.severity_level(value) if isinstance(value, str) else None) or DEFAULT_SEVERITY


def _links(*pairs: tuple[str | None, str]) -> list[dict[str, str]]:
    return [{"href": url, "text": text} for url, text in pairs if url and check_url(url) is None]


def alert_event(alert: alerts.Alert, routing_key: str, target_name: str) -> dict[str, Any]:
    fingerprint = alert.fingerprint
    dedup_key = (
        fingerprint if fingerprint and len(fingerprint) <= MAX_DEDUP_KEY else alert.labels_hash()
    )
    if not alert.firing:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    labels = alert.labels
    summary = alert.summary
    if summary is None:
        pairs = ", ".join(f"{k}={labels[k]}" for k in sorted(labels) if k != "alertname")
        summary = f"{alert.name}: {pairs}" if pairs else alert.name
    body: dict[str, Any] = {
        "summary": truncate(summary, MAX_SUMMARY),
        "source": truncate(labels.get("instance") or labels.get("job") or target_name, MAX_SOURCE),
        "severity": alert.level or DEFAULT_SEVERITY,
    }
    if (started := alert.started) is not None:
        body["timestamp"] = started.isoformat(timespec="milliseconds")
    for field, keys in (
        ("component", ("service", "component")),
        ("group", ("namespace", "cluster", "job")),
        ("class", ("alertname",)),
    ):
        if value := next((labels[k] for k in keys if labels.get(k)), None):
            body[field] = value
    body["custom_details"] = {"labels": dict(labels), "annotations": dict(alert.annotations)}
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": body,
        "client": "Herald",
    }
    if alert.external_url and check_url(alert.external_url) is None:
        event["client_url"] = alert.external_url
    links = _links(
        (alert.generator_url, "Source"),
        (alert.runbook_url, "Runbook"),
        (alert.silence_url(), "Silence"),
    )
    if links:
        event["links"] = links
    return event


def check_event(event: Mapping[str, Any]) -> None:
    """:class:`InvalidPayload` for an Events v2 event PagerDuty would refuse."""
    prefix = "the payload is a PagerDuty event (it has event_action), but"
    action = event.get("event_action")
    if action not in ACTIONS:
        raise InvalidPayload(
            f"{prefix} event_action is {action!r}, not one of {', '.join(ACTIONS)}"
        )
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        raise InvalidPayload(f"{prefix} dedup_key is not a string of at most 255 characters")
    if action != "trigger":
        if not dedup_key:
            raise InvalidPayload(f"{prefix} a {action} event needs dedup_key")
        return
    body = event.get("payload")
    if not isinstance(body, Mapping):
        raise InvalidPayload(f"{prefix} a trigger event needs payload (an object)")
    for field in ("summary", "source"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise InvalidPayload(f"{prefix} payload.{field} is not a non-empty string")
    if body.get("severity") not in SEVERITIES:
        raise InvalidPayload(
            f"{prefix} payload.severity is {body.get('severity')!r}, not one of "
            f"{', '.join(SEVERITIES)}"
        )


def generic_event(
    payload: Any, payload_json: str, routing_key: str, job_id: str, target_name: str
) -> dict[str, Any]:
    fields = payload if isinstance(payload, Mapping) else {}
    summary = fields.get("summary")
    source = fields.get("source")
    body: dict[str, Any] = {
        "summary": truncate(
            summary if isinstance(summary, str) and summary.strip() else payload_json,
            MAX_SUMMARY,
        ),
        "source": truncate(
            source if isinstance(source, str) and source.strip() else target_name, MAX_SOURCE
        ),
        "severity": severity(fields.get("severity")),
    }
    if isinstance(payload, Mapping):
        body["custom_details"] = payload
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": job_id,
        "payload": body,
        "client": "Herald",
    }


class PagerDuty(TargetType):
    name = "pagerduty"
    required_secret_keys = frozenset({ROUTING_KEY})
    default_url = DEFAULT_URL
    secret_key_help: ClassVar[Mapping[str, str]] = {
        ROUTING_KEY: "PagerDuty's integration key",
        URL_KEY: "the Events API URL, overriding spec.url",
    }

    def check_secrets(self, spec: TargetSpec, secrets: Mapping[str, str]) -> list[str]:
        key = secret_value(secrets, ROUTING_KEY)
        if not key or _INTEGRATION_KEY.fullmatch(key):
            return []  # missing or empty: reported by the common checks
        if len(key) != 32:
            why = f"has {len(key)} characters, not 32"
        else:
            why = "contains characters other than letters and digits"
        return [
            f"{secret_label(spec)} key {ROUTING_KEY} does not look like a PagerDuty "
            f"integration key: it {why} (an Events API v2 integration key is 32 letters and "
            "digits: copy it from the service's Integrations tab; the value is not shown)"
        ]

    def render(self, ctx: RenderContext) -> OutgoingRequest:
        spec = ctx.target.spec
        routing_key = self.require_secret(ctx, ROUTING_KEY)
        payload = ctx.payload()
        if isinstance(payload, Mapping) and "event_action" in payload:
            check_event(payload)
            body = json_body({**payload, "routing_key": routing_key})
        else:
            if alerts.is_alert_envelope(payload) or alerts.is_alert(payload):
                event = alert_event(alerts.read_alert(payload), routing_key, ctx.target.name)
            else:
                event = generic_event(
                    payload, ctx.payload_json, routing_key, str(ctx.job_id), ctx.target.name
                )
            body = json_body(event)
            if len(body) > MAX_EVENT_BYTES and "custom_details" in event.get("payload", {}):
                event["payload"]["custom_details"] = {
                    "note": f"custom details omitted: the event was {len(body):,} bytes, "
                    f"more than PagerDuty's limit of {MAX_EVENT_BYTES:,}"
                }
                body = json_body(event)
        if len(body) > MAX_EVENT_BYTES:
            raise InvalidPayload(
                f"the PagerDuty event is {len(body):,} bytes; PagerDuty takes at most "
                f"{MAX_EVENT_BYTES:,}"
            )
        return OutgoingRequest(
            url=self.endpoint(spec, ctx.secrets), headers=self.headers(spec), body=body
        )


PAGERDUTY = PagerDuty()
