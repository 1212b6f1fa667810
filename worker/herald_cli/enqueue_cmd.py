"""``herald enqueue``: one job from flags, or JSON lines (the API's body) from stdin."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from herald_cli.context import open_queue, queue_settings
from herald_cli.output import emit_json
from herald_queue.errors import InvalidRequest
from herald_queue.requests import JobRequest, RawPayload, decode_submission, parse_job

BATCH = 5000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Submit one job with --target and --payload, or, without them, many jobs as JSON "
        'lines on stdin, each shaped like the API\'s POST /v1/jobs body: {"target": ..., '
        '"payload": ..., "priority": ..., "idempotencyKey": ..., "orderingKey": ..., '
        '"runAt": ...}. Every line is checked before anything is written.'
    )
    parser.add_argument("--target", help="PublishingTarget name or namespace/name")
    parser.add_argument("--payload", help="the payload as JSON, or @FILE to read it from a file")
    parser.add_argument("--priority", default="medium", help="high, medium (default) or low")
    parser.add_argument("--idempotency-key", help="a duplicate enqueue returns the existing job")
    parser.add_argument(
        "--ordering-key", help="jobs sharing it are delivered one at a time, in order"
    )
    parser.add_argument("--run-at", help="not before this RFC 3339 time")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _payload_text(value: str) -> str:
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text("utf-8")
        except OSError as exc:
            raise InvalidRequest("--payload", f"cannot read {value[1:]}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                "--payload",
                f"{value[1:]} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                f"{exc.start}): JSON payloads are UTF-8",
            ) from None
    return value


def _from_flags(args: argparse.Namespace, max_bytes: int) -> list[JobRequest]:
    text = _payload_text(args.payload)
    try:  # sent as given, less the whitespace around it (a file's last newline)
        payload = RawPayload(text.strip(" \t\r\n"), json.loads(text))
    except json.JSONDecodeError as exc:
        raise InvalidRequest("--payload", f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("--payload", "is nested too deeply") from None
    body: dict[str, Any] = {"target": args.target, "payload": payload, "priority": args.priority}
    for flag, field in (
        ("idempotency_key", "idempotencyKey"),
        ("ordering_key", "orderingKey"),
        ("run_at", "runAt"),
    ):
        if getattr(args, flag) is not None:
            body[field] = getattr(args, flag)
    try:
        return [parse_job(body, max_payload_bytes=max_bytes)]
    except InvalidRequest as exc:
        flag = {
            "target": "--target",
            "payload": "--payload",
            "priority": "--priority",
            "idempotencyKey": "--idempotency-key",
            "orderingKey": "--ordering-key",
            "runAt": "--run-at",
        }.get(exc.field, exc.field)
        raise InvalidRequest(flag, exc.problem) from None


def _from_stdin(max_bytes: int) -> list[JobRequest]:
    requests = []
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:  # stripped: the error's position is then "line 1 column N" of this line
            body = decode_submission(line.strip())
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"stdin line {number}", f"is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidRequest(f"stdin line {number}", "is nested too deeply") from None
        requests.append(parse_job(body, max_payload_bytes=max_bytes, prefix=f"line {number}: "))
    if not requests:
        raise InvalidRequest("stdin", "no jobs: give --target and --payload, or JSON lines")
    return requests


async def run(args: argparse.Namespace) -> int:
    max_bytes = queue_settings().max_payload_bytes
    if args.payload is not None or args.target is not None:
        if args.payload is None or args.target is None:
            raise InvalidRequest(
                "--target/--payload", "give both, or neither and JSON lines on stdin"
            )
        requests = _from_flags(args, max_bytes)
    else:
        if sys.stdin.isatty():
            raise InvalidRequest("stdin", "give --target and --payload, or pipe JSON lines in")
        requests = _from_stdin(max_bytes)
    async with open_queue() as queue:
        for target in {r.target for r in requests}:  # every target exists before writing
            await queue.registry.resolve(target)
        results = []
        for start in range(0, len(requests), BATCH):
            results += await queue.jobs.enqueue_many(requests[start : start + BATCH])
    if args.json:
        emit_json(
            results[0].to_json()
            if len(results) == 1 and args.payload
            else [r.to_json() for r in results]
        )
    elif len(results) == 1:
        r = results[0]
        print(f"{r.id} {r.state.value} -> {r.target}" + ("" if r.created else " (duplicate)"))
    else:
        dupes = sum(1 for r in results if not r.created)
        print(f"enqueued {len(results) - dupes} jobs" + (f", {dupes} duplicates" if dupes else ""))
    return 0
