"""Every command, and the start-up of ``herald worker`` and ``herald operator``, against
hostile input: files that are not UTF-8, nesting 1,500 deep, NUL bytes (in files and on
stdin: argv cannot carry one), bad flags and settings, an unreachable database, an
occupied port, no Kubernetes credentials. Each ends with a non-zero exit status and one
line on stderr (``herald: error: ...``); no traceback ever reaches the user.

The processes run with ``--log-level WARNING``: their INFO lines (listening, connecting)
are not errors, and a start-up that fails must not need a warning to explain itself.
(A worker or operator whose database is unreachable waits for it, by design: that is
not an error, so it is not here; see tests/integration/worker/test_database_outage.py.)"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from herald_queue.queue import Queue
from tests.helpers import register
from tests.integration.cli.cli import EXAMPLES, Run, closed_port, herald, json_lines

TRACEBACK = "Traceback (most recent call last)"
DEPTH = 1500


def deep_list(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture()
def hostile(tmp_path: Path) -> dict[str, Path]:
    """Files a careless or hostile user hands Herald."""
    files = {
        "latin1": tmp_path / "latin1.json",
        "binary": tmp_path / "binary.yaml",
        "deep_yaml": tmp_path / "deep.yaml",
        "deep_json": tmp_path / "deep.json",
        "nul_name": tmp_path / "nul-name.yaml",
        "nul_header": tmp_path / "nul-header.yaml",
        "absent": tmp_path / "absent.yaml",
        "kubeconfig": tmp_path / "kubeconfig",
    }
    files["latin1"].write_bytes(b'{"name": "Ren\xe9"}')
    files["binary"].write_bytes(b"\xff\xfe\x00\x01kind: PublishingTarget\n")
    head = "apiVersion: herald.dev/v1alpha1\nkind: PublishingTarget\nmetadata: {name: deep}\n"
    files["deep_yaml"].write_text(f"{head}spec: {{type: webhook, headers: {deep_list()}}}\n")
    files["deep_json"].write_text(
        json.dumps({"kind": "PublishingTarget", "x": 0})[:-2] + "[" * DEPTH
    )
    files["nul_name"].write_text(
        "apiVersion: herald.dev/v1alpha1\nkind: PublishingTarget\n"
        'metadata: {name: "a\\0b"}\nspec: {type: webhook, url: "http://127.0.0.1:9/"}\n'
    )
    files["nul_header"].write_text(
        "apiVersion: herald.dev/v1alpha1\nkind: PublishingTarget\nmetadata: {name: nulls}\n"
        'spec: {type: webhook, url: "http://127.0.0.1:9/", headers: {X-A: "a\\0b"}}\n'
    )
    files["kubeconfig"].write_text("clusters: [\n")
    return files


@pytest.fixture()
def occupied() -> Iterator[int]:
    """A port of 0.0.0.0 that something listens on."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield int(s.getsockname()[1])


def cases(
    db_url: str, files: dict[str, Path], port: int, *, dry: bool = False
) -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """(what, argv, herald() keywords) for every command (``dry``: without the files)."""
    if dry:
        files = collections.defaultdict(lambda: Path("-"))
    down = f"postgresql://herald:pw@127.0.0.1:{closed_port()}/herald"
    nobody = str(uuid.UUID(int=1))
    ok_target = str(EXAMPLES / "webhook-target.yaml")
    db: dict[str, Any] = {"url": db_url}
    unreachable: dict[str, Any] = {"url": down}
    no_worker = f"http://127.0.0.1:{closed_port()}"
    worker_env = {"HERALD_HTTP_HOST": "127.0.0.1", "HERALD_HTTP_PORT": str(closed_port())}
    process = ("--log-level", "WARNING")
    no_kube = {"KUBECONFIG": str(files["kubeconfig"]), "KUBERNETES_SERVICE_HOST": ""}
    operator_env = {
        "HERALD_OPERATOR_METRICS_PORT": str(closed_port()),
        "HERALD_OPERATOR_HEALTH_PORT": str(closed_port()),
        **no_kube,
    }
    return [
        # the command line itself
        ("no command", (), db),
        ("unknown command", ("frobnicate",), db),
        ("bad log level", ("--log-level", "LOUD", "stats"), db),
        # migrate
        ("migrate: bad flag", ("migrate", "--bogus"), db),
        ("migrate: unreachable", ("migrate",), unreachable),
        ("migrate: bad setting", ("migrate",), {**db, "env": {"HERALD_DB_CONNECT_TIMEOUT": "x"}}),
        # targets
        ("apply: not UTF-8", ("targets", "apply", str(files["binary"])), db),
        ("apply: 1,500 deep YAML", ("targets", "apply", str(files["deep_yaml"])), db),
        ("apply: 1,500 deep JSON", ("targets", "apply", str(files["deep_json"])), db),
        ("apply: NUL in a name", ("targets", "apply", str(files["nul_name"])), db),
        ("apply: NUL in a header", ("targets", "apply", str(files["nul_header"])), db),
        ("apply: no such file", ("targets", "apply", str(files["absent"])), db),
        ("apply: unreachable", ("targets", "apply", ok_target), unreachable),
        ("list: bad flag", ("targets", "list", "--namespace"), db),
        ("list: unreachable", ("targets", "list"), unreachable),
        ("delete: unknown", ("targets", "delete", "nope"), db),
        ("resume: unknown", ("targets", "resume", "default/nope"), db),
        ("resume: unreachable", ("targets", "resume", "nope"), unreachable),
        ("enable: unknown", ("targets", "enable", "default/nope"), db),
        ("enable: not disabled", ("targets", "enable", "hook"), db),
        ("enable: unreachable", ("targets", "enable", "nope"), unreachable),
        # tracker (a worker's HTTP API)
        ("tracker list: no worker", ("tracker", "list", "--worker", no_worker), db),
        ("tracker list: not a URL", ("tracker", "list", "--worker", "::nope"), db),
        ("tracker list: bad limit", ("tracker", "list", "--limit", "x"), db),
        ("tracker clear: no worker", ("tracker", "clear", "--worker", no_worker), db),
        # enqueue
        (
            "enqueue: @file not UTF-8",
            ("enqueue", "--target", "hook", "--payload", f"@{files['latin1']}"),
            db,
        ),
        (
            "enqueue: @file absent",
            ("enqueue", "--target", "hook", "--payload", f"@{files['absent']}"),
            db,
        ),
        ("enqueue: NUL payload", ("enqueue", "--target", "hook", "--payload", '"a\\u0000b"'), db),
        (
            "enqueue: deep payload",
            ("enqueue", "--target", "hook", "--payload", deep_list()),
            db,
        ),
        ("enqueue: stdin not UTF-8", ("enqueue",), {**db, "stdin": b"\xff\xfe{}\n"}),
        ("enqueue: stdin deep", ("enqueue",), {**db, "stdin": deep_list(100_000) + "\n"}),
        (
            "enqueue: stdin NUL key",
            ("enqueue",),
            {**db, "stdin": json_lines([{"target": "hook", "payload": 1, "idempotencyKey": "\0"}])},
        ),
        ("enqueue: unknown target", ("enqueue", "--target", "nope", "--payload", "1"), db),
        (
            "enqueue: bad run-at",
            ("enqueue", "--target", "hook", "--payload", "1", "--run-at", "soon"),
            db,
        ),
        ("enqueue: unreachable", ("enqueue", "--target", "hook", "--payload", "1"), unreachable),
        # events
        ("events send: bad type", ("events", "send", "--type", "a..*", "--payload", "1"), db),
        (
            "events send: @file not UTF-8",
            ("events", "send", "--type", "a", "--payload", f"@{files['latin1']}"),
            db,
        ),
        (
            "events send: deep payload",
            ("events", "send", "--type", "a", "--payload", deep_list()),
            db,
        ),
        (
            "events send: id too long",
            ("events", "send", "--type", "a", "--payload", "1", "--id", "x" * 300),
            db,
        ),
        (
            "events send: unreachable",
            ("events", "send", "--type", "a", "--payload", "1"),
            unreachable,
        ),
        # jobs
        ("jobs show: not an id", ("jobs", "show", "../../etc/passwd"), db),
        ("jobs show: no such job", ("jobs", "show", nobody), db),
        ("jobs list: bad limit", ("jobs", "list", "--limit", "0"), db),
        ("jobs list: bad state", ("jobs", "list", "--state", "gone"), db),
        ("jobs cancel: not an id", ("jobs", "cancel", "x"), db),
        ("jobs list: unreachable", ("jobs", "list"), unreachable),
        # stats
        ("stats: bad interval", ("stats", "--watch", "-1"), db),
        ("stats: NaN interval", ("stats", "--watch", "nan"), db),
        ("stats: unreachable", ("stats",), unreachable),
        ("stats: malformed URL", ("stats",), {"url": "not a url"}),
        # dlq
        ("dlq list: bad time", ("dlq", "list", "--failed-after", "yesterday"), db),
        ("dlq show: not an id", ("dlq", "show", "42"), db),
        ("dlq show: no such letter", ("dlq", "show", nobody), db),
        ("dlq replay: no selector", ("dlq", "replay"), db),
        ("dlq purge: bad duration", ("dlq", "purge", "--older-than", "forever"), db),
        ("dlq stats: unreachable", ("dlq", "stats"), unreachable),
        # db
        ("db: bad action", ("db", "bogus"), db),
        ("db status: unreachable", ("db", "status"), unreachable),
        ("db stop: not embedded", ("db", "stop"), db),
        # demo and bench
        ("demo: too few jobs", ("demo", "--jobs", "-5"), db),
        ("demo: malformed URL", ("demo", "--database-url", "not a url"), db),
        # receive
        ("receive: port in use", ("receive", "--port", str(port)), db),
        ("receive: bad port", ("receive", "--port", "70000"), db),
        ("receive: bad status", ("receive", "--status", "99"), db),
        ("bench: malformed URL", ("bench", "--quick", "--database-url", "not a url"), db),
        ("bench: unreachable", ("bench", "--quick", "--database-url", down), db),
        # herald worker's start-up
        (
            "worker: port in use",
            (*process, "worker"),
            {**db, "env": {"HERALD_HTTP_HOST": "0.0.0.0", "HERALD_HTTP_PORT": str(port)}},
        ),
        ("worker: bad setting", (*process, "worker"), {**db, "env": {"HERALD_CONCURRENCY": "-"}}),
        (
            "worker: targets not UTF-8",
            (*process, "worker", "--targets", str(files["binary"])),
            {**db, "env": worker_env},
        ),
        (
            "worker: targets 1,500 deep",
            (*process, "worker", "--targets", str(files["deep_yaml"])),
            {**db, "env": worker_env},
        ),
        (
            "worker: NUL in a header",
            (*process, "worker", "--targets", str(files["nul_header"])),
            {**db, "env": worker_env},
        ),
        (
            "worker: no such targets",
            (*process, "worker", "--targets", str(files["absent"])),
            {**db, "env": worker_env},
        ),
        # herald operator's start-up
        (
            "operator: metrics port in use",
            (*process, "operator"),
            {**db, "env": {**operator_env, "HERALD_OPERATOR_METRICS_PORT": str(port)}},
        ),
        (
            "operator: health port in use",
            (*process, "operator"),
            {**db, "env": {**operator_env, "HERALD_OPERATOR_HEALTH_PORT": str(port)}},
        ),
        ("operator: no Kubernetes", (*process, "operator"), {**db, "env": operator_env}),
        (
            "operator: bad setting",
            (*process, "operator"),
            {**db, "env": {**operator_env, "HERALD_SCALE_MIN": "many"}},
        ),
    ]


# Some sixty interpreters, four at a time, each bounded (90 s): about 40 s on a quiet
# machine, 160 s on a loaded 2-core one; the suite's 120 s default would cut it short.
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_no_command_lets_a_traceback_through(
    db_url: str, queue: Queue, hostile: dict[str, Path], occupied: int
) -> None:
    await register(queue, "hook")
    table = cases(db_url, hostile, occupied)
    limit = asyncio.Semaphore(4)  # a 2-core CI box: a few interpreters at a time

    async def one(args: tuple[str, ...], kw: dict[str, Any]) -> Run:
        async with limit:
            return await herald(*args, timeout=90, **kw)

    runs = await asyncio.gather(*(one(args, kw) for _, args, kw in table))
    problems = []
    for (what, args, _), run in zip(table, runs, strict=True):
        if TRACEBACK in run.err or TRACEBACK in run.out:
            problems.append(f"{what}: a traceback: {run.err[-600:]!r}")
            continue
        lines = run.err.strip().splitlines()
        if run.code == 0 or len(lines) != 1 or not lines[0].startswith("herald: error: "):
            problems.append(f"{what} (herald {' '.join(args)[:80]}): exit {run.code}, {lines!r}")
    assert not problems, "\n".join(problems)
    # Nothing hostile was stored.
    assert [t.name for t in await queue.registry.list()] == ["hook"]


def commands() -> set[tuple[str, ...]]:
    """Every command and sub-command the parser knows."""
    from herald_tools.cli.main import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    out: set[tuple[str, ...]] = set()
    for name, sub in subcommands(build_parser()).items():
        actions = subcommands(sub)
        out |= {(name, action) for action in actions} if actions else {(name,)}
    return out


def test_the_table_covers_every_command(tmp_path: Path) -> None:
    known = commands()
    covered = set()
    for _, args, _ in cases("postgresql://x@127.0.0.1/x", {}, 1, dry=True):
        while args[:1] == ("--log-level",):
            args = args[2:]
        covered.add(args[:2] if args[:2] in known else args[:1])
    assert known - covered == set(), "commands without a hostile case"
