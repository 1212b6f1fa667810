"""Publishing target types: configuration checks, endpoints and request rendering.

Pure code, no network: webhook signatures are verified with the independent
``standardwebhooks`` library, Slack messages against Slack's Block Kit limits.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from herald_core.errors import InvalidTarget
from herald_delivery.target_types import TYPES, InvalidPayload, RenderContext, get
from herald_delivery.target_types.base import USER_AGENT, OutgoingRequest
from herald_delivery.target_types.pagerduty import DEFAULT_URL
from herald_model import target_spec as spec_module
from herald_model.target_spec import PublishingTarget, SecretRef, TargetSpec, parse_spec

ROUTING_KEY = "R0abcdef0123456789ABCDEF01234567"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


# -- helpers ------------------------------------------------------------------------------


def make_target(
    kind: str,
    *,
    url: str | None = None,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    name: str = "oncall-hook",
) -> PublishingTarget:
    # Not validated: some tests hand the transport headers a spec would refuse.
    spec = TargetSpec.model_construct(
        type=kind,
        url=url,
        secret_ref=None if secret is None else SecretRef(name=secret),
        headers=dict(headers or {}),
    )
    return PublishingTarget(namespace="default", name=name, spec=spec)


def make_ctx(
    target: PublishingTarget,
    payload: Any = None,
    *,
    payload_json: str | None = None,
    secrets: Mapping[str, str] | None = None,
    job_id: uuid.UUID | None = None,
    attempt: int = 1,
    timestamp: int | None = None,
) -> RenderContext:
    if payload_json is None:
        payload_json = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return RenderContext(
        job_id=job_id or uuid.uuid4(),
        attempt=attempt,
        payload_json=payload_json,
        target=target,
        secrets=dict(secrets or {}),
        timestamp=int(time.time()) if timestamp is None else timestamp,
    )


def new_secret(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


def alert_message(
    status: str = "firing",
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    fingerprint: str | None = "a1b2c3d4e5f60708",
    external_url: str = "http://alertmanager.example:9093",
) -> dict[str, Any]:
    labels = dict(
        labels
        if labels is not None
        else {
            "alertname": "HighLatency",
            "severity": "critical",
            "instance": "api-1:8080",
            "job": "api",
            "namespace": "prod",
            "service": "checkout",
        }
    )
    annotations = dict(
        annotations
        if annotations is not None
        else {
            "summary": "p99 above 500ms",
            "description": "p99 latency is 812ms",
            "runbook_url": "https://runbooks.example/HighLatency",
        }
    )
    alert: dict[str, Any] = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": "2026-11-20T10:00:00.123456789Z",
        "endsAt": "2026-11-20T10:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up&g0.tab=1",
    }
    if fingerprint is not None:
        alert["fingerprint"] = fingerprint
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "herald",
        "groupLabels": {"alertname": labels.get("alertname", "")},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [alert],
    }


def body_of(request: OutgoingRequest) -> Any:
    return json.loads(request.body)


def assert_no_secret(texts: list[str] | str, *secrets: str) -> None:
    joined = " ".join([texts] if isinstance(texts, str) else texts)
    for secret in secrets:
        for part in secret.split():
            assert part not in joined
            assert part.removeprefix("whsec_") not in joined


def assert_slack_limits(message: Mapping[str, Any]) -> None:
    """Slack's Block Kit limits (https://api.slack.com/reference/block-kit/blocks)."""
    assert isinstance(message["text"], str) and 0 < len(message["text"]) <= 3000
    blocks = message["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        elif block["type"] == "section":
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= 3000
            if "fields" in block:
                assert 0 < len(block["fields"]) <= 10
                for field in block["fields"]:
                    assert 0 < len(field["text"]) <= 2000
            assert "text" in block or "fields" in block
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                assert 0 < len(element["text"]) <= 3000
        else:
            raise AssertionError(f"unexpected block {block['type']}")


def slack_texts(message: Mapping[str, Any]) -> list[str]:
    """Every mrkdwn text of a message, the fallback text first."""
    texts = [message["text"]]
    for block in message["blocks"]:
        if block["type"] == "section":
            texts += [block["text"]["text"]] if "text" in block else []
            texts += [f["text"] for f in block.get("fields", [])]
        elif block["type"] == "context":
            texts += [e["text"] for e in block["elements"]]
    return texts


def blocks_of(message: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in message["blocks"] if b["type"] == kind]


# -- registry -----------------------------------------------------------------------------


def test_every_spec_type_is_registered() -> None:
    assert set(TYPES) == set(spec_module.TYPES)
    for name, target_type in TYPES.items():
        assert get(name) is target_type
        assert target_type.name == name
        assert not target_type.required_secret_keys & target_type.optional_secret_keys
        assert "url" in target_type.optional_secret_keys


def test_secret_keys_per_type() -> None:
    assert get("webhook").optional_secret_keys == {"url", "signingSecret", "authorization"}
    assert get("pagerduty").required_secret_keys == {"routingKey"}
    assert get("slack").required_secret_keys == frozenset()


def test_get_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(InvalidTarget) as info:
        get("teams")
    assert "'teams'" in str(info.value)
    assert "pagerduty, slack, webhook" in str(info.value)


# -- common: headers, endpoint, Secret url ------------------------------------------------


@pytest.mark.parametrize("kind", ["webhook", "slack", "pagerduty"])
def test_common_headers_and_extra_headers(kind: str) -> None:
    target = make_target(
        kind,
        url="https://example.com/hook",
        headers={"X-Team": "sre", "content-type": "text/plain", "User-Agent": "curl"},
    )
    secrets = {"routingKey": ROUTING_KEY} if kind == "pagerduty" else {}
    request = get(kind).render(make_ctx(target, {"hello": "world"}, secrets=secrets))
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("Herald/")
    assert request.headers["X-Team"] == "sre"
    # Herald's own headers win over a target's, whatever the case.
    lowered = [name.lower() for name in request.headers]
    assert lowered.count("content-type") == 1
    assert lowered.count("user-agent") == 1


@pytest.mark.parametrize("kind", ["webhook", "slack", "pagerduty"])
def test_endpoint_precedence(kind: str) -> None:
    target_type = get(kind)
    both = make_target(kind, url="https://spec.example/hook", secret="s").spec
    assert target_type.endpoint(both, {"url": "https://secret.example/x\n"}) == (
        "https://secret.example/x"
    )
    assert target_type.endpoint(both, {}) == "https://spec.example/hook"
    assert target_type.endpoint(both, {"url": "  "}) == "https://spec.example/hook"
    neither = make_target(kind, secret="s").spec
    if kind == "pagerduty":
        assert target_type.endpoint(neither, {}) == DEFAULT_URL
        assert DEFAULT_URL == "https://events.pagerduty.com/v2/enqueue"
    else:
        with pytest.raises(InvalidTarget, match=r"spec\.url or key url"):
            target_type.endpoint(neither, {})


@pytest.mark.parametrize("kind", ["webhook", "slack", "pagerduty"])
@pytest.mark.parametrize(
    "bad_url",
    [
        "ftp://hooks.example.com/services/T0/B0/SECRETPART",
        "https:///services/SECRETPART",
        "hooks.example.com/services/SECRETPART",
        "https://hooks.example.com/services/SECRET PART",
        "http://[::1/SECRETPART",
        "https://hooks.example.com/services/SECRET\x00PART",
        "ftp://user:SECRETPART@hooks.example.com/x",
    ],
)
def test_check_reports_a_bad_secret_url_without_its_value(kind: str, bad_url: str) -> None:
    secrets = {"url": bad_url, "routingKey": ROUTING_KEY}
    problems = get(kind).check(make_target(kind, secret="oncall-hook").spec, secrets)
    assert len(problems) == 1, problems
    assert problems[0].startswith("Secret oncall-hook key url ")
    spec = make_target(kind, url="https://spec.example/x", secret="oncall-hook").spec
    with pytest.raises(InvalidTarget) as info:
        get(kind).endpoint(spec, secrets)
    for message in (problems[0], str(info.value)):
        assert "value is not shown" in message
        assert "SECRET" not in message
        assert "hooks.example.com" not in message


@pytest.mark.parametrize("kind", ["webhook", "slack", "pagerduty"])
def test_a_secret_url_may_hold_credentials(kind: str) -> None:
    """spec.url refuses user:password@ (the spec is not secret); the Secret's url key takes
    it, and the request carries it, while the request's repr does not show it."""
    spec = make_target(kind, secret="oncall-hook").spec
    url = "https://user:SECRETPART@hooks.example.com/x"
    assert get(kind).check(spec, {"url": url, "routingKey": ROUTING_KEY}) == []
    assert get(kind).endpoint(spec, {"url": url}) == url
    with pytest.raises(InvalidTarget, match="must not hold credentials") as info:
        parse_spec({"type": kind, "url": url})
    assert "SECRETPART" not in str(info.value)


@pytest.mark.parametrize("kind", ["webhook", "slack"])
def test_check_reports_a_missing_endpoint(kind: str) -> None:
    target_type = get(kind)
    with_secret = make_target(kind, secret="oncall-hook").spec
    [problem] = target_type.check(with_secret, {})
    assert "Secret oncall-hook has no key url" in problem
    assert "spec.url" in problem
    # The Secret could not be read: nothing can be said about its url.
    assert target_type.check(with_secret, None) == []
    assert target_type.check(with_secret, {"url": "https://hooks.example.com/x"}) == []
    no_secret = make_target(kind).spec
    [problem] = target_type.check(no_secret, None)
    assert problem.startswith("spec.url is required")
    assert target_type.check(make_target(kind, url="https://example.com").spec, None) == []


def test_check_reports_a_type_mismatch() -> None:
    problems = get("slack").check(make_target("webhook", url="https://example.com").spec, {})
    assert problems == ["spec.type is 'webhook', not 'slack'"]


def test_reprs_hide_secrets_and_credential_urls() -> None:
    signing = new_secret()
    target = make_target("pagerduty", url=None, secret="pd")
    ctx = make_ctx(target, {"a": 1}, secrets={"routingKey": ROUTING_KEY, "signingSecret": signing})
    assert ROUTING_KEY not in repr(ctx)
    assert signing not in repr(ctx)
    request = get("pagerduty").render(ctx)
    assert ROUTING_KEY.encode() in request.body
    assert ROUTING_KEY not in repr(request)
    slack = make_target("slack", secret="slack")
    request = get("slack").render(make_ctx(slack, {"a": 1}, secrets={"url": SLACK_URL}))
    assert request.url == SLACK_URL
    assert "SECRET" not in repr(request)
    assert "hooks.slack.com" in repr(request)
    for target_type in TYPES.values():
        assert repr(target_type) == f"<target type {target_type.name}>"


def test_a_payload_that_is_not_json_is_invalid() -> None:
    for kind, secrets in (("slack", {}), ("pagerduty", {"routingKey": ROUTING_KEY})):
        target = make_target(kind, url="https://example.com/x", secret="s")
        with pytest.raises(InvalidPayload, match="not valid JSON"):
            get(kind).render(make_ctx(target, payload_json="{nope", secrets=secrets))


# -- webhook ------------------------------------------------------------------------------


def test_webhook_check_accepts_good_configurations() -> None:
    webhook = get("webhook")
    spec = make_target("webhook", url="https://example.com/hook", secret="oncall-hook").spec
    assert webhook.check(spec, {}) == []
    assert webhook.check(spec, {"signingSecret": new_secret()}) == []
    assert webhook.check(spec, {"signingSecret": new_secret(24) + "\n"}) == []
    assert webhook.check(spec, {"signingSecret": f"{new_secret()} {new_secret(64)}"}) == []
    raw = base64.b64encode(os.urandom(32)).decode().rstrip("=")  # no prefix, no padding
    assert webhook.check(spec, {"signingSecret": raw}) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("whsec_not*base64!SECRETPART", "is not valid base64"),
        ("whsec_" + base64.b64encode(b"SECRETPART-16byt").decode(), "decodes to 16 bytes"),
        ("whsec_" + base64.b64encode(b"S" * 65).decode(), "decodes to 65 bytes"),
        ("   ", "is empty"),
        ("whsk_" + base64.b64encode(b"SECRETPART" * 4).decode(), "not 32 (seed) or 64"),
        ("whpk_" + base64.b64encode(b"SECRETPART" * 4).decode(), "is a public key"),
    ],
)
def test_webhook_check_reports_a_bad_signing_secret(value: str, expected: str) -> None:
    spec = make_target("webhook", url="https://example.com/hook", secret="oncall-hook").spec
    [problem] = get("webhook").check(spec, {"signingSecret": value})
    assert problem.startswith("Secret oncall-hook key signingSecret: ")
    assert expected in problem
    assert "whsec_<base64 of 24 to 64 random bytes>" in problem
    assert_no_secret(problem, value)
    assert "SECRETPART" not in problem


def test_webhook_check_names_the_bad_secret_of_a_rotation() -> None:
    spec = make_target("webhook", url="https://example.com/hook", secret="oncall-hook").spec
    good, bad = new_secret(), "whsec_" + base64.b64encode(b"short").decode()
    [problem] = get("webhook").check(spec, {"signingSecret": f"{good}\n{bad}"})
    assert "secret #2 of 2 decodes to 5 bytes" in problem
    assert_no_secret(problem, good, bad)


def test_webhook_sends_the_secret_authorization_header() -> None:
    """Credentials come from the Secret, never the spec: key authorization becomes the
    Authorization header (whitespace around it trimmed), over any header of the spec."""
    target = make_target(
        "webhook", url="https://example.com/hook", secret="oncall-hook", headers={"X-Team": "sre"}
    )
    request = get("webhook").render(
        make_ctx(target, {"a": 1}, secrets={"authorization": "Bearer SECRETPART\n"})
    )
    assert request.headers["Authorization"] == "Bearer SECRETPART"
    assert request.headers["X-Team"] == "sre"
    assert "SECRETPART" not in repr(request)
    without = get("webhook").render(make_ctx(target, {"a": 1}, secrets={}))
    assert "Authorization" not in without.headers
    [problem] = get("webhook").check(target.spec, {"authorization": "Bearer a\nX-Evil: 1"})
    assert problem.startswith("Secret oncall-hook key authorization: must be a single-line ")
    [problem] = get("webhook").check(target.spec, {"authorization": "Bearer a\x00SECRETPART"})
    assert "without control characters" in problem and "SECRETPART" not in problem


def test_webhook_body_is_the_payload_byte_for_byte() -> None:
    payload_json = '{"b":1,"a":"h\u00e9llo \u2603","n":1.50,"list":[3,2,1],"esc":"\\u00e9"}'
    target = make_target("webhook", url="https://example.com/hook")
    request = get("webhook").render(make_ctx(target, payload_json=payload_json))
    assert request.body == payload_json.encode("utf-8")
    assert request.url == "https://example.com/hook"


def test_webhook_headers_without_a_signing_secret() -> None:
    job_id = uuid.uuid4()
    target = make_target("webhook", url="https://example.com/hook", headers={"X-Team": "sre"})
    request = get("webhook").render(
        make_ctx(target, {"a": 1}, job_id=job_id, timestamp=1_795_000_000)
    )
    assert request.headers == {
        "X-Team": "sre",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": str(job_id),
        "webhook-timestamp": "1795000000",
    }


def test_webhook_signature_verifies_with_standardwebhooks() -> None:
    secret = new_secret()
    target = make_target("webhook", url="https://example.com/hook", secret="oncall-hook")
    payload = {"event": "deploy", "service": "checkout", "note": "caf\u00e9 \u2603"}
    request = get("webhook").render(make_ctx(target, payload, secrets={"signingSecret": secret}))
    assert request.headers["webhook-signature"].startswith("v1,")
    assert " " not in request.headers["webhook-signature"]
    assert Webhook(secret).verify(request.body, request.headers) == payload
    # A receiver that does not use the whsec_ prefix gets the same key.
    assert Webhook(secret.removeprefix("whsec_")).verify(request.body, request.headers)


def test_webhook_signature_with_rotated_secrets() -> None:
    old, new, other = new_secret(), new_secret(64), new_secret()
    target = make_target("webhook", url="https://example.com/hook", secret="oncall-hook")
    ctx = make_ctx(target, {"a": 1}, secrets={"signingSecret": f"{new}  {old}\n"})
    request = get("webhook").render(ctx)
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert Webhook(old).verify(request.body, request.headers) == {"a": 1}
    assert Webhook(new).verify(request.body, request.headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(request.body, request.headers)


def test_webhook_signature_fails_for_tampering_or_a_wrong_secret() -> None:
    secret = new_secret()
    target = make_target("webhook", url="https://example.com/hook", secret="oncall-hook")
    request = get("webhook").render(
        make_ctx(target, {"amount": 10}, secrets={"signingSecret": secret})
    )
    verifier = Webhook(secret)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(b'{"amount":1000}', request.headers)
    with pytest.raises(WebhookVerificationError):
        verifier.verify(request.body, {**request.headers, "webhook-id": str(uuid.uuid4())})
    with pytest.raises(WebhookVerificationError):
        bumped = str(int(request.headers["webhook-timestamp"]) + 1)
        verifier.verify(request.body, {**request.headers, "webhook-timestamp": bumped})
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)


def test_webhook_id_is_stable_across_retries_and_timestamp_is_the_attempts() -> None:
    job_id = uuid.uuid4()
    target = make_target("webhook", url="https://example.com/hook")
    first = get("webhook").render(make_ctx(target, {}, job_id=job_id, timestamp=100))
    second = get("webhook").render(make_ctx(target, {}, job_id=job_id, attempt=2, timestamp=160))
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(job_id)
    assert (first.headers["webhook-timestamp"], second.headers["webhook-timestamp"]) == (
        "100",
        "160",
    )


def test_webhook_secret_url_overrides_spec_url() -> None:
    target = make_target("webhook", url="https://spec.example/hook", secret="oncall-hook")
    ctx = make_ctx(target, {}, secrets={"url": "https://secret.example/hook"})
    assert get("webhook").render(ctx).url == "https://secret.example/hook"


def test_webhook_refuses_to_send_with_an_unusable_signing_secret() -> None:
    bad = "whsec_" + base64.b64encode(b"SECRETPART").decode()
    target = make_target("webhook", url="https://example.com/hook", secret="oncall-hook")
    with pytest.raises(InvalidTarget) as info:
        get("webhook").render(make_ctx(target, {}, secrets={"signingSecret": bad}))
    assert "default/oncall-hook" in str(info.value)
    assert "signingSecret" in str(info.value)
    assert_no_secret(str(info.value), bad)


# -- slack --------------------------------------------------------------------------------


def render_slack(payload: Any, **kwargs: Any) -> dict[str, Any]:
    target = make_target("slack", secret="slack-hook", name=kwargs.pop("name", "oncall-slack"))
    request = get("slack").render(make_ctx(target, payload, secrets={"url": SLACK_URL}))
    assert request.url == SLACK_URL
    message: dict[str, Any] = body_of(request)
    return message


def test_slack_check() -> None:
    slack = get("slack")
    spec = make_target("slack", secret="slack-hook").spec
    assert slack.check(spec, {"url": SLACK_URL}) == []
    assert slack.check(make_target("slack", url=SLACK_URL).spec, None) == []
    [problem] = slack.check(spec, {"unrelated": "x"})
    assert problem.startswith("Secret slack-hook has no key url")


def test_slack_firing_critical_alert() -> None:
    message = render_slack(alert_message())
    assert_slack_limits(message)
    assert message["text"] == "[FIRING] HighLatency (critical) — p99 above 500ms"
    [head] = blocks_of(message, "header")
    assert head["text"]["text"] == ":rotating_light: [FIRING] HighLatency"
    assert message["blocks"][0] is head
    notes = message["blocks"][1]["text"]["text"]
    assert "*Summary:* p99 above 500ms" in notes
    assert "*Description:* p99 latency is 812ms" in notes
    fields = [f["text"] for b in blocks_of(message, "section") for f in b.get("fields", [])]
    assert fields[0] == "*Severity*\ncritical"
    started = int(dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC).timestamp())
    assert fields[1].startswith(f"*Started*\n<!date^{started}^")
    assert fields[1].endswith("|2026-11-20 10:00:00 UTC>")
    assert not any(f.startswith("*Ended*") for f in fields)  # a firing alert has not ended
    assert fields[2:] == [
        "*instance*\napi-1:8080",
        "*job*\napi",
        "*namespace*\nprod",
        "*service*\ncheckout",
    ]
    [links] = blocks_of(message, "context")
    texts = [e["text"] for e in links["elements"]]
    assert texts[0] == "<http://prometheus.example:9090/graph?g0.expr=up&amp;g0.tab=1|Source>"
    assert texts[1] == "<https://runbooks.example/HighLatency|Runbook>"
    assert texts[2] == (
        "<http://alertmanager.example:9093/#/silences/new?filter=%7Binstance%3D%22api-1%3A8080"
        "%22%2C%20job%3D%22api%22%2C%20namespace%3D%22prod%22%2C%20service%3D%22checkout%22"
        "%2C%20severity%3D%22critical%22%2C%20alertname%3D%22HighLatency%22%7D|Silence>"
    )


def test_slack_resolved_alert() -> None:
    message = render_slack(alert_message("resolved"))
    assert_slack_limits(message)
    assert message["text"].startswith("[RESOLVED] HighLatency (critical)")
    [head] = blocks_of(message, "header")
    assert head["text"]["text"] == ":white_check_mark: [RESOLVED] HighLatency"
    fields = [f["text"] for b in blocks_of(message, "section") for f in b.get("fields", [])]
    ended = int(dt.datetime(2026, 11, 20, 10, 30, tzinfo=dt.UTC).timestamp())
    assert (
        f"*Ended*\n<!date^{ended}^{{date_short_pretty}} {{time_secs}}|2026-11-20 10:30:00 UTC>"
        in fields
    )


@pytest.mark.parametrize(
    ("severity", "emoji"),
    [
        ("critical", ":rotating_light:"),
        ("error", ":red_circle:"),
        ("High", ":red_circle:"),
        ("warning", ":warning:"),
        ("info", ":information_source:"),
        ("page-me", ":warning:"),
    ],
)
def test_slack_emoji_per_severity(severity: str, emoji: str) -> None:
    message = render_slack(alert_message(labels={"alertname": "X", "severity": severity}))
    assert blocks_of(message, "header")[0]["text"]["text"] == f"{emoji} [FIRING] X"
    assert message["text"] == f"[FIRING] X ({severity}) — p99 above 500ms"


def test_slack_alert_without_annotations_severity_or_links() -> None:
    payload = alert_message(labels={"alertname": "Down"}, annotations={}, external_url="")
    del payload["alerts"][0]["generatorURL"]
    message = render_slack(payload)
    assert_slack_limits(message)
    assert message["text"] == "[FIRING] Down"
    assert blocks_of(message, "context") == []
    fields = [f["text"] for b in blocks_of(message, "section") for f in b.get("fields", [])]
    assert fields[0] == "*Severity*\nunknown"


def test_slack_bare_alert() -> None:
    alert = alert_message()["alerts"][0]
    message = render_slack(alert)
    assert message["text"] == "[FIRING] HighLatency (critical) — p99 above 500ms"
    # No externalURL without the envelope: no silence link.
    [links] = blocks_of(message, "context")
    assert [e["text"].rsplit("|", 1)[1] for e in links["elements"]] == ["Source>", "Runbook>"]


def test_slack_many_labels_and_a_huge_annotation_respect_the_limits() -> None:
    labels = {f"label_{i:03}": f"value-{i}-" + "v" * 3000 for i in range(120)}
    labels["alertname"] = "Storm" * 100
    labels["severity"] = "critical"
    annotations = {"summary": "s" * 10_000, "description": "<d>" * 5_000, "other": "o" * 5000}
    message = render_slack(alert_message(labels=labels, annotations=annotations))
    assert_slack_limits(message)
    field_sections = [b for b in blocks_of(message, "section") if "fields" in b]
    assert len(field_sections) == 3
    shown = [f["text"] for b in field_sections for f in b["fields"]]
    assert shown[2].startswith("*label_000*\nvalue-0-vvv")
    assert shown[2].endswith("…")
    more = blocks_of(message, "context")[0]["elements"][0]["text"]
    assert more.startswith("92 more labels not shown: label_028, label_029")
    notes = message["blocks"][1]["text"]["text"]
    assert notes.endswith("…")
    assert not notes[:-1].endswith(("&", "&l", "&lt"))  # no entity cut in half


def test_slack_escapes_user_text() -> None:
    labels = {"alertname": "Esc", "team": "<!channel> & <https://evil.example|click>"}
    annotations = {"summary": "a < b & c > d", "description": "<@U123> ping"}
    message = render_slack(alert_message(labels=labels, annotations=annotations))
    assert message["text"] == "[FIRING] Esc — a &lt; b &amp; c &gt; d"
    for text in slack_texts(message):
        body = text.replace("<!date^", "").replace("<http", "")
        assert "<!channel>" not in body
        assert "<@U123>" not in body
        assert "<https://evil" not in body
    fields = [f["text"] for b in blocks_of(message, "section") for f in b.get("fields", [])]
    assert "*team*\n&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in fields
    assert "*Description:* &lt;@U123&gt; ping" in message["blocks"][1]["text"]["text"]


@pytest.mark.parametrize(
    "payload",
    [
        {"text": "Deploy of *checkout* finished <https://ci.example/1|#1>"},
        {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]},
        {"text": "fallback", "blocks": [], "unfurl_links": False},
    ],
)
def test_slack_native_messages_are_sent_as_is(payload: dict[str, Any]) -> None:
    payload_json = json.dumps(payload, indent=1)  # any formatting: the bytes are kept
    target = make_target("slack", url=SLACK_URL)
    request = get("slack").render(make_ctx(target, payload_json=payload_json))
    assert request.body == payload_json.encode()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"text": 42}, "text is int, not a string"),
        ({"text": ["a"]}, "text is list, not a string"),
        ({"blocks": "nope"}, "blocks is not a list of objects"),
        ({"blocks": [1, 2]}, "blocks is not a list of objects"),
        ({"text": "x", "blocks": [{"type": "divider"}] * 51}, "51 blocks; Slack takes 50"),
        ({"text": ""}, "both are empty"),
        ({"text": None, "blocks": []}, "both are empty"),
    ],
)
def test_slack_invalid_native_messages(payload: dict[str, Any], expected: str) -> None:
    target = make_target("slack", url=SLACK_URL)
    with pytest.raises(InvalidPayload, match=expected):
        get("slack").render(make_ctx(target, payload))


def test_slack_generic_payload() -> None:
    payload = {"event": "deploy", "service": "checkout", "version": "1.2.3"}
    message = render_slack(payload, name="deploys")
    assert_slack_limits(message)
    assert message["text"] == "Herald: deploys"
    assert message["blocks"][0]["text"]["text"] == "Herald: deploys"
    code = message["blocks"][1]["text"]["text"]
    assert code == "```\n" + json.dumps(payload, indent=2) + "\n```"
    assert len(message["blocks"]) == 2  # nothing was cut


@pytest.mark.parametrize("payload", ["just a string", 42, None, [1, "two"], True])
def test_slack_generic_scalars_and_arrays(payload: Any) -> None:
    message = render_slack(payload)
    assert_slack_limits(message)
    assert json.loads(message["blocks"][1]["text"]["text"].strip("`\n")) == payload


def test_slack_generic_payload_is_truncated_and_says_so() -> None:
    payload = {"items": [{"id": i, "note": "<&>" * 20} for i in range(500)], "x": "```"}
    message = render_slack(payload)
    assert_slack_limits(message)
    code = message["blocks"][1]["text"]["text"]
    assert 2990 < len(code) <= 3000
    assert code.endswith("&amp;\n…\n```")  # no entity cut in half
    assert code.startswith("```\n{") and code.endswith("\n…\n```")
    assert "<" not in code and ">" not in code
    [note] = blocks_of(message, "context")
    assert "was truncated" in note["elements"][0]["text"]


def test_slack_several_alerts_in_one_job_are_refused() -> None:
    payload = alert_message()
    payload["alerts"].append(payload["alerts"][0])
    with pytest.raises(InvalidPayload, match=r"2 alerts.*Alertmanager receiver"):
        render_slack(payload)


# -- pagerduty ----------------------------------------------------------------------------


def render_pd(payload: Any, **kwargs: Any) -> dict[str, Any]:
    target = make_target("pagerduty", secret="pd", name=kwargs.pop("name", "oncall-pd"))
    secrets = {"routingKey": ROUTING_KEY, **kwargs.pop("secrets", {})}
    request = get("pagerduty").render(make_ctx(target, payload, secrets=secrets, **kwargs))
    event: dict[str, Any] = body_of(request)
    return event


def test_pagerduty_check_accepts_a_good_key() -> None:
    pagerduty = get("pagerduty")
    spec = make_target("pagerduty", secret="oncall-hook").spec
    assert pagerduty.check(spec, {"routingKey": ROUTING_KEY}) == []
    assert pagerduty.check(spec, {"routingKey": ROUTING_KEY + "\n"}) == []
    assert pagerduty.check(spec, None) == []  # the Secret is not known: nothing to say


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        ({}, "Secret oncall-hook has no key routingKey (PagerDuty's integration key)"),
        ({"routingKey": "  \n"}, "Secret oncall-hook key routingKey is empty"),
        ({"routingKey": ROUTING_KEY[:31]}, "it has 31 characters, not 32"),
        ({"routingKey": ROUTING_KEY + "Z"}, "it has 33 characters, not 32"),
        ({"routingKey": ROUTING_KEY[:30] + "-_"}, "contains characters other than"),
        ({"routingKey": '"' + ROUTING_KEY[:30] + '"'}, "contains characters other than"),
    ],
)
def test_pagerduty_check_reports_a_bad_key(secrets: dict[str, str], expected: str) -> None:
    spec = make_target("pagerduty", secret="oncall-hook").spec
    [problem] = get("pagerduty").check(spec, secrets)
    assert expected in problem
    assert "routingKey" in problem
    assert ROUTING_KEY[:30] not in problem


def test_pagerduty_check_without_a_secret_ref() -> None:
    [problem] = get("pagerduty").check(make_target("pagerduty").spec, None)
    assert problem.startswith("spec.secretRef is required")
    assert "routingKey" in problem


def test_pagerduty_render_without_a_key_blames_the_target() -> None:
    target = make_target("pagerduty", secret="pd")
    with pytest.raises(InvalidTarget, match="Secret pd has no key routingKey"):
        get("pagerduty").render(make_ctx(target, {"a": 1}, secrets={}))
    with pytest.raises(InvalidTarget, match=r"spec\.secretRef is not set"):
        get("pagerduty").render(make_ctx(make_target("pagerduty"), {"a": 1}))


def test_pagerduty_endpoints() -> None:
    target = make_target("pagerduty", secret="pd")
    secrets = {"routingKey": ROUTING_KEY}
    assert get("pagerduty").render(make_ctx(target, {}, secrets=secrets)).url == DEFAULT_URL
    local = make_target("pagerduty", url="http://127.0.0.1:8999/v2/enqueue", secret="pd")
    request = get("pagerduty").render(make_ctx(local, {}, secrets=secrets))
    assert request.url == "http://127.0.0.1:8999/v2/enqueue"
    override = {**secrets, "url": "http://127.0.0.1:9000/x"}
    assert get("pagerduty").render(make_ctx(local, {}, secrets=override)).url == (
        "http://127.0.0.1:9000/x"
    )


def test_pagerduty_trigger_from_a_firing_alert() -> None:
    event = render_pd(alert_message(), secrets={"routingKey": f"  {ROUTING_KEY}\n"})
    assert event == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "a1b2c3d4e5f60708",
        "payload": {
            "summary": "p99 above 500ms",
            "source": "api-1:8080",
            "severity": "critical",
            "timestamp": "2026-11-20T10:00:00.123+00:00",
            "component": "checkout",
            "group": "prod",
            "class": "HighLatency",
            "custom_details": {
                "labels": alert_message()["alerts"][0]["labels"],
                "annotations": alert_message()["alerts"][0]["annotations"],
            },
        },
        "client": "Herald",
        "client_url": "http://alertmanager.example:9093",
        "links": [
            {
                "href": "http://prometheus.example:9090/graph?g0.expr=up&g0.tab=1",
                "text": "Source",
            },
            {"href": "https://runbooks.example/HighLatency", "text": "Runbook"},
            {
                "href": "http://alertmanager.example:9093/#/silences/new?filter=%7Binstance%3D"
                "%22api-1%3A8080%22%2C%20job%3D%22api%22%2C%20namespace%3D%22prod%22%2C%20"
                "service%3D%22checkout%22%2C%20severity%3D%22critical%22%2C%20alertname%3D"
                "%22HighLatency%22%7D",
                "text": "Silence",
            },
        ],
    }


def test_pagerduty_resolve_from_a_resolved_alert() -> None:
    event = render_pd(alert_message("resolved"))
    assert event == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "a1b2c3d4e5f60708",
    }


def test_pagerduty_dedup_key_without_a_fingerprint_is_a_stable_label_hash() -> None:
    firing = render_pd(alert_message(fingerprint=None))
    labels = dict(reversed(alert_message()["alerts"][0]["labels"].items()))
    resolved = render_pd(alert_message("resolved", labels=labels, fingerprint=None))
    assert firing["dedup_key"] == resolved["dedup_key"]
    assert len(firing["dedup_key"]) == 64
    other = render_pd(alert_message(labels={"alertname": "Other"}, fingerprint=None))
    assert other["dedup_key"] != firing["dedup_key"]
    assert render_pd(alert_message(fingerprint="x" * 300))["dedup_key"] == firing["dedup_key"]


SEVERITY_TABLE = [
    ("critical", "critical"),
    ("CRITICAL", "critical"),
    ("error", "error"),
    ("high", "error"),
    ("major", "error"),
    ("warning", "warning"),
    ("warn", "warning"),
    ("medium", "warning"),
    ("info", "info"),
    ("low", "info"),
    ("none", "info"),
    ("minor", "info"),
    (" Minor ", "info"),
    ("page", "warning"),
    ("", "warning"),
    (None, "warning"),
]


@pytest.mark.parametrize(("label", "expected"), SEVERITY_TABLE)
def test_pagerduty_severity_mapping(label: str | None, expected: str) -> None:
    labels = {"alertname": "X"} if label is None else {"alertname": "X", "severity": label}
    assert render_pd(alert_message(labels=labels))["payload"]["severity"] == expected
    generic = {"summary": "s"} if label is None else {"summary": "s", "severity": label}
    assert render_pd(generic)["payload"]["severity"] == expected


def test_pagerduty_source_and_summary_fallbacks() -> None:
    labels = {"alertname": "Down", "job": "api", "zone": "b", "a": "1"}
    event = render_pd(alert_message(labels=labels, annotations={}), name="oncall-pd")
    assert event["payload"]["source"] == "api"
    assert event["payload"]["summary"] == "Down: a=1, job=api, zone=b"
    assert event["payload"]["group"] == "api"
    assert "component" not in event["payload"]
    event = render_pd(alert_message(labels={"alertname": "Down"}, annotations={}))
    assert event["payload"]["source"] == "oncall-pd"
    assert event["payload"]["summary"] == "Down"
    event = render_pd(alert_message(labels={}, annotations={}))
    assert event["payload"]["summary"] == "alert"
    assert "class" not in event["payload"]


def test_pagerduty_summary_is_truncated_to_1024() -> None:
    event = render_pd(alert_message(annotations={"summary": "x" * 5000}))
    assert len(event["payload"]["summary"]) == 1024
    assert event["payload"]["summary"].endswith("…")
    event = render_pd(alert_message(labels={"alertname": "A", "big": "y" * 5000}, annotations={}))
    assert len(event["payload"]["summary"]) == 1024


def test_pagerduty_event_passes_through_with_the_routing_key_set() -> None:
    given = {
        "routing_key": "someone-elses-key",
        "event_action": "trigger",
        "dedup_key": "deploy-42",
        "payload": {"summary": "Deploy failed", "source": "ci", "severity": "error"},
        "images": [{"src": "https://example.com/x.png"}],
    }
    event = render_pd(given)
    assert event == {**given, "routing_key": ROUTING_KEY}
    ack = {"event_action": "acknowledge", "dedup_key": "deploy-42"}
    assert render_pd(ack) == {**ack, "routing_key": ROUTING_KEY}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"event_action": "open"}, "event_action is 'open', not one of trigger"),
        ({"event_action": "resolve"}, "a resolve event needs dedup_key"),
        ({"event_action": "resolve", "dedup_key": 7}, "dedup_key is not a string"),
        ({"event_action": "trigger"}, "a trigger event needs payload"),
        (
            {"event_action": "trigger", "payload": {"summary": "s", "severity": "info"}},
            r"payload\.source is not a non-empty string",
        ),
        (
            {"event_action": "trigger", "payload": {"summary": "s", "source": "x"}},
            r"payload\.severity is None",
        ),
    ],
)
def test_pagerduty_invalid_events(event: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidPayload, match=expected) as info:
        render_pd(event)
    assert ROUTING_KEY not in str(info.value)


def test_pagerduty_generic_payload() -> None:
    job_id = uuid.uuid4()
    payload = {"summary": "Backup failed", "severity": "error", "host": "db-1"}
    event = render_pd(payload, job_id=job_id, name="backups")
    assert event == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": str(job_id),
        "payload": {
            "summary": "Backup failed",
            "source": "backups",
            "severity": "error",
            "custom_details": payload,
        },
        "client": "Herald",
    }
    assert render_pd({"summary": "s", "source": "db-1"})["payload"]["source"] == "db-1"


def test_pagerduty_generic_payload_without_a_summary() -> None:
    payload = {"event": "x" * 2000, "severity": 3}
    event = render_pd(payload)
    summary = event["payload"]["summary"]
    assert len(summary) == 1024
    assert summary.startswith('{"event":"xxx')
    assert event["payload"]["severity"] == "warning"
    for scalar in ("a string", 5, [1, 2], None):
        event = render_pd(scalar)
        assert event["payload"]["summary"] == json.dumps(scalar, separators=(",", ":"))
        assert "custom_details" not in event["payload"]


def test_pagerduty_generic_dedup_key_is_stable_across_retries() -> None:
    job_id = uuid.uuid4()
    first = render_pd({"a": 1}, job_id=job_id)
    second = render_pd({"a": 1}, job_id=job_id, attempt=2)
    assert first["dedup_key"] == second["dedup_key"] == str(job_id)


def test_pagerduty_oversized_details_are_dropped_not_sent() -> None:
    event = render_pd({"summary": "big", "blob": "z" * 600_000})
    assert event["payload"]["summary"] == "big"
    assert "custom details omitted" in event["payload"]["custom_details"]["note"]
    with pytest.raises(InvalidPayload, match="PagerDuty takes at most 524,288"):
        render_pd(
            {
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "x", "severity": "info"},
                "blob": "z" * 600_000,
            }
        )


def test_pagerduty_several_alerts_in_one_job_are_refused() -> None:
    payload = alert_message()
    payload["alerts"] = []
    with pytest.raises(InvalidPayload, match="0 alerts"):
        render_pd(payload)


# -- spec.disableAfterSeconds (the other field this branch adds) ----------------------------


def test_disable_after_is_checked_and_kept_in_the_registered_config() -> None:
    base = {"type": "webhook", "url": "https://example.com/h"}
    assert parse_spec(base).disable_after is None
    assert "disableAfterSeconds" not in parse_spec(base).to_config()
    spec = parse_spec({**base, "disableAfterSeconds": 3600})
    assert spec.disable_after == 3600 and spec.to_config()["disableAfterSeconds"] == 3600
    assert parse_spec(spec.to_config()) == spec
    for bad in (-1, "5d", 31_536_001, True):
        with pytest.raises(InvalidTarget, match=r"spec\.disableAfterSeconds"):
            parse_spec({**base, "disableAfterSeconds": bad})
