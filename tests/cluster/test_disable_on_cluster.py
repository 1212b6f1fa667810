"""A target failing continuously is disabled, on the real API: the Disabled condition and
Event, its jobs held (not dead-lettered), and the kubectl way back (the
herald.dev/enabled-at annotation). The days of HERALD_DISABLE_AFTER are the worker test's
(tests/integration/worker/test_disabled_endpoints.py, with a moved clock); here
spec.disableAfterSeconds is 1."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tests.cluster.controlplane import ControlPlane
from tests.cluster.herald import Herald, Kubectl, condition, herald_release, target, wait_ready
from tests.helpers import wait_until

from herald_tools.receiver import Answer, Receiver


@pytest.fixture()
async def herald(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> AsyncIterator[Herald]:
    async with herald_release(kube, kubectl, helm_path, db_url) as release:
        yield release


async def events(kubectl: Kubectl, name: str, reason: str) -> list[dict[str, Any]]:
    result = await kubectl(
        "get", "events", "-o", "json", f"--field-selector=involvedObject.name={name}"
    )
    return [e for e in result.json()["items"] if e.get("reason") == reason]


async def test_a_failing_target_is_disabled_and_an_annotation_enables_it(
    herald: Herald, kubectl: Kubectl
) -> None:
    failing = True

    def script(receiver: Receiver, request: web.Request, body: bytes) -> Answer:
        return Answer(503) if failing else Answer()

    async with Receiver(script) as receiver:
        await herald.operator()
        worker = await herald.worker(HERALD_RESCUE_INTERVAL="0.5s")
        fast = {"maxAttempts": 100, "initialBackoffSeconds": 0.1, "maxBackoffSeconds": 0.2}
        await kubectl.apply(
            target(
                "hook",
                receiver.url,
                retry={**fast, "jitterSeconds": 0},
                circuitBreaker={"failureThreshold": 1000},
                disableAfterSeconds=1,
            )
        )
        await wait_ready(kubectl, "publishingtarget", "hook")
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{worker.port}/v1/jobs",
                json={"target": "hook", "payload": {"n": 1}},
            ) as resp,
        ):
            assert resp.status == 201
            job = (await resp.json())["id"]

        async def disabled() -> dict[str, Any] | None:
            obj = await kubectl.get("publishingtarget", "hook")
            return obj if condition(obj, "Disabled").get("status") == "True" else None

        obj = await wait_until(disabled, timeout=30, interval=0.2, what="Disabled=True")
        found = condition(obj, "Disabled")
        assert found["reason"] == "FailingTooLong"
        assert "deliveries have failed continuously since" in found["message"]
        assert "herald.dev/enabled-at" in found["message"]
        assert obj["status"]["paused"] is True
        assert obj["status"]["pausedReason"].startswith("deliveries have failed continuously")
        assert condition(obj)["status"] == "True", "Ready is about configuration, unchanged"
        [event] = await wait_until(
            lambda: events(kubectl, "hook", "Disabled"),
            timeout=30,
            interval=0.2,
            what="a Disabled Event",
        )
        assert event["type"] == "Warning"

        # The job waits; nothing went to the dead-letter queue.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{worker.port}/v1/jobs/{job}") as resp,
        ):
            assert (await resp.json())["state"] in ("queued", "retrying")
        assert obj["status"]["deadLettered"] == 0

        # Fixed; enabled the kubectl way.
        failing = False
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await kubectl("annotate", "pt", "hook", f"herald.dev/enabled-at={now}", "--overwrite")

        async def enabled() -> dict[str, Any] | None:
            obj = await kubectl.get("publishingtarget", "hook")
            return obj if condition(obj, "Disabled").get("status") == "False" else None

        back = await wait_until(enabled, timeout=30, interval=0.2, what="Disabled=False")
        assert condition(back, "Disabled")["reason"] == "Enabled"
        await wait_until(
            lambda: any(r.webhook_id == job and r.answer.status == 200 for r in receiver.received),
            timeout=30,
            interval=0.2,
            what="the held job delivered",
        )
        await wait_until(
            lambda: events(kubectl, "hook", "Enabled"),
            timeout=30,
            interval=0.2,
            what="an Enabled Event",
        )
