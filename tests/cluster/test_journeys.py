"""Every kubectl journey of a Herald user, on the real API: the chart installed with helm,
the operator and a worker run as the chart's ServiceAccounts, a local receiver that checks
Standard Webhooks signatures."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import standardwebhooks
from tests.cluster.controlplane import ControlPlane
from tests.cluster.herald import (
    Herald,
    HeraldProcess,
    Kubectl,
    condition,
    herald_release,
    replay,
    secret,
    signing_secret,
    target,
    wait_ready,
)
from tests.helpers import wait_until

from herald_tools.receiver import Answer, Receiver, always


@pytest.fixture()
async def herald(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> AsyncIterator[Herald]:
    async with herald_release(kube, kubectl, helm_path, db_url) as release:
        yield release
        refused = release.forbidden()
        assert not refused, "the chart's RBAC refused Herald's requests:\n" + "\n".join(refused)


async def submit(worker: HeraldProcess, target_name: str, payload: Any, **fields: Any) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{worker.port}/v1/jobs",
            json={"target": target_name, "payload": payload, **fields},
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status in (200, 201), body
        return str(body["id"])


def signed_with(received: Any, key: str) -> bool:
    try:
        standardwebhooks.Webhook(key).verify(received.body, received.headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


async def test_a_target_applied_with_kubectl_delivers(herald: Herald, kubectl: Kubectl) -> None:
    first, second = signing_secret(), signing_secret()
    async with Receiver(always(Answer())) as receiver:
        await herald.operator()
        worker = await herald.worker()
        await kubectl.apply(
            secret("hook", signingSecret=first),
            target("hook", receiver.url, secretRef={"name": "hook"}, headers={"X-Team": "sre"}),
        )
        await wait_ready(kubectl, "publishingtarget", "hook")

        # Ready comes from the reconcile handler, circuit, depth and dead letters from the
        # first status refresh, a moment later.
        async def live_row() -> list[str] | None:
            row = (await kubectl("get", "publishingtarget", "hook", "--no-headers")).out.split()
            return row if len(row) == 7 else None

        row = await wait_until(
            live_row, timeout=30, interval=0.2, what="live columns in kubectl get publishingtargets"
        )
        assert row[:6] == ["hook", "webhook", "True", "closed", "0", "0"], row

        job = await submit(worker, "hook", {"summary": "disk full"})
        arrived = await wait_until(
            lambda: [r for r in receiver.received if r.webhook_id == job],
            timeout=30,
            interval=0.2,
            what="the job delivered to the receiver",
        )
        assert signed_with(arrived[0], first)
        assert arrived[0].headers["x-team"] == "sre"

        described = (await kubectl("describe", "publishingtarget", "hook")).out
        assert "Events:" in described and "Ready" in described.split("Events:")[1]

        # A spec edit: a new generation, observed once the operator has registered it.
        await kubectl("patch", "pt", "hook", "--type=merge", "-p", '{"spec":{"timeoutSeconds":5}}')
        edited = await wait_ready(kubectl, "publishingtarget", "hook", generation=2)
        assert condition(edited)["observedGeneration"] == 2

        # Rotating the Secret: deliveries are signed with the new key within the worker's
        # refresh (HERALD_TARGETS_REFRESH=1s here).
        await kubectl.apply(secret("hook", signingSecret=second))
        rotated = time.monotonic()

        async def signed_with_second() -> bool:
            job = await submit(worker, "hook", {"probe": uuid.uuid4().hex})
            got = await wait_until(
                lambda: [r for r in receiver.received if r.webhook_id == job],
                timeout=30,
                interval=0.2,
                what="delivery",
            )
            return signed_with(got[0], second)

        await wait_until(signed_with_second, timeout=20, interval=0.3, what="the new signature")
        assert time.monotonic() - rotated < 20

        # Deleting the target: its finalizer dead-letters what still waits.
        await kubectl("patch", "pt", "hook", "--type=merge", "-p", '{"spec":{"paused":true}}')
        await wait_ready(kubectl, "publishingtarget", "hook", generation=3)
        waiting = [await submit(worker, "hook", {"n": n}) for n in range(3)]
        await kubectl("delete", "publishingtarget", "hook", "--timeout=30s")
        assert await kubectl.get("publishingtarget", "hook") is None
        async with aiohttp.ClientSession() as http:
            for job_id in waiting:
                async with http.get(f"http://127.0.0.1:{worker.port}/v1/jobs/{job_id}") as resp:
                    body = await resp.json()
                    assert body["state"] == "dead", body
        assert not any(r.webhook_id in waiting for r in receiver.received)


async def test_a_dead_letter_replay_applied_with_kubectl(herald: Herald, kubectl: Kubectl) -> None:
    answer = {"status": 400}

    def script(*_: Any) -> Answer:
        return Answer(answer["status"])

    async with Receiver(script) as receiver:
        await herald.operator()
        worker = await herald.worker()
        await kubectl.apply(target("hook", receiver.url))
        await wait_ready(kubectl, "publishingtarget", "hook")
        ids = [await submit(worker, "hook", {"n": n}) for n in range(5)]
        await wait_until(
            lambda: len(receiver.received) >= 5, timeout=30, interval=0.2, what="five 400s"
        )
        answer["status"] = 200

        # The on-call view: kubectl shows the dead letters, and one Event says so.
        async def dead_column() -> list[str] | None:
            row = (await kubectl("get", "pt", "hook", "--no-headers")).out.split()
            return row if row[5:6] == ["5"] else None

        await wait_until(
            dead_column, timeout=30, interval=0.2, what="DEAD 5 in kubectl get publishingtargets"
        )
        obj = await kubectl.get("publishingtarget", "hook")
        assert obj is not None
        assert obj["status"]["deadLetters"] == {
            "waiting": 5,
            "transient": 0,
            "permanent": 5,
            "unknown": 0,
        }
        events = await wait_until(
            lambda: _events(kubectl, "hook", "DeadLettered"),
            timeout=30,
            interval=0.2,
            what="a DeadLettered Event",
        )
        assert len(events) == 1 and events[0]["type"] == "Warning", events
        assert "went to the dead-letter queue" in events[0]["message"]

        await kubectl.apply(replay("count", target="hook", dryRun=True))
        dry = await wait_until(
            lambda: _finished(kubectl, "count"),
            interval=0.2,
            timeout=30,
            what="the dry run finished",
        )
        assert (dry["phase"], dry["matched"], dry.get("replayed", 0)) == ("Succeeded", 5, 0)
        assert receiver.delivered_ids() == []

        await kubectl.apply(replay("again", target="hook", errorClass="permanent"))
        done = await wait_until(
            lambda: _finished(kubectl, "again"), interval=0.2, timeout=30, what="replayed"
        )
        assert (done["phase"], done["matched"], done["replayed"]) == ("Succeeded", 5, 5)
        await wait_until(
            lambda: len(receiver.delivered_ids()) == 5,
            timeout=30,
            interval=0.2,
            what="five deliveries",
        )
        assert sorted(receiver.delivered_ids()) == sorted(ids)
        table = (await kubectl("get", "deadletterreplays", "again", "--no-headers")).out.split()
        assert table[1:5] == ["hook", "Succeeded", "5", "5"], table

        # A finished replay never runs again: not on a re-apply, not after a restart.
        await kubectl("annotate", "dlr", "again", "touched=yes")
        await herald.stop_all()
        restarted = await herald.operator()
        await herald.worker()
        await wait_until(
            lambda: restarted.text().count("a finished replay never runs again") >= 2,
            timeout=30,
            interval=0.2,
            what="the restarted operator resuming both finished replays",
        )
        still = await _finished(kubectl, "again")
        assert still == done
        assert len(receiver.delivered_ids()) == 5


async def _events(kubectl: Kubectl, name: str, reason: str) -> list[dict[str, Any]]:
    result = await kubectl(
        "get", "events", "-o", "json", f"--field-selector=involvedObject.name={name}"
    )
    return [e for e in result.json()["items"] if e.get("reason") == reason]


async def _finished(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    obj = await kubectl.get("deadletterreplay", name)
    status = (obj or {}).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


async def test_a_replay_resumes_without_duplicates_after_the_operator_is_killed(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> None:
    answer = {"status": 400}
    async with (
        Receiver(lambda *_: Answer(answer["status"])) as receiver,
        herald_release(
            kube,
            kubectl,
            helm_path,
            db_url,
            operator={"extraEnv": [{"name": "HERALD_REPLAY_BATCH", "value": "10"}]},
        ) as herald,
    ):
        operator = await herald.operator(HERALD_STATUS_INTERVAL="1s")
        worker = await herald.worker()
        await kubectl.apply(target("hook", receiver.url))
        await wait_ready(kubectl, "publishingtarget", "hook")
        total = 600
        async with aiohttp.ClientSession() as http:
            for start in range(0, total, 200):
                batch = [{"target": "hook", "payload": {"n": n}} for n in range(start, start + 200)]
                async with http.post(f"http://127.0.0.1:{worker.port}/v1/jobs", json=batch) as r:
                    assert r.status in (200, 201), await r.text()
        await wait_until(
            lambda: len(receiver.received) >= total, interval=0.2, timeout=60, what="600 400s"
        )
        answer["status"] = 200
        await worker.stop()  # nothing is delivered while the replay runs: counts stay exact

        await kubectl.apply(replay("big", target="hook"))

        async def part_done() -> bool:
            obj = await kubectl.get("deadletterreplay", "big")
            status = (obj or {}).get("status") or {}
            return status.get("phase") == "Running" and 0 < status.get("replayed", 0) < total

        await wait_until(part_done, timeout=60, interval=0.05, what="the replay half-way")
        operator.popen.send_signal(signal.SIGKILL)
        operator.popen.wait(10)
        interrupted = ((await kubectl.get("deadletterreplay", "big")) or {})["status"]
        assert interrupted["phase"] == "Running" and interrupted["replayed"] < total
        await herald.operator()
        done = await wait_until(
            lambda: _finished(kubectl, "big"), interval=0.2, timeout=60, what="resumed"
        )
        assert (done["phase"], done["matched"], done["replayed"]) == ("Succeeded", total, total)
        assert done["startTime"] == interrupted["startTime"]
        await herald.worker()
        await wait_until(
            lambda: len(receiver.delivered_ids()) >= total,
            interval=0.2,
            timeout=60,
            what="every replay",
        )
        delivered = receiver.delivered_ids()
        assert len(delivered) == len(set(delivered)) == total


async def test_a_target_with_a_hard_capacity_pushes_back(herald: Herald, kubectl: Kubectl) -> None:
    """spec.capacity on the real API: the worker answers 429 with Retry-After beyond it, and
    the operator writes the CapacityPressure condition and a Warning Event."""
    await herald.operator()
    worker = await herald.worker()
    await kubectl.apply(
        target("cap", "http://127.0.0.1:9/", paused=True, capacity={"jobs": 2, "hardLimit": True})
    )
    await wait_ready(kubectl, "publishingtarget", "cap")
    base = f"http://127.0.0.1:{worker.port}"
    async with aiohttp.ClientSession() as http:

        async def sampled() -> bool:
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            return any(
                line.startswith("herald_queue_capacity_jobs{") and '/cap"} 2.0' in line
                for line in text.splitlines()
            )

        await wait_until(
            sampled, timeout=30, interval=0.2, what="the worker sampled the target's capacity"
        )
        for n in range(2):
            await submit(worker, "cap", {"n": n})
        async with http.post(
            f"{base}/v1/jobs", json={"target": "cap", "payload": {"n": 2}}
        ) as resp:
            body = await resp.json()
            assert resp.status == 429, body
            assert int(resp.headers["Retry-After"]) >= 1
    full = await wait_until(
        lambda: _capacity(kubectl, "cap", "AtCapacity"),
        timeout=30,
        interval=0.2,
        what="CapacityPressure AtCapacity",
    )
    assert full["status"] == "True" and "2 of 2 jobs waiting" in full["message"], full
    described = (await kubectl("describe", "publishingtarget", "cap")).out
    assert "AtCapacity" in described.split("Events:")[1], described


async def _capacity(kubectl: Kubectl, name: str, reason: str) -> dict[str, Any] | None:
    found = condition(await kubectl.get("publishingtarget", name), "CapacityPressure")
    return found if found.get("reason") == reason else None


async def test_an_event_fans_out_to_the_targets_subscribed_with_kubectl(
    herald: Herald, kubectl: Kubectl
) -> None:
    """spec.subscriptions on the real API: kubectl shows what each target subscribes to, a
    filter that does not compile is Ready=False with the compiler's message, and an event
    POSTed once reaches each subscribed receiver once, however often it is sent."""
    async with Receiver(always(Answer())) as slack, Receiver(always(Answer())) as pager:
        await herald.operator()
        worker = await herald.worker()
        await kubectl.apply(
            target("slack", slack.url, subscriptions={"eventTypes": ["incident.*"]}),
            target(
                "pager",
                pager.url,
                subscriptions={
                    "eventTypes": ["incident.opened"],
                    "filter": 'event.payload.severity == "critical"',
                },
            ),
            target(
                "broken",
                "http://127.0.0.1:9/",
                subscriptions={"eventTypes": ["*"], "filter": "event.payload.severity =="},
            ),
        )
        await wait_ready(kubectl, "publishingtarget", "slack")
        await wait_ready(kubectl, "publishingtarget", "pager")

        async def refused() -> dict[str, Any] | None:
            found = condition(await kubectl.get("publishingtarget", "broken"))
            return found if found.get("status") == "False" else None

        problem = await wait_until(refused, timeout=30, interval=0.2, what="broken Ready=False")
        assert problem["reason"] == "InvalidSpec", problem
        assert "spec.subscriptions.filter: is not valid CEL: unexpected end" in problem["message"]
        table = (await kubectl("get", "pt", "slack", "pager", "--no-headers")).out
        assert '["incident.*"]' in table and '["incident.opened"]' in table, table

        event = {"id": "inc-1", "type": "incident.opened", "payload": {"severity": "critical"}}
        async with aiohttp.ClientSession() as http:
            for expected in (202, 200):  # sent, then sent again
                async with http.post(
                    f"http://127.0.0.1:{worker.port}/v1/events", json=event
                ) as resp:
                    body = await resp.json()
                    assert resp.status == expected, body
                ns = body["namespace"]  # the worker's HERALD_NAMESPACE: the test's namespace
                jobs = {j["target"]: j["id"] for j in body["jobs"]}
                assert sorted(jobs) == [f"{ns}/pager", f"{ns}/slack"], body
        for receiver, name in ((slack, f"{ns}/slack"), (pager, f"{ns}/pager")):
            await wait_until(
                lambda r=receiver, n=name: [x for x in r.received if x.webhook_id == jobs[n]],
                timeout=30,
                interval=0.2,
                what=f"the event delivered to {name}",
            )

        # A receiver answers before the worker settles the job: wait for both settles.
        async def settled() -> dict[str, Any] | None:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{worker.port}/v1/queue/stats") as resp,
            ):
                stats: dict[str, Any] = await resp.json()
            return stats if stats["succeeded"] == 2 else None

        stats = await wait_until(settled, timeout=30, interval=0.2, what="both jobs settled")
        assert (stats["queued"], stats["running"]) == (0, 0), stats
        assert len(slack.received) == 1 and len(pager.received) == 1
