"""Peering: with HERALD_PEERING set, only the replica with the highest priority acts, kopf's
handlers and Herald's own worker scaler alike; a standby takes over when it is gone."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from herald_queue.queue import Queue
from tests.helpers import eventually, job, register
from tests.operator.cluster import (
    DEPLOY,
    NS,
    PEERINGS,
    PT,
    PT_URL,
    WORKER,
    Emulator,
    StartOperator,
    condition,
    create,
    obj,
    target,
    wait_ready,
)


def peering(**peers: int) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC).isoformat()
    return {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {
            "name": "herald",
            "namespace": NS,
            "uid": "peering-uid",
            "resourceVersion": "1",
        },
        "status": {
            name: {"priority": priority, "lifetime": 60, "lastseen": now}
            for name, priority in peers.items()
        },
    }


async def test_a_standby_replica_does_nothing_until_the_active_one_is_gone(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    k8s.objects[PEERINGS, NS, "herald"] = peering(**{"other-replica": 500})
    await register(queue, "hook")
    await queue.jobs.enqueue_many([job("default/hook", {"n": i}) for i in range(50)])
    await start_operator(
        peering="herald",
        priority=100,
        identity="standby",
        scaling=True,
        jobs_per_replica=10,
        wait_watching=False,
    )
    await create(k8s, PT_URL, target("hook"))
    # The standby announces itself in the peering object, and then waits.
    await eventually(lambda: "standby" in (obj(k8s, PEERINGS, "herald").get("status") or {}))
    scale_reads = [
        r
        for r in list(k8s)
        if r.resource is not None
        and r.resource.plural == "kopfpeerings"
        and r.method == "GET"
        and r.name == "herald"
    ]
    await eventually(
        lambda: (
            len(
                [
                    r
                    for r in list(k8s)
                    if r.resource is not None
                    and r.resource.plural == "kopfpeerings"
                    and r.method == "GET"
                    and r.name == "herald"
                ]
            )
            >= len(scale_reads) + 3
        ),
        message="the scaler asked who is active three times",
    )
    assert not condition(k8s, PT, "hook"), "a standby reconciled a target"
    assert obj(k8s, DEPLOY, WORKER)["spec"]["replicas"] == 1, "a standby scaled the workers"

    # The active replica leaves (kopf removes its entry on exit): the standby takes over.
    response = await k8s.patch(
        f"/apis/kopf.dev/v1/namespaces/{NS}/kopfpeerings/herald",
        json={"status": {"other-replica": None}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status == 200
    await wait_ready(k8s, "hook")
    await eventually(lambda: obj(k8s, DEPLOY, WORKER)["spec"]["replicas"] == 5)


async def test_without_the_peering_object_no_replica_acts_and_the_log_says_why(
    k8s: Emulator, start_operator: StartOperator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="herald.operator")
    await start_operator(peering="herald", wait_watching=False)
    await create(k8s, PT_URL, target("hook"))
    record = await eventually(
        lambda: next((r for r in caplog.records if "does not exist" in r.getMessage()), None)
    )
    assert "KopfPeering object herald" in record.getMessage()
    assert "HERALD_PEERING=" in record.getMessage()
    assert not condition(k8s, PT, "hook")
