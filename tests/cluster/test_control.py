"""The operator's control of the cluster on the real API: scaling the chart's worker
Deployment through the scale subresource, two replicas with one acting, and the faults of
the API itself (a restart, a watch whose resourceVersion expired, concurrent writers)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from tests.cluster.controlplane import ControlPlane
from tests.cluster.herald import RELEASE, HeraldProcess, Kubectl, herald_release, target, wait_ready
from tests.helpers import job, open_queue, sql_exec, wait_until

from herald_queue.queue import Queue
from herald_tools.receiver import Receiver

SCALING = {
    "enabled": True,
    "minReplicas": 1,
    "maxReplicas": 6,
    "jobsPerReplica": 10,
    "maxStep": 2,
    "interval": "1s",
    "cooldown": "1s",
    "downStabilization": "2s",
}


@pytest.fixture()
async def queue(db_url: str) -> AsyncIterator[Queue]:
    q = await open_queue(db_url)
    try:
        yield q
    finally:
        await q.close()


async def ready_target(kubectl: Kubectl, name: str, generation: int = 1) -> None:
    await wait_ready(kubectl, "publishingtarget", name, generation, timeout=40)


async def replicas(kubectl: Kubectl) -> int:
    deployment = await kubectl.get("deployment", f"{RELEASE}-worker")
    assert deployment is not None
    return int(deployment["spec"].get("replicas", 1))


async def test_the_operator_scales_the_worker_deployment(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str, queue: Queue
) -> None:
    async with herald_release(
        kube, kubectl, helm_path, db_url, operator={"scaling": SCALING}
    ) as herald:
        await herald.operator()
        await kubectl.apply(target("hook", "http://127.0.0.1:9/unused"))
        await ready_target(kubectl, "hook")
        assert await replicas(kubectl) == 1
        # No worker runs: 60 ready jobs want ceil(60 / 10) = 6 replicas, two at a time.
        for n in range(60):
            await queue.jobs.enqueue(job(f"{kubectl.namespace}/hook", {"n": n}))
        seen = [1]

        async def grown() -> bool:
            now = await replicas(kubectl)
            if now != seen[-1]:
                seen.append(now)
            return now == 6

        await wait_until(grown, timeout=60, interval=0.1, what="the worker scaled to 6")
        assert seen == sorted(seen), seen
        assert all(b - a <= 2 for a, b in itertools.pairwise(seen)), seen

        async def replica_set_follows() -> bool:
            result = await kubectl("get", "replicasets", "-o", "json")
            return any(rs["spec"]["replicas"] == 6 for rs in result.json()["items"])

        await wait_until(
            replica_set_follows,
            timeout=30,
            interval=0.2,
            what="the ReplicaSet following spec.replicas",
        )

        # An open circuit's jobs are not ready: the worker shrinks back to the minimum and
        # stays there (never scaled into an outage).
        await sql_exec(
            queue,
            "UPDATE herald.targets SET circuit_state = 'open', "
            "circuit_open_until = now() + interval '1 hour' WHERE name = 'hook'",
        )
        await wait_until(
            lambda: _is(kubectl, 1), interval=0.2, timeout=60, what="the worker back at 1"
        )
        held = time.monotonic()
        while time.monotonic() - held < 3:  # three scaling intervals
            assert await replicas(kubectl) == 1
            await asyncio.sleep(0.2)

        used = {
            (verb, resource) for account, verb, resource in herald.used() if "operator" in account
        }
        assert ("patch", "deployments/scale") in used, sorted(used)
        assert not {("patch", "deployments"), ("update", "deployments")} & used, sorted(used)


async def _is(kubectl: Kubectl, count: int) -> bool:
    return await replicas(kubectl) == count


async def test_a_standby_operator_takes_over(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> None:
    """Two operators with kopf peering: one acts, the other waits; the standby acts within
    HERALD_PEERING_LIFETIME (5 s here) plus a keep-alive after the active one is killed."""
    async with herald_release(
        kube,
        kubectl,
        helm_path,
        db_url,
        operator={
            "peering": {"enabled": True},
            "extraEnv": [
                {"name": "HERALD_STATUS_INTERVAL", "value": "1s"},
                {"name": "HERALD_PEERING_LIFETIME", "value": "5s"},
            ],
        },
    ) as herald:
        first = await herald.operator()
        second = await herald.operator()
        await kubectl.apply(target("before", "http://127.0.0.1:9/h"))
        await ready_target(kubectl, "before")
        peering = await _peers(kubectl)
        assert len(peering) == 2, peering
        active_identity = max(peering, key=lambda key: peering[key]["priority"])
        active, standby = (
            (first, second) if str(first.popen.pid) in active_identity else (second, first)
        )
        assert str(active.popen.pid) in active_identity, (active_identity, first.popen.pid)
        assert await reconciliations(active) > 0
        assert await reconciliations(standby) == 0, "the standby reconciled a target"
        active.popen.send_signal(signal.SIGKILL)
        active.popen.wait(10)
        killed = time.monotonic()
        await kubectl.apply(target("after", "http://127.0.0.1:9/h"))
        await ready_target(kubectl, "after")
        took = time.monotonic() - killed
        assert took < 30, took
        assert standby.alive and await reconciliations(standby) > 0


async def reconciliations(operator: HeraldProcess) -> float:
    """herald_operator_reconciliations_total of one operator process, all labels."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{operator.port}/metrics") as resp,
    ):
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("herald_operator_reconciliations_total{")
    )


async def _peers(kubectl: Kubectl) -> dict[str, Any]:
    async def two() -> dict[str, Any] | None:
        obj = await kubectl.get("kopfpeering", "herald")
        peers = {k: v for k, v in ((obj or {}).get("status") or {}).items() if isinstance(v, dict)}
        return peers if len(peers) == 2 else None

    found: dict[str, Any] = await wait_until(
        two, interval=0.2, timeout=30, what="two operators peering"
    )
    return found


async def test_the_operator_rides_out_an_api_restart_and_an_expired_watch(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> None:
    """The API server restarts while the operator watches; meanwhile etcd is compacted past
    the operator's last resourceVersion, so its watch resumes with 410 Gone and it must list
    again. Afterwards it still reconciles, and what happened during the gap is seen."""
    async with (
        Receiver() as receiver,
        herald_release(kube, kubectl, helm_path, db_url, logging={"level": "DEBUG"}) as herald,
    ):
        # Watch requests end every 2 s and resume from the last resourceVersion seen.
        operator = await herald.operator(HERALD_WATCH_TIMEOUT="2s")
        await kubectl.apply(target("steady", receiver.url))
        await ready_target(kubectl, "steady")
        # Advance etcd's revision elsewhere, then compact: the operator's watch position
        # (its last PublishingTarget event) is now older than anything etcd keeps, so the
        # next watch request is answered 410 Gone and the operator must list again.
        restarts = operator.text().count("Restarting the watch-stream")
        for n in range(5):
            await kubectl("create", "configmap", f"churn-{n}", "--from-literal=n=1")
        kube.compact_etcd()
        await wait_until(
            lambda: operator.text().count("Restarting the watch-stream") > restarts,
            interval=0.2,
            timeout=20,
            what="a watch resumed at an expired resourceVersion (410 Gone)",
        )
        await kubectl.apply(target("after-gone", receiver.url))
        await ready_target(kubectl, "after-gone")
        # The API server crashes and comes back: connections drop, the operator reconnects.
        kube.restart_apiserver()
        await kubectl.apply(target("after-restart", receiver.url))
        await ready_target(kubectl, "after-restart")
        # A spec edit of the old target is seen too (the operator listed afresh).
        await kubectl("patch", "pt", "steady", "--type=merge", "-p", '{"spec":{"paused":true}}')
        await ready_target(kubectl, "steady", generation=2)
        assert operator.alive
        # Concurrent writers: a user edits the spec while the operator writes status every
        # second; the last status written is for the last generation.
        for timeout in range(1, 6):
            await kubectl(
                "patch",
                "pt",
                "steady",
                "--type=merge",
                "-p",
                f'{{"spec":{{"timeoutSeconds":{timeout}}}}}',
            )
        await ready_target(kubectl, "steady", generation=7)
        obj = await kubectl.get("publishingtarget", "steady")
        assert obj is not None and obj["status"]["observedGeneration"] == 7
