"""``herald db status|stop``: the embedded PostgreSQL."""

from __future__ import annotations

import argparse
from pathlib import Path

from herald_cli.context import database_settings
from herald_queue import db, embedded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("status", help="where the database is and whether it answers")
    sub.add_parser("stop", help="stop the embedded PostgreSQL (data stays in HERALD_DATA_DIR)")


async def run(args: argparse.Namespace) -> int:
    settings = database_settings()
    data_dir = Path(settings.data_dir) if settings.data_dir else embedded.default_data_dir()
    if args.action == "stop":
        if settings.url:
            print("HERALD_DATABASE_URL is set: there is no embedded PostgreSQL to stop")
            return 1
        print("stopped" if embedded.stop(data_dir) else f"not running (data in {data_dir})")
        return 0
    url = db.resolve_url(settings, announce=True)
    conn = await db.connect(url, timeout=settings.connect_timeout)
    try:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
    finally:
        await conn.close()
    where = "embedded, " + str(data_dir) if not settings.url else db.describe(url)
    print(f"PostgreSQL {row[0] if row else '?'} at {where}: answering")
    return 0
