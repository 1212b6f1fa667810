"""``herald operator``: the Kubernetes operator (the control plane)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from herald_core.settings import HeraldSettings

if TYPE_CHECKING:
    from herald_queue.settings import DatabaseSettings

log = logging.getLogger("herald.operator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the Kubernetes operator: registers PublishingTargets in PostgreSQL and reports "
        "their status, runs DeadLetterReplays, and scales the worker Deployment from queue "
        "depth. Serves /metrics on HERALD_OPERATOR_METRICS_PORT (default 8081) and /healthz "
        "on HERALD_OPERATOR_HEALTH_PORT (default 8082). Configured from the environment "
        "(HERALD_WATCH_NAMESPACE, HERALD_PEERING, HERALD_SCALE_*...: see docs/operator.md). "
        "SIGTERM stops it gracefully."
    )
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="run `herald migrate` first (always done with the embedded database)",
    )


def settings() -> tuple[type[HeraldSettings], ...]:
    from herald_delivery.settings import EgressSettings
    from herald_operator.settings import OperatorSettings
    from herald_queue.settings import DatabaseSettings, QueueSettings

    return (DatabaseSettings, QueueSettings, EgressSettings, OperatorSettings)


async def run(args: argparse.Namespace) -> int:
    from herald_delivery.settings import EgressSettings
    from herald_operator.app import check_kubernetes, check_ports
    from herald_operator.app import run as run_operator
    from herald_operator.runtime import Options
    from herald_operator.settings import OperatorSettings
    from herald_queue import db, migrate
    from herald_queue.settings import DatabaseSettings, QueueSettings

    settings = OperatorSettings.from_env()
    egress = EgressSettings.from_env()
    database = DatabaseSettings.from_env()
    queue = QueueSettings.from_env()
    check_ports(Options(settings=settings))
    url = db.resolve_url(database, announce=database.url is None)
    if args.migrate or database.url is None:
        report = await migrate.migrate_url(url, database)
        if report.applied:
            log.info(
                "migrated the database", extra={"action": "migrate", "applied": report.applied}
            )
    else:
        await _check_schema(url, database)
    check_kubernetes()
    await run_operator(
        Options(settings=settings, database=database, queue=queue, egress=egress, url=url)
    )
    return 0


async def _check_schema(url: str, database: DatabaseSettings) -> None:
    """A database at the wrong schema version is an error said in one line; an unreachable
    one is waited for (the operator's startup retries until PostgreSQL answers)."""
    from herald_core.errors import DatabaseUnavailable
    from herald_queue import db, migrate

    try:
        conn = await db.connect(url, database)
    except DatabaseUnavailable:
        return  # the startup handler says so and retries
    try:
        await migrate.check_schema(conn)
    finally:
        await conn.close()
