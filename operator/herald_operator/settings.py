"""Settings of the operator process (``herald operator``), from the environment. The chart
sets them; the database and queue settings (HERALD_DATABASE_URL...) are shared with the
worker."""

from __future__ import annotations

import dataclasses
import os

from herald_queue.config import ConfigError, Duration, env, require_positive


def _pod_namespace() -> str:
    return os.environ.get("POD_NAMESPACE", "default")


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    watch_namespace: str = env(
        "HERALD_WATCH_NAMESPACE",
        "",
        "Namespace whose PublishingTargets and DeadLetterReplays the operator reconciles; "
        "'*' for all namespaces. Default: the operator's own namespace (POD_NAMESPACE).",
    )
    listen_host: str = env(
        "HERALD_OPERATOR_LISTEN_HOST",
        "0.0.0.0",  # noqa: S104 - probes and Prometheus reach the pod's IP
        "Address the operator's /metrics and /healthz listen on (127.0.0.1 keeps them local).",
    )
    metrics_port: int = env(
        "HERALD_OPERATOR_METRICS_PORT", 8081, "Port of the operator's /metrics."
    )
    health_port: int = env(
        "HERALD_OPERATOR_HEALTH_PORT", 8082, "Port of the operator's liveness probe (/healthz)."
    )
    peering: str = env(
        "HERALD_PEERING",
        "herald",
        "Name of the kopf peering object that keeps a single operator replica active; empty "
        "to run standalone (one replica only).",
    )
    peering_lifetime: Duration = env(
        "HERALD_PEERING_LIFETIME",
        60.0,
        "How long a replica's peering keep-alive counts: a standby replica takes over at most "
        "this long after the active one died (keep-alives are sent well within it).",
    )
    watch_timeout: Duration = env(
        "HERALD_WATCH_TIMEOUT",
        300.0,
        "How long one watch request of the API lasts before the operator resumes it from "
        "its last resourceVersion (the API server ends it then; a watch of an expired "
        "version is listed again).",
    )
    status_interval: Duration = env(
        "HERALD_STATUS_INTERVAL",
        10.0,
        "How often each PublishingTarget's status is refreshed from PostgreSQL.",
    )
    dead_letter_event_interval: Duration = env(
        "HERALD_DEAD_LETTER_EVENT_INTERVAL",
        60.0,
        "Least time between two DeadLettered Events of one PublishingTarget (each counts the "
        "jobs dead-lettered since the last): a storm makes one Event, not thousands.",
    )
    replay_batch: int = env(
        "HERALD_REPLAY_BATCH", 500, "Dead letters a DeadLetterReplay puts back per transaction."
    )
    replay_target_wait: Duration = env(
        "HERALD_REPLAY_TARGET_WAIT",
        300.0,
        "How long a new DeadLetterReplay naming a PublishingTarget that does not exist waits "
        "for it (Pending) before it fails: `kubectl apply -f dir/` may create the replay "
        "before its target.",
    )
    worker_deployment: str = env(
        "HERALD_WORKER_DEPLOYMENT", "herald-worker", "The worker Deployment the operator scales."
    )
    worker_namespace: str = env(
        "HERALD_WORKER_NAMESPACE", "", "Its namespace (default: the operator's own namespace)."
    )
    scaling: bool = env("HERALD_SCALING", True, "Scale the worker Deployment from queue depth.")
    scale_min: int = env(
        "HERALD_SCALE_MIN", 1, "Fewest worker replicas (at least 1: workers serve the HTTP API)."
    )
    scale_max: int = env("HERALD_SCALE_MAX", 10, "Most worker replicas.")
    jobs_per_replica: int = env(
        "HERALD_SCALE_JOBS_PER_REPLICA",
        500,
        "Ready jobs one replica is expected to handle: replicas = ceil(ready / this), clamped.",
    )
    scale_max_step: int = env(
        "HERALD_SCALE_MAX_STEP", 2, "Most replicas added or removed in one change."
    )
    scale_interval: Duration = env(
        "HERALD_SCALE_INTERVAL", 15.0, "How often the desired replica count is computed."
    )
    scale_cooldown: Duration = env("HERALD_SCALE_COOLDOWN", 60.0, "Least time between two changes.")
    scale_down_stabilization: Duration = env(
        "HERALD_SCALE_DOWN_STABILIZATION",
        300.0,
        "Scale down only to the highest count desired over this window (no flapping).",
    )

    @property
    def namespace(self) -> str | None:
        """The watched namespace, or None for all of them."""
        if self.watch_namespace == "*":
            return None
        return self.watch_namespace or _pod_namespace()

    @property
    def deployment_namespace(self) -> str:
        return self.worker_namespace or _pod_namespace()

    def validate(self) -> None:
        for name, port in (
            ("HERALD_OPERATOR_METRICS_PORT", self.metrics_port),
            ("HERALD_OPERATOR_HEALTH_PORT", self.health_port),
        ):
            if not 0 < port < 65536:
                raise ConfigError(f"{name}: must be a port number, got {port}")
        if self.replay_target_wait < 0:
            raise ConfigError(
                f"HERALD_REPLAY_TARGET_WAIT: must be 0 or more, got {self.replay_target_wait}"
            )
        if self.scale_min < 1:
            raise ConfigError(
                f"HERALD_SCALE_MIN: must be at least 1, got {self.scale_min} (workers serve "
                "the HTTP API producers post to and rescue expired leases: none would leave "
                "them without an endpoint)"
            )
        if self.scale_max < self.scale_min:
            raise ConfigError(
                "HERALD_SCALE_MIN/HERALD_SCALE_MAX: need min <= max, got "
                f"{self.scale_min}/{self.scale_max}"
            )
        for name, value in (
            ("HERALD_STATUS_INTERVAL", self.status_interval),
            ("HERALD_PEERING_LIFETIME", self.peering_lifetime),
            ("HERALD_WATCH_TIMEOUT", self.watch_timeout),
            ("HERALD_DEAD_LETTER_EVENT_INTERVAL", self.dead_letter_event_interval),
            ("HERALD_REPLAY_BATCH", self.replay_batch),
            ("HERALD_SCALE_JOBS_PER_REPLICA", self.jobs_per_replica),
            ("HERALD_SCALE_MAX_STEP", self.scale_max_step),
            ("HERALD_SCALE_INTERVAL", self.scale_interval),
            ("HERALD_SCALE_COOLDOWN", self.scale_cooldown),
            ("HERALD_SCALE_DOWN_STABILIZATION", self.scale_down_stabilization),
        ):
            require_positive(name, value)
