"""Rendering the Helm chart with a real helm, and the facts the chart tests check it against.

The metric catalogue below is the one place that says which metrics Herald exports; the
chart's PrometheusRule and Grafana dashboard may only use these names (test_chart.py), and
an end-to-end test can compare it with a live scrape (``series_names()``).
"""

from __future__ import annotations

import functools
import re
import subprocess
from typing import Any

import yaml

from tests.conftest import need_binary
from tests.helpers import ROOT

CHART = ROOT / "deploy" / "helm" / "herald"
CI_VALUES = {
    path.name.removesuffix("-values.yaml"): path for path in sorted(CHART.glob("ci/*-values.yaml"))
}
# "default" renders values.yaml alone; the others add one ci/<name>-values.yaml each.
VALUE_SETS = ["default", *CI_VALUES]

RELEASE = "herald"
NAMESPACE = "herald"
# Rendered objects are validated against the OpenAPI schemas of the oldest Kubernetes the
# chart supports (Chart.yaml kubeVersion) and of a current one; helm renders for the latter.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
KUBERNETES_VERSION = KUBERNETES_VERSIONS[-1]

# ---------------------------------------------------------------------------------------
# Metrics. Kinds: counter (series name ends in _total), gauge, histogram (_bucket, _sum,
# _count). Labels are listed so that a live check can compare them too.

WORKER_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "herald_jobs_enqueued_total": ("counter", ("target", "priority")),
    "herald_jobs_duplicate_total": ("counter", ("target",)),
    "herald_jobs_claimed_total": ("counter", ("target", "priority")),
    "herald_delivery_attempts_total": ("counter", ("target",)),
    "herald_jobs_delivered_total": ("counter", ("target", "priority")),
    "herald_delivery_failures_total": ("counter", ("target", "error_class")),
    "herald_retries_scheduled_total": ("counter", ("target", "error_class")),
    "herald_attempts_refunded_total": ("counter", ("target",)),
    "herald_retry_backoff_seconds": ("histogram", ("target",)),
    "herald_dead_letters_written_total": ("counter", ("target", "error_class", "reason")),
    "herald_delivery_duration_seconds": ("histogram", ("target", "outcome")),
    "herald_delivery_latency_seconds": ("histogram", ("target", "priority")),
    "herald_circuit_trips_total": ("counter", ("target",)),
    "herald_circuit_recoveries_total": ("counter", ("target",)),
    "herald_targets_auto_paused_total": ("counter", ("target",)),
    "herald_targets_disabled_total": ("counter", ("target",)),
    "herald_leases_lost_total": ("counter", ()),
    "herald_jobs_rescued_total": ("counter", ()),
    "herald_deliveries_in_flight": ("gauge", ()),
    "herald_worker_ready": ("gauge", ()),
    "herald_queue_depth": ("gauge", ("target", "priority", "state")),
    "herald_queue_oldest_ready_age_seconds": ("gauge", ("target",)),
    "herald_dead_letters": ("gauge", ("target",)),
    "herald_circuit_state": ("gauge", ("target", "state")),
    "herald_target_paused": ("gauge", ("target",)),
    "herald_tracker_lookups_total": ("counter", ("result",)),
    "herald_tracker_jobs": ("gauge", ()),
    "herald_tracker_capacity_jobs": ("gauge", ()),
    "herald_api_requests_total": ("counter", ("route", "method", "status")),
    "herald_api_request_duration_seconds": ("histogram", ("route",)),
    "herald_ingest_group_size": ("histogram", ()),
    "herald_api_auth_reviews_total": ("counter", ("review", "result")),
    "herald_dead_letters_replayed_total": ("counter", ("target",)),
    "herald_retry_successes_total": ("counter", ("target",)),
    "herald_dead_letter_reads_total": ("counter", ("operation",)),
    "herald_queue_capacity_ratio": ("gauge", ("target",)),
    "herald_queue_capacity_jobs": ("gauge", ("target",)),
    "herald_queue_capacity_crossings_total": ("counter", ("target", "level")),
    "herald_queue_total_capacity_ratio": ("gauge", ()),
    "herald_queue_total_capacity_jobs": ("gauge", ()),
    "herald_queue_total_capacity_crossings_total": ("counter", ("level",)),
    "herald_jobs_refused_total": ("counter", ("target",)),
}

OPERATOR_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "herald_operator_desired_worker_replicas": ("gauge", ()),
    "herald_operator_ready_jobs": ("gauge", ()),
    "herald_operator_reconciliations_total": ("counter", ("kind", "result")),
    "herald_operator_replays_total": ("counter", ("outcome",)),
    "herald_operator_targets": ("gauge", ("ready",)),
}

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_METRIC = re.compile(r"\bherald_[a-z0-9_]+\b")


def series_names(metrics: dict[str, tuple[str, tuple[str, ...]]] | None = None) -> set[str]:
    """Every series name a scrape can show for the catalogue (histograms expanded)."""
    catalogue = metrics if metrics is not None else {**WORKER_METRICS, **OPERATOR_METRICS}
    names: set[str] = set()
    for name, (kind, _) in catalogue.items():
        if kind == "histogram":
            names.update(name + suffix for suffix in _HISTOGRAM_SUFFIXES)
        else:
            names.add(name)
    return names


def metric_names_in(expr: str) -> set[str]:
    """The herald_* series names a PromQL expression refers to."""
    return set(_METRIC.findall(expr))


# ---------------------------------------------------------------------------------------
# helm


def helm_binary() -> str:
    return need_binary(
        "helm",
        "the chart tests render the chart with a real helm (scripts/install-tools.sh installs it)",
    )


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "default" else ["-f", str(CI_VALUES[value_set])]


def template_args(value_set: str, *extra: str) -> list[str]:
    return [
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBERNETES_VERSION,
        # As a cluster with the Prometheus Operator's CRDs answers (without them the
        # chart leaves its ServiceMonitors and PrometheusRule out).
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        *values_args(value_set),
        *extra,
    ]


@functools.cache
def render(value_set: str = "default", *extra: str) -> tuple[dict[str, Any], ...]:
    """The chart's objects (hooks and CRDs included) for one value set plus extra flags."""
    out = helm(*template_args(value_set, "--include-crds", *extra)).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_specs(objects: tuple[dict[str, Any], ...]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every Deployment and Job."""
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in ("Deployment", "Job")
    ]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def rbac_grants(objects: tuple[dict[str, Any], ...]) -> dict[str, set[tuple[str, str, str, str]]]:
    """ServiceAccount name -> {(scope, apiGroup, resource, verb)}, scope Role or ClusterRole,
    through the rendered (Cluster)RoleBindings."""
    roles = {
        (obj["kind"], obj["metadata"]["name"]): obj
        for obj in objects
        if obj["kind"] in ("Role", "ClusterRole")
    }
    grants: dict[str, set[tuple[str, str, str, str]]] = {}
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", subject
            assert subject["namespace"] == NAMESPACE, subject
            bucket = grants.setdefault(subject["name"], set())
            for rule in role.get("rules", []):
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            bucket.add((ref["kind"], group, resource, verb))
    return grants
