"""``herald tracker list|clear``: a running worker's LRU tracker (the jobs it saw last, in
its memory), through its HTTP API (``--worker URL``; HERALD_API_TOKEN as the bearer
token when set). Each worker replica has its own tracker."""

from __future__ import annotations

import argparse
import os
from typing import Any

import aiohttp

from herald_core.errors import HeraldError
from herald_core.states import JobState
from herald_tools.cli.output import emit_json, print_table

DEFAULT_WORKER = "http://127.0.0.1:8080"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="the jobs a worker saw last, most recent first")
    listing.add_argument("--state", choices=[s.value for s in JobState])
    listing.add_argument("--target", help="name or namespace/name")
    listing.add_argument("--limit", type=int, default=50, help="most jobs shown (1-1000)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    clear = sub.add_parser("clear", help="empty a worker's tracker (lookups then read PostgreSQL)")
    for command in (listing, clear):
        command.add_argument(
            "--worker",
            default=DEFAULT_WORKER,
            metavar="URL",
            help=f"the worker's HTTP API (default {DEFAULT_WORKER}; HERALD_API_TOKEN is sent "
            "as its bearer token when set)",
        )


async def _call(args: argparse.Namespace, method: str, query: dict[str, str]) -> Any:
    url = args.worker.rstrip("/") + "/v1/tracker"
    token = os.environ.get("HERALD_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.request(method, url, params=query, headers=headers) as resp,
        ):
            body = await resp.json(content_type=None)
            if resp.status != 200:
                message = (body.get("error") or {}).get("message") if isinstance(body, dict) else ""
                raise HeraldError(f"the worker at {args.worker} answered {resp.status}: {message}")
            return body
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise HeraldError(
            f"cannot reach the worker at {args.worker} ({type(exc).__name__}); give its HTTP "
            "API with --worker URL"
        ) from None


async def run(args: argparse.Namespace) -> int:
    if args.action == "clear":
        body = await _call(args, "DELETE", {})
        print(f"cleared {body['cleared']} jobs from the tracker of {args.worker}")
        return 0
    query = {"limit": str(args.limit)}
    if args.state:
        query["state"] = args.state
    if args.target:
        query["target"] = args.target
    body = await _call(args, "GET", query)
    if args.json:
        emit_json(body)
        return 0
    print_table(
        ["id", "target", "priority", "state", "attempts", "updated", "last error"],
        [
            [
                j["id"],
                j["target"],
                j["priority"],
                j["state"],
                j["attempts"],
                j["updatedAt"],
                (j.get("lastError") or "")[:60],
            ]
            for j in body["items"]
        ],
        empty=f"the tracker holds no job (size {body['size']} of {body['capacity']})",
    )
    return 0
