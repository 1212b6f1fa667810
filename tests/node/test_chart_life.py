"""The chart's whole life on a real node, with helm and kubectl as a user runs them:

- ``helm install`` with the migration hook on: the Job migrates the empty database, the
  operator and two workers become Ready through their probes, as uid 10001 with a read-only
  root and no capabilities, the operator reaching the API with in-cluster configuration;
  a PublishingTarget applied with kubectl delivers a signed job posted to the worker
  Service, and an Alertmanager message; ``helm uninstall`` leaves no Pod, Job or lease.
- ``helm upgrade`` (a changed value and a new image tag) and ``helm rollback`` while a
  producer posts jobs to the Service: the migration Job completes, the Pods roll, no post is
  refused, every accepted job is delivered, duplicates are counted.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from tests.cluster.herald import Kubectl, secret, target, wait_ready
from tests.helpers import wait_until
from tests.integration.worker.test_alertmanager import THREE
from tests.node.chart import (
    RELEASE,
    Helm,
    Producer,
    diagnostics,
    install_and_target,
    pods,
    receiver_on_bridge,
    scalar,
    service_url,
    wait_ready_pods,
)
from tests.node.node import Node

pytestmark = [pytest.mark.node, pytest.mark.slow, pytest.mark.timeout(900)]


def check_security(pod: dict[str, Any]) -> None:
    """The chart's security context as shipped, as the kubelet ran it."""
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["limits"]["memory"]
    for status in pod["status"]["containerStatuses"]:
        assert status["ready"] and status["restartCount"] == 0, status


async def test_install_deliver_and_uninstall(
    node: Node, helm: Helm, kubectl: Kubectl, pod_db_url: tuple[str, str]
) -> None:
    url, _ = pod_db_url
    _, key = await install_and_target(node, helm, kubectl, pod_db_url)
    # The operator scales the worker Deployment to the chart's minimum (two) with its
    # in-cluster configuration: the ServiceAccount token and the kubernetes Service.
    workers = await wait_ready_pods(kubectl, "worker", 2)
    (operator,) = await wait_ready_pods(kubectl, "operator", 1)
    for pod in [*workers, operator]:
        check_security(pod)
    operator_env = {e["name"] for e in operator["spec"]["containers"][0].get("env", [])}
    assert "KUBECONFIG" not in operator_env

    async with receiver_on_bridge(key) as (receiver, hook_url):
        await kubectl.apply(
            secret("hook", signingSecret=key), target("hook", hook_url, secretRef={"name": "hook"})
        )
        await wait_ready(kubectl, "publishingtarget", "hook", timeout=120)
        base = await service_url(kubectl)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(
                f"{base}/v1/jobs", json={"target": "hook", "payload": {"hello": "pod"}}
            ) as resp:
                assert resp.status in (200, 201, 202), await resp.text()
                job_id = (await resp.json())["id"]
            async with session.post(f"{base}/v1/alertmanager/hook", json=THREE) as resp:
                assert resp.status == 200, await resp.text()
                alerts = await resp.json()
        expected = 1 + len(THREE["alerts"])
        try:
            await wait_until(
                lambda: len(receiver.delivered_ids()) >= expected,
                interval=0.2,
                timeout=120,
                what=f"{expected} deliveries",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{await diagnostics(kubectl, receiver)}") from None
        assert job_id in receiver.delivered_ids()
        assert receiver.bad_signatures == 0
        assert all(r.signature_ok for r in receiver.received)
        first = next(r for r in receiver.received if r.webhook_id == job_id)
        assert json.loads(first.body) == {"hello": "pod"}
        assert alerts

    await helm("uninstall", RELEASE, "--wait", "--timeout=3m")

    async def nothing_left() -> bool:
        left = await kubectl("get", "pods,jobs,deployments,leases", "-o", "name")
        return not left.out.strip()

    await wait_until(
        nothing_left, interval=0.2, timeout=120, what="no Pod, Job, Deployment or Lease left"
    )
    assert await scalar(url, "SELECT count(*) FROM herald.jobs WHERE state = 'running'") == 0


async def test_upgrade_and_rollback_while_workers_deliver(
    node: Node, helm: Helm, kubectl: Kubectl, pod_db_url: tuple[str, str]
) -> None:
    url, _ = pod_db_url
    values, key = await install_and_target(node, helm, kubectl, pod_db_url)
    before = {p["metadata"]["name"] for p in await wait_ready_pods(kubectl, "worker", 2)}
    async with receiver_on_bridge(key) as (receiver, hook_url):
        await kubectl.apply(
            secret("hook", signingSecret=key), target("hook", hook_url, secretRef={"name": "hook"})
        )
        await wait_ready(kubectl, "publishingtarget", "hook", timeout=120)
        producer = Producer(await service_url(kubectl), "hook")
        producer.start()
        try:
            await wait_until(
                lambda: len(receiver.delivered_ids()) >= 10,
                interval=0.2,
                timeout=120,
                what=f"deliveries before the upgrade ({producer.figures()})",
            )
            # A changed value and a new image tag (the same image under another name).
            repository, _, tag = node.image.rpartition(":")
            node.tag_image(f"{repository}:{tag}-next")
            upgraded = dict(values)
            upgraded["image"] = {**values["image"], "tag": f"{tag}-next"}
            upgraded["logging"] = {"level": "DEBUG"}
            await helm.deploy("upgrade", upgraded)
            after = await wait_ready_pods(kubectl, "worker", 2)
            assert not before & {p["metadata"]["name"] for p in after}, "the Pods rolled"
            assert {p["spec"]["containers"][0]["image"] for p in after} == {
                f"{repository}:{tag}-next"
            }
            during_upgrade = producer.figures()
            await helm("rollback", RELEASE, "1", "--wait", "--timeout=6m")
            rolled_back = await wait_ready_pods(kubectl, "worker", 2)

            async def rolled() -> bool:
                current = await pods(kubectl, "worker")
                images = {p["spec"]["containers"][0]["image"] for p in current}
                return images == {node.image} and len(rolled_back) >= 2

            await wait_until(
                rolled, interval=0.2, timeout=240, what="the workers back on the first image"
            )
            during_rollback = producer.figures()
            # A voluntary deletion of a worker mid-delivery: it is replaced, its jobs are
            # delivered, and the Service never refuses meanwhile.
            victim = (await wait_ready_pods(kubectl, "worker", 2))[0]["metadata"]["name"]
            await kubectl("delete", "pod", victim, "--wait=true", "--timeout=120s")
            await wait_ready_pods(kubectl, "worker", 2)
            mark = len(producer.accepted)
            await wait_until(
                lambda: len(producer.accepted) >= mark + 10,
                interval=0.2,
                timeout=120,
                what="jobs accepted after the deletion",
            )
        finally:
            await producer.stop()
        accepted = set(producer.accepted)

        async def all_delivered() -> bool:
            return accepted <= set(receiver.delivered_ids())

        await wait_until(
            all_delivered,
            timeout=240,
            interval=0.5,
            what=f"every accepted job delivered ({len(accepted - set(receiver.delivered_ids()))}"
            " missing)",
        )
        delivered = receiver.delivered_ids()
        figures = {
            **producer.figures(),
            "delivered": len(set(delivered)),
            "duplicates": len(delivered) - len(set(delivered)),
            "until upgraded": during_upgrade,
            "until rolled back": during_rollback,
        }
        print(f"\nupgrade and rollback under load: {figures}")
        assert receiver.bad_signatures == 0
        assert producer.errors == [], producer.errors[:5]
        assert producer.refused == [], f"{len(producer.refused)} refused: {producer.refused[:3]}"
    # A receiver answers before its worker settles the job, and a job whose worker was
    # replaced mid-delivery settles when its lease expires: wait for both.
    await wait_until(
        lambda: scalar(url, "SELECT count(*) = 0 FROM herald.jobs WHERE state = 'running'"),
        timeout=180,
        interval=0.5,
        what="no job left running after the last delivery",
    )
    await helm("uninstall", RELEASE, "--wait", "--timeout=3m")
