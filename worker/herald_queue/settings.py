"""Settings of the database and of the queue, shared by every Herald process."""

from __future__ import annotations

import dataclasses

from herald_queue.config import ConfigError, Duration, env, require_positive
from herald_queue.egress import ALLOW_SETTING, DENY_SETTING, EgressPolicy, parse_networks


@dataclasses.dataclass(frozen=True)
class DatabaseSettings:
    url: str | None = env(
        "HERALD_DATABASE_URL",
        None,
        "PostgreSQL connection URL (postgresql://user:password@host:5432/db). Unset: an "
        "embedded PostgreSQL under HERALD_DATA_DIR is started and used.",
        secret=True,
    )
    data_dir: str | None = env(
        "HERALD_DATA_DIR",
        None,
        "Directory of the embedded PostgreSQL. Default: Herald's folder in the user's data "
        "directory (~/.local/share/herald on Linux).",
    )
    pool_min: int = env("HERALD_DB_POOL_MIN", 1, "Connections a process keeps open.")
    pool_max: int = env("HERALD_DB_POOL_MAX", 10, "Most connections a process opens.")
    connect_timeout: Duration = env(
        "HERALD_DB_CONNECT_TIMEOUT", 5.0, "Time allowed to open a connection."
    )

    def validate(self) -> None:
        if self.pool_min < 0 or self.pool_max < max(1, self.pool_min):
            raise ConfigError(
                "HERALD_DB_POOL_MIN/HERALD_DB_POOL_MAX: need 0 <= min <= max and max >= 1, "
                f"got {self.pool_min}/{self.pool_max}"
            )
        require_positive("HERALD_DB_CONNECT_TIMEOUT", self.connect_timeout)


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    budget_medium: Duration = env(
        "HERALD_PRIORITY_BUDGET_MEDIUM",
        60.0,
        "Latency budget of medium jobs: claims order ready jobs by ready time plus budget "
        "(high: 0), so a medium job yields to high jobs that became ready up to this much "
        "later, and no longer.",
    )
    budget_low: Duration = env(
        "HERALD_PRIORITY_BUDGET_LOW",
        300.0,
        "Latency budget of low jobs (see HERALD_PRIORITY_BUDGET_MEDIUM): the bound on how "
        "long a flood of high jobs can keep a low job waiting, beyond draining the jobs "
        "ahead of it.",
    )
    max_payload_bytes: int = env(
        "HERALD_MAX_PAYLOAD_BYTES", 262_144, "Largest job payload accepted (JSON bytes)."
    )
    lease: Duration = env(
        "HERALD_LEASE",
        60.0,
        "Lease of a claimed job; workers renew it while delivering. A job whose worker "
        "stops renewing is claimed again after this long.",
    )
    job_retention: Duration = env(
        "HERALD_JOB_RETENTION",
        86_400.0,
        "How long succeeded and dead job rows are kept (dead letters have their own).",
    )
    dead_letter_retention: Duration = env(
        "HERALD_DEAD_LETTER_RETENTION",
        30 * 86_400.0,
        "How long dead letters are kept before the retention cleaner purges them.",
    )
    default_namespace: str = env(
        "HERALD_NAMESPACE",
        "default",
        "Namespace of a target named without one (`oncall-hook` means "
        "`<namespace>/oncall-hook`; a name unique across namespaces also resolves).",
    )
    # Capacity of the whole queue (herald_queue.capacity); each target's is spec.capacity.
    capacity: int = env(
        "HERALD_QUEUE_CAPACITY",
        0,
        "Jobs the whole queue is sized for (waiting: queued or retrying, all targets). From "
        "80 % and at 100 % workers warn (metrics, one log line per crossing); 0: no capacity.",
    )
    capacity_hard_limit: bool = env(
        "HERALD_QUEUE_CAPACITY_HARD_LIMIT",
        False,
        "Refuse jobs beyond HERALD_QUEUE_CAPACITY: the API answers 429 with Retry-After (the "
        "Alertmanager receiver 503). Default: warn only, never refuse.",
    )

    def validate(self) -> None:
        if self.budget_medium < 0 or self.budget_low < self.budget_medium:
            raise ConfigError(
                "HERALD_PRIORITY_BUDGET_MEDIUM/LOW: need 0 <= medium <= low, "
                f"got {self.budget_medium}/{self.budget_low}"
            )
        require_positive("HERALD_MAX_PAYLOAD_BYTES", self.max_payload_bytes)
        require_positive("HERALD_LEASE", self.lease)
        require_positive("HERALD_JOB_RETENTION", self.job_retention)
        require_positive("HERALD_DEAD_LETTER_RETENTION", self.dead_letter_retention)
        if self.capacity < 0:
            raise ConfigError(
                f"HERALD_QUEUE_CAPACITY: must be 0 (none) or a number of jobs, got {self.capacity}"
            )

    def budget(self, priority: str) -> float:
        return {"high": 0.0, "medium": self.budget_medium, "low": self.budget_low}[priority]


@dataclasses.dataclass(frozen=True)
class EgressSettings:
    """Where the workers may deliver (herald_queue.egress). Read by the worker, which
    enforces it on every address it connects to, and by whatever registers targets (the
    operator, `herald targets apply`, `herald worker --targets`), which refuses a URL whose
    literal address it forbids: give them the same values."""

    allow: str | None = env(
        "HERALD_EGRESS_ALLOW",
        None,
        "Networks (CIDRs, comma-separated) the workers may deliver to although a built-in "
        "rule or HERALD_EGRESS_DENY refuses them: the most specific matching network decides "
        "(e.g. 169.254.10.0/24 reaches that part of the link-local range, never "
        "169.254.169.254, the metadata service, unless listed itself).",
    )
    deny: str | None = env(
        "HERALD_EGRESS_DENY",
        None,
        "Networks (CIDRs, comma-separated) the workers never deliver to, besides the "
        "built-in ones: link-local (169.254.0.0/16, fe80::/10), the cloud metadata services "
        "(169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192) and loopback.",
    )
    allow_loopback: bool = env(
        "HERALD_EGRESS_ALLOW_LOOPBACK",
        False,
        "Deliver to loopback addresses (127.0.0.0/8, ::1, 0.0.0.0): the worker's own host. "
        "For local runs and tests; `herald demo` sets it.",
    )

    def validate(self) -> None:
        self.policy()

    def policy(self) -> EgressPolicy:
        try:
            return EgressPolicy(
                allow=parse_networks(self.allow, ALLOW_SETTING),
                deny=parse_networks(self.deny, DENY_SETTING),
                allow_loopback=self.allow_loopback,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
