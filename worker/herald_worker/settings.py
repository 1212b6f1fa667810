"""Settings of the worker process (``herald worker``), from the environment. How to add
one: see :mod:`herald_queue.settings`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from herald_core.settings import Count, Duration, HeraldSettings, ListenPort, PositiveDuration


class WorkerSettings(HeraldSettings):
    section: ClassVar[str] = "Worker (`herald worker`)"

    http_host: str = Field(
        "0.0.0.0",  # noqa: S104 - probes and Prometheus reach the pod's IP
        description="Address the HTTP API listens on.",
    )
    http_port: ListenPort = Field(
        8080,
        description="Port of the HTTP API, /metrics and probes (0: any free port, logged at "
        "start).",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token the API requires (every endpoint but /healthz, /readyz, "
        "/metrics, /openapi.json and /signing-keys/...). Unset: no authentication.",
    )
    api_auth: Literal["token", "kubernetes"] = Field(
        "token",
        description="How API callers are authenticated. `token`: HERALD_API_TOKEN (if set). "
        "`kubernetes`: the bearer token is a Kubernetes token (a ServiceAccount's), checked "
        "with a TokenReview, and each request authorised with a SubjectAccessReview (to "
        "publish: `create` on `publishingtargets/publish` in the target's namespace; see "
        "docs/authentication.md); HERALD_API_TOKEN is then not used.",
    )
    api_auth_cache_ttl: PositiveDuration = Field(
        30.0,
        description="With HERALD_API_AUTH=kubernetes, how long an accepted token and a granted "
        "permission are remembered: a removed RoleBinding or a deleted ServiceAccount takes "
        "effect within this long.",
    )
    api_auth_denied_ttl: PositiveDuration = Field(
        5.0,
        description="With HERALD_API_AUTH=kubernetes, how long a refused token or permission "
        "is remembered (at most HERALD_API_AUTH_CACHE_TTL): a new RoleBinding takes effect "
        "within this long.",
    )
    api_auth_cache_size: Count = Field(
        10_000,
        description="With HERALD_API_AUTH=kubernetes, most tokens, and most decisions, "
        "remembered (each cache; least recently used first out).",
    )
    api_auth_timeout: PositiveDuration = Field(
        5.0,
        description="With HERALD_API_AUTH=kubernetes, how long a TokenReview or "
        "SubjectAccessReview may take; a Kubernetes API that does not answer in time makes the "
        "request fail with 503 (nothing is let through).",
    )
    api_auth_audience: str = Field(
        "",
        description="With HERALD_API_AUTH=kubernetes, the audience tokens must be issued for "
        "(a projected token's `audience`). Empty: the API server's own audiences.",
    )
    concurrency: Count = Field(
        64, description="Deliveries in flight at once in one worker process."
    )
    target_concurrency: Count = Field(
        16, description="Deliveries in flight at once to one target, per worker process."
    )
    claim_batch: Count = Field(50, description="Most jobs one claim takes.")
    poll_interval: PositiveDuration = Field(
        1.0,
        description="How often an idle worker looks for work without a notification (a new "
        "job's NOTIFY wakes one worker at once, which wakes the others when its claim comes "
        "back full; this is the fallback, and the pace of retries due on other workers' "
        "schedules).",
    )
    shutdown_grace: PositiveDuration = Field(
        20.0,
        description="On SIGTERM, how long deliveries in flight may finish before they are "
        "released to other workers; it follows HERALD_SHUTDOWN_DRAIN, and the two together "
        "must stay below the pod's terminationGracePeriodSeconds.",
    )
    shutdown_drain: Duration = Field(
        0.0,
        description="On SIGTERM, how long the HTTP API keeps serving before its listener "
        "closes: /readyz fails at once and every answer carries `Connection: close`, so the "
        "Service, kube-proxy and load balancers move producers to other workers first, and "
        "none meets a refused or reset connection (the chart sets 5s). Deliveries go on "
        "meanwhile; HERALD_SHUTDOWN_GRACE counts from its end.",
    )
    tracker_size: Count = Field(
        10_000, description="Recent jobs kept in memory for fast lookups (LRU)."
    )
    retry_after_cap: PositiveDuration = Field(
        3600.0,
        description="Longest Retry-After honoured; a receiver asking for more waits this long.",
    )
    rescue_interval: PositiveDuration = Field(
        5.0,
        description="How often expired leases are rescued and jobs of deleted targets swept to "
        "the DLQ.",
    )
    cleanup_interval: PositiveDuration = Field(
        300.0,
        description="How often finished jobs and old dead letters are pruned (retention).",
    )
    sample_interval: PositiveDuration = Field(
        10.0,
        description="How often queue depth, DLQ size and circuit states are sampled for /metrics.",
    )
    targets_refresh: PositiveDuration = Field(
        30.0,
        description="How often target configuration and Secrets are re-read (registry changes "
        "also arrive at once by notification).",
    )
    disable_after: Duration = Field(
        432_000.0,
        description="A target whose deliveries have all failed for this long (no success in "
        "between) is disabled: its jobs wait until `herald targets enable NAME` (or a spec "
        "change). spec.disableAfterSeconds overrides it per target; 0 never disables.",
    )
    kubernetes_secrets: bool | None = Field(
        None,
        description="Read Secrets from the Kubernetes API. Default: yes inside a cluster "
        "(KUBERNETES_SERVICE_HOST set), no otherwise (then Secrets come from the manifests "
        "given with --targets).",
    )
    user_agent: str = Field("", description="User-Agent of deliveries (default Herald/<version>).")
