"""Settings of the worker process (``herald worker``), from the environment."""

from __future__ import annotations

import dataclasses

from herald_queue.config import ConfigError, Duration, env, require_positive


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    http_host: str = env("HERALD_HTTP_HOST", "0.0.0.0", "Address the HTTP API listens on.")  # noqa: S104
    http_port: int = env("HERALD_HTTP_PORT", 8080, "Port of the HTTP API, /metrics and probes.")
    api_token: str | None = env(
        "HERALD_API_TOKEN",
        None,
        "Bearer token the API requires (every endpoint but /healthz, /readyz, /metrics, "
        "/openapi.json and /signing-keys/...). Unset: no authentication.",
        secret=True,
    )
    concurrency: int = env(
        "HERALD_CONCURRENCY", 64, "Deliveries in flight at once in one worker process."
    )
    target_concurrency: int = env(
        "HERALD_TARGET_CONCURRENCY",
        16,
        "Deliveries in flight at once to one target, per worker process.",
    )
    claim_batch: int = env("HERALD_CLAIM_BATCH", 50, "Most jobs one claim takes.")
    poll_interval: Duration = env(
        "HERALD_POLL_INTERVAL",
        1.0,
        "How often an idle worker looks for work without a notification (LISTEN/NOTIFY "
        "wakes it at once; this is the fallback, and the pace of retries due on other "
        "workers' schedules).",
    )
    shutdown_grace: Duration = env(
        "HERALD_SHUTDOWN_GRACE",
        20.0,
        "On SIGTERM, how long deliveries in flight may finish before they are released to "
        "other workers. Keep it below the pod's terminationGracePeriodSeconds.",
    )
    tracker_size: int = env(
        "HERALD_TRACKER_SIZE", 10_000, "Recent jobs kept in memory for fast lookups (LRU)."
    )
    retry_after_cap: Duration = env(
        "HERALD_RETRY_AFTER_CAP",
        3600.0,
        "Longest Retry-After honoured; a receiver asking for more waits this long.",
    )
    rescue_interval: Duration = env(
        "HERALD_RESCUE_INTERVAL",
        5.0,
        "How often expired leases are rescued and jobs of deleted targets swept to the DLQ.",
    )
    cleanup_interval: Duration = env(
        "HERALD_CLEANUP_INTERVAL",
        300.0,
        "How often finished jobs and old dead letters are pruned (retention).",
    )
    sample_interval: Duration = env(
        "HERALD_SAMPLE_INTERVAL",
        10.0,
        "How often queue depth, DLQ size and circuit states are sampled for /metrics.",
    )
    targets_refresh: Duration = env(
        "HERALD_TARGETS_REFRESH",
        30.0,
        "How often target configuration and Secrets are re-read (registry changes also "
        "arrive at once by notification).",
    )
    disable_after: Duration = env(
        "HERALD_DISABLE_AFTER",
        432_000.0,
        "A target whose deliveries have all failed for this long (no success in between) is "
        "disabled: its jobs wait until `herald targets enable NAME` (or a spec change). "
        "spec.disableAfterSeconds overrides it per target; 0 never disables.",
    )
    kubernetes_secrets: bool | None = env(
        "HERALD_KUBERNETES_SECRETS",
        None,
        "Read Secrets from the Kubernetes API. Default: yes inside a cluster "
        "(KUBERNETES_SERVICE_HOST set), no otherwise (then Secrets come from the manifests "
        "given with --targets).",
    )
    user_agent: str = env(
        "HERALD_USER_AGENT", "", "User-Agent of deliveries (default Herald/<version>)."
    )

    def validate(self) -> None:
        if not 0 < self.http_port < 65536:
            raise ConfigError(f"HERALD_HTTP_PORT: must be a port number, got {self.http_port}")
        for name, value in (
            ("HERALD_CONCURRENCY", self.concurrency),
            ("HERALD_TARGET_CONCURRENCY", self.target_concurrency),
            ("HERALD_CLAIM_BATCH", self.claim_batch),
            ("HERALD_TRACKER_SIZE", self.tracker_size),
            ("HERALD_POLL_INTERVAL", self.poll_interval),
            ("HERALD_SHUTDOWN_GRACE", self.shutdown_grace),
            ("HERALD_RETRY_AFTER_CAP", self.retry_after_cap),
            ("HERALD_RESCUE_INTERVAL", self.rescue_interval),
            ("HERALD_CLEANUP_INTERVAL", self.cleanup_interval),
            ("HERALD_SAMPLE_INTERVAL", self.sample_interval),
            ("HERALD_TARGETS_REFRESH", self.targets_refresh),
        ):
            require_positive(name, value)
