"""Structured logs: kopf's per-object context is one short field, not a dump."""

from __future__ import annotations

import json
import logging

from herald_tools.cli.logs import JsonFormatter, TextFormatter


def kopf_record() -> logging.LogRecord:
    record = logging.makeLogRecord(
        {
            "name": "kopf.objects",
            "msg": "Handler 'reconcile' succeeded.",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "settings": object(),  # kopf passes its whole OperatorSettings
            "k8s_skip": False,
            "k8s_ref": {"kind": "PublishingTarget", "namespace": "sre", "name": "hook"},
            "action": "reconcile",
        }
    )
    return record


def test_kopf_object_context_is_named_once() -> None:
    line = JsonFormatter().format(kopf_record())
    body = json.loads(line)
    assert body["object"] == "PublishingTarget/sre/hook"
    assert body["action"] == "reconcile"
    assert not {"settings", "k8s_skip", "k8s_ref"} & set(body)
    assert len(line) < 300, line
    text = TextFormatter().format(kopf_record())
    assert "object=PublishingTarget/sre/hook" in text and "settings" not in text
