"""The worker reads a target's Secret through the Kubernetes API (read-only): here the API
is KMock, the same emulator the operator tests use."""

from __future__ import annotations

import base64

import kubernetes

from herald_worker.secrets import KubernetesSecrets
from tests.integration.operator.cluster import NS, SECRETS, Emulator, secret


def api_for(k8s: Emulator) -> object:
    configuration = kubernetes.client.Configuration(host=str(k8s.url).rstrip("/"))
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


async def test_reads_decodes_and_follows_changes(k8s: Emulator) -> None:
    source = KubernetesSecrets(api_for(k8s))
    k8s.objects[SECRETS, NS, "hook"] = secret("hook", signingSecret="whsec_abc", url="https://x")
    found = await source.get(NS, "hook")
    assert found.problem is None
    assert dict(found.data or {}) == {"signingSecret": "whsec_abc", "url": "https://x"}

    k8s.objects[SECRETS, NS, "hook"] = secret("hook", signingSecret="whsec_rotated")
    assert dict((await source.get(NS, "hook")).data or {}) == {"signingSecret": "whsec_rotated"}


async def test_a_missing_secret_is_named_without_values(k8s: Emulator) -> None:
    source = KubernetesSecrets(api_for(k8s))
    missing = await source.get(NS, "nowhere")
    assert missing.data is None
    assert missing.problem == f"Secret {NS}/nowhere does not exist"


async def test_binary_keys_are_left_out_not_the_whole_secret(k8s: Emulator) -> None:
    """A Secret shared with other uses may hold binary keys (a DER certificate): the text
    keys Herald reads still work."""
    source = KubernetesSecrets(api_for(k8s))
    body = secret("hook", signingSecret="whsec_abc")
    body["data"]["ca.der"] = base64.b64encode(b"\x30\x82\xff\xfe").decode()
    k8s.objects[SECRETS, NS, "hook"] = body
    found = await source.get(NS, "hook")
    assert found.problem is None
    assert dict(found.data or {}) == {"signingSecret": "whsec_abc"}
