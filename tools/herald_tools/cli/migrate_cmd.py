"""``herald migrate``."""

from __future__ import annotations

import argparse

from herald_queue import db, migrate
from herald_tools.cli.context import database_settings
from herald_tools.cli.output import emit_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 unless the schema is up to date",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


async def run(args: argparse.Namespace) -> int:
    settings = database_settings()
    url = db.resolve_url(settings, announce=True)
    conn = await db.connect(url, settings)
    try:
        if args.check:
            current = await migrate.current_version(conn)
            latest = migrate.latest_version()
            if args.json:
                emit_json({"current": current, "latest": latest, "upToDate": current == latest})
            else:
                print(
                    f"schema version {current}, this Herald needs {latest}: "
                    + ("up to date" if current == latest else "run `herald migrate`")
                )
            return 0 if current == latest else 1
        report = await migrate.migrate(conn, wait=settings.migration_wait)
    finally:
        await conn.close()
    if args.json:
        emit_json({"before": report.before, "after": report.after, "applied": report.applied})
    elif report.applied:
        print(
            f"migrated {db.describe(url)} from version {report.before} to {report.after}: "
            + ", ".join(report.applied)
        )
    else:
        print(f"{db.describe(url)} is up to date (schema version {report.after})")
    return 0
