"""``herald enqueue``: one job from flags, or JSON lines (the API's body) from stdin."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from herald_core.errors import InvalidRequest
from herald_core.json_depth import MAX_DEPTH_CEILING, deeper_than, too_deep
from herald_model.submission import (
    JobRequest,
    RawPayload,
    check_depth,
    decode_submission,
    parse_job,
)
from herald_tools.cli.context import open_queue, queue_settings
from herald_tools.cli.output import emit_json
from herald_worker.api import models

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


SLACK = 64 * 1024
"""Bytes read beyond HERALD_MAX_PAYLOAD_BYTES: whitespace around a payload, and a JSON
line's other fields (target, keys, runAt). Nothing past that is read."""


def _utf8(data: bytes, field: str, what: str, *, kind: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            field,
            f"{what}is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}): {kind} are UTF-8",
        ) from None


def _payload_text(value: str, max_bytes: int) -> str:
    """``--payload``'s text: the flag itself, or the file it names (``@FILE``), read up to
    the payload limit and no further (``@/dev/zero`` is refused, not read forever)."""
    if not value.startswith("@"):
        return value
    name = value[1:]
    try:
        with Path(name).open("rb") as file:
            data = file.read(max_bytes + SLACK + 1)
    except OSError as exc:
        raise InvalidRequest("--payload", f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > max_bytes + SLACK:
        raise InvalidRequest(
            "--payload",
            f"{name} is larger than the payload limit of {max_bytes} bytes "
            "(HERALD_MAX_PAYLOAD_BYTES); nothing past it was read",
        )
    return _utf8(data, "--payload", f"{name} ", kind="JSON payloads")


def _from_flags(args: argparse.Namespace, max_bytes: int, max_depth: int) -> list[JobRequest]:
    text = _payload_text(args.payload, max_bytes)
    check_depth(text, max_depth, "--payload")  # before decoding: decoding recurses
    try:  # sent as given, less the whitespace around it (a file's last newline)
        payload = RawPayload(text.strip(" \t\r\n"), json.loads(text))
    except json.JSONDecodeError as exc:
        raise InvalidRequest("--payload", f"is not valid JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - check_depth refused it first
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
        return [parse_job(body, max_payload_bytes=max_bytes, max_payload_depth=max_depth)]
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


def _lines(stream: BinaryIO, max_line: int) -> Iterator[tuple[int, str]]:
    """The lines of ``stream`` (bytes, decoded as UTF-8 whatever the locale), numbered; a
    line longer than ``max_line`` bytes is refused without reading the rest of it."""
    for number in itertools.count(1):
        line = stream.readline(max_line + 1)
        if not line:
            return
        if len(line) > max_line:
            raise InvalidRequest(
                f"stdin line {number}",
                f"is longer than {max_line} bytes (a job whose payload is at most "
                "HERALD_MAX_PAYLOAD_BYTES, with its other fields)",
            )
        yield number, _utf8(line, f"stdin line {number}", "", kind="JSON lines")


def _from_stdin(stream: BinaryIO, max_bytes: int, max_depth: int) -> list[JobRequest]:
    requests = []
    for number, line in _lines(stream, max_bytes + SLACK):
        if not line.strip():
            continue
        where = f"stdin line {number}"
        depth = deeper_than(line, MAX_DEPTH_CEILING + 1)
        if depth is not None:  # before decoding (it recurses); parse_job is exact
            raise InvalidRequest(where, too_deep(depth, max_depth))
        try:  # stripped: the error's position is then "line 1 column N" of this line
            body = decode_submission(line.strip())
        except json.JSONDecodeError as exc:
            raise InvalidRequest(where, f"is not valid JSON: {exc}") from None
        except RecursionError:  # pragma: no cover - refused above
            raise InvalidRequest(where, "is nested too deeply") from None
        requests.append(
            parse_job(
                body,
                max_payload_bytes=max_bytes,
                max_payload_depth=max_depth,
                prefix=f"line {number}: ",
            )
        )
    if not requests:
        raise InvalidRequest("stdin", "no jobs: give --target and --payload, or JSON lines")
    return requests


async def run(args: argparse.Namespace) -> int:
    settings = queue_settings()
    max_bytes, max_depth = settings.max_payload_bytes, settings.max_payload_depth
    if args.payload is not None or args.target is not None:
        if args.payload is None or args.target is None:
            raise InvalidRequest(
                "--target/--payload", "give both, or neither and JSON lines on stdin"
            )
        requests = _from_flags(args, max_bytes, max_depth)
    else:
        if sys.stdin.isatty():
            raise InvalidRequest("stdin", "give --target and --payload, or pipe JSON lines in")
        requests = _from_stdin(sys.stdin.buffer, max_bytes, max_depth)
    async with open_queue() as queue:
        for target in {r.target for r in requests}:  # every target exists before writing
            await queue.registry.resolve(target)
        results = []
        for start in range(0, len(requests), BATCH):
            results += await queue.jobs.enqueue_many(requests[start : start + BATCH])
    if args.json:
        accepted = [models.JobAccepted.from_record(r).dump() for r in results]
        emit_json(accepted[0] if len(results) == 1 and args.payload else accepted)
    elif len(results) == 1:
        r = results[0]
        print(f"{r.id} {r.state.value} -> {r.target}" + ("" if r.created else " (duplicate)"))
    else:
        dupes = sum(1 for r in results if not r.created)
        print(f"enqueued {len(results) - dupes} jobs" + (f", {dupes} duplicates" if dupes else ""))
    return 0
