"""Signing keys on the real API: the rotation procedure of docs/signing.md followed step by
step with kubectl while jobs flow without pause, every delivery verified by the
``standardwebhooks`` library with the keys the receiver accepts at that moment (none may
fail); then an ed25519 key, its public key read from the PublishingTarget's status and
from the worker, verifying the v1a signatures."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import standardwebhooks
from aiohttp import web
from tests.cluster.controlplane import ControlPlane
from tests.cluster.herald import (
    Herald,
    HeraldProcess,
    Kubectl,
    herald_release,
    secret,
    signing_secret,
    target,
    wait_ready,
)
from tests.helpers import wait_until
from tests.unit.test_signing_keys import ed25519_key, verify_v1a

from herald_tools.receiver import Answer, Receiver


def verifies(key: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        standardwebhooks.Webhook(key).verify(body, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


@dataclasses.dataclass
class Arrival:
    webhook_id: str
    versions: list[str]
    """The signature versions the header carried, in order."""
    verified_with: list[str]
    """Which of the accepted keys verified it."""
    body: bytes
    headers: dict[str, str]


@dataclasses.dataclass
class RotatingReceiver:
    """What a receiver accepts, changed as the procedure says; a request no accepted key
    verifies is refused (401) and recorded as a failure."""

    accepted: list[str]
    arrivals: list[Arrival] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    def __call__(self, receiver: Receiver, request: web.Request, body: bytes) -> Answer:
        headers = {k.lower(): v for k, v in request.headers.items()}
        header = headers.get("webhook-signature", "")
        ok = [k for k in self.accepted if verifies(k, body, headers)]
        self.arrivals.append(
            Arrival(
                headers.get("webhook-id", ""),
                [part.split(",")[0] for part in header.split()],
                ok,
                body,
                headers,
            )
        )
        if not ok:
            self.failures.append(f"{headers.get('webhook-id')}: {header.count(',')} signatures")
            return Answer(401, body="no accepted key verifies this delivery")
        return Answer()

    async def wait_arrival(self, what: str, check: Any) -> Arrival:
        """The first delivery from now on that ``check`` accepts."""
        start = len(self.arrivals)
        found: Arrival = await wait_until(
            lambda: next((a for a in self.arrivals[start:] if check(a)), None),
            timeout=30,
            interval=0.1,
            what=what,
        )
        return found


@contextlib.asynccontextmanager
async def steady_flow(worker: HeraldProcess, target_name: str) -> AsyncIterator[list[str]]:
    """Submits a job every 50 ms until the block ends; yields the ids submitted."""
    ids: list[str] = []

    async def submit_forever(http: aiohttp.ClientSession) -> None:
        while True:
            async with http.post(
                f"http://127.0.0.1:{worker.port}/v1/jobs",
                json={"target": target_name, "payload": {"n": len(ids)}},
            ) as resp:
                assert resp.status == 201, await resp.text()
                ids.append(str((await resp.json())["id"]))
            await asyncio.sleep(0.05)

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(submit_forever(http))
        try:
            yield ids
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture()
async def herald(
    crds: None, kube: ControlPlane, kubectl: Kubectl, helm_path: str, db_url: str
) -> AsyncIterator[Herald]:
    async with herald_release(kube, kubectl, helm_path, db_url) as release:
        yield release


async def test_rotation_without_downtime_then_v1a_with_the_published_key(
    herald: Herald, kubectl: Kubectl
) -> None:
    old, new = signing_secret(), signing_secret()
    private, public = ed25519_key()
    state = RotatingReceiver(accepted=[old])
    async with Receiver(state) as receiver:
        await herald.operator()
        worker = await herald.worker()
        await kubectl.apply(
            secret("hook", signingSecret=old),
            target("hook", receiver.url, secretRef={"name": "hook"}),
        )
        ready = await wait_ready(kubectl, "publishingtarget", "hook")
        assert not (ready.get("status") or {}).get("signingPublicKeys")

        async with steady_flow(worker, "hook") as ids:
            await state.wait_arrival(
                "a delivery signed with the old secret", lambda a: a.verified_with
            )

            # 1. Add the new secret beside the old: every delivery carries both signatures.
            await kubectl.apply(secret("hook", signingSecret=f"{old} {new}"))
            both = await state.wait_arrival(
                "deliveries signed with both secrets", lambda a: a.versions == ["v1", "v1"]
            )
            assert verifies(new, both.body, both.headers)

            # 2. Receivers accept either (here: move to the new one; the old still signs).
            state.accepted = [old, new]
            await state.wait_arrival(
                "a delivery verified by both", lambda a: len(a.verified_with) == 2
            )
            state.accepted = [new]
            await state.wait_arrival("a delivery verified by the new", lambda a: a.verified_with)

            # 3. Remove the old secret: one signature, the new one's.
            await kubectl.apply(secret("hook", signingSecret=new))
            last = await state.wait_arrival(
                "deliveries signed with the new secret only", lambda a: a.versions == ["v1"]
            )
            assert not verifies(old, last.body, last.headers)

            # 4. An ed25519 key too: its public key is published in the status and by the
            # worker (without a token); receivers verify v1a with what they fetched.
            await kubectl.apply(secret("hook", signingSecret=f"{new}\n{private}"))

            async def status_keys() -> list[str] | None:
                obj = await kubectl.get("publishingtarget", "hook")
                keys = ((obj or {}).get("status") or {}).get("signingPublicKeys")
                return list(keys) if keys else None

            assert await wait_until(
                status_keys, timeout=30, interval=0.2, what="status.signingPublicKeys"
            ) == [public]
            url = f"http://127.0.0.1:{worker.port}/signing-keys/{kubectl.namespace}/hook"

            async def served_keys() -> dict[str, Any] | None:
                # The worker re-reads the Secret every HERALD_TARGETS_REFRESH (1 s here).
                async with aiohttp.ClientSession() as http, http.get(url) as resp:
                    return dict(await resp.json()) if resp.status == 200 else None

            served = await wait_until(
                served_keys, timeout=30, interval=0.2, what="the worker's /signing-keys"
            )
            [fetched] = served["publicKeys"]
            assert fetched == public
            signed = await state.wait_arrival("a v1a signature", lambda a: "v1a" in a.versions)
            assert verify_v1a(
                fetched,
                signed.headers["webhook-signature"],
                signed.webhook_id,
                int(signed.headers["webhook-timestamp"]),
                signed.body,
            )
        submitted = list(ids)

        # Every job submitted during the whole procedure delivered, none refused.
        await wait_until(
            lambda: set(submitted) <= {a.webhook_id for a in state.arrivals if a.verified_with},
            interval=0.2,
            timeout=60,
            what=f"all {len(submitted)} jobs delivered",
        )
        assert state.failures == [], state.failures
        assert len(submitted) > 20, len(submitted)

        # Removing the ed25519 key empties the published list.
        await kubectl.apply(secret("hook", signingSecret=new))

        async def status_cleared() -> bool:
            obj = await kubectl.get("publishingtarget", "hook")
            return not ((obj or {}).get("status") or {}).get("signingPublicKeys")

        await wait_until(
            status_cleared, timeout=30, interval=0.2, what="status.signingPublicKeys emptied"
        )
