"""What the CLI says, worded for the person reading it: a version, help pages that say
what each sub-command does, a target's last problem with its time (and none once it has
recovered), and advice that fits the command."""

from __future__ import annotations

import argparse
from importlib import metadata

import pytest

from herald_queue.queue import Queue
from herald_tools.cli.main import build_parser
from tests.helpers import register, sql_exec
from tests.integration.cli.cli import herald, ok


async def test_version() -> None:
    run = await ok("--version", url=None)
    assert run.out == f"herald {metadata.version('herald')}\n"


def sub_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {
        name: sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }


def test_every_help_page_says_what_its_command_does() -> None:
    def missing(parser: argparse.ArgumentParser, path: str) -> list[str]:
        found = [] if parser.description else [path]
        for name, sub in sub_commands(parser).items():
            found += missing(sub, f"{path} {name}")
        return found

    assert missing(build_parser(), "herald") == [], "help pages without a description"
    replay = sub_commands(sub_commands(build_parser())["dlq"])["replay"]
    assert (
        replay.format_help()
        .split("\n\n")[1]
        .startswith("Put dead letters back on the queue, each once ever.")
    )


@pytest.mark.slow
async def test_targets_list_shows_the_latest_problem_with_its_time(
    db_url: str, queue: Queue
) -> None:
    await register(queue, "hook")

    async def last_error() -> str:
        out = (await ok("targets", "list", url=db_url)).out.splitlines()
        header, row = out[0], out[1]
        return row[header.index("LAST ERROR") :].strip()

    assert await last_error() == ""
    await sql_exec(
        queue,
        "UPDATE herald.targets SET last_error = 'HTTP 422: unprocessable', "
        "last_error_class = 'permanent', last_error_at = '2026-11-20T10:00:00Z'",
    )
    assert await last_error() == "2026-11-20T10:00:00Z HTTP 422: unprocessable"
    await sql_exec(
        queue,
        "UPDATE herald.targets SET auto_paused_reason = 'HTTP 410 Gone', "
        "auto_paused_at = '2026-11-20T10:05:00.5Z'",
    )
    assert await last_error() == "2026-11-20T10:05:00Z paused: HTTP 410 Gone", "the 410 is newer"
    await sql_exec(
        queue,
        "UPDATE herald.targets SET auto_paused_reason = NULL, auto_paused_at = NULL, "
        "last_delivery_at = '2026-11-20T10:10:00Z'",
    )
    assert await last_error() == "", "recovered: a delivery succeeded since"


@pytest.mark.slow
async def test_deleting_or_resuming_an_unknown_target_does_not_advise_applying_it(
    db_url: str,
) -> None:
    for action in ("delete", "resume"):
        run = await herald("targets", action, "nope", url=db_url)
        assert run.error == (
            "herald: error: target 'nope' is not registered: nothing to do (`herald targets "
            "list` shows the registered targets)"
        ), action
    unknown = await herald("enqueue", "--target", "nope", "--payload", "1", url=db_url)
    assert "apply its PublishingTarget" in unknown.error, "enqueueing still says how to fix it"
