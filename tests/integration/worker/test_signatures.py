"""Webhook deliveries as a Standard Webhooks receiver sees them, checked with the
independent ``standardwebhooks`` library:

- every delivery verifies (``Webhook(secret).verify(body, headers)``), a wrong secret does
  not; with two secrets (rotation) it verifies with either;
- ``webhook-id`` is the job id, the same on every attempt of a retried job;
- the body is byte-identical to the submitted payload's JSON text, whatever its spelling
  (``1.0E2``, duplicate keys, unicode escapes, whitespace), from the API (single and batch)
  and from ``herald enqueue`` (flags and stdin), and the signature covers those bytes;
- the target's extra headers arrive; Herald's own headers cannot be overridden;
- a whsk_ key adds a v1a (ed25519) signature that verifies with the public key the worker
  publishes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from herald_tools.receiver import Answer
from herald_tools.receiver import verify as receiver_verify
from tests.integration.cli.cli import ok
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    OTHER_SECRET,
    SECRET,
    TrackingReceiver,
    fail_first,
    secret_doc,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)
from tests.unit.test_signing_keys import ed25519_key, verify_v1a

PAYLOADS: list[Any] = [
    {"summary": "disk full", "host": "db-1", "value": 97.5, "tags": ["a", "b"]},
    {"unicode": "Grüße, 東京, emoji 🚀", "quote": '"quoted" \\ back\\slash', "nl": "a\nb"},
    {"nested": {"deep": {"er": [1, 2.0, -3e-5, 10000000000, None, True, False]}}},
    ["a", "list", "payload"],
    "a bare string",
    42,
    False,
    {"empty": {}, "also": [], "zero": 0, "html": "<b>&amp;</b>"},
]


def as_sent(payload: Any) -> bytes:
    """What ``aiohttp``'s ``json=`` sends for ``payload`` (json.dumps' default spacing)."""
    return json.dumps(payload).encode()


def headers_of(received: Any) -> dict[str, str]:
    return dict(received.headers)


async def test_deliveries_verify_ids_are_stable_bodies_are_exact(
    db_url: str, tmp_path: Path
) -> None:
    # Every job fails once (503), so each is delivered twice: ids must not change.
    async with TrackingReceiver(fail_first(1, Answer(503)), secret=SECRET) as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc(
                    "hook",
                    rx.url,
                    secretRef={"name": "hook-secret"},
                    headers={"X-Team": "sre", "X-Trace-Source": "herald-tests"},
                    retry={"maxAttempts": 5, **FAST_RETRY},
                    circuitBreaker=NO_BREAKER,
                ),
                secret_doc("hook-secret", signingSecret=SECRET),
            ],
        )
        async with worker(db_url, path) as w:
            ids = [(await w.submit("hook", p))["id"] for p in PAYLOADS]
            await wait_state(w.queue, "succeeded", len(PAYLOADS))

            assert len(rx.received) == 2 * len(PAYLOADS)
            assert rx.bad_signatures == 0
            hook = Webhook(SECRET)
            by_id: dict[str, list[Any]] = {}
            for r in rx.received:
                by_id.setdefault(r.webhook_id, []).append(r)
                headers = headers_of(r)
                assert hook.verify(r.body, headers) == json.loads(r.body), "verifies"
                with pytest.raises(WebhookVerificationError):
                    Webhook(OTHER_SECRET).verify(r.body, headers)
                tampered = r.body + b" "
                with pytest.raises(WebhookVerificationError):
                    hook.verify(tampered, headers)
                assert headers["x-team"] == "sre"
                assert headers["x-trace-source"] == "herald-tests"
                assert headers["content-type"] == "application/json"
                assert headers["user-agent"].startswith("Herald/")
                assert headers["webhook-timestamp"].isdigit()

            assert set(by_id) == set(ids), "webhook-id is the job id"
            for job_id, payload in zip(ids, PAYLOADS, strict=True):
                attempts = by_id[job_id]
                assert [a.answer.status for a in attempts] == [503, 200]
                assert {a.webhook_id for a in attempts} == {job_id}, "stable across retries"
                for a in attempts:
                    assert a.body == as_sent(payload), "the payload's JSON text, exactly"


# Payload texts that re-serialising would change: each must arrive as these bytes.
ODD_TEXTS = [
    '{"value": 1.0E2, "small": -0.000e-0, "big": 123456789012345678901234567890}',
    '{"k": 1, "k": 2, "k": {"k": [], "k": {}}}',
    '{"u": "\\u00e9\\u6771\\ud83d\\ude80 \\/ \\" \\t", "raw": "Grüße 🚀"}',
    '\t[ 1 ,\n 2,\r\n  {  "a"  :  null  }  ]',
    "1E400",
]


@pytest.mark.slow
async def test_odd_payload_texts_arrive_byte_identical_and_verify(
    db_url: str, tmp_path: Path
) -> None:
    async with TrackingReceiver(secret=SECRET) as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc("hook", rx.url, secretRef={"name": "hook-secret"}),
                secret_doc("hook-secret", signingSecret=SECRET),
            ],
        )
        async with worker(db_url, path) as w:
            expected: dict[str, bytes] = {}  # job id -> the payload bytes submitted
            headers = {"Content-Type": "application/json"}
            for text in ODD_TEXTS:  # one job per request
                body = f'{{ "payload" :{text} , "target":"hook"}}'
                async with w.http.post(f"{w.base}/v1/jobs", data=body, headers=headers) as r:
                    assert r.status == 201, await r.text()
                    expected[(await r.json())["id"]] = text.strip().encode()
            batch = "[" + ",".join(f'{{"target":"hook","payload":{t}}}' for t in ODD_TEXTS) + "]"
            async with w.http.post(f"{w.base}/v1/jobs", data=batch, headers=headers) as r:
                assert r.status == 201, await r.text()
                for job, text in zip((await r.json())["jobs"], ODD_TEXTS, strict=True):
                    expected[job["id"]] = text.strip().encode()
            stdin = "".join(f'{{"target":"hook", "payload": {t}}}\n' for t in ODD_TEXTS[:3])
            run = await ok("enqueue", "--json", url=db_url, stdin=stdin)
            for job, text in zip(run.json(), ODD_TEXTS[:3], strict=True):
                expected[job["id"]] = text.encode()
            payload_file = tmp_path / "payload.json"
            payload_file.write_text(ODD_TEXTS[1] + "\n", "utf-8")
            args = ("--target", "hook", "--payload", f"@{payload_file}", "--json")
            run = await ok("enqueue", *args, url=db_url)
            expected[run.json()["id"]] = ODD_TEXTS[1].encode()

            await wait_state(w.queue, "succeeded", len(expected))
            assert rx.bad_signatures == 0
            hook = Webhook(SECRET)
            assert {r.webhook_id: r.body for r in rx.received} == expected
            for r in rx.received:
                assert hook.verify(r.body, headers_of(r)) == json.loads(r.body)


async def test_rotated_secrets_sign_with_each(db_url: str, tmp_path: Path) -> None:
    """signingSecret may hold two secrets (rotation): a receiver knowing either verifies."""
    async with TrackingReceiver(secret=OTHER_SECRET) as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc("hook", rx.url, secretRef={"name": "hook-secret"}),
                secret_doc("hook-secret", signingSecret=f"{SECRET} {OTHER_SECRET}"),
            ],
        )
        async with worker(db_url, path) as w:
            submitted = await w.submit("hook", {"rotating": True})
            await wait_state(w.queue, "succeeded", 1)
            [r] = rx.received
            assert r.webhook_id == submitted["id"]
            assert len(r.headers["webhook-signature"].split()) == 2
            for secret in (SECRET, OTHER_SECRET):
                assert Webhook(secret).verify(r.body, headers_of(r)) == {"rotating": True}


async def test_unsigned_target_still_sends_id_timestamp_and_its_authorization(
    db_url: str, tmp_path: Path
) -> None:
    async with TrackingReceiver() as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc("plain", rx.url, secretRef={"name": "plain"}),
                secret_doc("plain", authorization="Bearer token-123"),
            ],
        )
        async with worker(db_url, path) as w:
            submitted = await w.submit("plain", {"x": 1})
            await wait_state(w.queue, "succeeded", 1)
            [r] = rx.received
            assert r.headers["webhook-id"] == submitted["id"]
            assert r.headers["webhook-timestamp"].isdigit()
            assert "webhook-signature" not in r.headers
            assert r.headers["authorization"] == "Bearer token-123"
            assert r.body == b'{"x": 1}'  # as aiohttp's json= sent it


async def test_v1a_signatures_verify_with_the_public_key_the_worker_publishes(
    db_url: str, tmp_path: Path
) -> None:
    """A whsk_ key in signingSecret adds an ed25519 v1a signature; its public key is served
    without the API token at /signing-keys/NAMESPACE/NAME, and verifies the delivery."""
    private, public = ed25519_key()
    async with TrackingReceiver() as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [
                target_doc("hook", rx.url, secretRef={"name": "hook-secret"}),
                secret_doc("hook-secret", signingSecret=f"{SECRET}\n{private}"),
                target_doc("plain", rx.url, secretRef={"name": "plain-secret"}),
                secret_doc("plain-secret", signingSecret=SECRET),
            ],
        )
        async with worker(db_url, path, api_token="t0ken") as w:
            async with w.http.get(f"{w.base}/signing-keys/default/hook") as r:
                assert r.status == 200, await r.text()
                published = await r.json()
            assert published == {"target": "default/hook", "publicKeys": [public]}
            for missing in ("default/plain", "default/nowhere", "other/hook"):
                async with w.http.get(f"{w.base}/signing-keys/{missing}") as r:
                    assert r.status == 404
                    assert (await r.json())["error"]["message"].startswith(
                        f"no published signing keys for target {missing}:"
                    )
            auth = {"Authorization": "Bearer t0ken"}
            async with w.http.post(
                f"{w.base}/v1/jobs", json={"target": "hook", "payload": {"v": "1a"}}, headers=auth
            ) as r:
                assert r.status == 201
            await wait_state(w.queue, "succeeded", 1)
            [r] = rx.received
            headers = headers_of(r)
            versions = [p.split(",")[0] for p in headers["webhook-signature"].split()]
            assert versions == ["v1", "v1a"]
            assert Webhook(SECRET).verify(r.body, headers) == {"v": "1a"}
            [key] = published["publicKeys"]
            ts = int(headers["webhook-timestamp"])
            assert verify_v1a(key, headers["webhook-signature"], r.webhook_id, ts, r.body)
            assert not verify_v1a(key, headers["webhook-signature"], r.webhook_id, ts + 1, r.body)
            # `herald receive --secret whpk_...` verifies with the same function.
            sig = headers["webhook-signature"]
            assert receiver_verify(key, r.webhook_id, str(ts), r.body, sig)
            assert not receiver_verify(ed25519_key()[1], r.webhook_id, str(ts), r.body, sig)
            assert not receiver_verify(key, r.webhook_id, str(ts), r.body + b"!", sig)
