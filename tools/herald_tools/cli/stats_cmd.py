"""``herald stats [--watch] [--json]``."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys

from herald_core.states import JobState, Priority
from herald_queue.records import QueueStats
from herald_tools.cli.context import open_queue
from herald_tools.cli.output import age, emit_json, shown, table
from herald_worker.api import models

STATES = [s.value for s in JobState]


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0.05 <= seconds <= 86_400:  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a refresh interval (seconds, from 0.05 to 86400)"
        )
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch",
        nargs="?",
        type=_interval,
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until interrupted",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: totals per state at the top, then breakdowns "
        '(with --watch, one object per line, with the "time" it was read)',
    )


def render(stats: QueueStats) -> str:
    head = "  ".join(f"{s.value}: {stats.count(s)}" for s in JobState)
    lines = [
        head,
        f"ready now: {stats.ready}  oldest ready: {age(stats.oldest_ready_age_seconds)}"
        + ("" if stats.capacity_pct is None else f"  capacity: {stats.capacity_pct} %"),
        "",
    ]
    lines.append(
        table(
            ["priority", *STATES, "ready"],
            [
                [
                    p.value,
                    *(stats.by_priority[p.value].count(s) for s in JobState),
                    stats.by_priority[p.value].ready,
                ]
                for p in Priority
            ],
        )
    )
    if stats.by_target:
        # The capacity column only when a target has a spec.capacity.
        pct = any(t.capacity_pct is not None for t in stats.by_target.values())
        lines.append("")
        lines.append(
            table(
                ["target", *STATES, "ready", "oldest ready", *(["capacity %"] if pct else [])],
                [
                    [
                        name,
                        *(t.count(s) for s in JobState),
                        t.ready,
                        age(t.oldest_ready_age_seconds),
                        *([shown(t.capacity_pct)] if pct else []),
                    ]
                    for name, t in sorted(stats.by_target.items())
                ],
            )
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    async with open_queue() as queue:
        while True:
            stats = await queue.stats()
            body = models.QueueStats.from_record(stats).dump()
            if args.json:
                if args.watch:  # one line per refresh, with the time it was read
                    import datetime as dt
                    import json

                    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
                    print(json.dumps(body | {"time": now.replace("+00:00", "Z")}), flush=True)
                else:
                    emit_json(body)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\033[2J\033[H", end="")
                print(render(stats), flush=True)
            if not args.watch:
                return 0
            await asyncio.sleep(args.watch)
            _stop_if_cancelled()


def _stop_if_cancelled() -> None:
    """Ctrl-C cancels the command; a library that swallows the cancellation (psycopg_pool
    catches CancelledError while it returns a connection) must not keep the watch going."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
