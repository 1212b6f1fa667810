"""A local webhook receiver for the demo, the delivery benchmark and tests: it verifies
Standard Webhooks signatures, records what it gets, and answers as a script says (so it can
misbehave on purpose: 503s, 429s with Retry-After, 400s, outages, 410)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: str = "ok"
    delay: float = 0.0


@dataclasses.dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: str
    body: bytes
    headers: dict[str, str]
    at: float
    answer: Answer
    signature_ok: bool | None
    """None when no signing secret is configured on this receiver."""


Script = Callable[["Receiver", web.Request, bytes], Answer]


def always(answer: Answer) -> Script:
    return lambda receiver, request, body: answer


def verify(secret: str, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """Standard Webhooks verification, written apart from Herald's signer on purpose:
    ``secret`` is a ``whsec_`` secret (``v1`` HMAC) or a ``whpk_`` ed25519 public key
    (``v1a``)."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    if secret.startswith("whpk_"):
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(secret[5:]))
        for part in header.split():
            version, _, signature = part.partition(",")
            if version == "v1a":
                try:
                    public.verify(base64.b64decode(signature), content)
                except (InvalidSignature, ValueError):
                    continue
                return True
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for part in header.split():
        version, _, signature = part.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


class Receiver:
    def __init__(
        self, script: Script | None = None, *, secret: str | None = None, path: str = "/hook"
    ) -> None:
        self.script = script or always(Answer())
        self.secret = secret
        self.path = path
        self.received: list[Received] = []
        self.bad_signatures = 0
        self.changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        signature_ok = None
        if self.secret is not None:
            signature_ok = verify(
                self.secret,
                headers.get("webhook-id", ""),
                headers.get("webhook-timestamp", ""),
                body,
                headers.get("webhook-signature", ""),
            )
            if not signature_ok:
                self.bad_signatures += 1
        answer = (
            Answer(401, body="bad signature")
            if signature_ok is False
            else self.script(self, request, body)
        )
        if answer.delay:
            await asyncio.sleep(answer.delay)
        self.received.append(
            Received(
                webhook_id=headers.get("webhook-id", ""),
                timestamp=headers.get("webhook-timestamp", ""),
                body=body,
                headers=headers,
                at=time.monotonic(),
                answer=answer,
                signature_ok=signature_ok,
            )
        )
        self.changed.set()
        return web.Response(status=answer.status, text=answer.body, headers=answer.headers)

    async def start(self, port: int = 0, *, host: str = "127.0.0.1") -> Receiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def delivered_ids(self) -> list[str]:
        """webhook-ids of requests answered 2xx, in arrival order."""
        return [r.webhook_id for r in self.received if 200 <= r.answer.status < 300]

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.received:
            counts[r.answer.status] = counts.get(r.answer.status, 0) + 1
        return counts

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.received),
            "statuses": self.statuses(),
            "badSignatures": self.bad_signatures,
        }
