"""``herald`` at a terminal: migrate, targets, enqueue, stats, jobs, demo, and the embedded
PostgreSQL, each run as a subprocess against a real database."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from herald_core.states import Priority
from herald_queue import migrate
from herald_queue.queue import Queue
from tests.helpers import (
    RETRY_LATER,
    claim_all,
    failure,
    job,
    job_rows,
    register,
    sql_rows,
    target_manifest,
)
from tests.integration.cli.cli import (
    EXAMPLES,
    ONE_SHOT,
    cli_env,
    closed_port,
    count_jobs,
    herald,
    json_lines,
    ok,
)

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
STATES = ["queued", "running", "retrying", "succeeded", "dead"]


# -- migrate ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_migrate_is_idempotent_even_when_run_twice_at_once(
    fresh_db: Callable[[str | None], Any],
) -> None:
    url = await fresh_db(None)
    latest = migrate.latest_version()
    check = await herald("migrate", "--check", url=url)
    assert check.code == 1
    assert check.out.strip() == (
        f"schema version 0, this Herald needs {latest}: run `herald migrate`"
    )
    first, second = await asyncio.gather(ok("migrate", url=url), ok("migrate", url=url))
    # The advisory lock serialises them: one migrates, the other finds nothing to do.
    outputs = sorted([first.out, second.out], key=lambda out: not out.startswith("migrated"))
    assert re.fullmatch(rf"migrated \S+ from version 0 to {latest}: .+\n", outputs[0]), outputs
    assert outputs[1].endswith(f"is up to date (schema version {latest})\n"), outputs
    again = await ok("migrate", "--json", url=url)
    assert again.json() == {"before": latest, "after": latest, "applied": []}
    assert (await ok("migrate", "--check", "--json", url=url)).json() == {
        "current": latest,
        "latest": latest,
        "upToDate": True,
    }
    assert (await ok("stats", "--json", url=url)).json()["queued"] == 0


# -- targets ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_targets_apply_a_file_with_a_secret_and_the_examples_directory(
    db_url: str, queue: Queue
) -> None:
    webhook = await ok("targets", "apply", str(EXAMPLES / "webhook-target.yaml"), url=db_url)
    assert webhook.out == "publishingtarget default/oncall-hook created\n"
    assert webhook.err == "", "the Secret in the file is taken silently (never stored)"

    # The directory: every file, in name order; the DeadLetterReplays are named as skipped.
    applied = await ok("targets", "apply", str(EXAMPLES), "--json", url=db_url)
    assert applied.json() == [
        {"target": "default/pagerduty-sre", "created": True},
        {"target": "default/team-chat", "created": True},
        {"target": "default/oncall-hook", "created": False},
    ]
    skipped = applied.err.strip().splitlines()
    assert len(skipped) == 2, applied.err
    for line, name in zip(skipped, ["replay-after-outage", "replay-two-jobs"], strict=True):
        assert line.startswith(f"skipped {EXAMPLES / 'deadletterreplay.yaml'} (document ")
        assert line.endswith(f"herald.dev/v1alpha1/DeadLetterReplay {name}: not a PublishingTarget")

    listed = await ok("targets", "list", "--json", url=db_url)
    by_ref = {f"{t['namespace']}/{t['name']}": t for t in listed.json()}
    assert {ref: t["type"] for ref, t in by_ref.items()} == {
        "default/oncall-hook": "webhook",
        "default/pagerduty-sre": "pagerduty",
        "default/team-chat": "slack",
    }
    assert by_ref["default/oncall-hook"]["url"] == "https://hooks.example.com/herald"
    assert all(t["circuit"]["state"] == "closed" and t["delivered"] == 0 for t in listed.json())
    # Credentials never enter the database: no Secret value is stored anywhere.
    rows = await sql_rows(queue, "SELECT * FROM herald.targets")
    assert len(rows) == 3
    assert "whsec_" not in repr(rows) and "0123456789abcdef0123456789abcdef" not in repr(rows)

    table = (await ok("targets", "list", url=db_url)).out.splitlines()
    assert " ".join(table[0].split()) == "TARGET TYPE PAUSED CIRCUIT DELIVERED DEAD LAST ERROR"
    assert [line.split()[:4] for line in table[1:]] == [
        ["default/oncall-hook", "webhook", "no", "closed"],
        ["default/pagerduty-sre", "pagerduty", "no", "closed"],
        ["default/team-chat", "slack", "no", "closed"],
    ]


@pytest.mark.slow
async def test_targets_apply_multi_document_json_lists_and_recursive_directories(
    db_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "manifests"
    (root / "nested").mkdir(parents=True)
    (root / "a.yaml").write_text(
        yaml.safe_dump_all(
            [
                target_manifest("first"),
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
                None,  # an empty document
                target_manifest("second", "team", type="slack", url="https://hooks.example.com/s"),
            ]
        )
    )
    no_namespace = target_manifest("third")
    del no_namespace["metadata"]["namespace"]
    (root / "b.json").write_text(json.dumps({"kind": "List", "items": [no_namespace]}))
    (root / "notes.txt").write_text("not a manifest: ignored, as kubectl does")
    (root / "nested" / "c.yml").write_text(yaml.safe_dump(target_manifest("fourth")))

    single = await ok("targets", "apply", str(root / "a.yaml"), url=db_url)
    assert single.out.splitlines() == [
        "publishingtarget default/first created",
        "publishingtarget team/second created",
    ]
    assert single.err == f"skipped {root / 'a.yaml'} (document 2): v1/ConfigMap settings: " + (
        "not a PublishingTarget\n"
    )

    flat = await ok("targets", "apply", str(root), url=db_url)
    assert flat.out.splitlines() == [
        "publishingtarget default/first configured",
        "publishingtarget team/second configured",
        "publishingtarget default/third created",
    ]
    deep = await ok("targets", "apply", "-R", str(root), "--json", url=db_url)
    assert [(r["target"], r["created"]) for r in deep.json()] == [
        ("default/first", False),
        ("team/second", False),
        ("default/third", False),
        ("default/fourth", True),
    ]
    team = await ok("targets", "list", "--namespace", "team", "--json", url=db_url)
    assert [(t["name"], t["type"]) for t in team.json()] == [("second", "slack")]


# -- enqueue ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_enqueue_one_job_from_flags_and_an_idempotency_key_returns_the_same_job(
    db_url: str, queue: Queue, tmp_path: Path
) -> None:
    await register(queue, "hook")
    plain = await ok("enqueue", "--target", "hook", "--payload", '{"a": 1}', url=db_url)
    assert re.fullmatch(rf"({UUID}) queued -> default/hook\n", plain.out), plain.out

    first = await ok(
        "enqueue",
        "--target",
        "default/hook",
        "--payload",
        '{"summary": "disk full"}',
        "--priority",
        "high",
        "--idempotency-key",
        "disk-full-node7",
        "--ordering-key",
        "node7",
        "--json",
        url=db_url,
    )
    body = first.json()
    assert body == {
        "id": body["id"],
        "target": "default/hook",
        "state": "queued",
        "duplicate": False,
    }
    same_file = tmp_path / "same.json"
    same_file.write_text('{"summary":  "disk full"}')
    again = await ok(
        "enqueue",
        "--target",
        "hook",
        "--payload",
        f"@{same_file}",
        "--priority",
        "high",
        "--ordering-key",
        "node7",
        "--idempotency-key",
        "disk-full-node7",
        url=db_url,
    )
    assert again.out == f"{body['id']} queued -> default/hook (duplicate)\n"
    payload_file = tmp_path / "payload.json"
    payload_file.write_text('{"summary": "something else"}')
    reused = await herald(
        "enqueue",
        "--target",
        "hook",
        "--payload",
        f"@{payload_file}",
        "--idempotency-key",
        "disk-full-node7",
        url=db_url,
    )
    assert reused.code == 1 and "Traceback" not in reused.err, reused.err
    assert reused.err.startswith("herald: error: idempotency key 'disk-full-node7' was already")
    assert body["id"] in reused.err and len(reused.err.splitlines()) == 1
    rows = await job_rows(queue, "idempotency_key = 'disk-full-node7'")
    assert len(rows) == 1
    assert (str(rows[0]["id"]), rows[0]["priority"], rows[0]["ordering_key"]) == (
        body["id"],
        "high",
        "node7",
    )
    assert rows[0]["payload"] == {"summary": "disk full"}, "the first job is kept as it was"

    later = await ok(
        "enqueue",
        "--target",
        "hook",
        "--payload",
        f"@{payload_file}",
        "--priority",
        "low",
        "--run-at",
        "2099-01-01T00:00:00Z",
        "--json",
        url=db_url,
    )
    [row] = await job_rows(queue, "id = %s", [later.json()["id"]])
    assert (row["priority"], row["payload"]) == ("low", {"summary": "something else"})
    assert row["run_at"].isoformat().startswith("2099-01-01T00:00:00")
    assert await count_jobs(queue) == 3

    # Racing enqueues sharing a key: every one answers with the same, single job.
    race = ["enqueue", "--target", "hook", "--idempotency-key", "race", "--json"]
    racing = await asyncio.gather(*(ok(*race, "--payload", "7", url=db_url) for _ in range(4)))
    assert len({r.json()["id"] for r in racing}) == 1
    assert sorted(r.json()["duplicate"] for r in racing) == [False, True, True, True]
    assert await count_jobs(queue, "idempotency_key = 'race'") == 1


@pytest.mark.slow
async def test_enqueue_json_lines_from_stdin_shaped_like_the_api_body(
    db_url: str, queue: Queue
) -> None:
    await register(queue, "hook")
    await register(queue, "chat", "team")
    await register(queue, "oncall-hook")
    old = ["--payload", "1", "--idempotency-key", "old", "--json"]
    existing = await ok("enqueue", "--target", "hook", *old, url=db_url)
    lines = [
        {"target": "oncall-hook", "payload": {"n": 0}},
        {"target": "team/chat", "payload": [1, 2], "priority": "low", "orderingKey": "k"},
        {"target": "hook", "payload": "text", "priority": "high", "idempotencyKey": "new"},
        {"target": "default/hook", "payload": "text", "priority": "high", "idempotencyKey": "new"},
        {"target": "hook", "payload": 1, "idempotencyKey": "old"},  # an earlier job
        {"target": "hook", "payload": 4, "runAt": "2099-01-01T00:00:00Z"},
    ]
    text = json_lines(lines[:2]) + "\n  \n" + json_lines(lines[2:])  # blank lines are skipped
    result = await ok("enqueue", url=db_url, stdin=text)
    assert result.out == "enqueued 4 jobs, 2 duplicates\n"
    rows = await job_rows(queue)
    assert len(rows) == 5
    assert [(r["payload"], r["priority"]) for r in rows[1:]] == [
        ({"n": 0}, "medium"),
        ([1, 2], "low"),
        ("text", "high"),
        (4, "medium"),
    ]
    assert rows[2]["ordering_key"] == "k"
    assert str(rows[0]["id"]) == existing.json()["id"]

    # --json: one result per line, in order, duplicates marked.
    again = await ok("enqueue", "--json", url=db_url, stdin=json_lines(lines[2:5]))
    results = again.json()
    assert [r["duplicate"] for r in results] == [True, True, True]
    assert [r["id"] for r in results] == [str(rows[3]["id"])] * 2 + [str(rows[0]["id"])]
    assert await count_jobs(queue) == 5

    # A key reused with another payload: refused, and nothing of the batch is written.
    reused = await herald(
        "enqueue",
        url=db_url,
        stdin=json_lines([{"target": "hook", "payload": 9}, {**lines[4], "payload": 2}]),
    )
    assert reused.code == 1 and "Traceback" not in reused.err, reused.err
    assert "idempotency key 'old' was already used with different parameters" in reused.err
    assert await count_jobs(queue) == 5


# -- stats ------------------------------------------------------------------------------


async def jobs_in_every_state(queue: Queue) -> dict[str, uuid.UUID]:
    """Jobs of default/alpha (5 attempts) and default/beta (1 attempt): 2 queued, 1
    running, 1 retrying, 2 succeeded, 1 dead. Returns an id per state. The retrying job's
    next attempt is an hour away, so it is not "ready now" however slow the test runs."""
    await register(queue, "alpha", retry={"maxAttempts": 5, **RETRY_LATER})
    await register(queue, "beta", **ONE_SHOT)
    results = await queue.jobs.enqueue_many(
        [job("alpha", {"i": i}) for i in range(3)] + [job("beta", {"i": i}) for i in range(2)]
    )
    ids = [r.id for r in results]
    claimed = {j.id: j for j in await claim_all(queue)}
    assert set(claimed) == set(ids)
    await queue.jobs.complete("w", [claimed[ids[0]], claimed[ids[4]]])
    await queue.jobs.fail("w", [failure(claimed[ids[1]], "transient")])
    await queue.jobs.fail("w", [failure(claimed[ids[3]], "permanent", message="bad request")])
    queued = await queue.jobs.enqueue_many(
        [job("alpha", {"q": 1}, Priority.HIGH), job("beta", {"q": 2}, Priority.LOW)]
    )
    return {
        "queued": queued[0].id,
        "running": ids[2],
        "retrying": ids[1],
        "succeeded": ids[0],
        "dead": ids[3],
    }


@pytest.mark.slow
async def test_stats_json_has_the_totals_first_then_breakdowns(db_url: str, queue: Queue) -> None:
    await jobs_in_every_state(queue)
    stats = (await ok("stats", "--json", url=db_url)).json()
    assert list(stats)[:5] == STATES
    assert [stats[s] for s in STATES] == [2, 1, 1, 2, 1]
    assert stats["byPriority"]["high"]["queued"] == 1
    assert stats["byPriority"]["low"]["queued"] == 1
    assert sum(stats["byPriority"]["medium"][s] for s in STATES) == 5
    alpha, beta = stats["byTarget"]["default/alpha"], stats["byTarget"]["default/beta"]
    assert [alpha[s] for s in STATES] == [1, 1, 1, 1, 0]
    assert [beta[s] for s in STATES] == [1, 0, 0, 1, 1]
    assert stats["ready"] == 2 and stats["oldestReadyAgeSeconds"] >= 0

    text = (await ok("stats", url=db_url)).out.splitlines()
    assert text[0] == "queued: 2  running: 1  retrying: 1  succeeded: 2  dead: 1"
    assert text[1].startswith("ready now: 2  oldest ready: ")
    assert any(line.split()[:6] == ["default/alpha", "1", "1", "1", "1", "0"] for line in text)


@pytest.mark.slow
async def test_stats_show_capacity_pct(db_url: str, queue: Queue) -> None:
    await register(queue, "sized", capacity={"jobs": 8})
    await register(queue, "unsized")
    await queue.jobs.enqueue_many([job("sized", {"n": n}) for n in range(6)])
    await queue.jobs.enqueue(job("unsized"))
    env = {"HERALD_QUEUE_CAPACITY": "28"}
    stats = (await ok("stats", "--json", url=db_url, env=env)).json()
    assert stats["capacityPct"] == 25.0, "7 waiting of HERALD_QUEUE_CAPACITY=28"
    assert stats["byTarget"]["default/sized"]["capacityPct"] == 75.0
    assert stats["byTarget"]["default/unsized"]["capacityPct"] is None
    assert (await ok("stats", "--json", url=db_url)).json()["capacityPct"] is None
    text = (await ok("stats", url=db_url, env=env)).out.splitlines()
    assert text[1].endswith("  capacity: 25.0 %"), text[1]
    header = next(line for line in text if line.startswith("TARGET"))
    assert header.split()[-2:] == ["CAPACITY", "%"], header
    rows = {line.split()[0]: line.split()[-1] for line in text if line.startswith("default/")}
    assert rows == {"default/sized": "75.0", "default/unsized": "-"}, text


@pytest.mark.slow
async def test_stats_watch_prints_until_interrupted(db_url: str, queue: Queue) -> None:
    await register(queue, "hook")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_tools.cli.main",
        "stats",
        "--watch",
        "0.1",
        "--json",
        env=cli_env(db_url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert first["queued"] == 0
        assert list(first)[:5] == STATES, "totals first, as without --watch"
        read_at = dt.datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
        assert abs((dt.datetime.now(dt.UTC) - read_at).total_seconds()) < 60, first["time"]
        await queue.jobs.enqueue(job("hook"))
        async with asyncio.timeout(30):  # one object per line, refreshed
            while json.loads(await process.stdout.readline())["queued"] != 1:
                pass
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130, err.decode()
    assert err == b""


# -- jobs -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_jobs_show_list_and_cancel(db_url: str, queue: Queue) -> None:
    ids = await jobs_in_every_state(queue)
    help_run, listed, dead, high, limited, table, empty, shown, text = await asyncio.gather(
        ok("jobs", "--help", url=db_url),
        ok("jobs", "list", "--json", url=db_url),
        ok("jobs", "list", "--state", "dead", "--json", url=db_url),
        ok("jobs", "list", "--priority", "high", "--target", "alpha", "--json", url=db_url),
        ok("jobs", "list", "--limit", "3", "--json", url=db_url),
        ok("jobs", "list", "--state", "retrying", url=db_url),
        ok("jobs", "list", "--target", "beta", "--state", "retrying", url=db_url),
        ok("jobs", "show", str(ids["dead"]), "--json", url=db_url),
        ok("jobs", "show", str(ids["queued"]), url=db_url),
    )
    for action in ("show", "list", "cancel"):
        assert re.search(rf"^\s+{action}\s", help_run.out, re.M), help_run.out

    everything = listed.json()["items"]
    assert listed.json()["nextCursor"] is None, "one page holds them all"
    assert len(everything) == 7 and all("payload" not in j for j in everything)
    newest_first = [str(r["id"]) for r in reversed(await job_rows(queue))]
    assert [j["id"] for j in everything] == newest_first
    assert [(j["id"], j["deadReason"]) for j in dead.json()["items"]] == [
        (str(ids["dead"]), "permanent-error")
    ]
    assert [j["id"] for j in high.json()["items"]] == [str(ids["queued"])]
    assert [j["id"] for j in limited.json()["items"]] == newest_first[:3]
    # Pages, as the API's and `dlq list`'s: --cursor takes the nextCursor of the last one.
    seen, cursor = [], limited.json()["nextCursor"]
    while cursor is not None:
        page = await ok("jobs", "list", "--limit", "3", "--cursor", cursor, "--json", url=db_url)
        seen += [j["id"] for j in page.json()["items"]]
        cursor = page.json()["nextCursor"]
    assert newest_first[:3] + seen == newest_first
    paged = await ok("jobs", "list", "--limit", "1", "--target", "alpha", url=db_url)
    hint = paged.out.splitlines()[-1]
    assert hint.startswith("more: herald jobs list --target alpha --limit 1 --cursor "), hint
    rest = await ok(*hint.split()[2:], url=db_url)
    alpha = [j["id"] for j in everything if j["target"] == "default/alpha"]
    assert [paged.out.split()[8], rest.out.split()[8]] == alpha[:2], (paged.out, rest.out)
    bad = await herald("jobs", "list", "--cursor", "nope", url=db_url)
    assert bad.code == 1 and "cursor" in bad.error
    lines = table.out.splitlines()
    assert lines[0].split()[:5] == ["ID", "TARGET", "PRIORITY", "STATE", "ATTEMPTS"]
    assert lines[1].split()[:5] == [
        str(ids["retrying"]),
        "default/alpha",
        "medium",
        "retrying",
        "1",
    ]
    assert empty.out == "no jobs\n"
    body = shown.json()
    assert (body["state"], body["payload"], body["lastError"]) == ("dead", {"i": 0}, "bad request")
    assert re.search(r"^payload\s+\{\"q\": 1\}$", text.out, re.M), text.out
    assert re.search(r"^state\s+queued$", text.out, re.M), text.out
    assert re.search(r"^waitingForOrderingKey\s+false$", text.out, re.M), text.out
    assert re.search(r"^lastError\s+-$", text.out, re.M), text.out
    assert not re.search(r"\b(None|True|False)\b", text.out), text.out

    cancelled = await ok("jobs", "cancel", str(ids["queued"]), url=db_url)
    assert cancelled.out == (
        f"{ids['queued']} cancelled (now a dead letter, reason cancelled; only "
        f"`herald dlq replay --job-id {ids['queued']}` puts it back)\n"
    )
    [row] = await job_rows(queue, "id = %s", [ids["queued"]])
    assert (row["state"], row["dead_reason"]) == ("dead", "cancelled")
    running = await herald("jobs", "cancel", str(ids["running"]), url=db_url)
    assert "not waiting" in running.error and str(ids["running"]) in running.error
    assert (await job_rows(queue, "id = %s", [ids["running"]]))[0]["state"] == "running"


# -- demo and the embedded PostgreSQL ---------------------------------------------------


@pytest.mark.slow
async def test_demo_delivers_or_dead_letters_every_job(pg_admin_url: str) -> None:
    run = await ok("demo", "--jobs", "200", "--database-url", pg_admin_url, url=None, timeout=90)
    summary = dict(
        re.findall(r"^  (\S.*?)\s{2,}(\S.*)$", run.out.split("herald demo: summary")[1], re.M)
    )
    assert summary["jobs submitted"] == "300"  # 200 at once, then 100 paced
    assert int(summary["delivered"]) + int(summary["dead-lettered (400)"]) == 300
    assert "paced latency p50, p99 (100 at 50/s)" in summary
    assert summary["dead-lettered (400)"] == "1"
    assert summary["bad signatures"] == "0"
    assert summary["duplicate deliveries"] == "0"
    assert "Every job was delivered or dead-lettered" in run.out
    # One retried job's story, from its attempts on record: refused, then delivered.
    story = run.out.split("one job's attempts on record", 1)[1].split("\n\n", 1)[0]
    decisions = re.findall(r"^  attempt \d+  HTTP \S+  (\S+)", story, re.M)
    assert decisions[-1] == "succeeded" and len(decisions) >= 2, story


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    """A short directory the embedded server (run as another user under root) can enter;
    tmp_path is under a 0700 directory and may be too long for the server's socket."""
    path = Path(tempfile.mkdtemp(prefix="herald-cli-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
async def test_without_a_database_url_the_embedded_postgresql_is_used(data_dir: Path) -> None:
    env = {"HERALD_DATA_DIR": str(data_dir)}
    stopped_line = f"embedded PostgreSQL in {data_dir}: stopped (the next command starts it)\n"
    # A status has no side effect: it does not start the server to say it answers.
    before = await ok("db", "status", url=None, env=env)
    assert (before.out, before.err) == (stopped_line, "")
    assert not (data_dir / "pgdata").exists()
    try:
        run = await ok("stats", "--json", url=None, env=env)
        assert run.json()["queued"] == 0, "migrated on first use"
        assert run.err == (
            f"herald: HERALD_DATABASE_URL is not set; using the embedded PostgreSQL in "
            f"{data_dir} (left running for the next command; `herald db stop` stops it)\n"
        )
        again = await ok("stats", "--json", url=None, env=env)
        assert again.err == "", "the banner is said once, when the server starts"
        status = await ok("db", "status", url=None, env=env)
        assert re.fullmatch(rf"PostgreSQL \S+ at embedded, {data_dir}: answering\n", status.out)
    finally:
        stopped = await herald("db", "stop", url=None, env=env)
    assert (stopped.code, stopped.out) == (0, "stopped\n"), stopped.err
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    after = await ok("db", "status", url=None, env=env)
    assert (after.out, after.err) == (stopped_line, "")
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "still stopped"


# -- the local example and herald receive -----------------------------------------------


@pytest.mark.slow
async def test_the_local_example_delivers_to_herald_receive(
    db_url: str, queue: Queue, tmp_path: Path
) -> None:
    """examples/local/ as shipped (only its port moved to a free one): `herald receive`
    verifies the signature its Secret makes and prints the delivery."""
    port = closed_port()
    text = (EXAMPLES / "local" / "webhook-target.yaml").read_text()
    assert "http://127.0.0.1:9000/hook" in text
    (tmp_path / "local.yaml").write_text(text.replace(":9000/", f":{port}/"))
    receive = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_tools.cli.main",
        "receive",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert receive.stdout is not None
    try:
        banner = await asyncio.wait_for(receive.stdout.readline(), 30)
        assert banner.decode().startswith("herald receive: listening on http://127.0.0.1:")
        await ok(
            "targets",
            "apply",
            str(tmp_path / "local.yaml"),
            url=db_url,
            env={"HERALD_EGRESS_ALLOW_LOOPBACK": "true"},
        )
        submitted = await ok(
            "enqueue",
            "--target",
            "local-hook",
            "--payload",
            '{"hello": "world"}',
            "--json",
            url=db_url,
        )
        job_id = submitted.json()["id"]
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "herald_tools.cli.main",
            "worker",
            "--targets",
            str(tmp_path / "local.yaml"),
            env=cli_env(db_url, HERALD_HTTP_HOST="127.0.0.1", HERALD_HTTP_PORT=str(closed_port())),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            line = await asyncio.wait_for(receive.stdout.readline(), 60)
        finally:
            worker.terminate()
            await asyncio.wait_for(worker.wait(), 60)
        assert line.decode().split()[:4] == [job_id, "signature", "ok", "->"], line
        assert '{"hello": "world"}' in line.decode()
    finally:
        receive.terminate()
        out, _ = await asyncio.wait_for(receive.communicate(), 30)
    assert receive.returncode == 0
    assert out.decode().endswith("herald receive: stopped after 1 request(s)\n")
