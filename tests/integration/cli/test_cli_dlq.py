"""``herald dlq list|show|replay|purge|stats`` on dead letters made through the library."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid

import pytest

from herald_core.states import Priority
from herald_queue.queue import Queue
from tests.helpers import (
    claim_all,
    failure,
    job,
    job_rows,
    register,
    sql_exec,
    sql_rows,
    sql_value,
)
from tests.integration.cli.cli import ONE_SHOT, bury, count_jobs, herald, ok


async def dead_letter_count(queue: Queue, where: str = "true") -> int:
    return int(await sql_value(queue, f"SELECT count(*) FROM herald.dead_letters WHERE {where}"))


@pytest.mark.slow
async def test_dlq_list_pages_filters_show_and_stats(db_url: str, queue: Queue) -> None:
    alpha = await bury(queue, "alpha", 3, "permanent")
    beta = await bury(queue, "beta", 2, "transient")
    listed, by_target, permanent, table, stats = await asyncio.gather(
        ok("dlq", "list", "--json", url=db_url),
        ok("dlq", "list", "--target", "beta", "--json", url=db_url),
        ok("dlq", "list", "--error-class", "permanent", "--json", url=db_url),
        ok("dlq", "list", "--limit", "4", url=db_url),
        ok("dlq", "stats", "--json", url=db_url),
    )
    assert listed.json()["nextCursor"] is None
    items = listed.json()["items"]
    assert sorted(i["jobId"] for i in items) == sorted(str(i) for i in alpha + beta)
    failed_at = [i["failedAt"] for i in items]
    assert failed_at == sorted(failed_at, reverse=True), "newest first"
    assert sorted(i["jobId"] for i in by_target.json()["items"]) == sorted(str(i) for i in beta)
    assert {i["errorClass"] for i in by_target.json()["items"]} == {"transient"}
    assert sorted(i["jobId"] for i in permanent.json()["items"]) == sorted(str(i) for i in alpha)
    lines = table.out.splitlines()
    assert lines[0].split()[:5] == ["ID", "TARGET", "CLASS", "REASON", "ATTEMPTS"]
    assert [line.split()[0] for line in lines[1:5]] == [i["id"] for i in items[:4]]
    assert lines[5:6] == [""]
    assert re.fullmatch(r"more: herald dlq list --limit 4 --cursor \S+", lines[6]), lines[6]
    counts = stats.json()
    assert (counts["total"], counts["waiting"], counts["replayed"]) == (5, 5, 0)
    assert counts["byTarget"] == {"default/alpha": 3, "default/beta": 2}
    assert counts["byErrorClass"] == {"permanent": 3, "transient": 2}

    # Pages of two, following nextCursor, give every entry once, in the same order.
    seen, cursor = [], None
    while True:
        args = ["dlq", "list", "--limit", "2", "--json"] + (["--cursor", cursor] if cursor else [])
        page = (await ok(*args, url=db_url)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [i["id"] for i in items]

    entry = next(i for i in items if i["jobId"] == str(alpha[0]))
    shown, text, missing = await asyncio.gather(
        ok("dlq", "show", entry["id"], "--json", url=db_url),
        ok("dlq", "show", entry["id"], url=db_url),
        herald("dlq", "show", str(alpha[0]), url=db_url),  # a job id, not an entry's
    )
    body = shown.json()
    assert (body["jobId"], body["target"], body["payload"], body["error"]) == (
        str(alpha[0]),
        "default/alpha",
        {"i": 0},
        "failure 0",
    )
    assert body["targetConfig"]["retry"]["maxAttempts"] == 1
    assert re.search(r"^payload\s+\{\"i\": 0\}$", text.out, re.M), text.out
    # Values as JSON or "-", never Python's reprs (None, False).
    assert re.search(r"^replayed\s+false$", text.out, re.M), text.out
    assert re.search(r"^replayedAt\s+-$", text.out, re.M), text.out
    assert not re.search(r"\b(None|True|False)\b", text.out), text.out
    assert missing.error == f"herald: error: id: no dead letter {alpha[0]}"


@pytest.mark.slow
async def test_dlq_replay_puts_each_dead_letter_back_once(db_url: str, queue: Queue) -> None:
    ids = await bury(queue, "alpha", 3)
    listed, refused, dry, dry_text = await asyncio.gather(
        ok("dlq", "list", "--json", url=db_url),
        herald("dlq", "replay", url=db_url),
        ok("dlq", "replay", "--all", "--dry-run", "--json", url=db_url),
        ok("dlq", "replay", "--all", "--dry-run", url=db_url),
    )
    entry_of = {e["jobId"]: e["id"] for e in listed.json()["items"]}
    assert refused.error == (
        "herald: error: replay: give dead-letter ids or filters, or --all to replay every "
        "dead letter"
    )
    assert (dry.json()["matched"], dry.json()["replayed"], dry.json()["dryRun"]) == (3, 3, True)
    assert dry_text.out == "would replay 3 dead letters\n"
    assert (await ok("dlq", "replay", "--all", "--limit", "1", "--dry-run", url=db_url)).out == (
        "would replay 1 dead letter\n"
    )
    assert await count_jobs(queue, "state = 'dead'") == 3, "a dry run changes nothing"
    assert await dead_letter_count(queue, "replayed") == 0

    one = (await ok("dlq", "replay", entry_of[str(ids[0])], "--json", url=db_url)).json()
    assert (one["replayed"], one["jobIds"]) == (1, [str(ids[0])])
    [row] = await job_rows(queue, "id = %s", [ids[0]])
    assert (row["state"], row["payload"]) == ("queued", {"i": 0})
    # Replayed once ever: naming it again is an error, as the API's 409.
    twice = await herald("dlq", "replay", entry_of[str(ids[0])], "--json", url=db_url)
    assert twice.error == (
        f"herald: error: dead letter {entry_of[str(ids[0])]} was already replayed (each is "
        "replayed once; if the job failed again, it has a new dead letter: `herald dlq list "
        "--not-replayed`)"
    )
    assert twice.out == ""
    by_job = await herald("dlq", "replay", "--job-id", str(ids[0]), url=db_url)
    assert f"dead letter of job {ids[0]} was already replayed" in by_job.error
    unknown = await herald("dlq", "replay", "0190a5b2-0000-7000-8000-000000000000", url=db_url)
    assert unknown.error == (
        "herald: error: no dead letter 0190a5b2-0000-7000-8000-000000000000 (see `herald dlq list`)"
    )
    not_an_id = await herald("dlq", "show", "42", url=db_url)
    assert "'42' is not a dead-letter id (a UUID)" in not_an_id.error

    # Two replays of everything at once: the two entries left are replayed once in all.
    racing = await asyncio.gather(
        ok("dlq", "replay", "--all", "--json", url=db_url),
        ok("dlq", "replay", "--all", "--json", url=db_url),
    )
    replayed_ids = [i for r in racing for i in r.json()["jobIds"]]
    assert sorted(replayed_ids) == sorted(str(i) for i in ids[1:])
    assert (await ok("dlq", "replay", "--all", url=db_url)).out == "replayed 0 dead letters\n"
    assert await count_jobs(queue) == 3 and await count_jobs(queue, "state = 'queued'") == 3
    assert (await ok("dlq", "list", "--not-replayed", "--json", url=db_url)).json()["items"] == []
    replayed = (await ok("dlq", "list", "--replayed", "--json", url=db_url)).json()["items"]
    assert sorted(e["jobId"] for e in replayed) == sorted(str(i) for i in ids)
    assert all(e["replayResult"] == "queued" for e in replayed)
    assert all(e["replayedBy"].startswith("cli") for e in replayed)


@pytest.mark.slow
async def test_dlq_purge_dry_run_deletes_nothing(db_url: str, queue: Queue) -> None:
    ids = await bury(queue, "alpha", 4)
    await sql_exec(
        queue,
        "UPDATE herald.dead_letters SET failed_at = now() - interval '2 days' "
        "WHERE job_id = ANY(%s)",
        [ids[:2]],
    )
    dry = (await ok("dlq", "purge", "--older-than", "1d", "--dry-run", "--json", url=db_url)).json()
    assert (dry["matched"], dry["deleted"], dry["dryRun"]) == (2, 0, True)
    text = await ok("dlq", "purge", "--older-than", "24h", "--dry-run", url=db_url)
    rfc3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(rf"would delete 2 dead letters that failed before {rfc3339}\n", text.out)
    assert await dead_letter_count(queue) == 4

    other = await ok("dlq", "purge", "--older-than", "1d", "--target", "beta", url=db_url)
    assert other.out.startswith("deleted 0 dead letters")
    purged = await ok("dlq", "purge", "--older-than", "1d", url=db_url)
    assert re.fullmatch(rf"deleted 2 dead letters that failed before {rfc3339}\n", purged.out)
    left = await sql_rows(queue, "SELECT job_id FROM herald.dead_letters ORDER BY job_id")
    assert [r["job_id"] for r in left] == sorted(ids[2:])
    bad = await herald("dlq", "purge", "--older-than", "a while", url=db_url)
    assert bad.code == 2
    assert "argument --older-than: 'a while' is not a duration" in bad.error


@pytest.mark.slow
async def test_a_cancelled_job_stays_cancelled_and_keeps_its_run_at(
    db_url: str, queue: Queue
) -> None:
    """`herald jobs cancel` on a job scheduled for 2030, then `herald dlq replay --all`:
    the cancelled job is left out (and the answer says so); replayed by its job id it is
    back, still waiting for 2030."""
    failed = await bury(queue, "alpha", 1)
    scheduled = await queue.jobs.enqueue(
        job("alpha", {"when": 2030}, run_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    )
    cancel = await ok("jobs", "cancel", str(scheduled.id), url=db_url)
    assert f"herald dlq replay --job-id {scheduled.id}" in cancel.out
    everything = await ok("dlq", "replay", "--all", url=db_url)
    assert everything.out == (
        "replayed 1 dead letter; left out 1 cancelled job(s) (replay a cancelled job by "
        "naming it: herald dlq replay ID, or --job-id JOB)\n"
    )
    [row] = await job_rows(queue, "id = %s", [scheduled.id])
    assert (row["state"], row["dead_reason"]) == ("dead", "cancelled")
    [back] = await job_rows(queue, "id = %s", [failed[0]])
    assert back["state"] == "queued"
    again = (await ok("dlq", "replay", "--all", "--json", url=db_url)).json()
    assert (again["replayed"], again["cancelledLeftOut"]) == (0, 1)

    named = (await ok("dlq", "replay", "--job-id", str(scheduled.id), "--json", url=db_url)).json()
    assert (named["replayed"], named["jobIds"], named["cancelledLeftOut"]) == (
        1,
        [str(scheduled.id)],
        0,
    )
    shown = (await ok("jobs", "show", str(scheduled.id), "--json", url=db_url)).json()
    assert (shown["state"], shown["runAt"]) == ("queued", "2030-01-01T00:00:00Z")


@pytest.mark.slow
async def test_replaying_dead_letters_of_a_deleted_target_by_id_is_an_error(
    db_url: str, queue: Queue
) -> None:
    """As the API's 409: nothing named could be replayed. With filters instead of ids, the
    same replay reports what it skipped and succeeds."""
    [job_id] = await bury(queue, "gone", 1)
    await queue.registry.delete("gone")
    [entry] = (await ok("dlq", "list", "--json", url=db_url)).json()["items"]
    by_id = await herald("dlq", "replay", entry["id"], url=db_url)
    assert by_id.error == (
        "herald: error: target default/gone no longer exists: nothing was replayed, and the "
        "dead letters are marked target-missing (replay them again once the target is "
        "recreated)"
    )
    by_job = await herald("dlq", "replay", "--job-id", str(job_id), url=db_url)
    assert "default/gone no longer exists" in by_job.error
    filtered = await ok("dlq", "replay", "--target", "default/gone", url=db_url)
    assert filtered.out == "replayed 0 dead letters; skipped 1 whose target no longer exists\n"
    assert await count_jobs(queue, "state = 'queued'") == 0


@pytest.mark.slow
async def test_dlq_list_and_replay_by_priority(db_url: str, queue: Queue) -> None:
    await register(queue, "mixed", **ONE_SHOT)
    ids: dict[str, list[uuid.UUID]] = {}
    for p in Priority:
        results = await queue.jobs.enqueue_many([job("mixed", {"i": i}, p) for i in range(2)])
        ids[p.value] = [r.id for r in results]
    claimed = await claim_all(queue)
    await queue.jobs.fail("w", [failure(c, "permanent") for c in claimed])

    high, table = await asyncio.gather(
        ok("dlq", "list", "--priority", "high", "--json", url=db_url),
        ok("dlq", "list", "--priority", "high", "--limit", "1", url=db_url),
    )
    assert sorted(i["jobId"] for i in high.json()["items"]) == sorted(map(str, ids["high"]))
    # The next-page hint keeps the filter.
    assert "--priority high" in table.out.splitlines()[-1], table.out
    replayed = await ok("dlq", "replay", "--priority", "low", "--json", url=db_url)
    assert sorted(replayed.json()["jobIds"]) == sorted(map(str, ids["low"]))
    assert await dead_letter_count(queue, "replayed") == 2
    bad = await herald("dlq", "list", "--priority", "urgent", url=db_url)
    assert bad.code == 2 and "--priority" in bad.err, bad.err


@pytest.mark.slow
async def test_a_stored_payload_too_deep_to_decode_is_shown_as_text(
    db_url: str, queue: Queue
) -> None:
    """A row from before HERALD_MAX_PAYLOAD_DEPTH (nested 5000 deep, written with SQL)
    never breaks ``jobs show|list`` or ``dlq show|list``: its payload is shown as text."""
    await register(queue, "hook")
    deep = "[" * 5000 + "]" * 5000
    job_id = str(uuid.uuid4())
    await sql_exec(
        queue,
        "INSERT INTO herald.jobs (id, target_id, priority, payload, run_at, deadline) "
        "SELECT %s, id, 'medium', %s::json, now(), now() FROM herald.targets WHERE name = 'hook'",
        [job_id, deep],
    )
    shown, listed, table = await asyncio.gather(
        ok("jobs", "show", job_id, "--json", url=db_url),
        ok("jobs", "list", "--json", url=db_url),
        ok("jobs", "show", job_id, url=db_url),
    )
    assert (shown.json()["payload"], shown.json()["payloadText"]) == (None, deep)
    assert "5000" in shown.json()["payloadNote"]
    assert [i["id"] for i in listed.json()["items"]] == [job_id]
    assert "payloadNote" in table.out
    await ok("jobs", "cancel", job_id, url=db_url)
    letters = await ok("dlq", "list", "--json", url=db_url)
    [entry] = letters.json()["items"]
    assert entry["payloadText"] == deep
    one, table = await asyncio.gather(
        ok("dlq", "show", entry["id"], "--json", url=db_url),
        ok("dlq", "list", url=db_url),
    )
    assert (one.json()["payload"], one.json()["payloadText"]) == (None, deep)
    assert job_id[:8] in table.out or entry["id"][:8] in table.out
