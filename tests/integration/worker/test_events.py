"""POST /v1/events and the Alertmanager fan-out on a real worker over real HTTP and
PostgreSQL: one job per subscribed target whose filter passes, all or none, idempotent by
event id, within the namespace."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from herald_model import events
from tests.integration.worker.harness import (
    TrackingReceiver,
    Worker,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)
from tests.integration.worker.test_alertmanager import message, pod_alert

URL = "https://hooks.example.com/herald"
CRITICAL = 'has(event.payload.severity) && event.payload.severity == "critical"'


def subscribed(name: str, *types: str, namespace: str = "default", **spec: Any) -> Any:
    subscriptions: dict[str, Any] = {"eventTypes": list(types)}
    if "filter" in spec:
        subscriptions["filter"] = spec.pop("filter")
    return target_doc(
        name, URL, namespace=namespace, paused=True, subscriptions=subscriptions, **spec
    )


@pytest.fixture()
async def fanout(db_url: str, tmp_path: Path) -> AsyncIterator[Worker]:
    """Paused targets (their jobs wait): what an event creates is what the test reads."""
    docs = [
        subscribed("slack", "incident.*"),
        subscribed("pager", "incident.opened", filter=CRITICAL),
        subscribed("audit", "*"),
        subscribed("deploys", "deploy.finished"),
        target_doc("plain", URL, paused=True),  # no subscriptions: named jobs only
        subscribed("capped", "capacity.*", capacity={"jobs": 1, "hardLimit": True}),
        subscribed("roomy", "capacity.*"),
        subscribed("elsewhere", "*", namespace="team-b"),
    ]
    async with worker(db_url, write_manifests(tmp_path / "targets.yaml", docs)) as w:
        yield w


def targets_of(answer: dict[str, Any]) -> list[str]:
    return sorted(j["target"] for j in answer["jobs"])


async def publish(w: Worker, expect: int, **body: Any) -> dict[str, Any]:
    status, answer = await w.post("/v1/events", json=body)
    assert status == expect, answer
    return dict(answer)


async def test_one_job_per_matching_target(fanout: Worker) -> None:
    answer = await publish(
        fanout,
        202,
        id="inc-1",
        type="incident.opened",
        payload={"severity": "critical", "title": "db down"},
        priority="high",
    )
    assert targets_of(answer) == ["default/audit", "default/pager", "default/slack"]
    assert (answer["id"], answer["type"], answer["namespace"]) == (
        "inc-1",
        "incident.opened",
        "default",
    )
    assert (answer["created"], answer["duplicates"]) == (3, 0)
    # Each is an ordinary job: its own id, the payload as sent, the priority.
    for job in answer["jobs"]:
        status, shown = await fanout.get(f"/v1/jobs/{job['id']}")
        assert status == 200 and shown["priority"] == "high" and shown["state"] == "queued"
    assert len({j["id"] for j in answer["jobs"]}) == 3

    # The filter: a warning reaches the subscribers without one, not the pager.
    answer = await publish(fanout, 202, type="incident.opened", payload={"severity": "warning"})
    assert targets_of(answer) == ["default/audit", "default/slack"]
    # A payload without the field: the guarded filter is false, not an error.
    answer = await publish(fanout, 202, type="incident.opened", payload=[1, 2])
    assert targets_of(answer) == ["default/audit", "default/slack"]
    assert len(answer["id"]) > 0  # Herald made an id


async def test_a_resend_gives_the_same_jobs(fanout: Worker) -> None:
    body = {"id": "deploy-42", "type": "deploy.finished", "payload": {"v": "1.2.3"}}
    first = await publish(fanout, 202, **body)
    assert targets_of(first) == ["default/audit", "default/deploys"]
    again = await publish(fanout, 200, **body)
    assert (again["created"], again["duplicates"]) == (0, 2)
    assert sorted(j["id"] for j in again["jobs"]) == sorted(j["id"] for j in first["jobs"])
    assert all(j["duplicate"] for j in again["jobs"])
    status, stats = await fanout.get("/v1/queue/stats")
    assert stats["queued"] == 2
    # The same id with another payload is another event under a used id: refused.
    status, refused = await fanout.post("/v1/events", json={**body, "payload": {"v": "9.9.9"}})
    assert status == 409, refused


async def test_no_match_is_200_with_no_jobs(fanout: Worker) -> None:
    answer = await publish(
        fanout, 200, id="x", type="nobody.listens", namespace="team-c", payload={}
    )
    assert answer["jobs"] == [] and answer["created"] == 0
    assert answer["namespace"] == "team-c"


async def test_only_the_events_namespace(fanout: Worker) -> None:
    answer = await publish(fanout, 202, type="anything", namespace="team-b", payload={})
    assert targets_of(answer) == ["team-b/elsewhere"]
    answer = await publish(fanout, 202, type="anything", payload={})
    assert targets_of(answer) == ["default/audit"]


async def test_all_or_none_when_a_target_is_full(fanout: Worker) -> None:
    first = await publish(fanout, 202, id="c-1", type="capacity.test", payload={})
    assert targets_of(first) == ["default/audit", "default/capped", "default/roomy"]
    status, refused = await fanout.post(
        "/v1/events", json={"id": "c-2", "type": "capacity.test", "payload": {}}
    )
    assert status == 429, refused
    assert "default/capped is full" in refused["error"]["message"]
    status, stats = await fanout.get("/v1/queue/stats")
    assert stats["queued"] == 3, "nothing written for audit or roomy either"


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"payload": {}}, "type", 400),
        ({"type": "a..b", "payload": {}}, "type", 400),
        ({"type": "a.*", "payload": {}}, "type", 400),
        ({"type": "a", "payload": {}, "namespace": "Not_A_Namespace"}, "namespace", 400),
        ({"type": "a", "payload": {}, "id": ""}, "id", 400),
        ({"type": "a", "payload": {}, "id": "x" * 257}, "id", 400),
        ({"type": "a", "payload": {}, "target": "slack"}, "target", 400),
        ({"type": "a"}, "payload", 400),
        ({"type": "a", "payload": {}, "priority": "urgent"}, "priority", 400),
    ],
)
async def test_bad_bodies_get_one_clear_4xx(
    fanout: Worker, body: dict[str, Any], field: str, status: int
) -> None:
    got, answer = await fanout.post("/v1/events", json=body)
    assert got == status, answer
    assert answer["error"]["status"] == status
    assert field in (answer["error"].get("field") or "") + answer["error"]["message"]


async def test_a_list_or_garbage_is_refused(fanout: Worker) -> None:
    status, answer = await fanout.post("/v1/events", json=[{"type": "a", "payload": {}}])
    assert status == 400 and "one event" in answer["error"]["message"]
    status, answer = await fanout.post(
        "/v1/events", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert status == 400


async def test_an_integer_a_filter_cannot_read_is_a_clear_400(fanout: Worker) -> None:
    """CEL's integers are 64-bit: a larger one is refused with what to do, never a 500."""
    body = {"type": "incident.opened", "payload": {"severity": "critical", "n": 2**64}}
    status, answer = await fanout.post("/v1/events", json=body)
    assert status == 400, answer
    assert answer["error"]["field"] == "payload"
    assert "64-bit" in answer["error"]["message"]


async def test_filters_over_a_payload_too_costly_are_refused(db_url: str, tmp_path: Path) -> None:
    docs = [subscribed("scan", "big", filter="event.payload.exists(i, i == -1)")]
    async with worker(db_url, write_manifests(tmp_path / "t.yaml", docs)) as w:
        status, answer = await w.post(
            "/v1/events", json={"type": "big", "payload": list(range(events.MATCH_BUDGET))}
        )
        assert status == 413, answer
        assert "too many for the filters" in answer["error"]["message"]
        # Without a filter on the way, the same payload is fine.
        status, answer = await w.post(
            "/v1/events", json={"type": "other", "payload": list(range(events.MATCH_BUDGET))}
        )
        assert status == 200 and answer["jobs"] == []


async def test_events_are_delivered_each_on_its_own(db_url: str, tmp_path: Path) -> None:
    async with TrackingReceiver() as rx:
        docs = [
            target_doc("a", rx.url, subscriptions={"eventTypes": ["order.*"]}),
            target_doc(
                "b",
                rx.url,
                subscriptions={"eventTypes": ["order.paid"], "filter": "event.payload.total > 100"},
            ),
        ]
        async with worker(db_url, write_manifests(tmp_path / "t.yaml", docs)) as w:
            body = {"id": "o-7", "type": "order.paid", "payload": {"total": 250}}
            answer = await publish(w, 202, **body)
            await wait_state(w.queue, "succeeded", 2)
            assert sorted(rx.delivered_ids()) == sorted(j["id"] for j in answer["jobs"])
            assert [json.loads(r.body) for r in rx.received] == [{"total": 250}] * 2
            await publish(w, 200, **body)  # resent: no new job, no new delivery
            _status, stats = await w.get("/v1/queue/stats")
            assert (stats["succeeded"], stats["queued"], stats["running"]) == (2, 0, 0)
            assert len(rx.received) == 2


async def test_alertmanager_fan_out(db_url: str, tmp_path: Path) -> None:
    docs = [
        subscribed("firing", "alertmanager.alert.firing", namespace="ops"),
        subscribed(
            "critical",
            "alertmanager.alert.*",
            namespace="ops",
            filter='event.payload.alerts.exists(a, a.labels.severity == "critical")',
        ),
    ]
    async with worker(db_url, write_manifests(tmp_path / "am.yaml", docs)) as w:
        note = message(
            pod_alert("api-1", "critical", "f00d000000000001"),
            pod_alert("api-2", "warning", "f00d000000000002"),
        )
        status, body = await w.post("/v1/events/alertmanager/ops", json=note)
        assert status == 202, body
        assert [e["type"] for e in body["events"]] == ["alertmanager.alert.firing"] * 2
        assert [targets_of(e) for e in body["events"]] == [
            ["ops/critical", "ops/firing"],
            ["ops/firing"],
        ]
        assert (body["created"], body["duplicates"]) == (3, 0)
        status, again = await w.post("/v1/events/alertmanager/ops", json=note)
        assert status == 200 and (again["created"], again["duplicates"]) == (0, 3)
        resolved = message(
            pod_alert("api-1", "critical", "f00d000000000001", "resolved", "2026-11-20T10:15:00Z"),
            status="resolved",
        )
        status, body = await w.post("/v1/events/alertmanager/ops", json=resolved)
        assert status == 202, body
        assert [targets_of(e) for e in body["events"]] == [["ops/critical"]]
        status, body = await w.post("/v1/events/alertmanager/ops", json={"alerts": "no"})
        assert status == 400, body
