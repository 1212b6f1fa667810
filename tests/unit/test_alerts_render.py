"""Reading Alertmanager alerts out of job payloads (herald_delivery.target_types.alerts)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from herald_delivery.target_types import alerts
from herald_delivery.target_types.base import InvalidPayload


def envelope(*items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "herald",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am.example:9093/",
        "alerts": list(items),
        **fields,
    }


ALERT: dict[str, Any] = {
    "status": "resolved",
    "labels": {"alertname": "DiskFull", "severity": "Warning", "instance": "db-1"},
    "annotations": {"summary": "disk 95% full", "runbook_url": "https://rb.example/disk"},
    "startsAt": "2026-11-20T10:00:00.987654321+02:00",
    "endsAt": "2026-11-20T11:00:00Z",
    "generatorURL": "http://prom.example/graph",
    "fingerprint": "0123456789abcdef",
}


def test_one_alert_message_is_read() -> None:
    payload = envelope(ALERT)
    assert alerts.is_alert_envelope(payload)
    assert alerts.is_alert_message(payload)
    alert = alerts.read_alert(payload)
    assert alert == alerts.Alert(
        status="resolved",
        labels=ALERT["labels"],
        annotations=ALERT["annotations"],
        starts_at="2026-11-20T10:00:00.987654321+02:00",
        ends_at="2026-11-20T11:00:00Z",
        generator_url="http://prom.example/graph",
        fingerprint="0123456789abcdef",
        external_url="http://am.example:9093/",
        receiver="herald",
    )
    assert not alert.firing
    assert alert.name == "DiskFull"
    assert alert.severity == "Warning"
    assert alert.level == "warning"
    assert alert.summary == "disk 95% full"
    assert alert.description is None
    assert alert.runbook_url == "https://rb.example/disk"
    tz = dt.timezone(dt.timedelta(hours=2))
    assert alert.started == dt.datetime(2026, 11, 20, 10, 0, 0, 987654, tzinfo=tz)
    assert alert.ended == dt.datetime(2026, 11, 20, 11, tzinfo=dt.UTC)


def test_a_bare_alert_is_read() -> None:
    assert alerts.is_alert(ALERT)
    assert alerts.is_alert_message(ALERT)
    assert not alerts.is_alert_envelope(ALERT)
    alert = alerts.read_alert(ALERT)
    assert alert.external_url is None
    assert alert.receiver is None
    assert alert.silence_url() is None
    assert alert.fingerprint == "0123456789abcdef"


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "hello"},
        {"status": "firing"},
        {"status": "pending", "labels": {}},
        {"status": "firing", "labels": ["a"]},
        {"status": "firing", "labels": {}, "annotations": "x"},
        envelope(),
        envelope(ALERT, ALERT),
        envelope({"labels": {}}, status="unknown"),
        [ALERT],
        "firing",
        None,
    ],
)
def test_not_one_alert(payload: Any) -> None:
    assert not alerts.is_alert_message(payload)
    with pytest.raises(InvalidPayload):
        alerts.read_alert(payload)


def test_an_alert_without_a_status_takes_the_messages() -> None:
    item = {k: v for k, v in ALERT.items() if k != "status"}
    payload = envelope(item, status="firing")
    assert alerts.is_alert_message(payload)
    assert alerts.read_alert(payload).firing


def test_unknown_end_and_missing_fields() -> None:
    alert = alerts.read_alert(
        {"status": "firing", "labels": {}, "endsAt": alerts.ZERO_TIME, "startsAt": ""}
    )
    assert alert.ends_at is None and alert.ended is None
    assert alert.starts_at is None and alert.started is None
    assert alert.annotations == {}
    assert alert.name == "alert"
    assert alert.severity is None and alert.level is None
    assert alert.generator_url is None and alert.fingerprint is None


def test_non_string_label_values_become_json_text() -> None:
    alert = alerts.read_alert(
        {"status": "firing", "labels": {"n": 5, "b": True, "o": {"x": 1}}, "annotations": {}}
    )
    assert alert.labels == {"n": "5", "b": "true", "o": '{"x":1}'}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00:00Z", dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)),
        ("2026-11-20T10:00:00.5z", dt.datetime(2026, 11, 20, 10, 0, 0, 500000, tzinfo=dt.UTC)),
        (
            "2026-11-20T10:00:00.123456789Z",
            dt.datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=dt.UTC),
        ),
        ("2026-11-20T10:00:00", dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_time(text: str | None, expected: dt.datetime | None) -> None:
    assert alerts.parse_time(text) == expected


def test_silence_url_matches_alertmanagers_own_link() -> None:
    url = alerts.silence_url(
        "http://am.example:9093/",
        {"alertname": "Disk Full", "path": 'C:\\ "x"', "job": "a&b=c", "env": "prod"},
    )
    assert url is not None
    assert url.startswith("http://am.example:9093/#/silences/new?filter=%7B")
    fragment = urlsplit(url).fragment
    assert fragment.startswith("/silences/new?filter=")
    assert " " not in url and '"' not in url and "&" not in url.split("?", 1)[1]
    [matchers] = parse_qs(fragment.split("?", 1)[1])["filter"]
    assert matchers == ('{env="prod", job="a&b=c", path="C:\\\\ \\"x\\"", alertname="Disk Full"}')
    assert unquote(url.split("filter=", 1)[1]) == matchers


def test_silence_url_needs_an_http_external_url() -> None:
    assert alerts.silence_url(None, {"alertname": "x"}) is None
    assert alerts.silence_url("", {"alertname": "x"}) is None
    assert alerts.silence_url("javascript:alert(1)", {"alertname": "x"}) is None
    assert alerts.silence_url("https://am.example/prefix", {}) == (
        "https://am.example/prefix/#/silences/new?filter=%7B%7D"
    )


def test_labels_hash_ignores_order() -> None:
    one = alerts.labels_hash({"a": "1", "b": "2"})
    assert one == alerts.labels_hash({"b": "2", "a": "1"})
    assert one != alerts.labels_hash({"a": "1", "b": "3"})
    assert one != alerts.labels_hash({"a": "1b", "": "2"})


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("critical", "critical"),
        ("Error", "error"),
        ("high", "error"),
        ("major", "error"),
        ("warning", "warning"),
        ("WARN", "warning"),
        ("medium", "warning"),
        ("info", "info"),
        ("low", "info"),
        ("none", "info"),
        ("minor", "info"),
        ("disaster", None),
        (None, None),
    ],
)
def test_severity_levels(value: str | None, level: str | None) -> None:
    assert alerts.severity_level(value) == level
