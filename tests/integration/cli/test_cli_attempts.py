"""The attempt record as a user meets it: a real ``herald worker`` delivering to a receiver
that fails once then succeeds, then ``herald jobs show ID`` (a subprocess, with a time
bound) showing both attempts; a job its receiver refuses, then ``herald dlq show`` showing
the dead letter's attempt."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from herald_tools.receiver import Answer, Receiver
from tests.e2e.commands import processes, start_worker
from tests.helpers import wait_until
from tests.integration.cli.cli import cli_env, ok
from tests.integration.worker.harness import FAST_RETRY, NO_BREAKER, target_doc, write_manifests

pytestmark = pytest.mark.slow

DELIVERY_TIMEOUT = 90.0


async def test_jobs_show_and_dlq_show_list_the_attempts(db_url: str, tmp_path: Path) -> None:
    seen: collections.Counter[str] = collections.Counter()

    def script(receiver: Receiver, request: Any, body: bytes) -> Answer:
        if request.query.get("reject"):
            return Answer(422, body="unprocessable: missing field")
        webhook_id = request.headers.get("webhook-id", "")
        seen[webhook_id] += 1
        if seen[webhook_id] == 1:
            return Answer(503, headers={"Retry-After": "0"}, body="try again")
        return Answer(body="accepted")

    retry = {"retry": {"maxAttempts": 5, **FAST_RETRY}, "circuitBreaker": NO_BREAKER}
    env = cli_env(db_url)
    async with Receiver(script) as rx, aiohttp.ClientSession() as http:
        targets = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc("flaky", rx.url, **retry),
                target_doc("refusing", rx.url + "?reject=1", **retry),
            ],
        )
        with processes() as started:
            worker, base = await start_worker(started, env, "--targets", str(targets))

            async def state(job_id: str) -> str:
                async with http.get(f"{base}/v1/jobs/{job_id}") as r:
                    return str((await r.json()).get("state"))

            flaky = (
                await ok(
                    "enqueue", "--target", "flaky", "--payload", '{"n": 1}', "--json", url=db_url
                )
            ).json()["id"]
            refused = (
                await ok(
                    "enqueue", "--target", "refusing", "--payload", '{"n": 2}', "--json", url=db_url
                )
            ).json()["id"]

            async def finished() -> bool:
                return await state(flaky) == "succeeded" and await state(refused) == "dead"

            await wait_until(
                finished, timeout=DELIVERY_TIMEOUT, what="the jobs delivered and dead-lettered"
            )

            shown = await ok("jobs", "show", flaky, url=db_url, timeout=60)
            lines = shown.out.splitlines()
            retry_line = next(line for line in lines if " retry " in line)
            success_line = next(line for line in lines if " succeeded " in line)
            assert "503" in retry_line and "try again" in retry_line, shown.out
            assert "200" in success_line, shown.out
            as_json = (await ok("jobs", "show", flaky, "--json", url=db_url, timeout=60)).json()
            history = as_json["attemptHistory"]["items"]
            assert [(a["attempt"], a["decision"], a["httpStatus"]) for a in history] == [
                (1, "retry", 503),
                (2, "succeeded", 200),
            ]
            assert history[1]["response"] == "accepted"

            [entry] = (await ok("dlq", "list", "--json", url=db_url)).json()["items"]
            assert entry["jobId"] == refused
            dlq = await ok("dlq", "show", entry["id"], url=db_url, timeout=60)
            dead_line = next(line for line in dlq.out.splitlines() if " dead " in line)
            assert "422" in dead_line and "unprocessable" in dead_line, dlq.out
            detail = (await ok("dlq", "show", entry["id"], "--json", url=db_url)).json()
            [attempt] = detail["attemptHistory"]["items"]
            assert (attempt["decision"], attempt["errorClass"]) == ("dead", "permanent")

            assert worker.stop() == 0, worker.tail()
