"""Settings of the operator process (``herald operator``), from the environment. The chart
sets them; the database and queue settings (HERALD_DATABASE_URL...) are shared with the
worker. How to add one: see :mod:`herald_queue.settings`."""

from __future__ import annotations

import os
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, model_validator

from herald_core.settings import (
    Count,
    Duration,
    HeraldSettings,
    Kind,
    Namespace,
    ObjectName,
    Port,
    PositiveDuration,
)


def _pod_namespace() -> str:
    return os.environ.get("POD_NAMESPACE", "default")


class OperatorSettings(HeraldSettings):
    section: ClassVar[str] = "Operator (`herald operator`)"

    watch_namespace: Annotated[
        Namespace | Literal["*", ""],
        Kind("namespace", "a Kubernetes namespace name, '*' (all namespaces) or empty"),
    ] = Field(
        "",
        description="Namespace whose PublishingTargets and DeadLetterReplays the operator "
        "reconciles; '*' for all namespaces. Default: the operator's own namespace "
        "(POD_NAMESPACE).",
    )
    listen_host: str = Field(
        "0.0.0.0",  # noqa: S104 - probes and Prometheus reach the pod's IP
        validation_alias="HERALD_OPERATOR_LISTEN_HOST",
        description="Address the operator's /metrics and /healthz listen on (127.0.0.1 keeps "
        "them local).",
    )
    metrics_port: Port = Field(
        8081,
        validation_alias="HERALD_OPERATOR_METRICS_PORT",
        description="Port of the operator's /metrics.",
    )
    health_port: Port = Field(
        8082,
        validation_alias="HERALD_OPERATOR_HEALTH_PORT",
        description="Port of the operator's liveness probe (/healthz).",
    )
    peering: Annotated[
        ObjectName | Literal[""],
        Kind("object name", "a Kubernetes object name, or empty"),
    ] = Field(
        "herald",
        description="Name of the kopf peering object that keeps a single operator replica "
        "active; empty to run standalone (one replica only).",
    )
    peering_lifetime: PositiveDuration = Field(
        60.0,
        description="How long a replica's peering keep-alive counts: a standby replica takes "
        "over at most this long after the active one died (keep-alives are sent well within "
        "it).",
    )
    watch_timeout: PositiveDuration = Field(
        300.0,
        description="How long one watch request of the API lasts before the operator resumes "
        "it from its last resourceVersion (the API server ends it then; a watch of an expired "
        "version is listed again).",
    )
    status_interval: PositiveDuration = Field(
        10.0,
        description="How often each PublishingTarget's status is refreshed from PostgreSQL "
        "(and set right if anyone changed it); also the longest wait between two retries of "
        "a failed Kubernetes API request.",
    )
    dead_letter_event_interval: PositiveDuration = Field(
        60.0,
        description="Least time between two DeadLettered Events of one PublishingTarget (each "
        "counts the jobs dead-lettered since the last): a storm makes one Event, not "
        "thousands.",
    )
    replay_batch: Count = Field(
        500, description="Dead letters a DeadLetterReplay puts back per transaction."
    )
    replay_target_wait: Duration = Field(
        300.0,
        description="How long a new DeadLetterReplay naming a PublishingTarget that does not "
        "exist waits for it (Pending) before it fails: `kubectl apply -f dir/` may create the "
        "replay before its target.",
    )
    worker_deployment: ObjectName = Field(
        "herald-worker", description="The worker Deployment the operator scales."
    )
    worker_namespace: Annotated[
        Namespace | Literal[""], Kind("namespace", "a Kubernetes namespace name, or empty")
    ] = Field("", description="Its namespace (default: the operator's own namespace).")
    scaling: bool = Field(True, description="Scale the worker Deployment from queue depth.")
    scale_min: Count = Field(
        1, description="Fewest worker replicas (at least 1: workers serve the HTTP API)."
    )
    scale_max: Count = Field(10, description="Most worker replicas.")
    jobs_per_replica: Count = Field(
        500,
        validation_alias="HERALD_SCALE_JOBS_PER_REPLICA",
        description="Ready jobs one replica is expected to handle: replicas = ceil(ready / "
        "this), clamped.",
    )
    scale_max_step: Count = Field(2, description="Most replicas added or removed in one change.")
    scale_interval: PositiveDuration = Field(
        15.0, description="How often the desired replica count is computed."
    )
    scale_cooldown: PositiveDuration = Field(60.0, description="Least time between two changes.")
    scale_down_stabilization: PositiveDuration = Field(
        300.0,
        description="Scale down only to the highest count desired over this window (no flapping).",
    )

    @model_validator(mode="after")
    def _scale_range(self) -> Self:
        if self.scale_max < self.scale_min:
            raise ValueError(
                f"HERALD_SCALE_MIN={self.scale_min}, HERALD_SCALE_MAX={self.scale_max}: the "
                "minimum must not exceed the maximum"
            )
        return self

    @property
    def namespace(self) -> str | None:
        """The watched namespace, or None for all of them."""
        if self.watch_namespace == "*":
            return None
        return self.watch_namespace or _pod_namespace()

    @property
    def deployment_namespace(self) -> str:
        return self.worker_namespace or _pod_namespace()
