"""The worker scaler against the real operator: up, bounds, step, down after the
stabilization window, no scale-up for jobs whose target's circuit is open or that is
paused, and the Events and metric of each change."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import kmock
import pytest

from herald_queue.queue import Queue
from tests.helpers import failure, job, register, wait_until
from tests.integration.operator.cluster import (
    DEPLOY,
    NS,
    PT,
    PT_URL,
    WORKER,
    Emulator,
    StartOperator,
    create,
    deployment,
    events,
    obj,
    status,
    target,
)


def replicas(k8s: Emulator) -> int:
    return int(obj(k8s, DEPLOY, WORKER)["spec"]["replicas"])


def scale_requests(k8s: Emulator, method: str) -> list[Any]:
    return [
        r
        for r in list(k8s)
        if r.resource is not None
        and r.resource.plural == "deployments"
        and r.subresource == "scale"
        and r.method == method
    ]


async def ticks(k8s: Emulator, n: int) -> None:
    """Wait until the scaler has read the Deployment's scale ``n`` more times."""
    start = len(scale_requests(k8s, "GET"))
    await wait_until(
        lambda: len(scale_requests(k8s, "GET")) >= start + n,
        timeout=10,
        what=f"{n} scaling ticks",
    )


async def enqueue(queue: Queue, target: str, n: int) -> None:
    await queue.jobs.enqueue_many([job(target, {"n": i}) for i in range(n)])


@pytest.mark.slow
async def test_scales_up_to_ready_jobs_and_tells_why(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    running = await start_operator(scaling=True, jobs_per_replica=10)
    await register(queue, "hook")
    await enqueue(queue, "default/hook", 35)
    await wait_until(lambda: replicas(k8s) == 4, what="4 replicas for 35 jobs")
    patches = scale_requests(k8s, "PATCH")
    assert [p.data["spec"] for p in patches] == [{"replicas": 4}]
    assert patches[0].headers["Content-Type"] == "application/merge-patch+json"
    scaled = await wait_until(lambda: events(k8s, "WorkersScaledUp", WORKER))
    involved = scaled[0]["involvedObject"]
    assert (involved["kind"], involved["name"], involved["namespace"]) == ("Deployment", WORKER, NS)
    assert involved["uid"] == obj(k8s, DEPLOY, WORKER)["metadata"]["uid"]
    assert "from 1 to 4" in scaled[0]["message"] and "35 ready job(s)" in scaled[0]["message"]
    port = running.settings.metrics_port
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    assert "herald_operator_desired_worker_replicas 4.0" in text
    assert "herald_operator_ready_jobs 35.0" in text
    assert 'herald_operator_scaling_changes_total{direction="up"} 1.0' in text


async def test_brings_replicas_into_bounds(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    k8s.objects[DEPLOY, NS, WORKER] = deployment(replicas=0)
    await start_operator(scaling=True, scale_min=2, scale_down_stabilization=60)
    await wait_until(lambda: replicas(k8s) == 2, what="raised to the minimum")


async def test_the_first_pass_comes_at_start_not_an_interval_later(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    """The chart sets no replica count when the operator scales (Helm and GitOps tools then
    never fight it), so a fresh install's worker Deployment starts at one: the operator
    raises it to the minimum as soon as it runs, not HERALD_SCALE_INTERVAL later."""
    k8s.objects[DEPLOY, NS, WORKER] = deployment(replicas=1)
    await start_operator(scaling=True, scale_min=2, scale_interval=3600)
    await wait_until(lambda: replicas(k8s) == 2, timeout=30, what="raised at start")


@pytest.mark.slow
async def test_scales_down_only_after_the_stabilization_window(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    k8s.objects[DEPLOY, NS, WORKER] = deployment(replicas=6)
    window = 1.0
    await register(queue, "hook")
    await enqueue(queue, "default/hook", 25)  # recommends 3
    # Measured from before the operator starts, so a slow machine only makes it longer (a
    # count of ticks in the window would depend on how fast the ticks come).
    started = time.monotonic()
    await start_operator(scaling=True, jobs_per_replica=10, scale_down_stabilization=window)
    await wait_until(lambda: replicas(k8s) == 3, what="down to 3 after the window")
    assert time.monotonic() - started >= window, "scaled down before a whole window"
    assert len(scale_requests(k8s, "PATCH")) == 1
    assert await wait_until(lambda: events(k8s, "WorkersScaledDown", WORKER))


@pytest.mark.slow
async def test_a_dip_within_the_window_keeps_the_workers(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    await start_operator(scaling=True, jobs_per_replica=10, scale_down_stabilization=60)
    await register(queue, "hook")
    ids = [
        r.id
        for r in await queue.jobs.enqueue_many([job("default/hook", {"n": i}) for i in range(40)])
    ]
    await wait_until(lambda: replicas(k8s) == 4)
    await queue.jobs.cancel(ids)  # the queue is empty now
    await ticks(k8s, 5)
    assert replicas(k8s) == 4
    assert len(scale_requests(k8s, "PATCH")) == 1


@pytest.mark.slow
async def test_no_workers_for_a_target_whose_circuit_is_open_or_that_is_paused(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    await register(queue, "down", circuitBreaker={"failureThreshold": 1, "openSeconds": 3600})
    await register(queue, "held", paused=True)
    await enqueue(queue, "default/down", 1)
    claimed = await queue.jobs.claim("w", 1)
    outcome = await queue.jobs.fail("w", [failure(claimed[0], "transient")])
    assert outcome[0].tripped
    await enqueue(queue, "default/down", 50)
    await enqueue(queue, "default/held", 50)
    await start_operator(scaling=True, jobs_per_replica=10)
    await ticks(k8s, 5)
    assert replicas(k8s) == 1
    assert not scale_requests(k8s, "PATCH")

    await register(queue, "fine")
    await enqueue(queue, "default/fine", 20)
    await wait_until(lambda: replicas(k8s) == 2, what="scaled for the healthy target only")


async def test_scaling_can_be_switched_off(
    k8s: Emulator, start_operator: StartOperator, queue: Queue
) -> None:
    await register(queue, "hook")
    await enqueue(queue, "default/hook", 100)
    await start_operator(scaling=False, scale_interval=0.05)
    # A PublishingTarget's live status takes a status period (0.3 s): six scale periods.
    await create(k8s, PT_URL, target("hook"))
    await wait_until(lambda: status(k8s, PT, "hook").get("depth", {}).get("total") == 100)
    reads = [r for r in list(k8s) if r.action == kmock.action.FETCH]
    assert not [r for r in reads if r.resource is not None and r.resource.plural == "deployments"]
    assert replicas(k8s) == 1
