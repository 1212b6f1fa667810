"""Settings of the database and the queue, shared by every Herald process.

Every setting is one field of a pydantic-settings class (base and types in
:mod:`herald_core.settings`); the parser, the error lines and the configuration tables
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
3. Run ``python -m herald_tools.cli.settings_doc`` and paste its output between
   ``<!-- settings:begin -->`` and ``<!-- settings:end -->`` in docs/configuration.md.
4. Add its case (default, a valid value, a refused one and its line) to the table in
   tests/integration/cli/test_settings.py: a test fails until every field has one.
5. If the chart sets it, add it to the Deployment's env (tests/e2e/test_chart_render.py loads the
   chart's values with these classes).

Commands read the settings with ``DatabaseSettings.from_env()``; a class constructed
directly (``QueueSettings(lease=1)``, in tests and ``herald demo``) is its defaults and
arguments only. A bad value stops the process at start with one line per bad variable and
exit status 2 (``HERALD_LOG_LEVEL=LOUD: must be one of debug, info, warning, error``): a
command that reads a class checks it with the others it reads (``settings()`` in
``herald_tools/cli/worker_cmd.py``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Self

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AfterValidator, Field, SecretStr, model_validator

from herald_core.json_depth import DEFAULT_MAX_DEPTH, MAX_DEPTH_CEILING
from herald_core.settings import (
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
        "for another migration or for the table locks its statements need, saying at once, "
        "then every 5 s, what it waits for and who holds it; then it fails naming the holder.",
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
    max_payload_depth: Annotated[int, Field(ge=1, le=MAX_DEPTH_CEILING)] = Field(
        DEFAULT_MAX_DEPTH,
        description="Deepest nesting of arrays and objects accepted in a job payload (the API, "
        "the Alertmanager receiver and herald enqueue refuse deeper ones), at most "
        f"{MAX_DEPTH_CEILING}: JSON is decoded recursively, and a payload nested about a "
        "thousand deep cannot be decoded or hashed at all.",
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
    attempt_retention: PositiveDuration = Field(
        7 * 86_400.0,
        description="How long delivery attempts stay on record (GET /v1/jobs/{id}/attempts, "
        "`herald jobs show`): the retention cleaner drops whole days (UTC) once they are past "
        "it, except a day a dead letter still kept may have attempts on (a dead letter's "
        "attempts stay as long as it does).",
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

    ingest_max_group: Annotated[int, Field(ge=1, le=1000)] = Field(
        64,
        description="Most single-job enqueues (POST /v1/jobs of one job, "
        "`queue.jobs.enqueue`) written together in one transaction (group commit: those "
        "that arrive while earlier ones commit share the next commit). 1: every job is its "
        "own transaction (no grouping). Batches a caller sends are written as sent.",
    )
    ingest_linger: Annotated[
        float, Kind("seconds", "a number of seconds from 0 to 0.1"), Field(ge=0, le=0.1)
    ] = Field(
        0.0,
        description="Seconds (at most 0.1) a group of single-job enqueues waits for more "
        "before it commits, unless it is full. 0: a group commits as soon as a slot is free, "
        "so a lone request waits for nothing.",
    )
    ingest_groups_in_flight: Annotated[int, Field(ge=1, le=64)] = Field(
        4,
        description="Most groups of single-job enqueues committing at once in a process "
        "(each holds one database connection; never more than HERALD_DB_POOL_MAX - 1, so "
        "claims and settles always find one).",
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
