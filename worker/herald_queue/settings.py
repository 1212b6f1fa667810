"""Settings of the database, the queue, egress and logging, shared by every Herald process.

Every setting is one field of a pydantic-settings class (base and types in
:mod:`herald_queue.settings_base`); the parser, the error lines and the README's tables
all come from it. The classes: here, ``herald_worker.settings.WorkerSettings`` and
``herald_operator.settings.OperatorSettings``.

How to add a setting
--------------------
1. Add one field to the class of the process that reads it, with a type that says what is
   accepted and a description::

       disable_after: PositiveDuration = Field(
           3 * 86400.0, description="How long an endpoint may fail before it is disabled."
       )

   Its variable is ``HERALD_`` + the field name in capitals (``HERALD_DISABLE_AFTER``); give
   ``validation_alias="HERALD_OTHER_NAME"`` only when the name must differ. Types:
   ``Duration`` (``90s``, ``15m``, ``24h``; ``PositiveDuration`` refuses 0), ``Count``
   (an integer >= 1), ``Port``, ``Namespace``, ``ObjectName``, ``bool``, a ``Literal`` of
   choices, ``str``; ``Annotated[int, Field(ge=0, le=100)]`` for other bounds. A value that
   may be unset is ``X | None = Field(None, ...)`` (an empty variable is unset). A secret
   (password, token, URL with credentials) is ``SecretStr``: never shown in errors or
   logs; read it with ``.get_secret_value()``.
2. A rule over several fields is a ``@model_validator(mode="after")`` raising ValueError
   with a message that names the variables (see ``DatabaseSettings``).
3. Run ``python -m herald_cli.settings_doc`` and paste its output between
   ``<!-- settings:begin -->`` and ``<!-- settings:end -->`` in README.md.
4. Add its case (default, a valid value, a refused one and its line) to the table in
   tests/cli/test_settings.py: a test fails until every field has one.
5. If the chart sets it, add it to the Deployment's env (tests/e2e/test_chart.py loads the
   chart's values with these classes).

Commands read the settings with ``DatabaseSettings.from_env()``; a class constructed
directly (``QueueSettings(lease=1)``, in tests and ``herald demo``) is its defaults and
arguments only. A bad value stops the process at start with one line per bad variable and
exit status 2 (``HERALD_LOG_LEVEL=LOUD: must be one of debug, info, warning, error``): a
command that reads a class checks it with the others it reads (``settings()`` in
``herald_cli/worker_cmd.py``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from herald_queue.egress import EgressPolicy, parse_networks
from herald_queue.settings_base import (
    Count,
    Duration,
    HeraldSettings,
    Kind,
    Namespace,
    PositiveDuration,
)


def _conninfo(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        try:
            conninfo_to_dict(value.get_secret_value())
        except psycopg.ProgrammingError:
            raise ValueError(
                "must be a PostgreSQL URL such as postgresql://user:password@host:5432/dbname"
            ) from None
    return value


class DatabaseSettings(HeraldSettings):
    section: ClassVar[str] = "Database (every process)"

    url: Annotated[SecretStr | None, AfterValidator(_conninfo)] = Field(
        None,
        validation_alias="HERALD_DATABASE_URL",
        description="PostgreSQL connection URL (postgresql://user:password@host:5432/db). "
        "Unset: an embedded PostgreSQL under HERALD_DATA_DIR is started and used.",
    )
    data_dir: str | None = Field(
        None,
        description="Directory of the embedded PostgreSQL. Default: Herald's folder in the "
        "user's data directory (~/.local/share/herald on Linux).",
    )
    pool_min: Annotated[int, Field(ge=0)] = Field(
        1, validation_alias="HERALD_DB_POOL_MIN", description="Connections a process keeps open."
    )
    pool_max: Count = Field(
        10, validation_alias="HERALD_DB_POOL_MAX", description="Most connections a process opens."
    )
    connect_timeout: PositiveDuration = Field(
        5.0,
        validation_alias="HERALD_DB_CONNECT_TIMEOUT",
        description="Time allowed to open a connection.",
    )
    lock_timeout: PositiveDuration = Field(
        30.0,
        validation_alias="HERALD_DB_LOCK_TIMEOUT",
        description="Longest a statement waits for a lock held by another session before it "
        "fails with a message naming the wait (PostgreSQL's lock_timeout on every Herald "
        "connection); no Herald process waits on a lock without this bound.",
    )
    migration_wait: PositiveDuration = Field(
        300.0,
        validation_alias="HERALD_MIGRATION_WAIT",
        description="Longest `herald migrate` (and any process that migrates first) waits "
        "for another migration or for the table locks its statements need, saying every 5 s "
        "what it waits for and who holds it; then it fails naming the holder.",
    )

    @model_validator(mode="after")
    def _pool_range(self) -> Self:
        if self.pool_max < self.pool_min:
            raise ValueError(
                f"HERALD_DB_POOL_MIN={self.pool_min}, HERALD_DB_POOL_MAX={self.pool_max}: the "
                "minimum must not exceed the maximum"
            )
        return self


class QueueSettings(HeraldSettings):
    section: ClassVar[str] = "Queue (every process)"

    budget_medium: Duration = Field(
        60.0,
        validation_alias="HERALD_PRIORITY_BUDGET_MEDIUM",
        description="Latency budget of medium jobs: claims order ready jobs by ready time plus "
        "budget (high: 0), so a medium job yields to high jobs that became ready up to this "
        "much later, and no longer.",
    )
    budget_low: Duration = Field(
        300.0,
        validation_alias="HERALD_PRIORITY_BUDGET_LOW",
        description="Latency budget of low jobs (see HERALD_PRIORITY_BUDGET_MEDIUM): the bound "
        "on how long a flood of high jobs can keep a low job waiting, beyond draining the jobs "
        "ahead of it.",
    )
    max_payload_bytes: Count = Field(
        262_144, description="Largest job payload accepted (JSON bytes)."
    )
    lease: PositiveDuration = Field(
        60.0,
        description="Lease of a claimed job; workers renew it while delivering. A job whose "
        "worker stops renewing is claimed again after this long.",
    )
    durable_claims: bool = Field(
        False,
        description="Commit each claim only once it is on disk (synchronous_commit). Off: a "
        "claim commits without waiting for the disk, which takes a commit's wait off every "
        "delivery's latency; a PostgreSQL crash can then undo the claims of its last moments, "
        "and those jobs are delivered again (at least once, as after a worker crash), never "
        "lost. Enqueues and outcomes always wait for the disk (as PostgreSQL's "
        "synchronous_commit says).",
    )
    job_retention: PositiveDuration = Field(
        86_400.0,
        description="How long succeeded and dead job rows are kept (dead letters have their own).",
    )
    dead_letter_retention: PositiveDuration = Field(
        30 * 86_400.0,
        description="How long dead letters are kept before the retention cleaner purges them.",
    )
    default_namespace: Namespace = Field(
        "default",
        validation_alias="HERALD_NAMESPACE",
        description="Namespace of a target named without one (`oncall-hook` means "
        "`<namespace>/oncall-hook`; a name unique across namespaces also resolves).",
    )
    # Capacity of the whole queue (herald_queue.capacity); each target's is spec.capacity.
    capacity: Annotated[int, Field(ge=0)] = Field(
        0,
        validation_alias="HERALD_QUEUE_CAPACITY",
        description="Jobs the whole queue is sized for (waiting: queued or retrying, all "
        "targets). From 80 % and at 100 % workers warn (metrics, one log line per crossing); "
        "0: no capacity.",
    )
    capacity_hard_limit: bool = Field(
        False,
        validation_alias="HERALD_QUEUE_CAPACITY_HARD_LIMIT",
        description="Refuse jobs beyond HERALD_QUEUE_CAPACITY: the API answers 429 with "
        "Retry-After (the Alertmanager receiver 503). Default: warn only, never refuse.",
    )

    @model_validator(mode="after")
    def _budget_order(self) -> Self:
        if self.budget_low < self.budget_medium:
            raise ValueError(
                f"HERALD_PRIORITY_BUDGET_MEDIUM={self.budget_medium:g}, "
                f"HERALD_PRIORITY_BUDGET_LOW={self.budget_low:g}: the low budget must be at "
                "least the medium one"
            )
        return self

    def budget(self, priority: str) -> float:
        return {"high": 0.0, "medium": self.budget_medium, "low": self.budget_low}[priority]


def _networks(value: str | None) -> str | None:
    parse_networks(value)  # its ValueError says which item is not a network
    return value


Networks = Annotated[
    str | None,
    Kind("CIDR list", "CIDRs separated by commas, such as 10.0.0.0/8, fd00::/8"),
    AfterValidator(_networks),
]


class EgressSettings(HeraldSettings):
    """Where the workers may deliver (herald_queue.egress). Read by the worker, which
    enforces it on every address it connects to, and by whatever registers targets (the
    operator, `herald targets apply`, `herald worker --targets`), which refuses a URL whose
    literal address it forbids: give them the same values."""

    section: ClassVar[str] = "Egress (`herald worker`, `herald operator`, `herald targets apply`)"

    allow: Networks = Field(
        None,
        validation_alias="HERALD_EGRESS_ALLOW",
        description="Networks (CIDRs, comma-separated) the workers may deliver to although a "
        "built-in rule or HERALD_EGRESS_DENY refuses them: the most specific matching network "
        "decides (e.g. 169.254.10.0/24 reaches that part of the link-local range, never "
        "169.254.169.254, the metadata service, unless listed itself).",
    )
    deny: Networks = Field(
        None,
        validation_alias="HERALD_EGRESS_DENY",
        description="Networks (CIDRs, comma-separated) the workers never deliver to, besides "
        "the built-in ones: link-local (169.254.0.0/16, fe80::/10), the cloud metadata "
        "services (169.254.169.254, fd00:ec2::254, 100.100.100.200, 192.0.0.192) and "
        "loopback.",
    )
    allow_loopback: bool = Field(
        False,
        validation_alias="HERALD_EGRESS_ALLOW_LOOPBACK",
        description="Deliver to loopback addresses (127.0.0.0/8, ::1, 0.0.0.0): the worker's "
        "own host. For local runs and tests; `herald demo` sets it.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.policy()  # refuses a network both allowed and denied
        return self

    def policy(self) -> EgressPolicy:
        return EgressPolicy(
            allow=parse_networks(self.allow),
            deny=parse_networks(self.deny),
            allow_loopback=self.allow_loopback,
        )


LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = ("debug", "info", "warning", "error")


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


BeforeLower = BeforeValidator(_lower)


class LogSettings(HeraldSettings):
    section: ClassVar[str] = "Logging (every process)"

    log_level: Annotated[LogLevel | None, BeforeLower] = Field(
        None,
        description="Least level logged (any case). Default: info for `herald worker` and "
        "`herald operator`, warning for commands; `--log-level` wins over it.",
    )
    log_format: Annotated[Literal["json", "text"] | None, BeforeLower] = Field(
        None,
        description="json (one object a line, for log collectors) or text. Default: json for "
        "`herald worker` and `herald operator`, text for commands.",
    )
