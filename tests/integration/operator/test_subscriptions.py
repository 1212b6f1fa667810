"""spec.subscriptions on the operator: a filter that does not compile makes Ready=False
with the compiler's message (never registered, so never evaluated); fixed, the target is
registered with its subscriptions."""

from __future__ import annotations

from herald_queue.queue import Queue
from tests.helpers import wait_until
from tests.integration.operator.cluster import (
    NS,
    PT,
    PT_URL,
    Emulator,
    RunningOperator,
    create,
    status,
    target,
    valid,
    wait_ready,
)


async def test_a_bad_filter_is_reported_then_fixed(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    bad = {"eventTypes": ["incident.*"], "filter": 'event.payload.severity == "critical" &&'}
    await create(k8s, PT_URL, target("pager", subscriptions=bad))
    ready = await wait_ready(k8s, "pager", "False")
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith("spec.subscriptions.filter: is not valid CEL: ")
    assert "unexpected end of expression at line 1, column" in ready["message"]
    assert await queue.registry.list(NS, "pager") == []
    valid(k8s, PT, "pager")

    good = {"eventTypes": ["incident.*"], "filter": 'event.payload.severity == "critical"'}
    response = await k8s.patch(
        f"{PT_URL}/pager",
        json={"spec": {"subscriptions": good}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200
    await wait_ready(k8s, "pager")
    await wait_until(lambda: status(k8s, PT, "pager").get("observedGeneration") == 2)
    [row] = await queue.registry.list(NS, "pager")
    assert row.spec.subscriptions is not None
    assert row.spec.subscriptions.event_types == ("incident.*",)
    assert row.spec.subscriptions.filter == good["filter"]


async def test_an_unknown_variable_is_reported(
    k8s: Emulator, operator: RunningOperator, queue: Queue
) -> None:
    subs = {"eventTypes": ["*"], "filter": "payload.severity == 'critical'"}
    await create(k8s, PT_URL, target("typo", subscriptions=subs))
    ready = await wait_ready(k8s, "typo", "False")
    assert ready["reason"] == "InvalidSpec"
    assert "refers to an unknown variable 'payload'" in ready["message"]
