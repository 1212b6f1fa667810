"""``herald jobs show|list|cancel``."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from typing import Any

from herald_core.errors import InvalidRequest
from herald_core.states import JobState
from herald_model.submission import parse_priority
from herald_queue.records import AttemptPage, iso
from herald_tools.cli.context import open_queue
from herald_tools.cli.output import emit_json, next_page, print_table, shown
from herald_worker.api import models


def job_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a job id (a UUID)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="one job, with its payload and its attempts")
    show.add_argument("id", type=job_id)
    show.add_argument(
        "--attempts",
        type=int,
        default=100,
        metavar="N",
        help="attempts shown, oldest first (1-1000; default 100)",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    listing = sub.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--state", choices=[s.value for s in JobState])
    listing.add_argument("--target", help="name or namespace/name")
    listing.add_argument("--priority", help="high, medium or low")
    listing.add_argument("--limit", type=int, default=50, help="page size (1-1000)")
    listing.add_argument("--cursor", help="nextCursor of the previous page")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    cancel = sub.add_parser("cancel", help="cancel waiting jobs (they become dead letters)")
    cancel.add_argument("ids", type=job_id, nargs="+", metavar="ID")


async def run(args: argparse.Namespace) -> int:
    if args.action == "show" and not 1 <= args.attempts <= 1000:
        raise InvalidRequest("attempts", f"must be from 1 to 1000, got {args.attempts}")
    async with open_queue() as queue:
        if args.action == "show":
            record = await queue.jobs.get(args.id)
            history = await queue.attempts.page(args.id, limit=args.attempts)
            if record is None and history is None:
                raise InvalidRequest(
                    "id",
                    f"no job {args.id} (finished jobs are kept for "
                    "HERALD_JOB_RETENTION, their attempts for HERALD_ATTEMPT_RETENTION; see "
                    "`herald dlq list`)",
                )
            body: dict[str, Any] = (
                models.Job.from_record(record).dump() if record else {"id": str(args.id)}
            )
            if history is not None:
                body["attemptHistory"] = models.AttemptPage.from_record(args.id, history).dump()
            if args.json:
                emit_json(body)
            else:
                if record is None:
                    print(f"job {args.id}: past HERALD_JOB_RETENTION; its attempts on record:")
                for key, value in body.items():
                    if key != "attemptHistory":
                        print(f"{key:22} {shown(value)}")
                print_attempts(history)
        elif args.action == "list":
            priority = parse_priority(args.priority) if args.priority else None
            page = await queue.jobs.page(
                state=JobState(args.state) if args.state else None,
                target=args.target,
                priority=priority,
                cursor=args.cursor,
                limit=args.limit,
            )
            if args.json:
                emit_json(models.JobPage.from_record(page).dump())
            else:
                now = dt.datetime.now(dt.UTC)
                print_table(
                    ["id", "target", "priority", "state", "attempts", "age", "last error"],
                    [
                        [
                            r.id,
                            r.target,
                            r.priority.value,
                            r.state.value,
                            r.attempts,
                            f"{(now - r.created_at).total_seconds():.0f}s",
                            (r.last_error or "")[:50],
                        ]
                        for r in page.items
                    ],
                    empty="no jobs",
                )
                if page.next_cursor:
                    options = [
                        ("--state", args.state),
                        ("--target", args.target),
                        ("--priority", args.priority),
                        ("--limit", args.limit),
                    ]
                    print("\n" + next_page("herald jobs list", options, page.next_cursor))
        else:
            cancelled = await queue.jobs.cancel(args.ids)
            missing = set(args.ids) - set(cancelled)
            for i in cancelled:
                print(
                    f"{i} cancelled (now a dead letter, reason cancelled; only "
                    f"`herald dlq replay --job-id {i}` puts it back)"
                )
            if missing:
                raise InvalidRequest(
                    "id",
                    "not waiting (running, finished or unknown), not "
                    "cancelled: " + ", ".join(map(str, sorted(missing))),
                )
    return 0


def print_attempts(history: AttemptPage | None) -> None:
    """A job's attempts as a table (``herald jobs show``, ``herald dlq show``)."""
    print("\nattempts")
    if history is None:
        print("none on record")
        return
    print_table(
        ["#", "decision", "recorded at", "worker", "status", "took", "error / answer", "retry at"],
        [
            [
                a.attempt,
                a.decision,
                iso(a.recorded_at),
                a.worker or "-",
                a.http_status if a.http_status is not None else "-",
                "-" if a.duration is None else f"{a.duration * 1000:.0f}ms",
                ((a.message or a.response or "-").replace("\n", " "))[:60],
                iso(a.retry_at) or "-",
            ]
            for a in history.items
        ],
        empty="none on record",
    )
    if history.next_cursor:
        print(
            "more: GET /v1/jobs/{id}/attempts?cursor="
            + history.next_cursor
            + " (or a larger --attempts)"
        )
