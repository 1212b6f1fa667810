"""The chart on the real API: what it renders is accepted (server-side dry run and a real
install), with the Prometheus Operator's kinds created where the cluster serves them and
left out where it does not; upgrade follows changed values; uninstall removes what it
made and keeps the CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.cluster.controlplane import ControlPlane
from tests.cluster.herald import CHART, RELEASE, Kubectl, Release, chart_values

MONITORING_CRDS = Path(__file__).with_name("manifests") / "monitoring-crds.yaml"
VALUE_FILES = sorted((CHART / "ci").glob("*-values.yaml"))


@pytest.mark.parametrize("values", VALUE_FILES, ids=[p.name for p in VALUE_FILES])
async def test_every_value_set_passes_a_server_side_dry_run(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, values: Path
) -> None:
    """Every object of every CI value set, the migration hook Job included, is checked by
    the API server itself (schemas of the built-in kinds, admission, RBAC rules)."""
    release = Release(kube, kubectl, helm_path, kubectl.namespace, {})
    if "minimal" in values.name:  # it uses kopf's peering CRDs installed by someone else
        peering = await release.helm_run(
            "template",
            RELEASE,
            str(CHART),
            "--set",
            "operator.peering.enabled=true",
            "--show-only",
            "templates/operator/peering.yaml",
        )
        crd = [d for d in yaml.safe_load_all(peering.out) if d and d["kind"].endswith("Definition")]
        await kubectl("apply", "-f", "-", input=yaml.safe_dump_all(crd))
    result = await release.helm_run(
        "install", RELEASE, str(CHART), "-f", str(values), "--dry-run=server", "-o", "json"
    )
    rendered = [d for d in yaml.safe_load_all(result.json()["manifest"]) if d]
    assert {"Deployment", "Service"} <= {d["kind"] for d in rendered}


async def test_install_upgrade_uninstall(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> None:
    values = chart_values(
        db_url,
        metrics={"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        networkPolicy={"enabled": True},
        worker={"podDisruptionBudget": {"enabled": True}},
    )
    release = Release(kube, kubectl, helm_path, kubectl.namespace, values)
    # Without the Prometheus Operator's CRDs the chart leaves its kinds out, and says so.
    installed = await release.install()
    assert "does not serve\nmonitoring.coreos.com/v1 ServiceMonitor" in installed.out
    assert (await kubectl("get", "servicemonitors", check=False)).code != 0
    for kind, name in [
        ("deployment", f"{RELEASE}-worker"),
        ("deployment", f"{RELEASE}-operator"),
        ("service", f"{RELEASE}-worker"),
        ("serviceaccount", f"{RELEASE}-operator"),
        ("role", f"{RELEASE}-operator"),
        ("networkpolicy", f"{RELEASE}-worker"),
        ("poddisruptionbudget", f"{RELEASE}-worker"),
    ]:
        assert await kubectl.get(kind, name) is not None, f"{kind}/{name} not installed"
    worker = await release.deployment("worker")
    # The operator scales the worker (the default): the chart sets no replica count, so
    # the Deployment starts at one and `helm upgrade` never resets what the operator set.
    assert worker["spec"]["replicas"] == 1

    # With the CRDs, an upgrade creates them; changed values reach the Deployments.
    await kubectl("apply", "-f", str(MONITORING_CRDS))
    for plural in ("servicemonitors", "prometheusrules"):
        await kubectl("wait", "--for=condition=Established", f"crd/{plural}.monitoring.coreos.com")
    await kubectl("scale", "deployment", f"{RELEASE}-worker", "--replicas=3")
    upgraded = await release.upgrade({**values, "logging": {"level": "DEBUG"}})
    assert "WARNING" not in upgraded.out
    monitors = (await kubectl("get", "servicemonitors", "-o", "name")).out.split()
    assert sorted(monitors) == [
        f"servicemonitor.monitoring.coreos.com/{RELEASE}-operator",
        f"servicemonitor.monitoring.coreos.com/{RELEASE}-worker",
    ]
    assert await kubectl.get("prometheusrule", RELEASE) is not None
    env = await release.container_env("operator")
    assert env["HERALD_LOG_LEVEL"] == "DEBUG"
    assert (await release.deployment("worker"))["spec"]["replicas"] == 3

    await release.uninstall()
    left = await kubectl(
        "get",
        "deployments,services,serviceaccounts,roles,rolebindings,servicemonitors",
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "name",
    )
    assert left.out.strip() == ""
    # CRDs outlive the release (Helm never deletes what crds/ installed): the targets and
    # replays of every namespace survive an uninstall.
    assert (
        kube.request(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/publishingtargets.herald.dev",
        )[0]
        == 200
    )


async def test_peered_releases_share_kopfs_crd(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> None:
    """kopf's KopfPeering CRD is kept on uninstall and shared by every release: a second
    release, and a re-install after `helm uninstall`, find it there and use it (Helm
    refused to adopt it before)."""
    values = chart_values(db_url, operator={"peering": {"enabled": True}})
    first = Release(kube, kubectl, helm_path, kubectl.namespace, values)
    other_ns = f"{kubectl.namespace}-b"
    await kubectl("create", "namespace", other_ns)
    other = Release(kube, kubectl.in_namespace(other_ns), helm_path, other_ns, dict(values))
    await first.install()
    await other.install()
    await first.uninstall()
    await first.install()
    for release in (first, other):
        peering = await release.kubectl.get("kopfpeering", "herald")
        assert peering is not None, release.namespace
    await other.uninstall()
    await kubectl("delete", "namespace", other_ns, "--wait=false")
