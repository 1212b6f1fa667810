"""``herald dlq list|show|replay|purge|stats``."""

from __future__ import annotations

import argparse
import uuid

from herald_core.durations import parse_duration
from herald_core.errors import InvalidRequest
from herald_core.states import ErrorClass, Priority
from herald_model.submission import parse_time
from herald_queue.dead_letters import DeadLetterFilter, one_off_tag
from herald_queue.records import iso
from herald_tools.cli.context import open_queue
from herald_tools.cli.jobs_cmd import job_id, print_attempts
from herald_tools.cli.output import emit_json, next_page, plural, print_table, shown
from herald_worker.api import models
from herald_worker.api.dead_letters import HISTORY_PAGE

REPLAY_LIMIT = 1_000_000


def duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def entry_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a dead-letter id (a UUID)") from None


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="namespace/name, or a name (any namespace)")
    parser.add_argument("--error-class", choices=[c.value for c in ErrorClass])
    parser.add_argument("--priority", choices=[p.value for p in Priority])
    parser.add_argument("--failed-after", metavar="TIME", help="RFC 3339, inclusive")
    parser.add_argument("--failed-before", metavar="TIME", help="RFC 3339, exclusive")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="dead letters, newest first")
    _filters(listing)
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--replayed", action="store_true", default=None, help="only replayed")
    state.add_argument(
        "--not-replayed", dest="replayed", action="store_false", help="only those not replayed yet"
    )
    listing.add_argument("--limit", type=int, default=50, help="page size (1-1000)")
    listing.add_argument("--cursor", help="nextCursor of the previous page")
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    show = sub.add_parser("show", help="one dead letter, with payload and target config")
    show.add_argument("id", type=entry_id, help="dead-letter id")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    replay = sub.add_parser(
        "replay",
        help="put dead letters back on the queue (once each)",
        description="Put dead letters back on the queue, each once ever. Cancelled jobs are "
        "replayed only when named by id (dead-letter ID or --job-id), never by filters or "
        "--all. A job that died before its runAt still waits for it.",
    )
    replay.add_argument("ids", type=entry_id, nargs="*", metavar="ID", help="dead-letter ids")
    _filters(replay)
    replay.add_argument(
        "--job-id",
        type=job_id,
        action="append",
        dest="job_ids",
        help="replay the dead letters of this job (repeatable)",
    )
    replay.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    replay.add_argument(
        "--all",
        action="store_true",
        help="required to replay without ids or filters (cancelled jobs are still left out)",
    )
    replay.add_argument("--dry-run", action="store_true", help="only count what would be replayed")
    replay.add_argument("--json", action="store_true", help="machine-readable output")

    purge = sub.add_parser("purge", help="delete dead letters older than a duration")
    purge.add_argument(
        "--older-than", type=duration, required=True, metavar="DURATION", help="e.g. 30d, 12h, 90m"
    )
    purge.add_argument("--target", help="only this target (namespace/name or name)")
    purge.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    purge.add_argument("--json", action="store_true", help="machine-readable output")

    stats = sub.add_parser("stats", help="dead letters by target, error class and priority")
    stats.add_argument("--json", action="store_true", help="machine-readable output")


def _where(args: argparse.Namespace, *, ids: list[uuid.UUID] | None = None) -> DeadLetterFilter:
    return DeadLetterFilter(
        target=args.target,
        error_class=ErrorClass(args.error_class) if args.error_class else None,
        priority=Priority(args.priority) if args.priority else None,
        failed_after=parse_time(args.failed_after, "--failed-after") if args.failed_after else None,
        failed_before=(
            parse_time(args.failed_before, "--failed-before") if args.failed_before else None
        ),
        replayed=getattr(args, "replayed", None),
        ids=tuple(ids) if ids else None,
        job_ids=tuple(args.job_ids) if getattr(args, "job_ids", None) else None,
    )


async def run(args: argparse.Namespace) -> int:
    async with open_queue() as queue:
        store = queue.dead_letters
        if args.action == "list":
            page = await store.list(_where(args), limit=args.limit, cursor=args.cursor)
            if args.json:
                emit_json(models.DeadLetterPage.from_record(page, with_payload=True).dump())
                return 0
            print_table(
                ["id", "target", "class", "reason", "attempts", "failed at", "replayed", "error"],
                [
                    [
                        d.id,
                        d.target,
                        d.error_class.value,
                        d.reason,
                        d.attempts,
                        iso(d.failed_at),
                        "yes" if d.replayed else "no",
                        d.error[:50],
                    ]
                    for d in page.items
                ],
                empty="no dead letters",
            )
            if page.next_cursor:
                options = [
                    ("--target", args.target),
                    ("--error-class", args.error_class),
                    ("--priority", args.priority),
                    ("--failed-after", args.failed_after),
                    ("--failed-before", args.failed_before),
                    ("--replayed", args.replayed is True),
                    ("--not-replayed", args.replayed is False),
                    ("--limit", args.limit),
                ]
                print("\n" + next_page("herald dlq list", options, page.next_cursor))
        elif args.action == "show":
            entry = await store.get(args.id)
            if entry is None:
                raise InvalidRequest("id", f"no dead letter {args.id}")
            history = await queue.attempts.page(entry.job_id, limit=HISTORY_PAGE)
            body = models.DeadLetter.from_record(entry, history=history).dump()
            if args.json:
                emit_json(body)
            else:
                for key, value in body.items():
                    if key != "attemptHistory":
                        print(f"{key:16} {shown(value)}")
                print_attempts(history)
        elif args.action == "replay":
            where = _where(args, ids=args.ids)
            selected = any(
                [
                    args.ids,
                    args.target,
                    args.error_class,
                    args.priority,
                    args.failed_after,
                    args.failed_before,
                    args.job_ids,
                ]
            )
            if not 1 <= args.limit <= REPLAY_LIMIT:  # as the API's; beyond bigint, a traceback
                raise InvalidRequest(
                    "--limit", f"must be from 1 to {REPLAY_LIMIT}, got {args.limit}"
                )
            if not selected and not args.all:
                raise InvalidRequest(
                    "replay",
                    "give dead-letter ids or filters, or --all to replay every dead letter",
                )
            result = await store.replay(
                where, limit=args.limit, dry_run=args.dry_run, replayed_by=one_off_tag("cli")
            )
            if not args.dry_run and result.replayed == 0 and (args.ids or args.job_ids):
                # As the API's 404/409: named by id, and none could be replayed.
                await store.explain_nothing_replayed(args.ids or [], args.job_ids or [], result)
            if args.json:
                emit_json(models.ReplayResult.from_record(result).dump())
            else:
                if args.dry_run:
                    line = f"would replay {plural(result.replayed, 'dead letter')}"
                    if result.skipped:
                        line += f"; {result.skipped} have no target any more"
                else:
                    line = f"replayed {plural(result.replayed, 'dead letter')}"
                    if result.skipped:
                        line += f"; skipped {result.skipped} whose target no longer exists"
                if result.cancelled_left_out:
                    line += (
                        f"; left out {result.cancelled_left_out} cancelled job(s) (replay a "
                        "cancelled job by naming it: herald dlq replay ID, or --job-id JOB)"
                    )
                print(line)
        elif args.action == "purge":
            purged = await store.purge(args.older_than, target=args.target, dry_run=args.dry_run)
            if args.json:
                emit_json(models.Purged.from_record(purged).dump())
            elif args.dry_run:
                print(
                    f"would delete {plural(purged.matched, 'dead letter')} that failed before "
                    f"{iso(purged.cutoff.replace(microsecond=0))}"
                )
            else:
                print(
                    f"deleted {plural(purged.deleted, 'dead letter')} that failed before "
                    f"{iso(purged.cutoff.replace(microsecond=0))}"
                )
        else:
            stats = await store.stats()
            if args.json:
                emit_json(models.DeadLetterStats.from_record(stats).dump())
            else:
                print(f"dead letters: {stats.waiting} waiting, {stats.replayed} replayed")
                print_table(["target", "waiting"], sorted(stats.by_target.items()), empty="")
                print_table(
                    ["error class", "waiting"], sorted(stats.by_error_class.items()), empty=""
                )
    return 0
