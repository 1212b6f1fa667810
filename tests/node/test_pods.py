"""Worker Pods coming and going on a real node, as a user meets it, with a receiver on the
bridge that answers slowly (so deliveries are in flight) and notes which Pod sent each job:

- the operator scales the worker Deployment up from a backlog: the new Pods become Ready
  and deliver jobs; once the backlog drains it scales back down to the minimum;
- a worker Pod deleted with ``kubectl delete pod`` mid-delivery is replaced; with the
  chart's defaults no post to the Service is refused or fails, every accepted job is
  delivered, none twice;
- a worker whose process stops answering (frozen from the host with SIGSTOP) fails its
  liveness probe and the kubelet restarts its container; every job accepted before and
  during is delivered (the frozen worker's leases expire and other workers take its jobs);
- a worker driven over a low memory limit (concurrent lists of large jobs posted to its
  Pod) is OOM-killed by the kernel and restarted; every accepted job is delivered (posts
  that reach it between the kill and its endpoint's removal are refused: a crash gives no
  warning, unlike a rollout).

Each test prints its figures (run with -s) and uninstalls the release.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
from typing import Any, NoReturn

import aiohttp
import pytest
from tests.cluster.herald import Kubectl
from tests.helpers import wait_until
from tests.node.chart import (
    RELEASE,
    WORKER,
    Helm,
    Pacer,
    Producer,
    apply_hook,
    delivering_pod,
    diagnostics,
    install_and_target,
    names,
    pods,
    post_jobs,
    ready,
    receiver_on_bridge,
    service_url,
    wait_delivered,
    wait_ready_pods,
)
from tests.node.host import CGROUP_ROOT
from tests.node.node import CGROUP, Node

from herald_tools.receiver import Receiver

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(900)]

TARGETS_REFRESH = {"name": "HERALD_TARGETS_REFRESH", "value": "1s"}  # as chart_values sets


def addresses(found: list[dict[str, Any]]) -> dict[str, str]:
    """Pod IP -> Pod name."""
    return {p["status"]["podIP"]: p["metadata"]["name"] for p in found}


async def worker_replicas(kubectl: Kubectl) -> int:
    deployment = await kubectl.get("deployment", WORKER)
    assert deployment is not None, "no worker Deployment"
    return int(deployment["spec"].get("replicas") or 0)


async def failing(kubectl: Kubectl, receiver: Receiver | None, exc: AssertionError) -> NoReturn:
    raise AssertionError(f"{exc}\n{await diagnostics(kubectl, receiver)}") from None


async def events_about(kubectl: Kubectl, name: str) -> list[str]:
    """The Events about the object named ``name``, oldest first, as "reason: message"."""
    found = await kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    items = sorted(
        found.json()["items"], key=lambda e: e.get("eventTime") or e.get("firstTimestamp") or ""
    )
    return [f"{e.get('reason')}: {e.get('message')}" for e in items]


async def restarts(kubectl: Kubectl) -> dict[str, int]:
    """Container restarts of each worker Pod (a probe that killed a busy worker shows here)."""
    return {
        p["metadata"]["name"]: sum(c["restartCount"] for c in p["status"]["containerStatuses"])
        for p in await pods(kubectl, "worker")
    }


async def uninstall(helm: Helm) -> None:
    await helm("uninstall", RELEASE, "--wait", "--timeout=3m")


async def test_the_operator_scales_workers_and_new_pods_take_work(
    node: Node, helm: Helm, kubectl: Kubectl, pod_db_url: tuple[str, str]
) -> None:
    # Four deliveries at once per worker against a receiver taking two seconds each: a
    # backlog of 800 ready jobs lasts minutes, and recommends ceil(800 / 20) -> the maximum, 4.
    # Once the new Pods have delivered, the receiver answers at once and the backlog drains.
    _, key = await install_and_target(
        node,
        helm,
        kubectl,
        pod_db_url,
        worker={"concurrency": 4},
        operator={
            "scaling": {
                "maxReplicas": 4,
                "jobsPerReplica": 20,
                "interval": "2s",
                "cooldown": "5s",
                "downStabilization": "20s",
            }
        },
    )
    first = names(await wait_ready_pods(kubectl, "worker", 2))
    pacer = Pacer(delay=2.0)
    seen_replicas = {await worker_replicas(kubectl)}
    async with receiver_on_bridge(key, pacer) as (receiver, hook_url):
        await apply_hook(kubectl, key, hook_url)
        accepted = await post_jobs(await service_url(kubectl), "hook", 800)
        try:

            async def scaled_up() -> int | None:
                replicas = await worker_replicas(kubectl)
                seen_replicas.add(replicas)
                return replicas if replicas > 2 else None

            await wait_until(
                scaled_up,
                interval=0.2,
                timeout=120,
                what="the operator to scale the workers above 2",
            )
            everyone = await wait_ready_pods(kubectl, "worker", 4, timeout=240)
            new = {ip: name for ip, name in addresses(everyone).items() if name not in first}
            assert len(new) >= 2, f"new Pods: {new}"

            def new_pods_delivered() -> bool:
                return all(len(pacer.jobs_from(ip)) >= 3 for ip in new)

            await wait_until(
                new_pods_delivered,
                interval=0.2,
                timeout=120,
                what=f"deliveries from each new Pod {sorted(new.values())}",
            )
        except AssertionError as exc:
            await failing(kubectl, receiver, exc)
        by_new = {name: len(pacer.jobs_from(ip)) for ip, name in new.items()}
        pacer.delay = 0.0  # the new Pods proved themselves: let the backlog drain
        figures: dict[str, Any] = await wait_delivered(kubectl, receiver, accepted)

        async def scaled_down() -> bool:
            replicas = await worker_replicas(kubectl)
            seen_replicas.add(replicas)
            found = await pods(kubectl, "worker")
            return replicas == 2 and len(found) == 2 and all(ready(p) for p in found)

        try:
            await wait_until(
                scaled_down,
                timeout=180,
                interval=1,
                what="the operator to scale the workers back to 2 once the backlog drained",
            )
        except AssertionError as exc:
            await failing(kubectl, receiver, exc)
    # The operator says so on the Deployment (kubectl describe deployment herald-worker).
    scalings = [e for e in await events_about(kubectl, WORKER) if e.startswith("WorkersScaled")]
    restarted_workers = await restarts(kubectl)
    figures |= {
        "restarts": restarted_workers,
        "scalings": scalings,
        "accepted": len(accepted),
        "replicas seen": sorted(seen_replicas),
        "delivered by the new Pods (before the drain)": by_new,
    }
    print(f"\nscaling from a backlog: {figures}")
    assert max(seen_replicas) == 4
    assert {e.partition(":")[0] for e in scalings} == {"WorkersScaledUp", "WorkersScaledDown"}
    assert not any(restarted_workers.values()), "busy workers were never restarted"
    assert receiver.bad_signatures == 0
    await uninstall(helm)


async def test_a_deleted_worker_pod_is_replaced_and_its_jobs_delivered(
    node: Node, helm: Helm, kubectl: Kubectl, pod_db_url: tuple[str, str]
) -> None:
    _, key = await install_and_target(node, helm, kubectl, pod_db_url)  # the chart's defaults
    await wait_ready_pods(kubectl, "worker", 2)
    pacer = Pacer(delay=0.5)
    async with receiver_on_bridge(key, pacer) as (receiver, hook_url):
        await apply_hook(kubectl, key, hook_url)
        producer = Producer(await service_url(kubectl), "hook")
        producer.start()
        try:
            await wait_until(
                lambda: len(receiver.delivered_ids()) >= 10,
                interval=0.2,
                timeout=120,
                what=f"deliveries before the deletion ({producer.figures()})",
            )
            busy, in_flight = await delivering_pod(kubectl, receiver, pacer)
            victim = busy["metadata"]["name"]
            await kubectl("delete", "pod", victim, "--wait=true", "--timeout=120s")
            replaced = await wait_ready_pods(kubectl, "worker", 2)
            assert victim not in names(replaced)
            mark = len(producer.accepted)
            await wait_until(
                lambda: len(producer.accepted) >= mark + 10,
                interval=0.2,
                timeout=120,
                what="jobs accepted after the deletion",
            )
        except AssertionError as exc:
            await failing(kubectl, receiver, exc)
        finally:
            await producer.stop()
        figures: dict[str, Any] = await wait_delivered(kubectl, receiver, producer.accepted)
    restarted_workers = await restarts(kubectl)
    figures |= {
        **producer.figures(),
        "in flight from the deleted Pod": in_flight,
        "restarts": restarted_workers,
    }
    print(f"\na worker Pod deleted mid-delivery: {figures}")
    assert producer.refused == [], f"{len(producer.refused)} refused: {producer.refused[:3]}"
    assert producer.errors == [], producer.errors[:5]
    assert figures["duplicates"] == 0, "a graceful deletion finishes its deliveries"
    assert not any(restarted_workers.values()), "busy workers were never restarted"
    await uninstall(helm)


def container_pid(node: Node, pod: dict[str, Any]) -> int:
    """The host PID of the Pod's worker process (the container's first process: the image's
    entrypoint execs `herald worker`)."""
    (status,) = pod["status"]["containerStatuses"]
    container = status["containerID"].removeprefix("containerd://")
    for line in node.ctr("tasks", "list", timeout=30).splitlines()[1:]:
        task, pid, *_ = line.split()
        if task == container:
            return int(pid)
    raise AssertionError(f"no containerd task for {container}")


async def restarted(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    """The Pod once its container restarted and it is Ready again."""
    pod = await kubectl.get("pod", name)
    if pod is None or not ready(pod):
        return None
    (status,) = pod["status"]["containerStatuses"]
    return pod if status["restartCount"] >= 1 else None


async def test_a_frozen_worker_fails_its_liveness_probe_and_loses_nothing(
    node: Node, helm: Helm, kubectl: Kubectl, pod_db_url: tuple[str, str]
) -> None:
    # A short lease, so the frozen worker's jobs come back quickly, and a short termination
    # grace: a stopped process ignores SIGTERM until the kubelet's SIGKILL.
    _, key = await install_and_target(
        node,
        helm,
        kubectl,
        pod_db_url,
        worker={
            "extraEnv": [TARGETS_REFRESH, {"name": "HERALD_LEASE", "value": "10s"}],
            "drainSeconds": 1,
            "shutdownGraceSeconds": 2,
            "terminationGracePeriodSeconds": 5,
        },
    )
    await wait_ready_pods(kubectl, "worker", 2)
    pacer = Pacer(delay=0.5)
    async with receiver_on_bridge(key, pacer) as (receiver, hook_url):
        await apply_hook(kubectl, key, hook_url)
        producer = Producer(await service_url(kubectl), "hook")
        producer.start()
        pid = 0
        try:
            await wait_until(
                lambda: len(receiver.delivered_ids()) >= 10,
                interval=0.2,
                timeout=120,
                what=f"deliveries before the freeze ({producer.figures()})",
            )
            frozen, _ = await delivering_pod(kubectl, receiver, pacer)
            name, ip = frozen["metadata"]["name"], frozen["status"]["podIP"]
            pid = container_pid(node, frozen)
            os.kill(pid, signal.SIGSTOP)
            in_flight = pacer.in_flight_from(receiver, ip)
            pod = await wait_until(
                lambda: restarted(kubectl, name),
                timeout=240,
                interval=1,
                what=f"the kubelet to restart {name}'s container and the Pod to be Ready",
            )

            async def killed_for_liveness() -> list[str]:
                events = await events_about(kubectl, name)
                return [e for e in events if "failed liveness probe" in e]

            killing = (
                await wait_until(
                    killed_for_liveness,
                    interval=0.2,
                    timeout=60,
                    what=f"the kubelet's Event killing {name}",
                )
            )[0]
            mark = len(producer.accepted)
            await wait_until(
                lambda: len(producer.accepted) >= mark + 10,
                interval=0.2,
                timeout=120,
                what="jobs accepted after the restart",
            )
        except AssertionError as exc:
            await failing(kubectl, receiver, exc)
        finally:
            await producer.stop()
            if pid:  # a test that failed before the kubelet killed it: let it go on
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        figures: dict[str, Any] = await wait_delivered(kubectl, receiver, producer.accepted)
    (status,) = pod["status"]["containerStatuses"]
    figures |= {
        **producer.figures(),
        "errors met": producer.errors[:3],
        "in flight from the frozen Pod": in_flight,
        "restarts": status["restartCount"],
        "event": killing,
        "last state": status.get("lastState"),
    }
    print(f"\na worker frozen until its liveness probe restarts it: {figures}")
    # Posts the Service sent to the frozen Pod before its readiness failed time out
    # (errors); none is refused and every accepted one is delivered.
    assert producer.refused == [], f"{len(producer.refused)} refused: {producer.refused[:3]}"
    await uninstall(helm)


MEMORY_LIMIT = "192Mi"
FLOOD_JOBS = 60
"""Jobs per flood request: 60 of 250 kB, just under the API's 16 MiB body limit."""
FLOOD_REQUESTS = 12
"""Flood requests at once: their bodies, decoded and encoded again, exceed MEMORY_LIMIT."""
FLOOD_ROUNDS = 8


def memory_usage(pod: dict[str, Any]) -> int | None:
    """Bytes the Pod's container uses now (its memory cgroup on the host), None when not
    found (a cgroup v2 host keeps it elsewhere)."""
    (status,) = pod["status"]["containerStatuses"]
    container = status["containerID"].removeprefix("containerd://")
    for folder in (CGROUP_ROOT / "memory" / CGROUP).rglob(container):
        return int((folder / "memory.usage_in_bytes").read_text())
    return None


async def flood(url: str, accepted: list[str]) -> list[str]:
    """FLOOD_REQUESTS lists of large jobs posted at once to one worker Pod; the ids of the
    jobs accepted go to ``accepted``; returns what the other posts met."""
    filler = "x" * 250_000
    body = json.dumps(
        [{"target": "hook", "payload": {"n": i, "filler": filler}} for i in range(FLOOD_JOBS)]
    ).encode()

    async def post(session: aiohttp.ClientSession) -> str | None:
        try:
            async with session.post(
                f"{url}/v1/jobs",
                data=io.BytesIO(body),
                headers={"Content-Type": "application/json"},
            ) as resp:
                text = await resp.text()
                if resp.status == 201:
                    accepted.extend(job["id"] for job in json.loads(text)["jobs"])
                    return None
                return f"{resp.status}: {text[:200]}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return repr(exc)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        results = await asyncio.gather(*(post(session) for _ in range(FLOOD_REQUESTS)))
    return [r for r in results if r is not None]


async def oom_killed(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    """The container's last termination, once it was an OOM kill."""
    pod = await kubectl.get("pod", name)
    (status,) = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
    terminated: dict[str, Any] = (status.get("lastState") or {}).get("terminated") or {}
    return terminated if terminated.get("reason") == "OOMKilled" else None


async def test_a_worker_over_its_memory_limit_is_oom_killed_and_loses_nothing(
    node: Node, helm: Helm, kubectl: Kubectl, pod_db_url: tuple[str, str]
) -> None:
    _, key = await install_and_target(
        node,
        helm,
        kubectl,
        pod_db_url,
        worker={
            "extraEnv": [TARGETS_REFRESH, {"name": "HERALD_LEASE", "value": "10s"}],
            "resources": {"limits": {"memory": MEMORY_LIMIT}},
        },
    )
    await wait_ready_pods(kubectl, "worker", 2)
    pacer = Pacer(delay=0.5)
    flooded: list[str] = []
    cut: list[str] = []
    async with receiver_on_bridge(key, pacer) as (receiver, hook_url):
        await apply_hook(kubectl, key, hook_url)
        producer = Producer(await service_url(kubectl), "hook")
        producer.start()
        try:
            await wait_until(
                lambda: len(receiver.delivered_ids()) >= 10,
                interval=0.2,
                timeout=120,
                what=f"deliveries before the flood ({producer.figures()})",
            )
            victim, in_flight = await delivering_pod(kubectl, receiver, pacer)
            name, ip = victim["metadata"]["name"], victim["status"]["podIP"]
            before = memory_usage(victim)
            rounds = 0
            while not cut and rounds < FLOOD_ROUNDS:  # until a post is cut: the worker died
                rounds += 1
                cut = await flood(f"http://{ip}:8080", flooded)
            assert cut, (
                f"{FLOOD_ROUNDS} floods of {FLOOD_REQUESTS} x {FLOOD_JOBS} jobs of 250 kB "
                f"did not drive {name} over {MEMORY_LIMIT}"
            )
            killed = await wait_until(
                lambda: oom_killed(kubectl, name),
                timeout=60,
                interval=1,
                what=f"the kubelet to report {name}'s OOM kill (the flood met: {cut[:3]})",
            )
            pod = await wait_until(
                lambda: restarted(kubectl, name),
                timeout=180,
                interval=1,
                what=f"{name}'s container restarted and the Pod Ready",
            )
            mark = len(producer.accepted)
            await wait_until(
                lambda: len(producer.accepted) >= mark + 10,
                interval=0.2,
                timeout=120,
                what="jobs accepted after the restart",
            )
        except AssertionError as exc:
            await failing(kubectl, receiver, exc)
        finally:
            await producer.stop()
        figures: dict[str, Any] = await wait_delivered(
            kubectl, receiver, producer.accepted + flooded
        )
    (status,) = pod["status"]["containerStatuses"]
    figures |= {
        **producer.figures(),
        "errors met": producer.errors[:3],
        "memory before the flood (MiB)": before and before // 2**20,
        "flood rounds": rounds,
        "flood jobs accepted": len(flooded),
        "flood posts cut": len(cut),
        "in flight from the killed Pod": in_flight,
        "restarts": status["restartCount"],
        "last state": killed,
    }
    print(f"\na worker OOM-killed: {figures}")
    # A crash, unlike a rollout, gives no warning: posts reaching the killed Pod before the
    # kubelet has marked it unready are refused (counted above; the producer knows they
    # were not accepted). What is promised is that nothing accepted is lost.
    await uninstall(helm)
