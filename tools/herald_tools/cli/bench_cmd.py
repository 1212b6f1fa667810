"""``herald bench [--json] [--quick] [--deliver | --ingest | --soak DURATION]``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from herald_tools.cli.output import emit_json, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Measure Herald on this machine. Starts a private embedded PostgreSQL (default "
        "settings, synchronous_commit on) unless --database-url (or HERALD_DATABASE_URL) "
        "names a server, where it creates and drops its own database."
    )
    parser.add_argument("--json", action="store_true", help="one JSON object with every figure")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a quick look)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--deliver",
        action="store_true",
        help="measure end-to-end delivery through real HTTP to a local receiver (signed "
        "webhooks) with 1, 2 and 4 worker processes (1 and 4 with --quick): throughput with "
        "CPU per job of the workers, the receiver and PostgreSQL, latency at a paced 200 and "
        "1,000 jobs/s, worker memory with a full tracker and a 100,000-job backlog, and a "
        "quiet target's latency during that backlog; instead of the queue alone",
    )
    mode.add_argument(
        "--ingest",
        action="store_true",
        help="measure single-job POST /v1/jobs over HTTP to a `herald worker` from 10 and 100 "
        "clients (jobs/s, acknowledgement p50/p99) against pgbench's one-row INSERT of the "
        "same payload (the ceiling of one commit per job) and its 1-client latency (the "
        "durable commit floor), then acknowledgements at a paced 200/s; instead of the "
        "queue alone (the worker inherits HERALD_INGEST_*)",
    )
    mode.add_argument(
        "--soak",
        metavar="DURATION",
        type=_duration,
        help="instead: deliver at half the measured maximum (or --rate) for DURATION (e.g. "
        "60m; 6m --quick for a look), recording every minute (10 s with --quick) throughput, "
        "latency, table and index sizes, dead tuples, autovacuum counts and worker memory, "
        "then judging whether sizes plateau, p99 holds and memory stays flat",
    )
    parser.add_argument(
        "--rate", type=float, help="--soak: jobs per second (default: half the maximum)"
    )
    parser.add_argument(
        "--interval", type=_duration, help="--soak: the recording interval (default 60s)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="--soak: worker processes (default 1)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("HERALD_DATABASE_URL"),
        help="a server where the benchmark may create a database",
    )


def _duration(value: str) -> float:
    from herald_core.durations import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive duration")
    return seconds


def _progress(quiet: bool) -> Any:
    def report(message: str) -> None:
        if not quiet:
            print(f"bench: {message}", file=sys.stderr, flush=True)

    return report


async def run(args: argparse.Namespace) -> int:
    from herald_tools import scratch
    from herald_tools.bench import queue_bench, shared

    if not 1 <= args.workers <= 16 or (args.rate is not None and not 0 < args.rate <= 1e6):
        print("herald bench: --workers is 1 to 16, --rate above 0 (up to 1e6)", file=sys.stderr)
        return 2
    report = _progress(False)
    async with scratch.scratch_database(args.database_url, prefix="herald_tools.bench") as url:
        environment = await shared.describe_server(url)
        report(
            f"PostgreSQL {environment['postgresql']['server_version']}, "
            f"synchronous_commit={environment['postgresql']['synchronous_commit']}"
        )
        if args.ingest:
            from herald_tools.bench import ingest_bench

            results = await ingest_bench.run(url, quick=args.quick, progress=report)
            report(ingest_bench.describe(results))
        elif args.soak is not None:
            from herald_tools.bench import soak_bench

            results = await soak_bench.run(
                url,
                duration=args.soak,
                quick=args.quick,
                progress=report,
                interval=args.interval,
                rate=args.rate,
                workers=args.workers,
            )
        elif args.deliver:
            from herald_tools.bench import deliver_bench

            results = await deliver_bench.run(url, quick=args.quick, progress=report)
        else:
            results = await queue_bench.run(url, quick=args.quick, progress=report)
    results["environment"] = environment
    if args.json:
        emit_json(results)
    elif args.soak is not None:
        from herald_tools.bench import soak_bench

        print(soak_bench.render(results))
    else:
        rows = [[k, v] for k, v in results.items() if k != "environment"]
        print(table(["figure", "value"], rows))
    return 0
