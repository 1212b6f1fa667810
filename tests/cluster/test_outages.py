"""The operator against the faults of its control plane, on the real API: a status
overwritten by someone else, the API server away for minutes while targets are applied and
a replay runs, and the operator itself killed again and again while 200 targets change.
Each ends with every object's status equal to the truth (the registry and the queue in
PostgreSQL), no dead letter replayed twice, and, but for the kill test, the same operator
process throughout.

The time each fault took to recover from is printed (``pytest -s``) as
``recovered: <fault>: <seconds>``.

The API outage's lengths come from HERALD_TEST_API_OUTAGES (seconds, comma-separated;
default 75: what CI runs). ``HERALD_TEST_API_OUTAGES=75,600`` adds a 10-minute outage.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from tests.cluster.controlplane import ControlPlane, free_port
from tests.cluster.herald import (
    Herald,
    HeraldProcess,
    Kubectl,
    condition,
    herald_release,
    replay,
    target,
    wait_ready,
)
from tests.helpers import claim_all, failure, job, open_queue, sql_value, wait_until

from herald_operator.status import Depth, depth_by_target
from herald_queue import stats
from herald_queue.queue import Queue

URL = "http://127.0.0.1:9/hook"  # no worker runs: nothing is delivered, depths stay exact
OUTAGES = [int(s) for s in os.environ.get("HERALD_TEST_API_OUTAGES", "75").split(",") if s]
NEVER = "Task exception was never retrieved"


@pytest.fixture()
async def queue(db_url: str) -> AsyncIterator[Queue]:
    q = await open_queue(db_url)
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture()
async def herald(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> AsyncIterator[Herald]:
    async with herald_release(kube, kubectl, helm_path, db_url) as release:
        yield release


def recovered(fault: str, seconds: float) -> None:
    print(f"\nrecovered: {fault}: {seconds:.1f} s")


async def operator(herald: Herald, interval: str = "1s", **env: str) -> tuple[HeraldProcess, int]:
    """The operator, with its /healthz port."""
    health = free_port()
    process = await herald.operator(
        HERALD_STATUS_INTERVAL=interval,
        HERALD_OPERATOR_HEALTH_PORT=str(health),
        HERALD_REPLAY_BATCH="5",
        **env,
    )
    return process, health


async def healthz(port: int) -> tuple[int, dict[str, str]]:
    """/healthz's status and what it says of each probe ((0, {}) when it does not answer)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            return r.status, await r.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, {}


async def dead_letters(queue: Queue, ref: str, n: int) -> None:
    """``n`` jobs of ``ref`` that failed permanently: ``n`` dead letters."""
    ids = {(await queue.jobs.enqueue(job(ref, {"n": i}))).id for i in range(n)}
    claimed = await claim_all(queue)
    await queue.jobs.fail("w", [failure(c, "permanent") for c in claimed if c.id in ids])
    await queue.jobs.release("w", [c.id for c in claimed if c.id not in ids])


async def listed(kubectl: Kubectl, kind: str) -> dict[str, dict[str, Any]]:
    result = await kubectl("get", kind, "-o", "json")
    return {o["metadata"]["name"]: o for o in result.json()["items"]}


async def untrue(kubectl: Kubectl, queue: Queue, names: list[str]) -> list[str]:
    """What in the PublishingTargets' status is not the truth (empty: all of it is): Ready
    for the object's generation, registered at it, and the queue's depth."""
    objects = await listed(kubectl, "publishingtargets")
    rows = {r.name: r for r in await queue.registry.list(kubectl.namespace)}
    depths = depth_by_target(await stats.count_rows(queue.pool, live_only=True))
    problems = []
    for name in names:
        obj = objects.get(name)
        if obj is None:
            problems.append(f"{name}: absent")
            continue
        generation = obj["metadata"]["generation"]
        status = obj.get("status") or {}
        ready = condition(obj)
        if ready.get("status") != "True" or ready.get("observedGeneration") != generation:
            problems.append(f"{name}: Ready {ready.get('status')} at {generation}")
        if status.get("observedGeneration") != generation:
            problems.append(f"{name}: observedGeneration {status.get('observedGeneration')}")
        row = rows.get(name)
        if row is None or row.generation != generation:
            problems.append(f"{name}: registered at {row and row.generation}, not {generation}")
        depth = depths.get((kubectl.namespace, name), Depth()).to_json()
        if status.get("depth") != depth:
            problems.append(f"{name}: depth {status.get('depth')} is not {depth}")
    return problems


async def replay_done(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    obj = await kubectl.get("deadletterreplay", name)
    status = (obj or {}).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


async def replayed_once(queue: Queue, namespace: str, name: str, total: int) -> None:
    """Every dead letter of the replay put back exactly once: tagged by it, and its job
    queued (once: a job's id is its key)."""
    tagged = await sql_value(
        queue,
        "SELECT count(*) FROM herald.dead_letters WHERE replayed_by LIKE %s",
        [f"DeadLetterReplay/{namespace}/{name}/%"],
    )
    queued = await sql_value(
        queue,
        "SELECT count(*) FROM herald.jobs j WHERE j.state = 'queued' AND j.id IN "
        "(SELECT job_id FROM herald.dead_letters WHERE replayed_by LIKE %s)",
        [f"DeadLetterReplay/{namespace}/{name}/%"],
    )
    assert (tagged, queued) == (total, total)


async def replay_running(kubectl: Kubectl, name: str, total: int) -> bool:
    obj = await kubectl.get("deadletterreplay", name)
    status = (obj or {}).get("status") or {}
    return status.get("phase") == "Running" and 0 < status.get("replayed", 0) < total


def no_dead_tasks(process: HeraldProcess) -> None:
    assert NEVER not in process.text(), f"{process.name} lost a task:\n{process.tail()}"


@pytest.mark.timeout(240)
async def test_an_overwritten_status_is_set_right_within_an_interval(
    herald: Herald, kubectl: Kubectl, queue: Queue
) -> None:
    """observedGeneration 42 and Ready=False written through the status subresource (a
    restore from backup, a mistaken kubectl patch): the next status tick sets it right."""
    running, _ = await operator(herald)
    await kubectl.apply(target("hook", URL))
    await wait_ready(kubectl, "publishingtarget", "hook", timeout=60)
    await queue.jobs.enqueue(job(f"{kubectl.namespace}/hook"))
    await wait_until(
        lambda: _no(untrue(kubectl, queue, ["hook"])), interval=0.2, timeout=60, what="live"
    )
    wrong = (
        '{"status":{"observedGeneration":42,"conditions":[{"type":"Ready","status":"False",'
        '"reason":"Restored","message":"from a backup",'
        '"lastTransitionTime":"2026-01-01T00:00:00Z"}]}}'
    )
    await kubectl("patch", "pt", "hook", "--subresource=status", "--type=merge", "-p", wrong)
    obj = await kubectl.get("publishingtarget", "hook")
    assert obj is not None and obj["status"]["observedGeneration"] == 42
    started = time.monotonic()
    await wait_until(
        lambda: _no(untrue(kubectl, queue, ["hook"])),
        timeout=60,
        interval=0.1,
        what="the overwritten status set right",
    )
    recovered("overwritten status (HERALD_STATUS_INTERVAL 1 s)", time.monotonic() - started)
    assert running.alive
    no_dead_tasks(running)


@pytest.mark.timeout(max(OUTAGES) + 420)
@pytest.mark.parametrize(
    "outage", [pytest.param(s, marks=[pytest.mark.slow] if s > 120 else []) for s in OUTAGES]
)
async def test_an_api_outage_is_ridden_out(
    outage: int, kube: ControlPlane, herald: Herald, kubectl: Kubectl, queue: Queue
) -> None:
    """The API server is killed while 50 targets are being applied (25 before, 25 after)
    and a replay runs, and stays away ``outage`` seconds. The same operator process then
    brings every status to the truth and finishes the replay without a duplicate; its
    /healthz says the API is away meanwhile (still 200: no restart) and says ok again by
    itself."""
    ns = kubectl.namespace
    running, health = await operator(herald)
    await kubectl.apply(target("sink", URL))
    await wait_ready(kubectl, "publishingtarget", "sink", timeout=60)
    total = 1500
    await dead_letters(queue, f"{ns}/sink", total)
    await kubectl.apply(replay("during", target="sink", limit=total))
    await wait_until(
        lambda: replay_running(kubectl, "during", total),
        timeout=120,
        interval=0.05,
        what="the replay running",
    )
    names = [f"t{n:02d}" for n in range(50)]
    await kubectl.apply(*(target(name, URL) for name in names[:25]))
    kube.stop_apiserver()
    down = time.monotonic()
    try:
        # PostgreSQL is up: the truth moves on while the API is away.
        for name in names[:25]:
            if await queue.registry.list(ns, name):
                await queue.jobs.enqueue(job(f"{ns}/{name}"))
        await queue.jobs.enqueue(job(f"{ns}/sink"))
        # Said and still 200: /healthz is the chart's liveness probe, and a restart would
        # only put the operator in the kubelet's back-off when the API returns.
        await wait_until(
            lambda: _is(
                healthz(health),
                lambda answer: answer[0] == 200 and "unreachable" in answer[1].get("api", ""),
            ),
            interval=0.2,
            timeout=min(outage, 60),
            what="/healthz saying the API is away",
        )
        assert running.alive
        await asyncio.sleep(max(0.0, outage - (time.monotonic() - down)))
    finally:
        kube.start_apiserver()
    back = time.monotonic()

    async def timed(check: Any, what: str, timeout: float, interval: float = 0.2) -> float:
        await wait_until(check, timeout=timeout, interval=interval, what=what)
        return time.monotonic() - back

    async def apply_the_rest() -> None:
        await kubectl.apply(*(target(name, URL) for name in names[25:]))

    # The sink's depth moves until the replay is over: it is checked after it.
    old, replayed, healthy, _ = await asyncio.gather(
        timed(lambda: _no(untrue(kubectl, queue, names[:25])), "targets applied before", 180),
        timed(lambda: replay_done(kubectl, "during"), "the replay finished", 180),
        timed(
            lambda: _is(healthz(health), lambda answer: answer[1].get("api") == "ok"),
            "/healthz saying the API is back",
            60,
        ),
        apply_the_rest(),
    )
    every = await timed(lambda: _no(untrue(kubectl, queue, ["sink", *names])), "all true", 180)
    recovered(f"API outage {outage} s: the 25 targets applied before it true (live)", old)
    recovered(f"API outage {outage} s: replay of {total} (batches of 5) finished", replayed)
    recovered(f"API outage {outage} s: all 51 targets true (25 applied after it)", every)
    recovered(f"API outage {outage} s: /healthz api ok", healthy)
    done = await replay_done(kubectl, "during")
    assert done is not None
    assert (done["phase"], done["matched"], done["replayed"]) == ("Succeeded", total, total)
    await replayed_once(queue, ns, "during", total)
    # The sink holds the replayed letters and the job enqueued during the outage.
    assert not await untrue(kubectl, queue, ["sink", *names])
    assert running.alive, f"the operator exited:\n{running.tail()}"
    assert len([p for p in herald.processes if "operator" in p.name]) == 1
    no_dead_tasks(running)


@pytest.mark.timeout(900)
async def test_the_operator_killed_again_and_again_while_200_targets_change(
    herald: Herald, kubectl: Kubectl, queue: Queue
) -> None:
    """SIGKILL four times, each while the 200 targets' specs are being changed (and, the
    first times, while a replay runs); the fifth operator brings every status to the
    truth and the replay finishes without a duplicate."""
    ns = kubectl.namespace
    names = [f"k{n:03d}" for n in range(200)]
    running, _ = await operator(herald, interval="2s")
    await kubectl.apply(target("sink", URL))
    await wait_ready(kubectl, "publishingtarget", "sink", timeout=60)
    total = 1000
    await dead_letters(queue, f"{ns}/sink", total)
    await kubectl.apply(*(target(name, URL) for name in names))
    await kubectl.apply(replay("killed", target="sink", limit=total))
    kills = 4
    for round_ in range(1, kills + 1):
        generation = round_ + 1
        change = asyncio.create_task(
            kubectl.apply(*(target(name, URL, timeoutSeconds=round_ + 1) for name in names))
        )
        try:
            # Kill it once it has started on the change, not before.
            await wait_until(
                lambda g=generation: _observed(kubectl, names, g, at_least=5),
                timeout=180,
                interval=0.1,
                what=f"the operator handling generation {generation}",
            )
        finally:
            await change
        running.popen.send_signal(signal.SIGKILL)
        running.popen.wait(10)
        running, _ = await operator(herald, interval="2s")
    started = time.monotonic()
    await wait_until(
        lambda: replay_done(kubectl, "killed"),
        interval=0.2,
        timeout=300,
        what="the replay finished",
    )
    await wait_until(
        lambda: _no(untrue(kubectl, queue, ["sink", *names])),
        timeout=300,
        interval=1.0,
        what="every target's status the truth",
    )
    recovered(f"operator killed {kills} times: 201 targets true", time.monotonic() - started)
    done = await replay_done(kubectl, "killed")
    assert done is not None
    assert (done["phase"], done["matched"], done["replayed"]) == ("Succeeded", total, total)
    await replayed_once(queue, ns, "killed", total)
    objects = await listed(kubectl, "publishingtargets")
    assert {objects[n]["metadata"]["generation"] for n in names} == {kills + 1}
    for process in herald.processes:
        no_dead_tasks(process)


async def _observed(kubectl: Kubectl, names: list[str], generation: int, at_least: int) -> bool:
    objects = await listed(kubectl, "publishingtargets")
    seen = sum(
        1
        for n in names
        if ((objects.get(n) or {}).get("status") or {}).get("observedGeneration") == generation
    )
    return seen >= at_least


async def _no(problems: Any) -> bool:
    return not await problems


async def _is(value: Any, check: Any) -> Any:
    result = await value
    return result if check(result) else None
