"""``herald demo``."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Watch Herald ride out a misbehaving receiver: a private embedded PostgreSQL, a local "
        "receiver that verifies signatures and answers 503s, 429s with Retry-After, 400s and "
        "a short outage, a worker, and a few thousand jobs. Prints progress and a summary; "
        "cleans up after itself."
    )
    parser.add_argument("--jobs", type=int, default=3000, help="jobs to submit (default 3000)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("HERALD_DATABASE_URL"),
        help="use this server (a database is created and dropped) instead of "
        "a private embedded PostgreSQL",
    )


async def run(args: argparse.Namespace) -> int:
    import logging

    from herald_tools import demo

    if args.log_level is None:  # the summary tells the story; say more with --log-level INFO
        logging.getLogger().setLevel(logging.ERROR)

    if args.jobs < 100:
        from herald_core.errors import InvalidRequest

        raise InvalidRequest("--jobs", "must be at least 100")
    plan = demo.Plan(jobs=args.jobs, outage_after=max(50, args.jobs // 3))
    return await demo.run(plan, database_url=args.database_url)
