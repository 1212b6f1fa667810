"""``herald events send`` as a subprocess: one job per subscribed target, a resend gives the
same jobs, no match is not an error, bad flags are one line naming the flag."""

from __future__ import annotations

import json

from herald_queue.queue import Queue
from tests.helpers import register
from tests.integration.cli.cli import herald, ok


async def test_send_fans_out_and_a_resend_duplicates_nothing(db_url: str, queue: Queue) -> None:
    await register(queue, "slack", subscriptions={"eventTypes": ["incident.*"]})
    await register(
        queue,
        "pager",
        subscriptions={"eventTypes": ["incident.opened"], "filter": "event.payload.sev == 1"},
    )
    await register(queue, "other", "team-b", subscriptions={"eventTypes": ["*"]})
    args = ["events", "send", "--type", "incident.opened", "--payload", '{"sev": 1}']
    first = await ok(*args, "--id", "inc-1", "--json", url=db_url)
    answer = json.loads(first.out)
    assert sorted(j["target"] for j in answer["jobs"]) == ["default/pager", "default/slack"]
    assert (answer["id"], answer["created"], answer["duplicates"]) == ("inc-1", 2, 0)
    again = await ok(*args, "--id", "inc-1", url=db_url)
    assert again.out.count("(duplicate)") == 2
    assert "event inc-1: 0 jobs created, 2 duplicates" in again.out
    low = await ok(
        "events", "send", "--type", "incident.opened", "--payload", '{"sev": 3}', url=db_url
    )
    assert "-> default/slack" in low.out and "pager" not in low.out
    none = await ok(
        "events",
        "send",
        "--type",
        "deploy.done",
        "--payload",
        "{}",
        "--namespace",
        "team-c",
        url=db_url,
    )
    assert "no target in team-c subscribes to it" in none.out


async def test_bad_flags_name_the_flag(db_url: str) -> None:
    bad = await herald("events", "send", "--type", "a..b", "--payload", "{}", url=db_url)
    assert bad.code != 0 and "--type" in bad.err and "Traceback" not in bad.err
    bad = await herald("events", "send", "--type", "a", "--payload", "{nope", url=db_url)
    assert bad.code != 0 and "--payload" in bad.err and "Traceback" not in bad.err
