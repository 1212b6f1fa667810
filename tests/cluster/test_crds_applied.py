"""The CRDs judged by the real API server: they install, every example applies, every
invalid manifest is refused with the message the user sees, defaults apply, and status
is a subresource of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from tests.cluster.controlplane import ROOT, ControlPlane
from tests.cluster.herald import Kubectl, target

INVALID = sorted((ROOT / "tests" / "unit" / "invalid").glob("*.yaml"))
_EXPECT_API = re.compile(r"^# expect-api: (.+)$", re.MULTILINE)


def _in_namespace(text: str, namespace: str) -> str:
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        doc.setdefault("metadata", {})["namespace"] = namespace
    return yaml.safe_dump_all(docs, sort_keys=False)


async def test_examples_apply_in_any_order(crds: None, kubectl: Kubectl) -> None:
    """``kubectl apply -f examples/`` as the README says (files in kubectl's order, the
    replay before its target), every object accepted and stored with its defaults."""
    files = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(files) >= 4
    result = await kubectl("apply", "-f", str(ROOT / "examples"))
    created = [line for line in result.out.splitlines() if line.endswith(" created")]
    kinds = sum(len([d for d in yaml.safe_load_all(f.read_text()) if d]) for f in files)
    assert len(created) == kinds, result.out
    hook = await kubectl.get("publishingtarget", "oncall-hook")
    assert hook is not None
    assert hook["spec"]["retry"]["maxAttempts"] == 5


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
async def test_invalid_manifest_is_refused_by_the_api(
    crds: None, kubectl: Kubectl, path: Path
) -> None:
    expected = _EXPECT_API.findall(path.read_text())
    assert expected, f"{path.name}: no '# expect-api:' line (what kubectl apply prints)"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if len(docs) == 2:  # an update: the stored object, then the change
        await kubectl(
            "apply", "-f", "-", input=_in_namespace(yaml.safe_dump(docs[0]), kubectl.namespace)
        )
        docs = docs[1:]
    result = await kubectl(
        "apply",
        "-f",
        "-",
        input=_in_namespace(yaml.safe_dump(docs[0]), kubectl.namespace),
        check=False,
    )
    assert result.code != 0, f"{path.name} was accepted: {result.out}"
    message = " ".join(result.err.split())
    for line in expected:
        assert line in message, f"{path.name}: {line!r} not in {message!r}"


async def test_defaults_and_printer_columns(crds: None, kubectl: Kubectl) -> None:
    await kubectl.apply(target("bare", "https://hooks.example.com/h"))
    stored = await kubectl.get("publishingtarget", "bare")
    assert stored is not None
    spec = stored["spec"]
    assert spec["retry"] == {
        "maxAttempts": 5,
        "initialBackoffSeconds": 2,
        "maxBackoffSeconds": 30,
        "multiplier": 2,
        "jitterSeconds": 1,
    }
    assert spec["circuitBreaker"] == {"failureThreshold": 5, "openSeconds": 30, "halfOpenProbes": 1}
    assert spec["timeoutSeconds"] == 10
    assert spec["paused"] is False
    table = await kubectl("get", "publishingtargets")
    assert table.out.split("\n")[0].split() == [
        "NAME",
        "TYPE",
        "READY",
        "CIRCUIT",
        "DEPTH",
        "DEAD",
        "EVENTS",
        "AGE",
    ]
    wide = await kubectl("get", "pt", "-o", "wide")
    assert wide.out.split("\n")[0].split()[-3:] == ["URL", "PAUSED", "FILTER"]
    assert "https://hooks.example.com/h" in wide.out
    # What a target subscribes to is in the table (docs/events.md).
    subscribed = target("subscribed", "https://hooks.example.com/s")
    subscribed["spec"]["subscriptions"] = {
        "eventTypes": ["incident.*", "deploy.finished"],
        "filter": 'event.priority == "high"',
    }
    await kubectl.apply(subscribed)
    row = next(
        line
        for line in (await kubectl("get", "pt", "-o", "wide")).out.split("\n")
        if line.startswith("subscribed ")
    )
    assert '["incident.*","deploy.finished"]' in row
    assert 'event.priority == "high"' in row
    herald = await kubectl("get", "herald")  # the category holds both kinds
    assert "publishingtarget.herald.dev/bare" in herald.out


async def test_status_is_a_subresource(crds: None, kube: ControlPlane, kubectl: Kubectl) -> None:
    """A write to the object cannot change its status, and a write to /status cannot
    change its spec (the emulator let both through)."""
    await kubectl.apply(target("sub", "https://hooks.example.com/h"))
    base = f"/apis/herald.dev/v1alpha1/namespaces/{kubectl.namespace}/publishingtargets/sub"
    merge = "application/merge-patch+json"
    status, body = kube.request(
        "PATCH", base, {"status": {"delivered": 7}, "spec": {"paused": True}}, content_type=merge
    )
    assert status == 200, body
    assert body["spec"]["paused"] is True
    assert "delivered" not in (body.get("status") or {})
    status, body = kube.request(
        "PATCH",
        base + "/status",
        {"status": {"delivered": 7}, "spec": {"paused": False}},
        content_type=merge,
    )
    assert status == 200, body
    assert body["status"]["delivered"] == 7
    assert body["spec"]["paused"] is True
    # The generation follows the spec only.
    assert body["metadata"]["generation"] == 2


async def test_stale_write_is_a_conflict(crds: None, kube: ControlPlane, kubectl: Kubectl) -> None:
    """Optimistic concurrency: a write naming an old resourceVersion is refused with 409."""
    await kubectl.apply(target("occ", "https://hooks.example.com/h"))
    base = f"/apis/herald.dev/v1alpha1/namespaces/{kubectl.namespace}/publishingtargets/occ"
    _, first = kube.request("GET", base)
    old = first["metadata"]["resourceVersion"]
    await kubectl("patch", "pt", "occ", "--type=merge", "-p", '{"spec":{"paused":true}}')
    status, body = kube.request(
        "PATCH",
        base + "/status",
        {"metadata": {"resourceVersion": old}, "status": {"delivered": 1}},
        content_type="application/merge-patch+json",
    )
    assert status == 409, body
    assert body["reason"] == "Conflict"
