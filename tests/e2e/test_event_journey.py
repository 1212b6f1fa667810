"""The events journey as a user takes it, every step a ``herald`` subprocess with a time
bound: two ``herald receive``, ``herald targets apply`` of three PublishingTargets
subscribed to different patterns (one with a CEL filter), ``herald worker``; an event
POSTed over HTTP reaches the two receivers it is for (once each) and not the third; sent
again, over HTTP and with ``herald events send``, it creates and delivers nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.commands import (
    Process,
    env_for,
    http_get,
    http_post,
    ok,
    processes,
    start_receiver,
    start_worker,
)
from tests.helpers import target_manifest, wait_until

pytestmark = pytest.mark.timeout(300)

DELIVERY_TIMEOUT = 90.0


def lines_for(receiver: Process, job_id: str) -> int:
    return receiver.count("out", lambda line: line.startswith(job_id))


@pytest.mark.slow
async def test_an_event_reaches_each_subscribed_receiver_once(db_url: str, tmp_path: Path) -> None:
    env = env_for(db_url, None)
    with processes() as started:
        alpha, alpha_port = start_receiver(started, env, "--path", "/alpha", "--secret", "")
        beta, beta_port = start_receiver(started, env, "--path", "/beta", "--secret", "")
        manifests = tmp_path / "targets.yaml"
        manifests.write_text(
            yaml.safe_dump_all(
                [
                    target_manifest(
                        "alpha",
                        url=f"http://127.0.0.1:{alpha_port}/alpha",
                        subscriptions={"eventTypes": ["incident.*"]},
                    ),
                    target_manifest(
                        "beta",
                        url=f"http://127.0.0.1:{beta_port}/beta",
                        subscriptions={
                            "eventTypes": ["incident.opened"],
                            "filter": 'event.payload.severity == "critical"',
                        },
                    ),
                    target_manifest(
                        "gamma",
                        url=f"http://127.0.0.1:{beta_port}/beta",
                        subscriptions={"eventTypes": ["deploy.*"]},
                    ),
                ]
            )
        )
        ok(["targets", "apply", str(manifests)], env)
        listed = ok(["targets", "list", "--json"], env).json()
        assert {t["name"] for t in listed} >= {"alpha", "beta", "gamma"}
        _, base = await start_worker(started, env)

        event = {
            "id": "inc-2041",
            "type": "incident.opened",
            "payload": {"severity": "critical", "title": "orders DB down"},
        }
        status, answer = http_post(f"{base}/v1/events", event)
        assert status == 202, answer
        jobs = {j["target"]: j["id"] for j in answer["jobs"]}
        assert sorted(jobs) == ["default/alpha", "default/beta"]

        await wait_until(
            lambda: (
                lines_for(alpha, jobs["default/alpha"]) == 1
                and lines_for(beta, jobs["default/beta"]) == 1
            ),
            timeout=DELIVERY_TIMEOUT,
            interval=0.1,
            what="the event at both subscribed receivers",
        )
        [line] = [x for x in alpha.out if x.startswith(jobs["default/alpha"])]
        assert json.dumps(event["payload"], ensure_ascii=False) in line

        # Sent again: over HTTP, then from the command line. Nothing new.
        status, again = http_post(f"{base}/v1/events", event)
        assert status == 200, again
        assert {j["target"]: j["id"] for j in again["jobs"]} == jobs
        sent = ok(
            [
                "events",
                "send",
                "--id",
                "inc-2041",
                "--type",
                "incident.opened",
                "--payload",
                json.dumps(event["payload"]),
                "--json",
            ],
            env,
        ).json()
        assert (sent["created"], sent["duplicates"]) == (0, 2)

        # A receiver answers before the worker settles the job: wait for both settles.
        def settled() -> dict[str, Any] | None:
            stats: dict[str, Any] = http_get(f"{base}/v1/queue/stats")[1]
            return stats if stats["succeeded"] == 2 else None

        stats = await wait_until(
            settled,
            timeout=DELIVERY_TIMEOUT,
            interval=0.1,
            what="both jobs settled",
        )
        assert (stats["queued"], stats["running"]) == (0, 0), stats
        assert alpha.count("out", lambda x: "->" in x) == 1
        assert beta.count("out", lambda x: "->" in x) == 1

        # A target applied while the worker runs (from another process) receives the next
        # event: the worker's cached list of the namespace's targets follows the registry.
        later = tmp_path / "later.yaml"
        later.write_text(
            yaml.safe_dump(
                target_manifest(
                    "delta",
                    url=f"http://127.0.0.1:{alpha_port}/alpha",
                    subscriptions={"eventTypes": ["incident.*"]},
                )
            )
        )
        ok(["targets", "apply", str(later)], env)
        follow_up = {"id": "inc-2042", "type": "incident.closed", "payload": {}}

        def reaches_delta() -> bool:  # a resend is idempotent: same jobs, plus delta's
            status, answer = http_post(f"{base}/v1/events", follow_up)
            assert status in (200, 202), answer
            return "default/delta" in {j["target"] for j in answer["jobs"]}

        await wait_until(
            reaches_delta,
            timeout=DELIVERY_TIMEOUT,
            interval=0.2,
            what="an event for the target applied while the worker runs",
        )
