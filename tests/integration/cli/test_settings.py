"""Every setting, through the processes that read it: unset it is its documented default, a
valid value is parsed, and a bad one stops `herald worker` / `herald operator` / a command at
start with one line naming the variable, the value (never a secret's) and what is accepted,
exit status 2, before anything else happens."""

# ruff: noqa: E501 - the table of cases reads best one setting a line

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import pytest
from pydantic import Field, SecretStr

from herald_core.errors import SettingsError
from herald_core.settings import HeraldSettings, LogSettings
from herald_delivery.settings import EgressSettings
from herald_operator.settings import OperatorSettings
from herald_queue.settings import DatabaseSettings, QueueSettings
from herald_worker.settings import WorkerSettings
from tests.helpers import settings_from, stop_process, wait_until
from tests.integration.cli.cli import closed_port, herald

COUNT = "must be an integer of at least 1"
PORT = "must be a port number from 1 to 65535"
BOOL = "must be true or false (also 1/0, yes/no, on/off)"
FORMS = "(seconds, or e.g. 90s, 15m, 24h, 30d)"
POSITIVE = f"must be a duration greater than 0, at most 100 years {FORMS}"
DURATION = f"must be a duration from 0 to 100 years {FORMS}"
NAMESPACE = "must be a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"
NETWORKS = "is not a network (use CIDRs such as 10.0.0.0/8 or fd00::/8, separated by commas)"
SECRET_URL = "postgresql://herald:s3cret-pw@db.example:5432/herald"


@dataclasses.dataclass(frozen=True)
class Case:
    cls: type[HeraldSettings]
    field: str
    env: str
    default: Any
    valid: str
    parsed: Any
    invalid: str | None = None
    """A value refused (None: any text is accepted)."""
    problem: str = ""
    """What the line says after ``NAME=value: ``."""


D, Q, E, L, W, OP = (
    DatabaseSettings,
    QueueSettings,
    EgressSettings,
    LogSettings,
    WorkerSettings,
    OperatorSettings,
)
# fmt: off
CASES = [
    Case(D, "url", "HERALD_DATABASE_URL", None, SECRET_URL, SECRET_URL, "not a url", ""),
    Case(D, "data_dir", "HERALD_DATA_DIR", None, "/var/lib/herald", "/var/lib/herald"),
    Case(D, "pool_min", "HERALD_DB_POOL_MIN", 1, "0", 0, "-1", "must be an integer of at least 0"),
    Case(D, "pool_max", "HERALD_DB_POOL_MAX", 10, "4", 4, "four", COUNT),
    Case(D, "connect_timeout", "HERALD_DB_CONNECT_TIMEOUT", 5.0, "1m", 60.0, "0", POSITIVE),
    Case(D, "lock_timeout", "HERALD_DB_LOCK_TIMEOUT", 30.0, "2m", 120.0, "0", POSITIVE),
    Case(D, "migration_wait", "HERALD_MIGRATION_WAIT", 300.0, "10m", 600.0, "-1s", POSITIVE),
    Case(Q, "budget_medium", "HERALD_PRIORITY_BUDGET_MEDIUM", 60.0, "0", 0.0, "-1", DURATION),
    Case(Q, "budget_low", "HERALD_PRIORITY_BUDGET_LOW", 300.0, "1h", 3600.0, "soon", DURATION),
    Case(Q, "max_payload_bytes", "HERALD_MAX_PAYLOAD_BYTES", 262_144, "1024", 1024, "0", COUNT),
    Case(
        Q,
        "max_payload_depth",
        "HERALD_MAX_PAYLOAD_DEPTH",
        64,
        "100",
        100,
        "513",
        "must be an integer from 1 to 512",
    ),
    Case(Q, "lease", "HERALD_LEASE", 60.0, "90", 90.0, "0s", POSITIVE),
    Case(Q, "durable_claims", "HERALD_DURABLE_CLAIMS", False, "yes", True, "always", BOOL),
    Case(Q, "job_retention", "HERALD_JOB_RETENTION", 86_400.0, "2d", 172_800.0, "36526d", POSITIVE),
    Case(Q, "attempt_retention", "HERALD_ATTEMPT_RETENTION", 604_800.0, "3d", 259_200.0, "0", POSITIVE),
    Case(Q, "dead_letter_retention", "HERALD_DEAD_LETTER_RETENTION", 2_592_000.0, "1h30m", 5400.0, "30 days", POSITIVE),
    Case(Q, "default_namespace", "HERALD_NAMESPACE", "default", "team-a", "team-a", "Team_A", NAMESPACE),
    Case(Q, "capacity", "HERALD_QUEUE_CAPACITY", 0, "5000", 5000, "-1", "must be an integer of at least 0"),
    Case(Q, "capacity_hard_limit", "HERALD_QUEUE_CAPACITY_HARD_LIMIT", False, "on", True, "hard", BOOL),
    Case(Q, "ingest_max_group", "HERALD_INGEST_MAX_GROUP", 64, "1", 1, "0", "must be an integer from 1 to 1000"),
    Case(Q, "ingest_linger", "HERALD_INGEST_LINGER", 0.0, "0.002", 0.002, "1", "must be a number of seconds from 0 to 0.1"),
    Case(Q, "ingest_groups_in_flight", "HERALD_INGEST_GROUPS_IN_FLIGHT", 4, "2", 2, "65", "must be an integer from 1 to 64"),
    Case(E, "allow", "HERALD_EGRESS_ALLOW", None, "10.1.0.0/16", "10.1.0.0/16", "ten", f"'ten' {NETWORKS}"),
    Case(E, "deny", "HERALD_EGRESS_DENY", None, "192.168.0.0/16, fd00::/8", "192.168.0.0/16, fd00::/8", "10.0.0.0/33", f"'10.0.0.0/33' {NETWORKS}"),
    Case(E, "allow_loopback", "HERALD_EGRESS_ALLOW_LOOPBACK", False, "yes", True, "maybe", BOOL),
    Case(L, "log_level", "HERALD_LOG_LEVEL", None, "WARNING", "warning", "LOUD", "must be one of debug, info, warning, error"),
    Case(L, "log_format", "HERALD_LOG_FORMAT", None, "Text", "text", "xml", "must be one of json, text"),
    Case(W, "http_host", "HERALD_HTTP_HOST", "0.0.0.0", "127.0.0.1", "127.0.0.1"),
    Case(W, "http_port", "HERALD_HTTP_PORT", 8080, "9000", 9000, "65536", "must be a port number from 1 to 65535, or 0 for any free port"),
    Case(W, "api_token", "HERALD_API_TOKEN", None, "tok-s3cret", "tok-s3cret"),
    Case(W, "api_auth", "HERALD_API_AUTH", "token", "token", "token", "oidc", "must be one of token, kubernetes"),
    Case(W, "api_auth_cache_ttl", "HERALD_API_AUTH_CACHE_TTL", 30.0, "1m", 60.0, "0", POSITIVE),
    Case(W, "api_auth_denied_ttl", "HERALD_API_AUTH_DENIED_TTL", 5.0, "2s", 2.0, "-1s", POSITIVE),
    Case(W, "api_auth_cache_size", "HERALD_API_AUTH_CACHE_SIZE", 10_000, "100", 100, "0", COUNT),
    Case(W, "api_auth_timeout", "HERALD_API_AUTH_TIMEOUT", 5.0, "500ms", 0.5, "0", POSITIVE),
    Case(W, "api_auth_audience", "HERALD_API_AUTH_AUDIENCE", "", "herald", "herald"),
    Case(W, "concurrency", "HERALD_CONCURRENCY", 64, "8", 8, "0", COUNT),
    Case(W, "target_concurrency", "HERALD_TARGET_CONCURRENCY", 16, "4", 4, "1.5", COUNT),
    Case(W, "claim_batch", "HERALD_CLAIM_BATCH", 50, "10", 10, "-5", COUNT),
    Case(W, "poll_interval", "HERALD_POLL_INTERVAL", 1.0, "500ms", 0.5, "0", POSITIVE),
    Case(W, "shutdown_grace", "HERALD_SHUTDOWN_GRACE", 20.0, "5s", 5.0, "5 s", POSITIVE),
    Case(W, "shutdown_drain", "HERALD_SHUTDOWN_DRAIN", 0.0, "5s", 5.0, "-5s", DURATION),
    Case(W, "tracker_size", "HERALD_TRACKER_SIZE", 10_000, "100", 100, "lots", COUNT),
    Case(W, "retry_after_cap", "HERALD_RETRY_AFTER_CAP", 3600.0, "10m", 600.0, "-1h", POSITIVE),
    Case(W, "rescue_interval", "HERALD_RESCUE_INTERVAL", 5.0, "2", 2.0, "0ms", POSITIVE),
    Case(W, "disable_after", "HERALD_DISABLE_AFTER", 432_000.0, "3d", 259_200.0, "-1d", DURATION),
    Case(W, "cleanup_interval", "HERALD_CLEANUP_INTERVAL", 300.0, "1h", 3600.0, "hourly", POSITIVE),
    Case(W, "sample_interval", "HERALD_SAMPLE_INTERVAL", 10.0, "1s", 1.0, "nan", POSITIVE),
    Case(W, "targets_refresh", "HERALD_TARGETS_REFRESH", 30.0, "1m", 60.0, "inf", POSITIVE),
    Case(W, "kubernetes_secrets", "HERALD_KUBERNETES_SECRETS", None, "off", False, "auto", BOOL),
    Case(W, "user_agent", "HERALD_USER_AGENT", "", "Herald-test/1", "Herald-test/1"),
    Case(OP, "watch_namespace", "HERALD_WATCH_NAMESPACE", "", "*", "*", "team a", "must be a Kubernetes namespace name, '*' (all namespaces) or empty"),
    Case(OP, "listen_host", "HERALD_OPERATOR_LISTEN_HOST", "0.0.0.0", "127.0.0.1", "127.0.0.1"),
    Case(OP, "metrics_port", "HERALD_OPERATOR_METRICS_PORT", 8081, "9001", 9001, "0", PORT),
    Case(OP, "health_port", "HERALD_OPERATOR_HEALTH_PORT", 8082, "9002", 9002, "http", PORT),
    Case(OP, "peering", "HERALD_PEERING", "herald", "", "", "Herald!", "must be a Kubernetes object name, or empty"),
    Case(OP, "peering_lifetime", "HERALD_PEERING_LIFETIME", 60.0, "2m", 120.0, "0", POSITIVE),
    Case(OP, "watch_timeout", "HERALD_WATCH_TIMEOUT", 300.0, "60", 60.0, "never", POSITIVE),
    Case(OP, "status_interval", "HERALD_STATUS_INTERVAL", 10.0, "1s", 1.0, "0", POSITIVE),
    Case(OP, "dead_letter_event_interval", "HERALD_DEAD_LETTER_EVENT_INTERVAL", 60.0, "5m", 300.0, "-1", POSITIVE),
    Case(OP, "replay_batch", "HERALD_REPLAY_BATCH", 500, "50", 50, "0", COUNT),
    Case(OP, "replay_target_wait", "HERALD_REPLAY_TARGET_WAIT", 300.0, "0", 0.0, "-1s", DURATION),
    Case(OP, "worker_deployment", "HERALD_WORKER_DEPLOYMENT", "herald-worker", "my.workers", "my.workers", "", "must be a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)"),
    Case(OP, "worker_namespace", "HERALD_WORKER_NAMESPACE", "", "team-b", "team-b", "-b", "must be a Kubernetes namespace name, or empty"),
    Case(OP, "scaling", "HERALD_SCALING", True, "false", False, "enabled", BOOL),
    Case(OP, "scale_min", "HERALD_SCALE_MIN", 1, "2", 2, "0", COUNT),
    Case(OP, "scale_max", "HERALD_SCALE_MAX", 10, "20", 20, "ten", COUNT),
    Case(OP, "jobs_per_replica", "HERALD_SCALE_JOBS_PER_REPLICA", 500, "100", 100, "-100", COUNT),
    Case(OP, "scale_max_step", "HERALD_SCALE_MAX_STEP", 2, "3", 3, "0", COUNT),
    Case(OP, "scale_interval", "HERALD_SCALE_INTERVAL", 15.0, "30s", 30.0, "0s", POSITIVE),
    Case(OP, "scale_cooldown", "HERALD_SCALE_COOLDOWN", 60.0, "2m", 120.0, "2 minutes", POSITIVE),
    Case(OP, "scale_down_stabilization", "HERALD_SCALE_DOWN_STABILIZATION", 300.0, "10m", 600.0, "0", POSITIVE),
]
# fmt: on
SECRETS = {"HERALD_DATABASE_URL", "HERALD_API_TOKEN"}
WORKER = (D, Q, E, L, W)
OPERATOR = (D, Q, E, L, OP)


def plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def expected_line(case: Case) -> str:
    invalid = case.invalid or ""
    plain_text = invalid and " " not in invalid
    shown = (
        "(secret, not shown)" if case.env in SECRETS else invalid if plain_text else repr(invalid)
    )
    problem = case.problem or (
        "must be a PostgreSQL URL such as postgresql://user:password@host:5432/dbname"
    )
    return f"herald: error: {case.env}={shown}: {problem}"


def test_the_cases_cover_every_setting() -> None:
    """A new setting needs its case here (and its line in docs/configuration.md)."""
    covered = {(c.cls, c.field) for c in CASES}
    assert covered == {(cls, name) for cls in (D, Q, E, L, W, OP) for name in cls.model_fields}
    assert {c.env for c in CASES if c.cls.secret(c.field)} == SECRETS
    assert all(c.env == c.cls.env_name(c.field) for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.env)
def test_unset_is_the_documented_default_and_a_valid_value_parses(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert plain(getattr(settings_from(case.cls, {}, monkeypatch), case.field)) == case.default
    parsed = settings_from(case.cls, {case.env: case.valid}, monkeypatch)
    assert plain(getattr(parsed, case.field)) == case.parsed
    if case.invalid is not None:
        with pytest.raises(SettingsError) as caught:
            settings_from(case.cls, {case.env: case.invalid}, monkeypatch)
        assert ["herald: error: " + line for line in caught.value.lines] == [expected_line(case)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "classes"), [("worker", WORKER), ("operator", OPERATOR)], ids=["worker", "operator"]
)
async def test_every_bad_variable_is_one_line_and_the_process_never_starts(
    command: str, classes: tuple[type[HeraldSettings], ...]
) -> None:
    cases = [c for c in CASES if c.cls in classes and c.invalid is not None]
    env = {c.env: c.invalid for c in cases if c.invalid is not None}
    run = await herald(command, url=None, env=env)
    assert run.code == 2, run.err
    assert run.out == ""
    assert sorted(run.err.splitlines()) == sorted(expected_line(c) for c in cases)
    assert "Traceback" not in run.err and "s3cret" not in run.err
    assert "embedded PostgreSQL" not in run.err, "refused before starting anything"


@pytest.mark.slow
async def test_one_bad_variable_of_a_command_is_one_line() -> None:
    level = await herald("stats", url=None, env={"HERALD_LOG_LEVEL": "LOUD"})
    assert (level.code, level.error) == (
        2,
        "herald: error: HERALD_LOG_LEVEL=LOUD: must be one of debug, info, warning, error",
    )
    lease = await herald("stats", url=SECRET_URL, env={"HERALD_LEASE": "0"})
    assert (lease.code, lease.error) == (2, f"herald: error: HERALD_LEASE=0: {POSITIVE}")
    assert "s3cret" not in lease.err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "env", "line"),
    [
        (
            "worker",
            {"HERALD_DB_POOL_MIN": "5", "HERALD_DB_POOL_MAX": "2"},
            "HERALD_DB_POOL_MIN=5, HERALD_DB_POOL_MAX=2: the minimum must not exceed the maximum",
        ),
        (
            "worker",
            {"HERALD_PRIORITY_BUDGET_MEDIUM": "10m", "HERALD_PRIORITY_BUDGET_LOW": "5m"},
            "HERALD_PRIORITY_BUDGET_MEDIUM=600, HERALD_PRIORITY_BUDGET_LOW=300: the low budget "
            "must be at least the medium one",
        ),
        (
            "operator",
            {"HERALD_EGRESS_ALLOW": "10.0.0.0/8", "HERALD_EGRESS_DENY": "10.0.0.0/8"},
            "HERALD_EGRESS_ALLOW and HERALD_EGRESS_DENY both list 10.0.0.0/8: keep it in one",
        ),
        (
            "operator",
            {"HERALD_SCALE_MIN": "5", "HERALD_SCALE_MAX": "4"},
            "HERALD_SCALE_MIN=5, HERALD_SCALE_MAX=4: the minimum must not exceed the maximum",
        ),
    ],
)
async def test_rules_over_two_variables_are_one_line(
    command: str, env: dict[str, str], line: str
) -> None:
    run = await herald(command, url=SECRET_URL, env=env)
    assert (run.code, run.error) == (2, f"herald: error: {line}")


def valid_env(classes: tuple[type[HeraldSettings], ...], db_url: str) -> dict[str, str]:
    env = {c.env: c.valid for c in CASES if c.cls in classes}
    ports = {"HERALD_HTTP_PORT", "HERALD_OPERATOR_METRICS_PORT", "HERALD_OPERATOR_HEALTH_PORT"}
    return env | {p: str(closed_port()) for p in ports} | {"HERALD_DATABASE_URL": db_url}


@pytest.mark.slow
async def test_the_worker_runs_with_every_setting_given(db_url: str, tmp_path: Path) -> None:
    """Not a default in sight: the worker starts, answers on the port it was given, and
    stops cleanly on SIGTERM."""
    env = valid_env(WORKER, db_url) | {"HERALD_EGRESS_ALLOW_LOOPBACK": "true"}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "herald_tools.cli.main",
            "worker",
            env={k: v for k, v in os.environ.items() if not k.startswith("HERALD_")} | env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{env['HERALD_HTTP_PORT']}/readyz"

            async def ready() -> bool:
                assert process.returncode is None, log.read_text()
                try:
                    async with http.get(url) as answer:
                        return answer.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, timeout=30, interval=0.1, what="worker ready")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0, log.read_text()
    finally:
        await stop_process(process, "herald worker", 30)
    assert "herald: error" not in log.read_text()
    assert "tok-s3cret" not in log.read_text() and "s3cret-pw" not in log.read_text()


@pytest.mark.slow
async def test_the_operator_accepts_every_setting_given(db_url: str, tmp_path: Path) -> None:
    """Every operator setting is accepted; what stops it then is the missing cluster."""
    env = valid_env(OPERATOR, db_url) | {"KUBECONFIG": str(tmp_path / "none")}
    run = await herald("operator", url=db_url, env=env)
    assert run.code == 1, run.err
    assert run.error.startswith("herald: error: cannot log in to Kubernetes"), run.err


def test_constructed_settings_are_their_defaults_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`herald demo`, the benchmarks and the tests construct their settings: a user's
    HERALD_API_TOKEN or a bad HERALD_LEASE must not leak into them. Commands read the
    environment with from_env()."""
    monkeypatch.setenv("HERALD_API_TOKEN", "tok-s3cret")
    monkeypatch.setenv("HERALD_LEASE", "0")
    assert WorkerSettings().api_token is None
    assert QueueSettings(lease=5).lease == 5.0
    token = WorkerSettings.from_env().api_token
    assert token is not None and token.get_secret_value() == "tok-s3cret"
    assert "tok-s3cret" not in repr(WorkerSettings.from_env())
    with pytest.raises(SettingsError, match=r"^HERALD_LEASE=0: must be a duration"):
        QueueSettings.from_env()
    with pytest.raises(SettingsError, match=r"^HERALD_LEASE=-3: must be a duration"):
        QueueSettings(lease="-3")


def test_a_new_bounded_setting_says_its_bounds() -> None:
    """What a field written the documented way (herald_queue.settings) gets for free."""

    class Example(HeraldSettings):
        percent: Annotated[int, Field(ge=0, le=100)] = 50
        workers: Annotated[int, Field(gt=0)] = 1

    with pytest.raises(SettingsError) as caught:
        Example(percent=101, workers=0)
    assert caught.value.lines == [
        "HERALD_PERCENT=101: must be an integer from 0 to 100",
        "HERALD_WORKERS=0: must be an integer of at least 1",
    ]
