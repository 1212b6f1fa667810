"""PublishingTargets against the real operator: registration and Ready, Secret problems and
their fix, spec updates, the status timer (depth, circuit, counters), Events on
transitions, and what deleting a target with queued jobs does."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from herald_core.states import Priority
from herald_queue.queue import Queue
from tests.helpers import claim_all, failure, job, sql_rows, wait_until
from tests.integration.operator.cluster import (
    NS,
    PT,
    PT_URL,
    WEBHOOK_SECRET,
    Emulator,
    RunningOperator,
    StartOperator,
    condition,
    create,
    database_outage,
    events,
    obj,
    put_secret,
    status,
    target,
    valid,
    wait_ready,
)


async def test_a_target_becomes_ready_and_is_registered(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await create(k8s, PT_URL, target("hook", headers={"X-Team": "sre"}))
    ready = await wait_ready(k8s, "hook")
    assert ready["reason"] == "Ready"
    assert "default/hook" in ready["message"]
    rows = await queue.registry.list(NS, "hook")
    assert len(rows) == 1
    assert rows[0].spec.url == "http://127.0.0.1:9/hook"
    assert rows[0].spec.headers == {"X-Team": "sre"}
    body = valid(k8s, PT, "hook")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 1
    assert ready["observedGeneration"] == 1
    assert "herald.dev/finalizer" in body["metadata"]["finalizers"]
    assert not [k for k in body["metadata"].get("annotations", {}) if "kopf.zalando.org" in k]
    await wait_until(lambda: events(k8s, "Ready", "hook"), what="a Ready Event")
    # The live status appears within a timer period.
    live = await wait_until(lambda: status(k8s, PT, "hook").get("circuit"))
    assert live["state"] == "closed"
    assert status(k8s, PT, "hook")["depth"] == {
        "high": 0,
        "medium": 0,
        "low": 0,
        "total": 0,
        "ready": 0,
    }
    valid(k8s, PT, "hook")
    # Status goes through the status subresource, never a PUT.
    writes = [
        r
        for r in list(k8s)
        if r.resource is not None
        and r.resource.plural == "publishingtargets"
        and r.method in ("PUT", "PATCH", "POST")
    ]
    assert not [r for r in writes if r.method == "PUT"]
    assert any(
        r.subresource == "status" and "conditions" in (r.data.get("status") or {})
        for r in writes
        if isinstance(r.data, dict)
    )
    assert not [
        r
        for r in writes
        if r.subresource is None and isinstance(r.data, dict) and "status" in r.data
    ]


async def test_metrics_and_liveness_are_served(k8s: Emulator, operator: RunningOperator) -> None:
    await create(k8s, PT_URL, target("hook"))
    await wait_ready(k8s, "hook")
    settings = operator.settings
    async with aiohttp.ClientSession() as http:

        async def metrics() -> str:
            async with http.get(f"http://127.0.0.1:{settings.metrics_port}/metrics") as r:
                assert r.status == 200
                return await r.text()

        text = await wait_until(
            lambda: _with(metrics(), lambda t: 'herald_operator_targets{ready="True"} 1.0' in t)
        )
        assert (
            'herald_operator_reconciliations_total{kind="PublishingTarget",result="success"}'
            in text
        )
        assert "herald_operator_desired_worker_replicas" in text
        async with http.get(f"http://127.0.0.1:{settings.health_port}/healthz") as r:
            assert r.status == 200
            assert await r.json() == {"database": "ok", "api": "ok"}


async def _with(text: Any, check: Any) -> Any:
    value = await text
    return value if check(value) else None


async def test_a_missing_then_bad_secret_is_reported_and_the_fix_is_noticed(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await create(k8s, PT_URL, target("signed", secretRef={"name": "signed-hook"}))
    missing = await wait_ready(k8s, "signed", "False")
    assert missing["reason"] == "SecretNotFound"
    assert "Secret default/signed-hook" in missing["message"]
    assert "signingSecret" in missing["message"]
    valid(k8s, PT, "signed")
    # Registered all the same: jobs are accepted and wait until the Secret is fixed.
    assert await queue.registry.list(NS, "signed")
    await wait_until(lambda: events(k8s, "SecretNotFound", "signed"))
    assert events(k8s, "SecretNotFound", "signed")[0]["type"] == "Warning"

    put_secret(k8s, "signed-hook", signingSecret="not-a-standard-webhooks-secret")
    invalid = await wait_until(
        lambda: (c := condition(k8s, PT, "signed")).get("reason") == "SecretInvalid" and c
    )
    assert invalid["status"] == "False"
    assert "signingSecret" in invalid["message"]
    assert "not-a-standard-webhooks-secret" not in invalid["message"]  # never the value
    # Same status, new reason: the transition time stays.
    assert invalid["lastTransitionTime"] == missing["lastTransitionTime"]

    put_secret(k8s, "signed-hook", signingSecret=WEBHOOK_SECRET)
    ready = await wait_ready(k8s, "signed")
    assert ready["reason"] == "Ready"
    await wait_until(lambda: events(k8s, "Ready", "signed"), what="a Ready Event")
    assert len(events(k8s, "SecretNotFound", "signed")) == 1  # one Event per transition


async def test_a_pagerduty_target_without_its_routing_key(
    k8s: Emulator, operator: RunningOperator
) -> None:
    put_secret(k8s, "pd", url="https://events.example.com/v2/enqueue")
    await create(k8s, PT_URL, target("pd", type="pagerduty", url=None, secretRef={"name": "pd"}))
    found = await wait_ready(k8s, "pd", "False")
    assert found["reason"] == "SecretKeyMissing"
    assert "routingKey" in found["message"]

    await create(k8s, PT_URL, target("pd-no-secret", type="pagerduty", url=None))
    spec_problem = await wait_ready(k8s, "pd-no-secret", "False")
    assert spec_problem["reason"] == "InvalidSpec"
    assert "spec.secretRef" in spec_problem["message"]


async def test_a_spec_change_is_registered_and_observed(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await create(k8s, PT_URL, target("hook"))
    await wait_ready(k8s, "hook")
    response = await k8s.patch(
        f"{PT_URL}/hook",
        json={"spec": {"url": "https://hooks.example.com/new", "paused": True}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200
    await wait_until(lambda: status(k8s, PT, "hook").get("observedGeneration") == 2)
    rows = await queue.registry.list(NS, "hook")
    assert rows[0].spec.url == "https://hooks.example.com/new"
    assert rows[0].paused and rows[0].generation == 2
    ready = condition(k8s, PT, "hook")
    assert ready["status"] == "True" and "paused" in ready["message"]
    await wait_until(lambda: status(k8s, PT, "hook").get("paused") is True)
    assert status(k8s, PT, "hook")["pausedReason"] == "spec.paused is true"
    valid(k8s, PT, "hook")


@pytest.mark.slow
async def test_status_follows_the_queue_and_the_circuit(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await create(
        k8s, PT_URL, target("hook", circuitBreaker={"failureThreshold": 1, "openSeconds": 0.3})
    )
    await wait_ready(k8s, "hook")
    for priority, count in ((Priority.HIGH, 3), (Priority.MEDIUM, 2), (Priority.LOW, 1)):
        for _ in range(count):
            await queue.jobs.enqueue(job("default/hook", priority=priority))
    depth = await wait_until(
        lambda: (d := status(k8s, PT, "hook").get("depth")) and d["total"] == 6 and d
    )
    assert depth == {"high": 3, "medium": 2, "low": 1, "total": 6, "ready": 6}

    # A delivery succeeds, another fails transiently: the circuit (threshold 1) opens.
    claimed = await queue.jobs.claim("w", 2)
    await queue.jobs.complete("w", claimed[:1])
    await queue.jobs.fail("w", [failure(claimed[1], "transient", message="HTTP 503")])
    circuit = await wait_until(
        lambda: (c := status(k8s, PT, "hook").get("circuit")) and c["state"] == "open" and c
    )
    assert circuit["trips"] == 1 and circuit["openUntil"]
    current = status(k8s, PT, "hook")
    assert current["delivered"] == 1 and current["failedAttempts"] == 1
    assert current["lastError"]["class"] == "transient"
    assert current["lastError"]["message"] == "HTTP 503"
    assert current["lastDeliveryTime"]
    assert current["depth"]["total"] == 5
    valid(k8s, PT, "hook")
    opened = await wait_until(lambda: events(k8s, "CircuitOpened", "hook"))
    assert opened[0]["type"] == "Warning"

    # After openSeconds a probe goes through and succeeds: the circuit closes.
    probes = await wait_until(lambda: claim_all(queue, "w", 1), timeout=5)
    await queue.jobs.complete("w", probes[:1])
    await wait_until(lambda: status(k8s, PT, "hook").get("circuit", {}).get("state") == "closed")
    closed = await wait_until(lambda: events(k8s, "CircuitClosed", "hook"))
    assert closed[0]["type"] == "Normal"
    assert status(k8s, PT, "hook")["circuit"]["recoveries"] == 1
    assert len(events(k8s, "CircuitOpened", "hook")) == 1


async def test_deleting_a_target_dead_letters_its_waiting_jobs(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    await create(k8s, PT_URL, target("doomed"))
    await wait_ready(k8s, "doomed")
    ids = [(await queue.jobs.enqueue(job("default/doomed"))).id for _ in range(3)]
    running = await queue.jobs.claim("w", 1)  # one delivery in flight

    response = await k8s.delete(f"{PT_URL}/doomed")
    assert response.status == 200
    await wait_until(lambda: not obj(k8s, PT, "doomed"), what="the finalizer released")
    assert not await queue.registry.list(NS, "doomed")
    letters = await sql_rows(
        queue, "SELECT job_id, reason FROM herald.dead_letters WHERE target_name = 'doomed'"
    )
    assert {r["reason"] for r in letters} == {"target-deleted"}
    assert {r["job_id"] for r in letters} == set(ids) - {running[0].id}
    unregistered = await wait_until(lambda: events(k8s, "Unregistered", "doomed"))
    message = unregistered[0]["message"]
    assert "moved 2 waiting job(s) to the dead-letter queue" in message
    assert "1 delivery(ies) in flight" in message

    # The name is free at once: a new target of that name is a new registration.
    await create(k8s, PT_URL, target("doomed"))
    await wait_ready(k8s, "doomed")
    assert len(await queue.registry.list(NS, "doomed")) == 1


async def test_deletion_waits_while_postgresql_is_down(
    k8s: Emulator, start_operator: StartOperator, queue: Queue, db_url: str, pg_admin_url: str
) -> None:
    """The finalizer holds the object until the registry has moved the jobs: with
    PostgreSQL unreachable the delete handler retries (kopf.TemporaryError) and the object
    stays; once it is back, the deletion completes and nothing was dropped."""
    await start_operator(db_connect_timeout=1)
    await create(k8s, PT_URL, target("held"))
    await wait_ready(k8s, "held")
    queued = (await queue.jobs.enqueue(job("default/held"))).id
    async with database_outage(pg_admin_url, db_url):
        await k8s.delete(f"{PT_URL}/held")
        retried = await wait_until(
            lambda: _retries(obj(k8s, PT, "held"), "delete") >= 1,
            timeout=15,
            what="the delete handler retried",
        )
        assert retried
        held = obj(k8s, PT, "held")
        assert held["metadata"]["deletionTimestamp"]
        assert "herald.dev/finalizer" in held["metadata"]["finalizers"]
    await wait_until(
        lambda: not obj(k8s, PT, "held"), timeout=15, what="released once PostgreSQL is back"
    )
    await queue.pool.check()  # the outage closed the test's own connections too
    rows = await sql_rows(queue, "SELECT job_id, reason FROM herald.dead_letters")
    assert [(r["job_id"], r["reason"]) for r in rows] == [(queued, "target-deleted")]


def _retries(body: dict[str, Any], handler: str) -> int:
    raw = (body.get("metadata", {}).get("annotations") or {}).get(f"herald.dev/{handler}")
    return int(json.loads(raw).get("retries") or 0) if raw else 0


async def test_a_target_the_egress_policy_refuses_is_not_ready_nor_registered(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    """The operator knows the workers' egress policy: a URL naming a refused address (in
    any spelling) is Ready=False EgressDenied with the setting to change, and is not
    registered, so enqueueing to it is refused rather than dead-lettered."""
    await start_operator(allow_loopback=False)
    for name, url in [
        ("metadata", "http://169.254.169.254/latest/meta-data/"),
        ("mapped", "http://[::ffff:169.254.169.254]/"),
        ("hex", "http://0xa9fea9fe/"),
        ("loopback", "http://127.0.0.1:9/hook"),
    ]:
        await create(k8s, PT_URL, target(name, url=url))
        found = await wait_ready(k8s, name, "False")
        assert found["reason"] == "EgressDenied", found
        assert "the egress policy refuses" in found["message"]
        setting = "HERALD_EGRESS_ALLOW_LOOPBACK" if name == "loopback" else "HERALD_EGRESS_ALLOW"
        assert setting in found["message"], found
        assert await queue.registry.list(NS, name) == []
    await create(k8s, PT_URL, target("outside", url="http://10.0.0.7:9/hook"))
    assert (await wait_ready(k8s, "outside"))["reason"] == "Ready"


@pytest.mark.slow
async def test_capacity_pressure_condition_follows_the_fill(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    """CapacityPressure: False below 80 % of spec.capacity.jobs, True NearCapacity from
    80 %, AtCapacity at 100 %; one Warning Event per level reached, and the condition goes
    when the spec drops the capacity."""
    await create(k8s, PT_URL, target("hook", capacity={"jobs": 5, "hardLimit": True}))
    await wait_ready(k8s, "hook")
    below = await wait_until(lambda: condition(k8s, PT, "hook", "CapacityPressure"))
    assert (below["status"], below["reason"]) == ("False", "BelowCapacity")
    assert "0 of 5 jobs waiting (0.0 %)" in below["message"]
    for n in range(4):
        await queue.jobs.enqueue(job("default/hook", {"n": n}))
    near = await wait_until(
        lambda: (c := condition(k8s, PT, "hook", "CapacityPressure"))["status"] == "True" and c
    )
    assert near["reason"] == "NearCapacity" and "4 of 5 jobs waiting (80.0 %)" in near["message"]
    await queue.jobs.enqueue(job("default/hook", {"n": 4}))
    full = await wait_until(
        lambda: (
            (c := condition(k8s, PT, "hook", "CapacityPressure"))["reason"] == "AtCapacity" and c
        )
    )
    assert "refuses new jobs" in full["message"], full
    assert full["lastTransitionTime"] == near["lastTransitionTime"], "status stayed True"
    valid(k8s, PT, "hook")
    assert [e["type"] for e in await wait_until(lambda: events(k8s, "NearCapacity", "hook"))] == [
        "Warning"
    ]
    assert len(await wait_until(lambda: events(k8s, "AtCapacity", "hook"))) == 1
    assert condition(k8s, PT, "hook")["status"] == "True", "Ready is kept beside it"

    response = await k8s.patch(
        f"{PT_URL}/hook",
        json={"spec": {"capacity": None}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200
    await wait_until(lambda: condition(k8s, PT, "hook", "CapacityPressure") == {})
    assert len(events(k8s, "NearCapacity", "hook")) == 1
