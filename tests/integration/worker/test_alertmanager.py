"""Alertmanager as a producer: ``alertmanager.jobs_from_message`` (priorities, keys, payloads,
refusals naming the field), then end to end through POST /v1/alertmanager/{target}."""

from __future__ import annotations

import collections
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from herald_core.errors import InvalidRequest
from herald_core.states import Priority
from herald_tools.receiver import Answer
from herald_worker import alertmanager
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    per_id,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

MAX = 1 << 20


def message(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    """A webhook message as Alertmanager 0.27 sends it (payload version 4)."""
    return {
        "receiver": "herald-oncall",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {"alertname": "KubePodCrashLooping"},
        "commonLabels": {
            "alertname": "KubePodCrashLooping",
            "namespace": "payments",
            "prometheus": "monitoring/k8s",
        },
        "commonAnnotations": {"runbook_url": "https://runbooks.example/KubePodCrashLooping"},
        "externalURL": "http://alertmanager.monitoring.svc:9093",
        "version": "4",
        "groupKey": '{}/{severity=~"critical|warning"}:{alertname="KubePodCrashLooping"}',
        "truncatedAlerts": 0,
    }


def pod_alert(
    pod: str,
    severity: str,
    fingerprint: str,
    status: str = "firing",
    ends_at: str = "0001-01-01T00:00:00Z",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": "KubePodCrashLooping",
            "container": "api",
            "namespace": "payments",
            "pod": pod,
            "severity": severity,
            "prometheus": "monitoring/k8s",
        },
        "annotations": {
            "description": f"Pod payments/{pod} (api) is in waiting state (reason: "
            '"CrashLoopBackOff").',
            "summary": "Pod is crash looping.",
        },
        "startsAt": "2026-11-20T09:58:12.345Z",
        "endsAt": ends_at,
        "generatorURL": "http://prometheus.monitoring.svc:9090/graph?g0.expr=max_over_time"
        "%28kube_pod_container_status_waiting_reason%5B5m%5D%29+%3E%3D+1",
        "fingerprint": fingerprint,
    }


THREE = message(
    pod_alert("api-7d9f-abcde", "critical", "5b1c2a9e0d3f4e61"),
    pod_alert("api-7d9f-fghij", "warning", "8f0e1d2c3b4a5968"),
    pod_alert("api-7d9f-klmno", "info", "0a1b2c3d4e5f6789"),
)


# -- unit: jobs_from_message -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "severity", "expected"),
    [
        ("firing", "critical", Priority.HIGH),
        ("firing", "Critical", Priority.HIGH),
        ("firing", "CRITICAL", Priority.HIGH),
        ("resolved", "critical", Priority.LOW),
        ("firing", "info", Priority.LOW),
        ("resolved", "info", Priority.LOW),
        ("resolved", "warning", Priority.LOW),
        ("firing", "warning", Priority.MEDIUM),
        ("firing", "none", Priority.MEDIUM),
        ("firing", "page", Priority.MEDIUM),
        ("firing", None, Priority.MEDIUM),
        ("resolved", None, Priority.LOW),
    ],
)
def test_priority_mapping(status: str, severity: str | None, expected: Priority) -> None:
    labels = {"alertname": "X"} | ({"severity": severity} if severity is not None else {})
    assert alertmanager.priority_of(status, labels) is expected
    alert = {"status": status, "labels": labels, "startsAt": "2026-11-20T10:00:00Z"}
    [job] = alertmanager.jobs_from_message(message(alert), "hook", max_payload_bytes=MAX)
    assert job.priority is expected


def test_one_job_per_alert_with_keys_and_a_one_alert_payload() -> None:
    jobs = alertmanager.jobs_from_message(THREE, "default/hook", max_payload_bytes=MAX)
    assert [j.priority for j in jobs] == [Priority.HIGH, Priority.MEDIUM, Priority.LOW]
    for job, alert in zip(jobs, THREE["alerts"], strict=True):
        fp = alert["fingerprint"]
        assert job.target == "default/hook"
        assert job.idempotency_key == f"alertmanager:{fp}:firing:{alert['startsAt']}"
        assert job.ordering_key == f"alert:{fp}"
        payload = job.payload
        assert payload["version"] == "4"
        assert payload["alerts"] == [alert], "the alert, unchanged"
        assert payload["status"] == "firing"
        assert payload["truncatedAlerts"] == 0
        for key in (
            "receiver",
            "groupLabels",
            "commonLabels",
            "commonAnnotations",
            "externalURL",
            "groupKey",
        ):
            assert payload[key] == THREE[key], key
        assert json.loads(job.payload_json) == payload


def test_idempotency_key_tells_a_resolve_and_a_new_firing_apart() -> None:
    firing = pod_alert("p", "critical", "fp1")
    resolved = pod_alert("p", "critical", "fp1", "resolved", "2026-11-20T10:30:00Z")
    refiring = {**firing, "startsAt": "2026-11-20T11:00:00Z"}
    keys = [
        alertmanager.jobs_from_message(message(a), "hook", max_payload_bytes=MAX)[0]
        for a in (firing, resolved, refiring, copy.deepcopy(firing))
    ]
    assert len({k.idempotency_key for k in keys[:3]}) == 3
    assert keys[3].idempotency_key == keys[0].idempotency_key, "a re-sent alert is the same"
    assert {k.ordering_key for k in keys} == {"alert:fp1"}, "one chain per alert"
    assert [k.priority for k in keys[:2]] == [Priority.HIGH, Priority.LOW]


def test_fingerprint_is_computed_when_missing() -> None:
    a = {
        "status": "firing",
        "labels": {"alertname": "A", "instance": "x"},
        "startsAt": "2026-11-20T10:00:00Z",
    }
    b = {**a, "labels": {"instance": "x", "alertname": "A"}}  # same labels, other order
    c = {**a, "labels": {"alertname": "A", "instance": "y"}}
    [ja] = alertmanager.jobs_from_message(message(a), "hook", max_payload_bytes=MAX)
    [jb] = alertmanager.jobs_from_message(message(b), "hook", max_payload_bytes=MAX)
    [jc] = alertmanager.jobs_from_message(message(c), "hook", max_payload_bytes=MAX)
    assert ja.ordering_key == jb.ordering_key != jc.ordering_key
    fp = ja.payload["alerts"][0]["fingerprint"]
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert ja.idempotency_key == f"alertmanager:{fp}:firing:2026-11-20T10:00:00Z"


def _without(alert: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in alert.items() if k != key}


GOOD = pod_alert("p", "warning", "fp")
BAD: list[tuple[str, Any, str]] = [
    ("not an object", [GOOD], "body"),
    ("a string", "alert", "body"),
    ("version 3", {**message(GOOD), "version": "3"}, "version"),
    ("version 5 as a number", {**message(GOOD), "version": 5}, "version"),
    ("no alerts", _without(message(GOOD), "alerts"), "alerts"),
    ("empty alerts", message(), "alerts"),
    ("alerts an object", {**message(GOOD), "alerts": {"0": GOOD}}, "alerts"),
    ("too many alerts", message(*[GOOD] * 1001), "alerts"),
    ("an alert not an object", message(GOOD, "oops"), "alerts[1]"),  # type: ignore[arg-type]
    ("status missing", message(_without(GOOD, "status")), "alerts[0].status"),
    ("status pending", message({**GOOD, "status": "pending"}), "alerts[0].status"),
    ("labels missing", message(GOOD, _without(GOOD, "labels")), "alerts[1].labels"),
    ("labels empty", message({**GOOD, "labels": {}}), "alerts[0].labels"),
    ("label value a number", message({**GOOD, "labels": {"a": 1}}), "alerts[0].labels.a"),
    ("labels a list", message({**GOOD, "labels": ["a"]}), "alerts[0].labels"),
    (
        "annotations not strings",
        message({**GOOD, "annotations": {"a": None}}),
        "alerts[0].annotations.a",
    ),
    ("startsAt missing", message(_without(GOOD, "startsAt")), "alerts[0].startsAt"),
    ("startsAt empty", message({**GOOD, "startsAt": ""}), "alerts[0].startsAt"),
    ("startsAt a number", message({**GOOD, "startsAt": 1}), "alerts[0].startsAt"),
    ("groupLabels a list", {**message(GOOD), "groupLabels": []}, "groupLabels"),
    ("commonLabels numbers", {**message(GOOD), "commonLabels": {"a": 1}}, "commonLabels.a"),
    (
        "commonAnnotations a string",
        {**message(GOOD), "commonAnnotations": "x"},
        "commonAnnotations",
    ),
]


@pytest.mark.parametrize(("what", "body", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_messages_name_the_field(what: str, body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        alertmanager.jobs_from_message(body, "hook", max_payload_bytes=MAX)
    assert raised.value.field == field, raised.value


def test_an_alert_too_large_for_a_payload_is_refused() -> None:
    big = {**GOOD, "annotations": {"description": "x" * 5000}}
    with pytest.raises(InvalidRequest) as raised:
        alertmanager.jobs_from_message(message(GOOD, big), "hook", max_payload_bytes=4096)
    assert raised.value.field == "alerts[1]"
    assert "HERALD_MAX_PAYLOAD_BYTES" in raised.value.problem


# -- end to end ------------------------------------------------------------------------------


def manifests(tmp_path: Path, url: str) -> Path:
    return write_manifests(
        tmp_path / "targets.yaml",
        [
            target_doc(
                "oncall", url, retry={"maxAttempts": 5, **FAST_RETRY}, circuitBreaker=NO_BREAKER
            )
        ],
    )


async def test_alerts_become_jobs_delivered_once_each(db_url: str, tmp_path: Path) -> None:
    async with TrackingReceiver() as rx, worker(db_url, manifests(tmp_path, rx.url)) as w:
        status, body = await w.post("/v1/alertmanager/oncall", json=THREE)
        assert status == 200, body
        assert (body["created"], body["duplicates"]) == (3, 0)
        ids = [j["id"] for j in body["jobs"]]
        await wait_state(w.queue, "succeeded", 3)
        assert sorted(rx.delivered_ids()) == sorted(ids)
        assert len(rx.received) == 3, "one request per alert"
        got = {r.webhook_id: json.loads(r.body) for r in rx.received}
        for job_id, alert in zip(ids, THREE["alerts"], strict=True):
            assert got[job_id]["alerts"] == [alert]
            assert got[job_id]["groupKey"] == THREE["groupKey"]
        status, shown = await w.get(f"/v1/jobs/{ids[0]}")
        assert shown["priority"] == "high"

        # Alertmanager re-sends the group (its retry, or repeat_interval): nothing new.
        status, again = await w.post("/v1/alertmanager/default/oncall", json=THREE)
        assert status == 200, again
        assert (again["created"], again["duplicates"]) == (0, 3)
        assert [j["id"] for j in again["jobs"]] == ids
        status, stats = await w.get("/v1/queue/stats")
        assert (stats["succeeded"], stats["queued"], stats["running"]) == (3, 0, 0), (
            "no new job, so no new delivery"
        )
        assert len(rx.received) == 3


async def test_a_resolve_is_delivered_after_its_trigger(db_url: str, tmp_path: Path) -> None:
    """The trigger's first attempt fails (503) and its second is slow: the resolve, sent
    right after, still waits for the trigger to be delivered (ordering key)."""
    trigger = pod_alert("api-1", "critical", "c0ffee0000000001")
    resolve = pod_alert("api-1", "critical", "c0ffee0000000001", "resolved", "2026-11-20T10:15:00Z")
    other = pod_alert("api-2", "warning", "c0ffee0000000002")

    def script(n: int, body: bytes) -> Answer:
        status = json.loads(body)["status"]
        if status == "firing" and n == 0:
            return Answer(503)
        return Answer(delay=0.3 if status == "firing" else 0)

    async with (
        TrackingReceiver(per_id(script)) as rx,
        worker(db_url, manifests(tmp_path, rx.url)) as w,
    ):
        status, first = await w.post("/v1/alertmanager/oncall", json=message(trigger, other))
        assert (status, first["created"]) == (200, 2), first
        status, second = await w.post(
            "/v1/alertmanager/oncall", json=message(resolve, status="resolved")
        )
        assert (status, second["created"]) == (200, 1), second
        await wait_state(w.queue, "succeeded", 3)

        trigger_id, resolve_id = first["jobs"][0]["id"], second["jobs"][0]["id"]
        answers = collections.defaultdict(list)
        for r in rx.received:
            answers[r.webhook_id].append(r.answer.status)
        assert answers[trigger_id] == [503, 200]
        assert answers[resolve_id] == [200]
        delivered_trigger = max(i.ended for i in rx.intervals if i.webhook_id == trigger_id)
        [resolve_request] = [i for i in rx.intervals if i.webhook_id == resolve_id]
        assert resolve_request.started >= delivered_trigger, (
            "the resolve was sent before its trigger was delivered"
        )
        status, shown = await w.get(f"/v1/jobs/{resolve_id}")
        assert shown["priority"] == "low"
