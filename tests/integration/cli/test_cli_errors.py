"""Bad input and an absent database: one line on stderr (``herald: error: ...``) naming the
problem, a non-zero exit status, and nothing written."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from herald_core.errors import InvalidRequest
from herald_model.submission import encode_payload
from herald_queue.queue import Queue
from tests.conftest import dbname_of
from tests.helpers import register, sql_value, target_manifest
from tests.integration.cli.cli import (
    EXAMPLES,
    Run,
    cli_env,
    closed_port,
    count_jobs,
    herald,
    json_lines,
    ok,
)

LIMIT_HINT = "(HERALD_MAX_PAYLOAD_BYTES)"


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def size(payload: Any) -> int:
    """The bytes of ``payload`` as these tests write it (json.dumps), as they are stored."""
    return len(json.dumps(payload).encode())


async def expect_errors(cases: list[tuple[str, Any]]) -> None:
    """Run the commands at once; each fails with one line starting with its text (the exit
    status is 2 for a command line argparse refuses, 1 otherwise)."""
    runs: list[Run] = await asyncio.gather(*(command for _, command in cases))
    for (expected, _), run in zip(cases, runs, strict=True):
        assert run.error.startswith(f"herald: error: {expected}"), (expected, run.err)
        assert run.code == (2 if expected.startswith("argument ") else 1), run


@pytest.mark.slow
async def test_bad_flags_are_one_line_errors_and_store_nothing(
    db_url: str, queue: Queue, tmp_path: Path
) -> None:
    await register(queue, "hook")
    small = {"blob": "x" * 262}
    big = {"blob": "x" * 262_144}  # over the default limit, 256 KiB (too long for argv)
    (tmp_path / "big.json").write_text(json.dumps(big))
    (tmp_path / "deeper.json").write_text(deep(100_000))

    def enqueue(*flags: str, **kw: Any) -> Any:
        return herald("enqueue", "--target", "hook", *flags, url=db_url, **kw)

    await expect_errors(
        [
            (
                "--priority: must be one of high, medium, low, got 'urgent'",
                enqueue("--payload", "{}", "--priority", "urgent"),
            ),
            (
                "--payload: is not valid JSON: Expecting ',' delimiter: line 1 column 8 (char 7)",
                enqueue("--payload", '{"a": 1'),
            ),
            (
                f"--payload: is {size(small)} bytes of JSON, more than the limit of 100 bytes "
                f"{LIMIT_HINT}",
                enqueue("--payload", json.dumps(small), env={"HERALD_MAX_PAYLOAD_BYTES": "100"}),
            ),
            (
                f"--payload: is {size(big)} bytes of JSON, more than the limit of 262144 bytes "
                f"{LIMIT_HINT}",
                enqueue("--payload", f"@{tmp_path / 'big.json'}"),
            ),
            (
                "--payload: is nested 100000 levels deep (arrays and objects), more than the "
                "limit of 64 (HERALD_MAX_PAYLOAD_DEPTH)",
                enqueue("--payload", f"@{tmp_path / 'deeper.json'}"),
            ),
            (
                "--payload: contains an unpaired surrogate (\\ud800-\\udfff), which is not "
                "Unicode text",
                enqueue("--payload", '"\\ud800"'),
            ),
            (
                f"--payload: cannot read {tmp_path / 'absent'}: No such file or directory",
                enqueue("--payload", f"@{tmp_path / 'absent'}"),
            ),
            ("--target/--payload: give both, or neither and JSON lines on stdin", enqueue()),
            (
                "target 'nope' is not registered: apply its PublishingTarget (kubectl apply, "
                "or `herald targets apply PATH` locally) first",
                herald("enqueue", "--target", "nope", "--payload", "{}", url=db_url),
            ),
            (
                "argument id: 'abc' is not a job id (a UUID) (see `herald jobs show --help`)",
                herald("jobs", "show", "abc", url=db_url),
            ),
            (
                "--limit: must be from 1 to 1000000, got 100000000000000000000",
                herald("dlq", "replay", "--all", "--dry-run", "--limit", str(10**20), url=db_url),
            ),
            ("argument COMMAND: invalid choice: 'enqeue'", herald("enqeue", url=db_url)),
        ]
    )
    assert await count_jobs(queue) == 0


@pytest.mark.slow
async def test_a_bad_line_in_a_batch_stores_no_job_of_the_batch(db_url: str, queue: Queue) -> None:
    await register(queue, "hook")
    good = [{"target": "hook", "payload": {"n": i}, "idempotencyKey": f"k{i}"} for i in range(5)]

    def batch(line_3: str, **kw: Any) -> Any:
        """Five lines, the third one ``line_3``."""
        text = json_lines(good[:2]) + line_3 + "\n" + json_lines(good[3:])
        return herald("enqueue", url=db_url, stdin=text, **kw)

    def line(**fields: Any) -> str:
        return json.dumps({"target": "hook", "payload": 1} | fields)

    def raw_payload(text: str) -> str:
        return '{"target": "hook", "payload": ' + text + "}"

    await expect_errors(
        [
            (
                "stdin line 3: is not valid JSON: Expecting value: line 1 column ",
                batch('{"target": "hook", "payload":'),
            ),
            (
                "stdin line 3: is nested 100001 levels deep (arrays and objects), more than the "
                "limit of 64 (HERALD_MAX_PAYLOAD_DEPTH)",
                batch(raw_payload(deep(100_000))),
            ),
            ("line 3: must be a JSON object", batch("[1, 2]")),
            (
                "line 3: payload_json: unknown field (accepted: target, payload, priority, "
                "idempotencyKey, orderingKey, runAt)",
                batch(line(payload_json="{}")),
            ),
            ("line 3: payload: is required (any JSON value)", batch('{"target": "hook"}')),
            (
                "line 3: priority: must be one of high, medium, low, got 'urgent'",
                batch(line(priority="urgent")),
            ),
            (
                f"line 3: payload: is 302 bytes of JSON, more than the limit of 300 bytes "
                f"{LIMIT_HINT}",
                batch(line(payload="x" * 300), env={"HERALD_MAX_PAYLOAD_BYTES": "300"}),
            ),
            (
                "line 3: payload: contains an unpaired surrogate",
                batch('{"target": "hook", "payload": "\\udc00"}'),
            ),
            ("target 'nope' is not registered", batch(line(target="nope"))),
            (
                "stdin: no jobs: give --target and --payload, or JSON lines",
                herald("enqueue", url=db_url, stdin="\n  \n"),
            ),
        ]
    )
    assert await count_jobs(queue) == 0, "no job of a batch with a bad line is stored"

    stored = await ok("enqueue", url=db_url, stdin=json_lines(good))
    assert stored.out == "enqueued 5 jobs\n"
    assert await count_jobs(queue) == 5


def test_a_payload_too_deep_to_encode_is_a_request_error() -> None:
    """What decodes may still be too deep to encode again (a payload nested a little less
    than the decoder's limit, on Python 3.11): the CLI and the API both get InvalidRequest."""
    payload: list[Any] = []
    for _ in range(100_000):
        payload = [payload]
    with pytest.raises(InvalidRequest, match=r"^line 3: payload: is nested too deeply$"):
        encode_payload(payload, max_bytes=1 << 20, field="line 3: payload")


@pytest.mark.slow
async def test_targets_apply_with_a_mistake_applies_nothing(
    db_url: str, queue: Queue, tmp_path: Path
) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    bad = target_manifest("bad", type="pigeon")
    (mixed / "a.yaml").write_text(yaml.safe_dump_all([target_manifest("good"), bad]))
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec:\n  type: webhook\n    url: x\n")
    only_replays = EXAMPLES / "deadletterreplay.yaml"
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump_all([bad, target_manifest("ok"), target_manifest("ok")]))

    results = await asyncio.gather(
        herald("targets", "apply", str(mixed), url=db_url),
        herald("targets", "apply", str(broken), url=db_url),
        herald("targets", "apply", str(tmp_path / "absent"), url=db_url),
        herald("targets", "apply", str(only_replays), url=db_url),
        herald("targets", "apply", str(two), url=db_url),
    )
    mixed_run, broken_run, absent_run, replays_run, two_run = results
    assert mixed_run.error == (
        f"herald: error: {mixed / 'a.yaml'} (document 2): PublishingTarget default/bad: "
        "spec.type: must be one of webhook, slack, pagerduty, got 'pigeon'"
    )
    assert broken_run.error == (
        f"herald: error: {broken}: not valid YAML/JSON: mapping values are not allowed here "
        "(line 3, column 8)"
    )
    assert absent_run.error == f"herald: error: {tmp_path / 'absent'}: no such file or directory"
    # Only other kinds: each is named as skipped, then the error.
    *skipped, last = replays_run.err.strip().splitlines()
    assert replays_run.code == 1 and len(skipped) == 2
    assert all(s.startswith("skipped ") and "DeadLetterReplay" in s for s in skipped)
    assert last == f"herald: error: no PublishingTarget in {only_replays}"
    # Every problem of a set is reported, one per line, before anything is applied.
    assert two_run.code == 1
    assert two_run.err.splitlines() == [
        f"herald: error: {two} (document 1): PublishingTarget default/bad: spec.type: must be "
        "one of webhook, slack, pagerduty, got 'pigeon'",
        f"  {two} (document 3): PublishingTarget default/ok is also defined in {two} (document 2)",
    ]
    assert await sql_value(queue, "SELECT count(*) FROM herald.targets") == 0


@pytest.mark.slow
async def test_an_unreachable_database_is_one_line_naming_it() -> None:
    port = closed_port()
    url = f"postgresql://herald:s3cret-pw@127.0.0.1:{port}/herald"
    commands = [
        ["migrate"],
        ["targets", "apply", str(EXAMPLES / "webhook-target.yaml")],
        ["enqueue"],  # JSON lines on stdin
        ["stats", "--json"],
        ["jobs", "list"],
        ["dlq", "purge", "--older-than", "30d", "--dry-run"],
    ]
    runs = await asyncio.gather(
        *(herald(*c, url=url, stdin=json_lines([{"target": "a", "payload": 1}])) for c in commands)
    )
    for run in runs:
        assert run.code == 1, run
        assert run.error.startswith(
            f"herald: error: cannot reach PostgreSQL at 127.0.0.1:{port}/herald: "
        ), run.err
        assert run.error.endswith("Check HERALD_DATABASE_URL and that the server is up.")
        assert "s3cret-pw" not in run.err
        assert "refused" in run.error.lower(), run.err
    malformed = await herald("stats", url="not-a-url")
    assert (malformed.code, malformed.error) == (
        2,
        "herald: error: HERALD_DATABASE_URL=(secret, not shown): must be a PostgreSQL URL "
        "such as postgresql://user:password@host:5432/dbname",
    )


@pytest.mark.slow
async def test_a_database_lost_during_a_command_is_one_line(
    fresh_db: Callable[[str | None], Any], template_db: str, pg_admin_url: str
) -> None:
    url = await fresh_db(template_db)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_tools.cli.main",
        "stats",
        "--watch",
        "0.1",
        "--json",
        env=cli_env(url, HERALD_DB_CONNECT_TIMEOUT="1"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert json.loads(await asyncio.wait_for(process.stdout.readline(), 30))["queued"] == 0
        async with await psycopg.AsyncConnection.connect(pg_admin_url, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE "{dbname_of(url)}" WITH (FORCE)')
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            await process.wait()
    run = Run(("stats", "--watch"), process.returncode or 0, "", err.decode())
    assert run.code == 1
    assert run.error.startswith("herald: error: lost the connection to PostgreSQL: "), run.err


HOSTILE_TARGETS = [
    # (spec fields, the error's tail after "PublishingTarget default/NAME: ")
    ({"headers": {"X-A": "a\x00b"}}, "spec.headers.X-A: must be a single-line header value"),
    ({"headers": {"X-A": "a\x01b"}}, "spec.headers.X-A: must be a single-line header value"),
    ({"url": "http://127.0.0.1:9/a\x00b"}, "spec.url: must not contain control characters"),
    ({"url": "http://u:PASSWORD@127.0.0.1:9/x"}, "spec.url: must not hold credentials"),
]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["targets apply", "worker --targets"])
async def test_hostile_strings_in_a_manifest_are_one_line_errors(
    command: str, db_url: str, queue: Queue, tmp_path: Path
) -> None:
    """A NUL or control character in a header or the URL, credentials in the URL: refused
    by the parser with the field's path (not a psycopg traceback), nothing stored, and the
    credential never repeated."""
    runs = []
    for i, (spec, _) in enumerate(HOSTILE_TARGETS):
        path = tmp_path / f"t{i}.yaml"
        path.write_text(yaml.safe_dump(target_manifest(f"t{i}", **spec)))
        runs.append(
            herald(
                *command.split(),
                str(path),
                url=db_url,
                env={"HERALD_HTTP_PORT": str(closed_port()), "HERALD_HTTP_HOST": "127.0.0.1"},
            )
        )
    done = await asyncio.gather(*runs)
    for i, ((_, expected), run) in enumerate(zip(HOSTILE_TARGETS, done, strict=True)):
        assert run.code == 1, run
        assert f"PublishingTarget default/t{i}: {expected}" in run.error, run.err
        assert "PASSWORD" not in run.err + run.out
    assert await sql_value(queue, "SELECT count(*) FROM herald.targets") == 0


@pytest.mark.slow
async def test_targets_apply_refuses_a_url_the_egress_policy_forbids(
    db_url: str, queue: Queue, tmp_path: Path
) -> None:
    """The literal address of spec.url, in any spelling, is checked when the target is
    applied: one line naming the policy and the setting; nothing stored."""
    urls = {
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "mapped": "http://[::ffff:169.254.169.254]/",
        "hex": "http://0xa9fea9fe/",
        "decimal": "http://2852039166/",
        "loopback": "http://127.0.0.1:9/hook",
    }
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump_all([target_manifest(n, url=u) for n, u in urls.items()]))
    strict = {"HERALD_EGRESS_ALLOW_LOOPBACK": "false"}
    run = await herald("targets", "apply", str(path), url=db_url, env=strict)
    assert run.code == 1
    lines = run.err.strip().splitlines()
    assert "Traceback" not in run.err and len(lines) == len(urls), run.err
    for line, name in zip(lines, urls, strict=True):
        assert f"PublishingTarget default/{name}: spec.url: the egress policy refuses " in line
        fix = "HERALD_EGRESS_ALLOW_LOOPBACK=true" if name == "loopback" else "HERALD_EGRESS_ALLOW"
        assert fix in line, line
    assert await sql_value(queue, "SELECT count(*) FROM herald.targets") == 0
    allowed = {"HERALD_EGRESS_ALLOW": "169.254.169.254/32"}
    await ok("targets", "apply", str(path), url=db_url, env=allowed)
    assert await sql_value(queue, "SELECT count(*) FROM herald.targets") == len(urls)


@pytest.mark.slow
async def test_unreadable_and_too_deep_files_are_one_line(
    db_url: str, queue: Queue, tmp_path: Path
) -> None:
    """Non-UTF-8 files and manifests nested 1,500 deep: one line each, never the
    UnicodeDecodeError or the ~3,000-line RecursionError traceback."""
    await register(queue, "hook")
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"name": "Ren\xe9"}')
    latin1_yaml = tmp_path / "latin1.yaml"
    latin1_yaml.write_bytes(b"apiVersion: herald.dev/v1alpha1\nkind: PublishingTarget\n# \xe9\n")
    head = "apiVersion: herald.dev/v1alpha1\nkind: PublishingTarget\nmetadata: {name: deep}\n"
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text(f"{head}spec: {{type: webhook, headers: {deep(1500)}}}\n")
    deep_json = tmp_path / "deep.json"
    deep_json.write_text(json.dumps(target_manifest("deep"))[:-2] + f', "x": {deep(1500)}}}}}')
    too_deep = "nested too deeply to read (a manifest is a few levels deep)"
    runs = await asyncio.gather(
        herald("enqueue", "--target", "hook", "--payload", f"@{latin1}", url=db_url),
        herald("targets", "apply", str(latin1_yaml), url=db_url),
        herald("targets", "apply", str(deep_yaml), url=db_url),
        herald("targets", "apply", str(deep_json), url=db_url),
        herald("worker", "--targets", str(deep_yaml), url=db_url),
        herald("worker", "--targets", str(latin1_yaml), url=db_url),
    )
    enqueue_run, latin1_run, deep_run, deep_json_run, worker_deep, worker_latin1 = runs
    assert enqueue_run.error == (
        f"herald: error: --payload: {latin1} is not UTF-8 text (byte 0xe9 at offset 13): "
        "JSON payloads are UTF-8"
    )
    not_utf8 = (
        f"herald: error: {latin1_yaml}: not UTF-8 text (byte 0xe9 at offset 57): manifests "
        "are UTF-8 YAML or JSON"
    )
    assert latin1_run.error == worker_latin1.error == not_utf8
    assert deep_run.error == worker_deep.error == f"herald: error: {deep_yaml}: {too_deep}"
    assert deep_json_run.error == f"herald: error: {deep_json}: {too_deep}"
    assert await count_jobs(queue) == 0
    assert await sql_value(queue, "SELECT count(*) FROM herald.targets") == 1


def occupied_port(host: str = "127.0.0.1") -> socket.socket:
    """A socket listening on a free port of ``host`` (close it when done)."""
    s = socket.socket()
    s.bind((host, 0))
    s.listen()
    return s


@pytest.mark.slow
async def test_a_port_in_use_is_one_line_naming_it_and_the_setting(db_url: str) -> None:
    with occupied_port() as taken, occupied_port("0.0.0.0") as taken_any:
        port, any_port = taken.getsockname()[1], taken_any.getsockname()[1]
        worker_run, metrics_run, health_run = await asyncio.gather(
            herald(
                "worker",
                url=db_url,
                env={"HERALD_HTTP_HOST": "127.0.0.1", "HERALD_HTTP_PORT": str(port)},
            ),
            herald("operator", url=db_url, env={"HERALD_OPERATOR_METRICS_PORT": str(any_port)}),
            herald("operator", url=db_url, env={"HERALD_OPERATOR_HEALTH_PORT": str(any_port)}),
        )
    in_use = "address already in use; stop what listens there, or set"
    assert worker_run.error == (
        f"herald: error: cannot serve the HTTP API on 127.0.0.1:{port}: {in_use} "
        "HERALD_HTTP_PORT to a free port"
    )
    assert metrics_run.error == (
        f"herald: error: cannot serve /metrics on 0.0.0.0:{any_port}: {in_use} "
        "HERALD_OPERATOR_METRICS_PORT to a free port"
    )
    assert health_run.error == (
        f"herald: error: cannot serve /healthz on 0.0.0.0:{any_port}: {in_use} "
        "HERALD_OPERATOR_HEALTH_PORT to a free port"
    )


# -- bounded reads, manifests of the wrong shape ------------------------------------------

SECRET_HEAD = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
ALIAS_BOMB = SECRET_HEAD + "stringData:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
for _level, (_name, _prev) in enumerate(zip("bcdefghi", "abcdefgh", strict=True)):
    ALIAS_BOMB += f"  {_name}: &{_name} [{', '.join([f'*{_prev}'] * 9)}]\n"
"""A billion laughs: nine levels of nine aliases, 9**9 strings once expanded."""

WRONG_SHAPES = [
    # (file text, the line after "FILE (document 1): ")
    (SECRET_HEAD.replace("{name: s}", "[1]"), "metadata must be a mapping, got a list"),
    (
        "apiVersion: herald.dev/v1alpha1\nkind: PublishingTarget\nmetadata: [1]\n"
        "spec: {type: webhook, url: 'http://127.0.0.1:9/'}\n",
        "metadata must be a mapping, got a list",
    ),
    (
        "apiVersion: v1\nkind: List\nitems: 5\n",
        "a List's items must be a list of objects, got a number",
    ),
    (
        SECRET_HEAD + "stringData: [1, 2]\n",
        "Secret stringData must be a mapping of keys to strings, got a list",
    ),
    (SECRET_HEAD + "data: 5\n", "Secret data must be a mapping of keys to strings, got a number"),
    (
        SECRET_HEAD + "stringData: {signingSecret: [a]}\n",
        "Secret stringData.signingSecret must be a string, got a list (quote it: a Secret's "
        "values are text)",
    ),
    (
        SECRET_HEAD + "data: {signingSecret: 5}\n",
        "Secret data.signingSecret must be a string, got a number (quote it: a Secret's values "
        "are text)",
    ),
    (ALIAS_BOMB, "more than 100000 YAML nodes once its aliases (*name) are expanded: refused"),
    ("a: &a [*a]\n", "a YAML alias refers to a node that contains it"),
]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["targets apply", "worker --targets"])
async def test_manifests_of_the_wrong_shape_are_one_line_naming_the_document(
    command: str, db_url: str, queue: Queue, tmp_path: Path
) -> None:
    """These once answered "unexpected TypeError/AttributeError (a bug in Herald)", or
    turned a Secret value into its Python text ("['a']"), or grew to 1 GiB (the bomb)."""
    target = yaml.safe_dump(target_manifest("t", secretRef={"name": "s"}))
    env = {"HERALD_HTTP_PORT": str(closed_port()), "HERALD_HTTP_HOST": "127.0.0.1"}
    runs = []
    for i, (text, _) in enumerate(WRONG_SHAPES):
        path = tmp_path / f"m{i}.yaml"
        path.write_text(target + "---\n" + text)
        runs.append(herald(*command.split(), str(path), url=db_url, env=env, timeout=90))
    done = await asyncio.gather(*runs)
    for i, ((_, expected), run) in enumerate(zip(WRONG_SHAPES, done, strict=True)):
        assert run.code == 1, run
        assert run.error.startswith(f"herald: error: {tmp_path / f'm{i}.yaml'} (document 2"), run
        assert expected in run.error, (expected, run.err)
    assert await sql_value(queue, "SELECT count(*) FROM herald.targets") == 0


def _capped(limit_mib: int) -> Callable[[], None]:
    def cap() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_mib << 20, limit_mib << 20))

    return cap


@pytest.mark.slow
def test_an_alias_bomb_is_refused_within_bounded_memory(db_url: str, tmp_path: Path) -> None:
    """Given the bomb, the command stays within 512 MiB of address space and ends with its
    one line (before the fix it grew to 1 GiB in 30 s; capped, it died of MemoryError)."""
    import subprocess

    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    for command in (["targets", "apply"], ["worker", "--targets"]):
        args = [sys.executable, "-m", "herald_tools.cli.main", *command, str(path)]
        try:
            done = subprocess.run(
                args,
                env=cli_env(db_url, HERALD_HTTP_PORT=str(closed_port())),
                preexec_fn=_capped(512),
                capture_output=True,
                text=True,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"herald {' '.join(command)} {path}: not done in 120 s") from None
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip() == (
            f"herald: error: {path} (document 1): more than 100000 YAML nodes once its aliases "
            "(*name) are expanded: refused (a manifest is a few dozen)"
        ), done.stderr


async def test_a_manifest_file_over_its_bound_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * (3 * 1024 * 1024) + "\n")
    run = await herald("targets", "apply", str(path), url=None)
    assert run.error == (
        f"herald: error: {path}: larger than 3 MiB, the most a manifest file may be (nothing "
        "past that was read)"
    )


@pytest.mark.slow
async def test_enqueue_reads_no_more_than_a_payload(db_url: str, queue: Queue) -> None:
    """``--payload @/dev/zero`` read until killed; stdin under a strict locale with invalid
    UTF-8 was "unexpected ... (a bug in Herald)"; a payload nested past the limit is refused
    naming HERALD_MAX_PAYLOAD_DEPTH, from the flag and from stdin."""
    await register(queue, "hook")
    strict = {"LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "", "PYTHONUTF8": ""}
    line = json.dumps({"target": "hook", "payload": "x"}).encode()
    await expect_errors(
        [
            (
                "--payload: /dev/zero is larger than the payload limit of 1000 bytes "
                "(HERALD_MAX_PAYLOAD_BYTES); nothing past it was read",
                herald(
                    "enqueue",
                    "--target",
                    "hook",
                    "--payload",
                    "@/dev/zero",
                    url=db_url,
                    env={"HERALD_MAX_PAYLOAD_BYTES": "1000"},
                ),
            ),
            (
                "stdin line 2: is not UTF-8 text (byte 0xff at offset 32): JSON lines are UTF-8",
                herald(
                    "enqueue",
                    url=db_url,
                    stdin=line + b"\n" + line[:-2] + b'\xff"}\n',
                    env=strict,
                ),
            ),
            (
                "stdin line 1: is longer than 66536 bytes",
                herald(
                    "enqueue",
                    url=db_url,
                    stdin=b" " * 70_000 + line + b"\n",
                    env={"HERALD_MAX_PAYLOAD_BYTES": "1000"},
                ),
            ),
            (
                "--payload: is nested 65 levels deep (arrays and objects), more than the limit "
                "of 64 (HERALD_MAX_PAYLOAD_DEPTH)",
                herald("enqueue", "--target", "hook", "--payload", deep(65), url=db_url),
            ),
            (
                "line 1: payload: is nested 11 levels deep (arrays and objects), more than the "
                "limit of 10 (HERALD_MAX_PAYLOAD_DEPTH)",
                herald(
                    "enqueue",
                    url=db_url,
                    stdin=json_lines([{"target": "hook", "payload": [[[[[[[[[[[]]]]]]]]]]]}]),
                    env={"HERALD_MAX_PAYLOAD_DEPTH": "10"},
                ),
            ),
        ]
    )
    assert await count_jobs(queue) == 0
    await ok("enqueue", "--target", "hook", "--payload", deep(64), url=db_url)
