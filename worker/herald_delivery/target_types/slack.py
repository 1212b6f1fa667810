"""Slack incoming webhooks, with Block Kit messages.

The webhook URL (a credential) is the Secret's ``url`` key, or ``spec.url``. What is sent:

- a payload that already is a Slack message (an object with ``text`` and/or ``blocks``):
  the payload itself, byte for byte;
- an Alertmanager alert (see :mod:`.alerts`): a readable alert - a header with its status
  and an emoji for status and severity, its summary and description, a fields section
  with severity, start/end times and the labels, and links (source, runbook, silence);
- anything else: a "Herald: <target>" message with the payload pretty-printed in a code
  block, cut to fit and saying so.

Slack's limits are respected (https://api.slack.com/reference/block-kit/blocks): at most
50 blocks, 150 characters of header text, 3000 of section text, 10 fields of 2000
characters each, 10 context elements. Text from the payload is escaped for mrkdwn
(``&``, ``<``, ``>``), so it cannot mention ``@channel`` or forge links.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from herald_delivery.target_types import alerts
from herald_delivery.target_types.base import (
    URL_KEY,
    InvalidPayload,
    OutgoingRequest,
    RenderContext,
    TargetType,
    json_body,
    truncate,
)
from herald_model.target_spec import check_url

MAX_BLOCKS = 50
MAX_HEADER_TEXT = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_CONTEXT_TEXT = 3000
MAX_FALLBACK_TEXT = 3000
MAX_LINK_URL = 2000
MAX_FIELD_SECTIONS = 3
"""Alert fields beyond 3 sections (30 fields) are listed by name in a context block."""

EMOJI = {
    "resolved": ":white_check_mark:",
    "critical": ":rotating_light:",
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}
ELLIPSIS = "…"


def escape(text: str) -> str:
    """Text safe in mrkdwn: Slack's three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(escaped: str, limit: int, marker: str = ELLIPSIS) -> str:
    """Escaped text cut to ``limit`` characters without splitting an entity."""
    if len(escaped) <= limit:
        return escaped
    head = escaped[: max(0, limit - len(marker))]
    amp = head.rfind("&", max(0, len(head) - 4))
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + marker


def link(url: str, label: str) -> str:
    safe = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe}|{label}>"


def header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(text, MAX_HEADER_TEXT), "emoji": True},
    }


def section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(mrkdwn, MAX_SECTION_TEXT)}}


def context(elements: list[str]) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": cut(text, MAX_CONTEXT_TEXT)}
            for text in elements[:MAX_CONTEXT_ELEMENTS]
        ],
    }


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def slack_date(alert_time: dt.datetime | None, text: str | None) -> str:
    """A time Slack shows in each reader's timezone (the UTC text as fallback)."""
    if alert_time is None:
        return escape(text) if text else "unknown"
    fallback = alert_time.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(alert_time.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def is_slack_message(payload: Any) -> bool:
    return isinstance(payload, Mapping) and ("text" in payload or "blocks" in payload)


def check_slack_message(payload: Mapping[str, Any]) -> None:
    """:class:`InvalidPayload` when a Slack-shaped payload cannot be a Slack message."""
    text, blocks = payload.get("text"), payload.get("blocks")
    prefix = "the payload is a Slack message (it has text or blocks), but"
    if text is not None and not isinstance(text, str):
        raise InvalidPayload(f"{prefix} text is {type(text).__name__}, not a string")
    if blocks is not None:
        if not isinstance(blocks, list) or not all(isinstance(b, Mapping) for b in blocks):
            raise InvalidPayload(f"{prefix} blocks is not a list of objects")
        if len(blocks) > MAX_BLOCKS:
            raise InvalidPayload(f"{prefix} it has {len(blocks)} blocks; Slack takes {MAX_BLOCKS}")
    if not text and not blocks:
        raise InvalidPayload(f"{prefix} both are empty: Slack refuses a message without either")


def alert_message(alert: alerts.Alert) -> dict[str, Any]:
    status = "FIRING" if alert.firing else "RESOLVED"
    emoji = EMOJI["resolved"] if not alert.firing else EMOJI[alert.level or "warning"]
    fallback = f"[{status}] {alert.name}"
    if alert.severity:
        fallback += f" ({alert.severity})"
    if alert.summary:
        fallback += f" — {alert.summary}"
    blocks = [header(f"{emoji} [{status}] {alert.name}")]

    notes = []
    if alert.summary:
        notes.append(f"*Summary:* {escape(alert.summary)}")
    if alert.description:
        notes.append(f"*Description:* {escape(alert.description)}")
    for key in sorted(alert.annotations):
        if key not in ("summary", "description", "runbook_url") and alert.annotations[key]:
            notes.append(f"*{escape(key)}:* {escape(alert.annotations[key])}")
    if notes:
        blocks.append(section("\n".join(notes)))

    fields = [
        f"*Severity*\n{escape(alert.severity or 'unknown')}",
        f"*Started*\n{slack_date(alert.started, alert.starts_at)}",
    ]
    if not alert.firing and alert.ends_at:
        fields.append(f"*Ended*\n{slack_date(alert.ended, alert.ends_at)}")
    labels = sorted(k for k in alert.labels if k not in ("alertname", "severity"))
    room = MAX_FIELDS * MAX_FIELD_SECTIONS - len(fields)
    for key in labels[:room]:
        fields.append(cut(f"*{escape(key)}*\n{escape(alert.labels[key])}", MAX_FIELD_TEXT))
    for chunk in _chunks(fields, MAX_FIELDS):
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in chunk]})
    if hidden := labels[room:]:
        names = ", ".join(escape(k) for k in hidden)
        blocks.append(context([f"{len(hidden)} more labels not shown: {names}"]))

    links = []
    for url, label in (
        (alert.generator_url, "Source"),
        (alert.runbook_url, "Runbook"),
        (alert.silence_url(), "Silence"),
    ):
        if url and check_url(url) is None and len(url) <= MAX_LINK_URL:
            links.append(link(url, label))
    if links:
        blocks.append(context(links))
    return {"text": cut(escape(fallback), MAX_FALLBACK_TEXT), "blocks": blocks}


def generic_message(payload: Any, target_name: str) -> dict[str, Any]:
    title = f"Herald: {target_name}"
    pretty = json.dumps(payload, indent=2, ensure_ascii=False)
    # A ``` in the payload would close the code block early.
    text = escape(pretty).replace("```", "`\u200b``")
    fence = "```\n{}\n```"
    room = MAX_SECTION_TEXT - len(fence) + 2
    blocks = [header(title), section(fence.format(cut(text, room, "\n" + ELLIPSIS)))]
    if len(text) > room:
        blocks.append(
            context([f"The payload ({len(pretty):,} characters of JSON) was truncated to fit."])
        )
    return {"text": escape(title), "blocks": blocks}


class Slack(TargetType):
    name = "slack"
    secret_key_help: ClassVar[Mapping[str, str]] = {URL_KEY: "the Slack incoming webhook URL"}

    def render(self, ctx: RenderContext) -> OutgoingRequest:
        spec = ctx.target.spec
        payload = ctx.payload()
        if is_slack_message(payload):
            check_slack_message(payload)
            body = ctx.payload_json.encode("utf-8")
        elif alerts.is_alert_envelope(payload) or alerts.is_alert(payload):
            body = json_body(alert_message(alerts.read_alert(payload)))
        else:
            body = json_body(generic_message(payload, ctx.target.name))
        return OutgoingRequest(
            url=self.endpoint(spec, ctx.secrets), headers=self.headers(spec), body=body
        )


SLACK = Slack()
