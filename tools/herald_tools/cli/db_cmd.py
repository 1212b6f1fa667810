"""``herald db status|stop``: the embedded PostgreSQL."""

from __future__ import annotations

import argparse
from pathlib import Path

from herald_core.errors import ConfigError
from herald_queue import db, embedded
from herald_tools.cli.context import database_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser(
        "status",
        help="where the database is and whether it answers (never starts the embedded one)",
        description="Where the database is and whether it answers. The embedded PostgreSQL "
        "is reported as stopped when it is not running: this command never starts it.",
    )
    sub.add_parser("stop", help="stop the embedded PostgreSQL (data stays in HERALD_DATA_DIR)")


async def run(args: argparse.Namespace) -> int:
    settings = database_settings()
    data_dir = Path(settings.data_dir) if settings.data_dir else embedded.default_data_dir()
    if args.action == "stop":
        if settings.url:
            raise ConfigError(
                "HERALD_DATABASE_URL is set: there is no embedded PostgreSQL to stop (unset "
                "it to manage the embedded one)"
            )
        print("stopped" if embedded.stop(data_dir) else f"not running (data in {data_dir})")
        return 0
    if settings.url:
        url = db.resolve_url(settings)
    else:
        found = embedded.running(data_dir)
        if found is None:
            print(f"embedded PostgreSQL in {data_dir}: stopped (the next command starts it)")
            return 0
        url = found
    conn = await db.connect(url, settings)
    try:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
    finally:
        await conn.close()
    where = "embedded, " + str(data_dir) if not settings.url else db.describe(url)
    print(f"PostgreSQL {row[0] if row else '?'} at {where}: answering")
    return 0
