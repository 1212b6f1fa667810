"""The Helm chart (deploy/helm/herald), rendered by a real helm with the default values and
with every ci/*-values.yaml, and checked object by object: Kubernetes OpenAPI schemas
(kubernetes-validate, strict), security contexts, probes, environment, Secrets, the
migration hook, least-privilege RBAC, optional objects, the values schema, and the
PrometheusRule (promtool) and Grafana dashboard against Herald's metric catalogue.

Needs helm (scripts/install-tools.sh) and promtool (Debian's prometheus package); without
them the tests skip locally and fail in CI (HERALD_TEST_REQUIRE_ALL=1).
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from herald_core.durations import parse_duration
from herald_core.settings import HeraldSettings, LogSettings
from herald_delivery.egress import EgressPolicy
from herald_delivery.settings import EgressSettings
from herald_operator.settings import OperatorSettings
from herald_queue.settings import DatabaseSettings, QueueSettings
from herald_worker.settings import WorkerSettings
from tests.conftest import REQUIRE_ALL, need_binary
from tests.e2e.chart_helpers import (
    CHART,
    CI_VALUES,
    KUBERNETES_VERSION,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    OPERATOR_METRICS,
    RELEASE,
    ROOT,
    VALUE_SETS,
    WORKER_METRICS,
    env_of,
    helm,
    metric_names_in,
    named,
    of_kind,
    pod_specs,
    rbac_grants,
    render,
    series_names,
    template_args,
    values_args,
)
from tests.helpers import settings_from

WORKER = f"{RELEASE}-worker"
OPERATOR = f"{RELEASE}-operator"
MINIMAL = "hq"  # ci/minimal-values.yaml sets fullnameOverride
# Kinds that are custom resources of other projects: kubernetes-validate has no schema for
# them, so their shape is checked here and their content by dedicated tests.
CUSTOM_KINDS = {
    "monitoring.coreos.com/v1": {"ServiceMonitor", "PrometheusRule"},
    "kopf.dev/v1": {"KopfPeering", "ClusterKopfPeering"},
}


def kubernetes_validate() -> Any:
    """The offline OpenAPI validator (PyPI kubernetes-validate, in the test extra)."""
    try:
        module = importlib.import_module("kubernetes_validate")
    except ImportError:
        message = "kubernetes-validate is not installed (pip install -e '.[test]')"
        if REQUIRE_ALL:
            pytest.fail(message + " (HERALD_TEST_REQUIRE_ALL=1: CI must run this test)")
        pytest.skip(message)
    return module


def names(value_set: str) -> tuple[str, str]:
    prefix = MINIMAL if value_set == "minimal" else RELEASE
    return f"{prefix}-worker", f"{prefix}-operator"


def deployment(value_set: str, component: str) -> dict[str, Any]:
    worker, operator = names(value_set)
    return named(render(value_set), "Deployment", worker if component == "worker" else operator)


def pod_of(value_set: str, component: str) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(value_set, component)["spec"]["template"]["spec"]
    return spec


def container(value_set: str, component: str) -> dict[str, Any]:
    (only,) = pod_of(value_set, component)["containers"]
    result: dict[str, Any] = only
    return result


# --------------------------------------------------------------------------------------
# helm lint and schema validation of every object


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint(value_set: str) -> None:
    result = helm(
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        *values_args(value_set),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_matches_the_kubernetes_openapi_schema(value_set: str, version: str) -> None:
    validator = kubernetes_validate()
    objects = render(value_set)
    assert objects
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        assert set(obj) >= {"apiVersion", "kind", "metadata"}, where
        if obj["kind"] in CUSTOM_KINDS.get(obj["apiVersion"], ()):
            assert set(obj) <= {"apiVersion", "kind", "metadata", "spec"}, where
            continue
        try:
            validator.validate(obj, version, strict=True)
        except validator.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)} (Kubernetes {version})")
        cluster_scoped = obj["kind"] in (
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
        )
        assert ("namespace" in obj["metadata"]) != cluster_scoped, where
        if "namespace" in obj["metadata"] and obj["kind"] != "ConfigMap":
            assert obj["metadata"]["namespace"] == NAMESPACE, where


def test_the_validator_is_strict() -> None:
    """A typo in a pod spec must not pass as an unknown field."""
    validator = kubernetes_validate()
    bad = json.loads(json.dumps(deployment("default", "worker")))
    validator.validate(bad, KUBERNETES_VERSION, strict=True)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(validator.ValidationError):
        validator.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_carries_the_chart_labels(value_set: str) -> None:
    for obj in render(value_set):
        if obj["kind"] == "CustomResourceDefinition" and obj["spec"]["group"] == "herald.dev":
            continue  # the CRDs are copies of crds/, installed from the chart's crds/
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/instance") == RELEASE, where
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", where
        assert labels.get("helm.sh/chart", "").startswith("herald-"), where


# --------------------------------------------------------------------------------------
# Deployments and pods


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_worker_and_operator_run_the_one_image(value_set: str) -> None:
    deployments = of_kind(render(value_set), "Deployment")
    assert len(deployments) == 2
    commands = {}
    images = set()
    for item in deployments:
        (c,) = item["spec"]["template"]["spec"]["containers"]
        commands[item["metadata"]["labels"]["app.kubernetes.io/component"]] = c["command"]
        images.add(c["image"])
        selector = item["spec"]["selector"]["matchLabels"]
        labels = item["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert "app.kubernetes.io/version" not in selector, "selectors must not change on upgrade"
    assert commands == {"worker": ["herald", "worker"], "operator": ["herald", "operator"]}
    assert len(images) == 1
    for job in of_kind(render(value_set), "Job"):
        (c,) = job["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["herald", "migrate"]
        assert c["image"] in images


def test_image_reference() -> None:
    assert container("default", "worker")["image"] == "herald:0.1.0"
    assert container("all-on", "worker")["image"] == (
        "registry.example.com/herald@sha256:" + "0" * 64
    )
    assert container("existing-secret", "operator")["image"] == "herald:0.1.0-rc1"
    assert container("existing-secret", "operator")["imagePullPolicy"] == "Always"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_restrictive_security_contexts(value_set: str) -> None:
    for where, spec in pod_specs(render(value_set)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"] + spec.get("initContainers", []):
            ctx = c["securityContext"]
            assert ctx["runAsNonRoot"] is True, where
            assert isinstance(ctx["runAsUser"], int) and ctx["runAsUser"] > 0, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx.get("privileged", False) is False, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
            # The only writable path is /tmp, an emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            assert all(
                m.get("readOnly") or path == "/tmp"
                for path, m in ((m["mountPath"], m) for m in c["volumeMounts"])
            ), where
            # Requests for scheduling, a memory limit against leaks.
            assert c["resources"]["requests"].keys() >= {"cpu", "memory"}, where
            assert "memory" in c["resources"]["limits"], where


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_are_on_the_ports_the_processes_listen_on(value_set: str) -> None:
    worker = container(value_set, "worker")
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    env = env_of(worker)
    assert ports == {"http": int(env["HERALD_HTTP_PORT"]["value"])} == {"http": 8080}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert worker["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    operator = container(value_set, "operator")
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    env = env_of(operator)
    assert (
        ports
        == {
            "metrics": int(env["HERALD_OPERATOR_METRICS_PORT"]["value"]),
            "health": int(env["HERALD_OPERATOR_HEALTH_PORT"]["value"]),
        }
        == {"metrics": 8081, "health": 8082}
    )
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}

    # The Services reach those ports by name.
    worker_name, operator_name = names(value_set)
    objects = render(value_set)
    svc = named(objects, "Service", worker_name)["spec"]
    assert [(p["name"], p["targetPort"]) for p in svc["ports"]] == [("http", "http")]
    assert svc["selector"] == deployment(value_set, "worker")["spec"]["selector"]["matchLabels"]
    svc = named(objects, "Service", operator_name)["spec"]
    assert [(p["name"], p["targetPort"]) for p in svc["ports"]] == [("metrics", "metrics")]
    assert svc["selector"] == deployment(value_set, "operator")["spec"]["selector"]["matchLabels"]


def _settings_env(*classes: type[HeraldSettings]) -> set[str]:
    return {cls.env_name(name) for cls in classes for name in cls.model_fields}


COMMON_ENV = {"POD_NAMESPACE"}
ENV_BY_COMPONENT: dict[str, tuple[type[HeraldSettings], ...]] = {
    "worker": (DatabaseSettings, QueueSettings, EgressSettings, LogSettings, WorkerSettings),
    "operator": (DatabaseSettings, QueueSettings, EgressSettings, LogSettings, OperatorSettings),
}


@pytest.mark.parametrize("value_set", VALUE_SETS)
@pytest.mark.parametrize("component", ["worker", "operator"])
def test_environment_is_what_the_process_reads(
    value_set: str, component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable the chart sets is a setting of that process, its literal values load
    with the process's own settings code, and the namespace comes from the downward API."""
    env = env_of(container(value_set, component))
    classes = ENV_BY_COMPONENT[component]
    known = _settings_env(*classes) | COMMON_ENV
    assert set(env) <= known, set(env) - known
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    literal = {name: item["value"] for name, item in env.items() if "value" in item}
    for cls in classes:
        settings_from(cls, literal, monkeypatch)  # raises on a value the process would refuse


EGRESS_ENV = ("HERALD_EGRESS_ALLOW", "HERALD_EGRESS_DENY", "HERALD_EGRESS_ALLOW_LOOPBACK")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_worker_and_operator_share_the_egress_policy(
    value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers enforce worker.egress; the operator refuses, at registration, a target
    whose URL names an address it forbids: both read the same values."""
    worker = env_of(container(value_set, "worker"))
    operator = env_of(container(value_set, "operator"))
    assert {n: worker[n] for n in EGRESS_ENV} == {n: operator[n] for n in EGRESS_ENV}
    egress = {n: worker[n]["value"] for n in EGRESS_ENV}
    policy = settings_from(EgressSettings, egress, monkeypatch).policy()
    if value_set == "all-on":
        assert [str(n) for n in policy.deny] == ["10.0.0.0/8", "192.168.0.0/16"]
        assert [str(n) for n in policy.allow] == ["10.1.2.3/32"]
    else:
        assert policy == EgressPolicy(), "link-local, metadata and loopback refused by default"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_database_url_only_ever_comes_from_a_secret(value_set: str) -> None:
    objects = render(value_set)
    secret_names = {s["metadata"]["name"] for s in of_kind(objects, "Secret")}
    for where, spec in pod_specs(objects):
        for c in spec["containers"]:
            env = env_of(c)
            ref = env["HERALD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] and ref["key"], where
            assert "value" not in env["HERALD_DATABASE_URL"], where
            if value_set == "all-on":
                assert ref["name"] in secret_names, where
            if value_set == "existing-secret":
                assert ref == {"name": "herald-pg-app", "key": "uri"}, where
    # No URL or token appears in clear in any workload.
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            text = yaml.safe_dump(obj)
            assert "postgresql://" not in text and "postgres://" not in text
            assert "ci-token-not-a-secret" not in text


def test_chart_created_secrets() -> None:
    objects = render("all-on")
    db = named(objects, "Secret", f"{RELEASE}-database")
    # The migration hook runs before ordinary objects exist, so the Secret it reads is a
    # hook too, of a lower weight.
    assert db["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(db["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    token = named(objects, "Secret", f"{RELEASE}-api-token")
    assert set(token["data"]) == {"token"}
    env = env_of(container("all-on", "worker"))
    assert env["HERALD_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-api-token",
        "key": "token",
    }
    assert "HERALD_API_TOKEN" not in env_of(container("all-on", "operator"))
    assert "HERALD_API_TOKEN" not in env_of(container("default", "worker"))
    assert not of_kind(render("default"), "Secret")
    assert not of_kind(render("existing-secret"), "Secret")


def test_database_secret_is_required() -> None:
    result = helm(*template_args("default", "--set", "database.existingSecret="), check=False)
    assert result.returncode != 0
    assert "database.existingSecret" in result.stderr and "database.url" in result.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_worker_outlives_its_drain_and_shutdown_grace(value_set: str) -> None:
    spec = deployment(value_set, "worker")["spec"]["template"]["spec"]
    env = env_of(spec["containers"][0])
    drain = parse_duration(env["HERALD_SHUTDOWN_DRAIN"]["value"])
    grace = parse_duration(env["HERALD_SHUTDOWN_GRACE"]["value"])
    # Both count from SIGTERM, one after the other, inside the termination grace period.
    assert spec["terminationGracePeriodSeconds"] > drain + grace


def test_terminating_workers_keep_serving_until_their_endpoint_is_gone() -> None:
    """A drain by default: after SIGTERM the worker serves (unready, closing each
    connection after its answer) until the endpoint has left the Service, so producers see
    no refusal or reset during rollouts. No preStop hook: the worker drains itself."""
    (container,) = deployment("default", "worker")["spec"]["template"]["spec"]["containers"]
    assert parse_duration(env_of(container)["HERALD_SHUTDOWN_DRAIN"]["value"]) >= 5
    assert "lifecycle" not in container
    off = named(render("default", "--set", "worker.drainSeconds=0"), "Deployment", WORKER)
    (container,) = off["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["HERALD_SHUTDOWN_DRAIN"]["value"] == "0s"


def test_shutdown_grace_longer_than_termination_grace_is_refused() -> None:
    result = helm(
        *template_args("default", "--set", "worker.terminationGracePeriodSeconds=24"), check=False
    )
    assert result.returncode != 0
    assert "must exceed worker.drainSeconds + worker.shutdownGraceSeconds (5 + 20)" in result.stderr
    result = helm(
        *template_args(
            "default",
            "--set",
            "worker.terminationGracePeriodSeconds=24",
            "--set",
            "worker.drainSeconds=0",
        ),
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_operator_replicas_and_peering() -> None:
    default = deployment("default", "operator")["spec"]
    assert default["replicas"] == 1
    assert default["strategy"]["type"] == "Recreate"  # never two standalone operators
    assert env_of(container("default", "operator"))["HERALD_PEERING"]["value"] == ""
    assert not [o for o in render("default") if o["apiVersion"].startswith("kopf.dev")]

    all_on = render("all-on")
    assert deployment("all-on", "operator")["spec"]["replicas"] == 2
    assert env_of(container("all-on", "operator"))["HERALD_PEERING"]["value"] == "herald"
    crd = named(all_on, "CustomResourceDefinition", "kopfpeerings.kopf.dev")
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    peering = named(all_on, "KopfPeering", "herald")
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"

    cluster = render("cluster-wide")
    named(cluster, "CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")
    assert "namespace" not in named(cluster, "ClusterKopfPeering", "herald")["metadata"]

    # CRDs already installed by someone else: the peering object is an ordinary object.
    minimal = render("minimal")
    assert not [
        o
        for o in minimal
        if o["kind"] == "CustomResourceDefinition" and o["spec"]["group"] == "kopf.dev"
    ]
    assert "annotations" not in named(minimal, "KopfPeering", "herald")["metadata"]


def test_operator_settings_follow_the_values() -> None:
    env = env_of(container("default", "operator"))
    assert env["HERALD_WATCH_NAMESPACE"]["value"] == NAMESPACE
    assert env["HERALD_WORKER_DEPLOYMENT"]["value"] == WORKER
    assert env["HERALD_WORKER_NAMESPACE"]["value"] == NAMESPACE
    assert env["HERALD_SCALING"]["value"] == "true"  # the default, as HERALD_SCALING's
    assert env_of(container("minimal", "operator"))["HERALD_SCALING"]["value"] == "false"
    assert env_of(container("cluster-wide", "operator"))["HERALD_WATCH_NAMESPACE"]["value"] == "*"
    scaled = env_of(container("all-on", "operator"))
    assert scaled["HERALD_SCALING"]["value"] == "true"
    assert scaled["HERALD_SCALE_MIN"]["value"] == "2"
    assert scaled["HERALD_SCALE_MAX"]["value"] == "20"
    minimal = env_of(container("minimal", "operator"))
    assert minimal["HERALD_WORKER_DEPLOYMENT"]["value"] == "hq-worker"


def test_worker_replicas_are_left_to_the_operator_when_it_scales() -> None:
    assert "replicas" not in deployment("default", "worker")["spec"]
    assert "replicas" not in deployment("all-on", "worker")["spec"]
    assert deployment("minimal", "worker")["spec"]["replicas"] == 1
    strategy = deployment("default", "worker")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


# --------------------------------------------------------------------------------------
# The migration hook


@pytest.mark.parametrize("value_set", [v for v in VALUE_SETS if v != "minimal"])
def test_migrations_run_in_a_hook_job_before_install_and_upgrade(value_set: str) -> None:
    (job,) = of_kind(render(value_set), "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    spec = job["spec"]
    assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False  # PostgreSQL only, no API access
    # The chart's ServiceAccounts do not exist yet when a pre-install hook runs.
    assert "serviceAccountName" not in pod


def test_migrations_can_be_turned_off() -> None:
    assert not of_kind(render("minimal"), "Job")


# --------------------------------------------------------------------------------------
# RBAC: least privilege, derived from what each process is configured to do

# What the operator calls (docs/operator.md, "RBAC"): kopf lists, watches and patches the
# custom resources and patches their status; core Events are created; Secrets are read by
# name. No get on the custom resources, no list or watch of Secrets, no events.k8s.io.
CR_RULES = (
    {
        ("herald.dev", resource, verb)
        for resource in ("publishingtargets", "deadletterreplays")
        for verb in ("list", "watch", "patch")
    }
    | {
        ("herald.dev", f"{resource}/status", "patch")
        for resource in ("publishingtargets", "deadletterreplays")
    }
    | {("", "events", "create"), ("", "secrets", "get")}
)
PEERING_VERBS = ("get", "list", "watch", "patch")
SCALING_RULES = {("apps", "deployments/scale", verb) for verb in ("get", "patch")}
# HERALD_API_AUTH=kubernetes: the worker asks the API server who a token is and what it may do.
REVIEW_RULES = {
    ("ClusterRole", "authentication.k8s.io", "tokenreviews", "create"),
    ("ClusterRole", "authorization.k8s.io", "subjectaccessreviews", "create"),
}


def expected_grants(value_set: str) -> dict[str, set[tuple[str, str, str, str]]]:
    """What the operator and the worker need, read from the environment the chart gives
    them: the namespace it watches, peering, scaling, Secrets from the API."""
    operator_env = env_of(container(value_set, "operator"))
    worker_env = env_of(container(value_set, "worker"))
    cluster = operator_env["HERALD_WATCH_NAMESPACE"]["value"] == "*"
    watch_scope = "ClusterRole" if cluster else "Role"
    operator = {(watch_scope, *rule) for rule in CR_RULES}
    if operator_env["HERALD_PEERING"]["value"]:
        resource = "clusterkopfpeerings" if cluster else "kopfpeerings"
        operator |= {(watch_scope, "kopf.dev", resource, verb) for verb in PEERING_VERBS}
    if operator_env["HERALD_SCALING"]["value"] == "true":
        operator |= {("Role", *rule) for rule in SCALING_RULES}
    worker: set[tuple[str, str, str, str]] = set()
    if worker_env["HERALD_KUBERNETES_SECRETS"]["value"] == "true":
        worker = {(watch_scope, "", "secrets", "get")}
    if worker_env.get("HERALD_API_AUTH", {}).get("value") == "kubernetes":
        worker |= REVIEW_RULES
    worker_sa = pod_of(value_set, "worker")["serviceAccountName"]
    operator_sa = pod_of(value_set, "operator")["serviceAccountName"]
    return {sa: grants for sa, grants in ((worker_sa, worker), (operator_sa, operator)) if grants}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rbac_grants_exactly_what_the_components_use(value_set: str) -> None:
    assert rbac_grants(render(value_set)) == expected_grants(value_set)


def test_rbac_covers_every_switch() -> None:
    """Some value set exercises each kind of grant, so the exact comparison means something."""
    seen = set().union(*(g for v in VALUE_SETS for g in rbac_grants(render(v)).values()))
    assert {
        ("ClusterRole", "kopf.dev", "clusterkopfpeerings", "patch"),
        ("Role", "kopf.dev", "kopfpeerings", "patch"),
        ("Role", "apps", "deployments/scale", "patch"),
        ("ClusterRole", "herald.dev", "publishingtargets", "watch"),
        ("Role", "herald.dev", "deadletterreplays/status", "patch"),
        ("ClusterRole", "", "secrets", "get"),
        ("ClusterRole", "authorization.k8s.io", "subjectaccessreviews", "create"),
    } <= seen
    assert not of_kind(render("default"), "ClusterRole")
    assert not of_kind(render("default"), "ClusterRoleBinding")
    # Cluster-scoped names carry the namespace: two releases of one name must not collide.
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        for obj in of_kind(render("cluster-wide"), kind):
            assert obj["metadata"]["name"].startswith(f"{NAMESPACE}-{RELEASE}-"), obj["metadata"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rbac_has_no_wildcards_and_names_the_deployment(value_set: str) -> None:
    worker_name, _ = names(value_set)
    for role in of_kind(render(value_set), "Role") + of_kind(render(value_set), "ClusterRole"):
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule, role["metadata"]["name"]
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                for item in rule.get(field, []):
                    assert "*" not in item, (role["metadata"]["name"], field, rule)
            if "apps" in rule["apiGroups"]:
                assert role["kind"] == "Role"
                assert rule["resourceNames"] == [worker_name], rule


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_worker_can_only_read(value_set: str) -> None:
    worker_sa = deployment(value_set, "worker")["spec"]["template"]["spec"]["serviceAccountName"]
    for grant in rbac_grants(render(value_set)).get(worker_sa, set()):
        _, group, resource, verb = grant
        # The reviews create nothing: they are questions to the API server.
        assert (verb == "get" and (group, resource) == ("", "secrets")) or grant in REVIEW_RULES


def test_kubernetes_api_auth_ships_the_roles_namespaces_bind() -> None:
    """apiAuth.mode=kubernetes (ci/cluster-wide-values.yaml): the worker is told so, gets its
    ServiceAccount token, and the chart ships the ClusterRoles of docs/authentication.md,
    bound to nobody (namespaces bind them to their producers)."""
    objects = render("cluster-wide")
    env = env_of(container("cluster-wide", "worker"))
    assert env["HERALD_API_AUTH"]["value"] == "kubernetes"
    assert env["HERALD_API_AUTH_AUDIENCE"]["value"] == "herald"
    assert "HERALD_API_TOKEN" not in env
    assert pod_of("cluster-wide", "worker")["automountServiceAccountToken"] is True
    roles = {
        r["metadata"]["name"]: [
            (tuple(x["apiGroups"]), tuple(x["resources"]), tuple(x["verbs"])) for x in r["rules"]
        ]
        for r in of_kind(objects, "ClusterRole")
    }
    prefix = f"{NAMESPACE}-{RELEASE}"
    group = ("herald.dev",)
    assert roles[f"{prefix}-publisher"] == [(group, ("publishingtargets/publish",), ("create",))]
    assert roles[f"{prefix}-queue-reader"] == [(group, ("publishingtargets/queue",), ("get",))]
    assert roles[f"{prefix}-queue-operator"] == [
        (group, ("publishingtargets/queue",), ("get", "update"))
    ]
    bound = {b["roleRef"]["name"] for b in objects if b["kind"].endswith("RoleBinding")}
    assert not bound & {f"{prefix}-publisher", f"{prefix}-queue-reader", f"{prefix}-queue-operator"}
    default = render("default")
    assert "HERALD_API_AUTH" not in env_of(container("default", "worker"))
    assert not [r for r in of_kind(default, "ClusterRole") if "publisher" in r["metadata"]["name"]]


def test_service_accounts_and_tokens() -> None:
    objects = render("default")
    for sa in of_kind(objects, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False  # pods opt in
    assert (
        deployment("default", "worker")["spec"]["template"]["spec"]["automountServiceAccountToken"]
        is True
    )
    minimal = deployment("minimal", "worker")["spec"]["template"]["spec"]
    assert minimal["automountServiceAccountToken"] is False
    assert minimal["serviceAccountName"] == "herald-worker-sa"
    assert not of_kind(render("minimal"), "ServiceAccount")


# --------------------------------------------------------------------------------------
# Optional objects

OPTIONAL = ("NetworkPolicy", "ServiceMonitor", "PrometheusRule", "ConfigMap")


def test_optional_objects_are_off_by_default() -> None:
    kinds = {obj["kind"] for obj in render("default")}
    assert kinds.isdisjoint(OPTIONAL), kinds & set(OPTIONAL)
    assert kinds == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "Job",
        "CustomResourceDefinition",
        "PodDisruptionBudget",
    }


def test_two_workers_and_a_disruption_budget_by_default() -> None:
    """A rollout, a drain or a deleted pod leaves a worker serving the API: at least two
    run by default, and a PodDisruptionBudget keeps one through voluntary evictions. With
    one worker the budget is left out (it would block every drain)."""
    objects = render("default")
    operator = named(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert env_of(operator["containers"][0])["HERALD_SCALE_MIN"]["value"] == "2"
    pdb = named(objects, "PodDisruptionBudget", WORKER)["spec"]
    assert pdb["minAvailable"] == 1
    assert (
        pdb["selector"]["matchLabels"]
        == (deployment("default", "worker")["spec"]["selector"]["matchLabels"])
    )
    assert not of_kind(render("minimal"), "PodDisruptionBudget"), "one worker: no budget"
    single = render("default", "--set", "operator.scaling.minReplicas=1")
    assert not of_kind(single, "PodDisruptionBudget")
    fixed = render("default", "--set", "operator.scaling.enabled=false")
    assert named(fixed, "Deployment", WORKER)["spec"]["replicas"] == 2
    assert of_kind(fixed, "PodDisruptionBudget")


def test_optional_objects_when_enabled() -> None:
    objects = render("all-on")
    kinds = [obj["kind"] for obj in objects]
    assert kinds.count("NetworkPolicy") == 2
    assert kinds.count("ServiceMonitor") == 2
    assert kinds.count("PrometheusRule") == 1
    pdb = named(objects, "PodDisruptionBudget", WORKER)["spec"]
    assert (
        pdb["selector"]["matchLabels"]
        == deployment("all-on", "worker")["spec"]["selector"]["matchLabels"]
    )
    dashboard = named(objects, "ConfigMap", f"{RELEASE}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_service_monitors_scrape_both_processes() -> None:
    monitors = {m["metadata"]["name"]: m for m in of_kind(render("all-on"), "ServiceMonitor")}
    assert set(monitors) == {WORKER, OPERATOR}
    for name, port in ((WORKER, "http"), (OPERATOR, "metrics")):
        spec = monitors[name]["spec"]
        assert monitors[name]["metadata"]["labels"]["release"] == "prometheus"
        service_labels = named(render("all-on"), "Service", name)["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= service_labels.items()
        assert spec["endpoints"] == [
            {"port": port, "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
        ]


def test_network_policies_admit_the_configured_peers() -> None:
    objects = render("all-on")
    worker = named(objects, "NetworkPolicy", WORKER)["spec"]
    assert (
        worker["podSelector"]["matchLabels"]
        == deployment("all-on", "worker")["spec"]["selector"]["matchLabels"]
    )
    (rule,) = worker["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(rule["from"]) == 2  # Alertmanager's pods and the monitoring namespace
    operator = named(objects, "NetworkPolicy", OPERATOR)["spec"]
    metrics, health = operator["ingress"]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}] and metrics["from"]
    assert health == {"ports": [{"port": "health", "protocol": "TCP"}]}


# --------------------------------------------------------------------------------------
# values.yaml and values.schema.json

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "worker.replicas=-1"], "/worker/replicas"),
        (["--set", "bogus=1"], "bogus"),
        (["--set", "logging.level=LOUD"], "/logging/level"),
        (["--set", "worker.service.type=ExternalName"], "/worker/service/type"),
        (["--set", "operator.scaling.interval=soon"], "/operator/scaling/interval"),
        (["--set", "worker.extraEnv[0].value=x"], "name"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "database.url=mysql://db"], "/database/url"),
        (["--set", "worker.egress.deny[0]=ten"], "/worker/egress/deny/0"),
        (["--set", "worker.egress.allowLoopback=maybe"], "/worker/egress/allowLoopback"),
    ],
)
def test_values_schema_rejects_bad_values(flags: list[str], message: str) -> None:
    result = helm(*template_args("default", *flags), check=False)
    assert result.returncode != 0, f"{flags} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def _schema_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, child in node.get("properties", {}).items():
        found.append((f"{path}.{key}", child))
        found.extend(_schema_nodes(child, f"{path}.{key}"))
    return found


def test_values_schema_describes_every_key() -> None:
    nodes = _schema_nodes(SCHEMA)
    assert len(nodes) > 80
    for path, node in nodes:
        assert node.get("description"), f"{path} has no description"
    for path, node in nodes:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path


def _documented_paths(node: dict[str, Any], path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Keys the chart defines (not the insides of free-form Kubernetes objects)."""
    paths = set()
    for key, child in node.get("properties", {}).items():
        paths.add((*path, key))
        if "$ref" not in child:
            paths |= _documented_paths(child, (*path, key))
    return paths


def test_values_yaml_comments_every_key() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=values.schema.json"
    documented = _documented_paths(SCHEMA)
    stack: list[tuple[int, str]] = []
    seen = set()
    key_line = re.compile(r"^(\s*)([A-Za-z][\w-]*):")
    for number, line in enumerate(lines):
        match = key_line.match(line)
        if not match:
            continue
        indent = len(match[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match[2]))
        path = tuple(key for _, key in stack)
        if path not in documented:
            continue
        seen.add(path)
        previous = next((lines[i] for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        where = f"values.yaml:{number + 1}: {'.'.join(path)}"
        assert previous.strip().startswith("#"), f"{where} has no comment"
    assert seen == documented - {("global",)}, documented - seen


# --------------------------------------------------------------------------------------
# NOTES.txt and the CRDs


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_notes_tell_what_to_apply_next(value_set: str) -> None:
    result = helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        *values_args(value_set),
    )
    notes = result.stdout.split("NOTES:", 1)[1]
    worker_name, _ = names(value_set)
    assert "kubectl -n herald apply -f examples/webhook-target.yaml" in notes
    assert "kubectl -n herald get publishingtargets" in notes
    assert f"svc/{worker_name}" in notes
    assert "<no value>" not in notes
    if value_set == "existing-secret":
        assert "create secret generic herald-pg-app" in notes
        assert "--from-literal=uri=" in notes


def test_chart_crds_are_byte_identical_to_crds() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert source, "crds/ is empty"
    assert chart == source


def test_crds_are_installed_with_the_chart() -> None:
    crds = {c["metadata"]["name"] for c in of_kind(render("default"), "CustomResourceDefinition")}
    assert crds == {"publishingtargets.herald.dev", "deadletterreplays.herald.dev"}


# --------------------------------------------------------------------------------------
# PrometheusRule (promtool) and the Grafana dashboard, against the metric catalogue


def prometheus_rules() -> dict[str, Any]:
    (rule,) = of_kind(render("all-on"), "PrometheusRule")
    assert set(rule["spec"]) == {"groups"}
    return {"groups": rule["spec"]["groups"]}


RUNBOOKS = "https://github.com/herald-dev/herald/blob/main/docs/troubleshooting.md"


def test_every_alert_has_a_runbook_url() -> None:
    """The runbook base URL is a value; each alert appends its section's anchor."""
    base = "https://wiki.example/herald/troubleshooting.md"
    for value_set, extra, expected in (
        ("all-on", (), RUNBOOKS),
        ("all-on", ("--set", f"metrics.prometheusRule.runbookBaseUrl={base}"), base),
    ):
        (rule,) = of_kind(render(value_set, *extra), "PrometheusRule")
        for item in rule["spec"]["groups"][0]["rules"]:
            anchor = item["alert"].lower()
            assert item["annotations"]["runbook_url"] == f"{expected}#{anchor}"


def test_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = need_binary("promtool", "Debian package prometheus: apt-get install prometheus")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rules()))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_prometheus_alerts_fire_as_documented(tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert fires on the series that should raise it."""
    promtool = need_binary("promtool", "Debian package prometheus: apt-get install prometheus")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(prometheus_rules()))
    ns = f'namespace="{NAMESPACE}", pod="w1"'
    hook = f'{ns}, target="default/hook"'
    fired = f"severity: warning, team: sre, namespace: {NAMESPACE}"
    tests = textwrap.dedent(f"""\
        rule_files: [rules.yaml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'herald_dead_letters{{{hook}}}'
                values: '0 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20'
              - series: 'herald_circuit_state{{{hook}, state="open"}}'
                values: '0 1 1 1 1 1 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
              - series: 'herald_circuit_state{{{hook}, state="half_open"}}'
                values: '0 0 0 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
              - series: 'herald_circuit_state{{{ns}, target="default/ok", state="open"}}'
                values: '0x21'
              - series: 'herald_queue_oldest_ready_age_seconds{{{hook}}}'
                values: '0+60x21'
              - series: 'herald_worker_ready{{{ns}}}'
                values: '1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
              - series: 'herald_worker_ready{{namespace="{NAMESPACE}", pod="w2"}}'
                values: '1x21'
              - series: 'herald_operator_replays_total{{{ns}, outcome="failed"}}'
                values: '0 0 0 0 0 0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1'
            alert_rule_test:
              - eval_time: 20m
                alertname: HeraldDeadLettersGrowing
                exp_alerts:
                  - exp_labels: {{{fired}, target: default/hook}}
                    exp_annotations:
                      runbook_url: {RUNBOOKS}#heralddeadlettersgrowing
                      summary: Dead letters of default/hook are piling up
                      description: >-
                        15 more jobs of target default/hook are waiting in the dead-letter queue
                        than 15m ago. Look at them with `herald dlq list --target default/hook`
                        and replay them with a DeadLetterReplay once the cause is fixed.
              - eval_time: 12m
                alertname: HeraldCircuitOpenTooLong
                exp_alerts:
                  - exp_labels: {{{fired}, target: default/hook}}
                    exp_annotations:
                      runbook_url: {RUNBOOKS}#heraldcircuitopentoolong
                      summary: The circuit of default/hook has been open for 10m
                      description: >-
                        Deliveries to target default/hook keep failing, so its jobs wait in the
                        queue (their attempts are not spent). Check the receiver; `kubectl get
                        publishingtargets` shows the last error.
              - eval_time: 8m
                alertname: HeraldCircuitOpenTooLong
                exp_alerts: []
              - eval_time: 12m
                alertname: HeraldOldestReadyJobTooOld
                exp_alerts:
                  - exp_labels: {{{fired}, target: default/hook}}
                    exp_annotations:
                      runbook_url: {RUNBOOKS}#heraldoldestreadyjobtooold
                      summary: Jobs of default/hook wait too long
                      description: >-
                        The oldest job ready for target default/hook has waited 12m 0s (more
                        than 300s): the workers do not keep up, or the target is rate-limited
                        (paused targets and open circuits have no ready jobs).
              - eval_time: 8m
                alertname: HeraldWorkerNotReady
                exp_alerts:
                  - exp_labels: {{severity: critical, team: sre, namespace: {NAMESPACE}, pod: w1}}
                    exp_annotations:
                      runbook_url: {RUNBOOKS}#heraldworkernotready
                      summary: Herald worker w1 is not ready
                      description: >-
                        Worker w1 has not been delivering for 5m: it does not reach PostgreSQL.
                        Its /readyz says why.
              - eval_time: 5m
                alertname: HeraldWorkerNotReady
                exp_alerts: []
              - eval_time: 15m
                alertname: HeraldReplayFailed
                exp_alerts:
                  - exp_labels: {{{fired}}}
                    exp_annotations:
                      runbook_url: {RUNBOOKS}#heraldreplayfailed
                      summary: A DeadLetterReplay failed
                      description: >-
                        DeadLetterReplays failed in the last 1h: 1. `kubectl get
                        deadletterreplays` shows which, and their conditions say why.
              - eval_time: 5m
                alertname: HeraldReplayFailed
                exp_alerts: []
        """)
    (tmp_path / "tests.yaml").write_text(tests)
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dashboard() -> dict[str, Any]:
    (config_map,) = [
        c
        for c in of_kind(render("all-on"), "ConfigMap")
        if c["metadata"]["name"].endswith("-dashboard")
    ]
    (text,) = config_map["data"].values()
    board: dict[str, Any] = json.loads(text)
    return board


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for subject in (
        "throughput",
        "latency",
        "depth by priority",
        "dead letters",
        "circuit state per target",
        "retries by error class",
        "success rate %",
        "top failing targets",
        "capacity fill",
    ):
        assert subject in titles, subject
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["gridPos"]["w"] <= 24
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "namespace", "target"}


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = series_names()
    used: set[str] = set()
    for group in prometheus_rules()["groups"]:
        for rule in group["rules"]:
            used |= metric_names_in(rule["expr"])
    rule_metrics = set(used)
    for expr in dashboard_expressions(dashboard()):
        found = metric_names_in(expr)
        assert found, expr
        used |= found
    assert used - exported == set()
    # The alerts the issue names, by the metrics they watch.
    assert {
        "herald_dead_letters",
        "herald_circuit_state",
        "herald_queue_oldest_ready_age_seconds",
        "herald_worker_ready",
        "herald_operator_replays_total",
    } <= rule_metrics


def test_metric_catalogue_matches_the_worker() -> None:
    """The worker's registry exports exactly WORKER_METRICS (names, kinds, labels)."""
    from herald_worker.metrics import Metrics
    from herald_worker.tracker import Tracker

    metrics = Metrics(Tracker(10))
    # The counters sampled from PostgreSQL show their labels once they have a value.
    metrics.database_counters.written = {("default/x", "permanent", "permanent-error"): 1}
    metrics.database_counters.replayed = {"default/x": 1}
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: tuple[str, ...] = ()
        collector = metrics.registry._names_to_collectors.get(family.name)  # labelnames
        if collector is not None and hasattr(collector, "_labelnames"):
            labels = tuple(collector._labelnames)
        elif family.samples:
            labels = tuple(family.samples[0].labels)
        found[name] = (family.type, labels)
    assert found == WORKER_METRICS


def test_operator_metric_names() -> None:
    assert all(name.startswith("herald_operator_") for name in OPERATOR_METRICS)
    assert all(
        kind != "counter" or name.endswith("_total") for name, (kind, _) in OPERATOR_METRICS.items()
    )


def test_ci_value_sets() -> None:
    assert {"all-on", "existing-secret", "cluster-wide", "minimal"} <= set(CI_VALUES)


def test_oldest_validated_kubernetes_is_the_oldest_supported() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={KUBERNETES_VERSIONS[0]}-0"
    assert chart["apiVersion"] == "v2" and chart["type"] == "application"
