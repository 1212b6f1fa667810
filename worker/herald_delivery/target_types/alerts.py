"""Recognise and read Alertmanager alerts in job payloads.

The worker's Alertmanager receiver turns each alert of a webhook message (format
``version: "4"``, https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)
into one job whose payload is that message with exactly one alert in ``alerts``. A bare
alert object (``{"status": ..., "labels": {...}, ...}`` without the envelope) is accepted
too. Label and annotation values are strings in Alertmanager; any other JSON value found
there is shown as its compact JSON text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from herald_delivery.target_types.base import InvalidPayload
from herald_model.target_spec import check_url

STATUSES = ("firing", "resolved")
ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` when the end is not known."""

# Severity label values, lowercased, and the level each means (PagerDuty Events v2's four
# levels; Slack uses them for its emoji). Anything else is "unknown" (None).
SEVERITY_LEVELS: Mapping[str, str] = {
    "critical": "critical",
    "error": "error",
    "high": "error",
    "major": "error",
    "warning": "warning",
    "warn": "warning",
    "medium": "warning",
    "info": "info",
    "low": "info",
    "none": "info",
    "minor": "info",
}


@dataclasses.dataclass(frozen=True)
class Alert:
    """One Alertmanager alert and the parts of its message that a rendering needs."""

    status: str
    """"firing" or "resolved"."""
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str | None
    """RFC 3339 text as Alertmanager sent it; None when absent."""
    ends_at: str | None
    """None when absent or unknown (Alertmanager's zero time)."""
    generator_url: str | None
    fingerprint: str | None
    external_url: str | None
    """The Alertmanager's own URL (envelope ``externalURL``)."""
    receiver: str | None

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    @property
    def name(self) -> str:
        return self.labels.get("alertname") or "alert"

    @property
    def severity(self) -> str | None:
        """The ``severity`` label as written (None when absent or blank)."""
        value = self.labels.get("severity", "").strip()
        return value or None

    @property
    def level(self) -> str | None:
        """The severity label mapped to critical | error | warning | info (None: unknown)."""
        return severity_level(self.severity)

    @property
    def summary(self) -> str | None:
        return self.annotations.get("summary") or None

    @property
    def description(self) -> str | None:
        return self.annotations.get("description") or None

    @property
    def runbook_url(self) -> str | None:
        return self.annotations.get("runbook_url") or None

    @property
    def started(self) -> dt.datetime | None:
        return parse_time(self.starts_at)

    @property
    def ended(self) -> dt.datetime | None:
        return parse_time(self.ends_at)

    def silence_url(self) -> str | None:
        """Alertmanager's "new silence" page for this alert's labels (None without a usable
        ``externalURL``)."""
        return silence_url(self.external_url, self.labels)

    def labels_hash(self) -> str:
        """A stable key for the alert's identity when it has no fingerprint."""
        return labels_hash(self.labels)


def severity_level(value: str | None) -> str | None:
    return None if value is None else SEVERITY_LEVELS.get(value.strip().lower())


def _shaped(item: Any, *, status_fallback: Any = None) -> bool:
    if not isinstance(item, Mapping) or not isinstance(item.get("labels"), Mapping):
        return False
    status = item.get("status", status_fallback)
    if status not in STATUSES:
        return False
    annotations = item.get("annotations")
    return annotations is None or isinstance(annotations, Mapping)


def is_alert(payload: Any) -> bool:
    """A bare alert object: ``status`` firing|resolved and ``labels`` an object."""
    return _shaped(payload) and "alerts" not in payload


def is_alert_envelope(payload: Any) -> bool:
    """An Alertmanager webhook message, whatever the number of its alerts."""
    return (
        isinstance(payload, Mapping)
        and isinstance(payload.get("alerts"), list)
        and (payload.get("version") == "4" or "groupKey" in payload or "receiver" in payload)
    )


def is_alert_message(payload: Any) -> bool:
    """A payload holding exactly one alert: a webhook message with one alert (what the
    receiver enqueues), or a bare alert."""
    if is_alert_envelope(payload):
        alerts = payload["alerts"]
        return len(alerts) == 1 and _shaped(alerts[0], status_fallback=payload.get("status"))
    return is_alert(payload)


def read_alert(payload: Any) -> Alert:
    """The single alert of ``payload``; :class:`InvalidPayload` when it holds none or
    several (send those through Herald's Alertmanager receiver, which splits them)."""
    if is_alert_envelope(payload):
        alerts = payload["alerts"]
        if len(alerts) != 1:
            raise InvalidPayload(
                f"the payload is an Alertmanager message with {len(alerts)} alerts; one job "
                "carries one alert: send Alertmanager's webhook to Herald's Alertmanager "
                "receiver, which makes one job per alert"
            )
        envelope: Mapping[str, Any] = payload
        item = alerts[0]
    else:
        envelope = {}
        item = payload
    if not _shaped(item, status_fallback=envelope.get("status")):
        raise InvalidPayload(
            "the payload is not an Alertmanager alert: it needs status (firing or resolved) "
            "and labels (an object)"
        )
    return Alert(
        status=item.get("status", envelope.get("status")),
        labels=_strings(item["labels"]),
        annotations=_strings(item.get("annotations") or {}),
        starts_at=_time_text(item.get("startsAt")),
        ends_at=_time_text(item.get("endsAt")),
        generator_url=_text(item.get("generatorURL")),
        fingerprint=_text(item.get("fingerprint")),
        external_url=_text(envelope.get("externalURL")),
        receiver=_text(envelope.get("receiver")),
    )


def _strings(values: Mapping[Any, Any]) -> dict[str, str]:
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in values.items()
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _time_text(value: Any) -> str | None:
    text = _text(value)
    if text is None or text.startswith("0001-01-01"):
        return None
    return text


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 time (Alertmanager writes nanoseconds) as an aware datetime, or None
    when absent, unknown (zero time) or unreadable."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = _FRACTION.sub(r"\1", value.strip(), count=1)
    if text[-1:] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def silence_url(external_url: str | None, labels: Mapping[str, str]) -> str | None:
    """``{externalURL}/#/silences/new?filter=...`` with a matcher per label, alertname last,
    URL-encoded: the link Alertmanager's own templates build (``__alert_silence_link``)."""
    if not external_url or check_url(external_url) is not None:
        return None
    names = sorted(k for k in labels if k != "alertname")
    if "alertname" in labels:
        names.append("alertname")
    matchers = ", ".join(f"{name}={_quoted(labels[name])}" for name in names)
    return (
        f"{external_url.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}', safe='')}"
    )


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def labels_hash(labels: Mapping[str, str]) -> str:
    text = json.dumps(sorted(labels.items()), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
