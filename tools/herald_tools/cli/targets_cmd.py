"""``herald targets apply PATH`` / ``list`` / ``delete`` / ``resume`` / ``enable``."""

from __future__ import annotations

import argparse
import sys

from herald_core.errors import HeraldError, InvalidTarget
from herald_model import manifests
from herald_queue.records import TargetRow, iso
from herald_tools.cli.context import egress_policy, open_queue, queue_settings
from herald_tools.cli.output import emit_json, print_table
from herald_worker.api import models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    apply = sub.add_parser("apply", help="register the PublishingTargets in a file or directory")
    apply.add_argument("path", metavar="PATH", help="a YAML/JSON file or a directory of them")
    apply.add_argument("-R", "--recursive", action="store_true", help="descend into directories")
    apply.add_argument("--json", action="store_true", help="machine-readable output")
    listing = sub.add_parser("list", help="registered targets with their circuit and counters")
    listing.add_argument("--namespace", help="only this namespace")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    delete = sub.add_parser("delete", help="remove a target; its waiting jobs go to the DLQ")
    delete.add_argument("target", metavar="TARGET", help="name or namespace/name")
    resume = sub.add_parser("resume", help="resume a target paused after 410 Gone")
    resume.add_argument("target", metavar="TARGET", help="name or namespace/name")
    enable = sub.add_parser(
        "enable", help="bring back a target disabled after failing for days (HERALD_DISABLE_AFTER)"
    )
    enable.add_argument("target", metavar="TARGET", help="name or namespace/name")


def last_problem(t: TargetRow) -> str:
    """The LAST ERROR column: the latest failure or 410 pause, with its time, unless a
    delivery succeeded since (then the target has recovered and the column is empty)."""
    events = []
    if t.last_error is not None and t.last_error_at is not None:
        events.append((t.last_error_at, t.last_error))
    if t.auto_paused_reason is not None and t.auto_paused_at is not None:
        events.append((t.auto_paused_at, f"paused: {t.auto_paused_reason}"))
    if not events:
        return ""
    when, text = max(events, key=lambda e: e[0])
    if t.last_delivery_at is not None and t.last_delivery_at > when:
        return ""
    return f"{iso(when.replace(microsecond=0))} {text[:60]}"


def paused_column(t: TargetRow) -> str:
    if t.paused:
        return "yes"
    if t.disabled:
        return "disabled"
    return "410 gone" if t.auto_paused_reason else "no"


async def run(args: argparse.Namespace) -> int:
    if args.action == "apply":
        return await _apply(args)
    async with open_queue() as queue:
        if args.action == "list":
            targets = await queue.registry.list(namespace=args.namespace)
            if args.json:
                emit_json([models.Target.from_record(t).dump() for t in targets])
            else:
                print_table(
                    ["target", "type", "paused", "circuit", "delivered", "dead", "last error"],
                    [
                        [
                            t.ref,
                            t.type,
                            paused_column(t),
                            t.circuit_state.value,
                            t.delivered_total,
                            t.dead_lettered_total,
                            last_problem(t),
                        ]
                        for t in targets
                    ],
                    empty="no targets registered (herald targets apply PATH)",
                )
        elif args.action == "delete":
            result = await queue.registry.delete(args.target)
            if result.deleted:
                print(
                    f"deleted {args.target}; {result.dead_lettered} waiting jobs moved to the "
                    "dead-letter queue (reason target-deleted)"
                )
            else:
                print(
                    f"{args.target}: {result.running} deliveries still in flight; "
                    f"{result.dead_lettered} waiting jobs moved to the dead-letter queue. "
                    "Run the command again once they finish.",
                    file=sys.stderr,
                )
                return 1
        elif args.action == "enable":
            if not await queue.registry.enable(args.target):
                raise HeraldError(
                    f"{args.target} is not disabled, nothing done (`herald targets list` "
                    "shows whether a target is paused, gone or disabled)"
                )
            print(f"enabled {args.target}: its jobs are delivered again")
        else:
            await queue.registry.resume(args.target)
            print(f"resumed {args.target}")
    return 0


async def _apply(args: argparse.Namespace) -> int:
    found = manifests.load(
        args.path,
        egress=egress_policy(),
        default_namespace=queue_settings().default_namespace,
        recursive=args.recursive,
    )
    for line in found.skipped:
        print(f"skipped {line}: not a PublishingTarget", file=sys.stderr)
    if not found.targets:
        raise InvalidTarget(f"no PublishingTarget in {args.path}")
    async with open_queue() as queue:
        results = await queue.registry.apply_many(found.targets)
    if args.json:
        emit_json([{"target": r.ref, "created": r.created} for r in results])
    else:
        for r in results:
            print(f"publishingtarget {r.ref} {'created' if r.created else 'configured'}")
    return 0
