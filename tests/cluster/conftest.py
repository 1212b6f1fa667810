"""Fixtures of the real-API suite: one throwaway control plane per session (fresh etcd),
Herald's CRDs installed once, a namespace per test, kubectl and helm as a user runs them.

Without the binaries (scripts/build-kube.sh builds them; Go needed) the suite skips with
that reason; CI (HERALD_TEST_REQUIRE_ALL=1) fails instead.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from tests.cluster.controlplane import ROOT, ControlPlane, control_plane, find_binaries
from tests.cluster.herald import Kubectl, run, wait_default_account
from tests.conftest import REQUIRE_ALL, need_binary
from tests.helpers import wait_until


@pytest.fixture(scope="session")
def kube() -> Iterator[ControlPlane]:
    folder = find_binaries()
    if folder is None:
        message = (
            "kube-apiserver, kube-controller-manager and etcd are not built: run "
            "scripts/build-kube.sh (needs Go; about 25 minutes the first time)"
        )
        if REQUIRE_ALL:
            pytest.fail(message + " (HERALD_TEST_REQUIRE_ALL=1: CI must run this test)")
        pytest.skip(message)
    with control_plane(folder) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubectl_path() -> str:
    return need_binary("kubectl", "the real-API tests run kubectl as a user does")


@pytest.fixture(scope="session")
def helm_path() -> str:
    return need_binary("helm", "the real-API tests install the chart with helm")


@pytest.fixture(scope="session")
def crds(kube: ControlPlane, kubectl_path: str) -> None:
    """``kubectl apply -f crds/`` (what the chart's crds/ holds, byte for byte), until the
    API serves both kinds (``kubectl wait`` fails on a CRD that has no conditions yet)."""
    out = subprocess.run(
        [kubectl_path, f"--kubeconfig={kube.admin_kubeconfig}", "apply", "-f", str(ROOT / "crds")],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, f"kubectl apply -f crds/: {out.stderr.strip()}"
    for name in ("publishingtargets.herald.dev", "deadletterreplays.herald.dev"):
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"

        def established(path: str = path) -> bool:
            _, crd = kube.request("GET", path)
            conditions = (crd.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        asyncio.run(
            wait_until(established, interval=0.1, timeout=60, what=f"CRD {name} Established")
        )


@pytest.fixture()
async def namespace(kube: ControlPlane, kubectl_path: str) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = Kubectl(kubectl_path, kube.admin_kubeconfig, "default")
    await admin("create", "namespace", name)

    # Namespaced work (TokenRequest, Deployments) needs the controller manager's defaults.
    await wait_default_account(admin.in_namespace(name))
    yield name
    # Objects with Herald's finalizer would hold the namespace once the operator is gone:
    # the cluster is thrown away at the end of the session, so the deletion is not awaited.
    await run(
        [
            kubectl_path,
            f"--kubeconfig={kube.admin_kubeconfig}",
            "delete",
            "namespace",
            name,
            "--wait=false",
        ],
        check=False,
    )


@pytest.fixture()
def kubectl(kube: ControlPlane, kubectl_path: str, namespace: str) -> Kubectl:
    """kubectl as the cluster's admin, in the test's namespace."""
    return Kubectl(kubectl_path, kube.admin_kubeconfig, namespace)
