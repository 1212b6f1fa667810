"""The node itself: it is Ready, and a Pod of the Herald image runs there as the chart runs
it (uid 10001, read-only root, no capabilities) and reaches the API through the
`kubernetes` Service."""

from __future__ import annotations

import json

import pytest
from tests.cluster.herald import Kubectl
from tests.helpers import wait_until
from tests.node.node import NODE_NAME, Node

pytestmark = [pytest.mark.node, pytest.mark.timeout(600)]


async def test_a_pod_of_the_herald_image_runs_as_the_chart_runs_it(
    node: Node, kubectl: Kubectl
) -> None:
    nodes = (await kubectl("get", "nodes", "-o", "json")).json()["items"]
    assert [n["metadata"]["name"] for n in nodes] == [NODE_NAME]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "version"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "herald",
                    "image": node.image,
                    "imagePullPolicy": "Never",
                    # The API through the kubernetes Service, with the mounted token and CA.
                    "command": [
                        "python",
                        "-c",
                        "import json, kubernetes as k;"
                        "k.config.load_incluster_config();"
                        "v = k.client.VersionApi().get_code();"
                        "import os;"
                        "print(json.dumps({'version': v.git_version, 'uid': os.getuid()}))",
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    await kubectl.apply(pod)

    async def finished() -> str | None:
        found = await kubectl.get("pod", "version")
        phase = ((found or {}).get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = await wait_until(finished, interval=0.2, timeout=180, what="the Pod to finish")
    logs = (await kubectl("logs", "version")).out
    assert phase == "Succeeded", logs
    answer = json.loads(logs.strip().splitlines()[-1])
    assert answer["uid"] == 10001
    assert answer["version"].startswith("v1.33.")
