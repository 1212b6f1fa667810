"""Generic webhooks, signed the Standard Webhooks way (https://www.standardwebhooks.com/).

The body is the job payload exactly as stored, byte for byte. ``webhook-id`` is the job id
(stable across retries, so a receiver can deduplicate), ``webhook-timestamp`` the attempt's
time, and, when the Secret has ``signingSecret``, ``webhook-signature`` is
``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``, key being the base64-decoded
secret after its ``whsec_`` prefix. For rotation ``signingSecret`` may hold several secrets
separated by whitespace: the header then carries one signature per secret, space-separated,
and a receiver that knows any of them accepts the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import ClassVar

from herald_queue.errors import InvalidTarget
from herald_queue.spec import TargetSpec, header_value_problem
from herald_queue.target_types.base import (
    URL_KEY,
    OutgoingRequest,
    RenderContext,
    TargetType,
    secret_label,
    secret_value,
)

SIGNING_SECRET_KEY = "signingSecret"  # noqa: S105 - a key name, not a secret
AUTHORIZATION_KEY = "authorization"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of the form
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
_FORM = (
    f"expected the Standard Webhooks form {SECRET_PREFIX}<base64 of {MIN_KEY_BYTES} to "
    f"{MAX_KEY_BYTES} random bytes>, e.g. from `openssl rand -base64 32`"
)


def _decode(secret: str) -> bytes | str:
    """The HMAC key of one secret, or why it is not one (a sentence without the secret)."""
    if secret.startswith(("whsk_", "whpk_")):
        return "is an asymmetric (v1a) key, which Herald does not sign with; " + _FORM
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64; " + _FORM
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        return f"decodes to {len(key)} bytes, not {MIN_KEY_BYTES} to {MAX_KEY_BYTES}; " + _FORM
    return key


def signing_keys(value: str) -> tuple[list[bytes], list[str]]:
    """The keys of a ``signingSecret`` value (whitespace-separated for rotation), and the
    problems of the secrets that are not usable."""
    secrets = value.split()
    if not secrets:
        return [], [f"is empty; {_FORM}"]
    keys, problems = [], []
    for i, secret in enumerate(secrets, 1):
        key = _decode(secret)
        if isinstance(key, bytes):
            keys.append(key)
        else:
            which = f"secret #{i} of {len(secrets)}" if len(secrets) > 1 else "the secret"
            problems.append(f"{which} {key}")
    return keys, problems


def sign(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per key, space-separated."""
    message = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
        for key in keys
    )


class Webhook(TargetType):
    name = "webhook"
    optional_secret_keys = frozenset({URL_KEY, SIGNING_SECRET_KEY, AUTHORIZATION_KEY})
    secret_key_help: ClassVar[Mapping[str, str]] = {
        URL_KEY: "the endpoint URL, overriding spec.url",
        SIGNING_SECRET_KEY: "Standard Webhooks signing secret(s), whsec_...",
        AUTHORIZATION_KEY: "the Authorization header sent with every request, e.g. Bearer ...",
    }

    def check_secrets(self, spec: TargetSpec, secrets: Mapping[str, str]) -> list[str]:
        problems = []
        value = secret_value(secrets, SIGNING_SECRET_KEY)
        if value is not None:
            _, bad = signing_keys(value)
            problems += [f"{secret_label(spec)} key {SIGNING_SECRET_KEY}: {p}" for p in bad]
        authorization = secret_value(secrets, AUTHORIZATION_KEY)
        if authorization is not None and (why := header_value_problem(authorization)):
            # The reason, never the value (a credential).
            problems.append(f"{secret_label(spec)} key {AUTHORIZATION_KEY}: {why}")
        return problems

    def render(self, ctx: RenderContext) -> OutgoingRequest:
        spec = ctx.target.spec
        body = ctx.payload_json.encode("utf-8")
        msg_id = str(ctx.job_id)
        extra = {"webhook-id": msg_id, "webhook-timestamp": str(ctx.timestamp)}
        value = secret_value(ctx.secrets, SIGNING_SECRET_KEY)
        if value is not None:
            keys, problems = signing_keys(value)
            if problems:
                # Never send unsigned (or half-signed) what the target expects signed.
                raise InvalidTarget(
                    f"PublishingTarget {ctx.target.ref}: {secret_label(spec)} key "
                    f"{SIGNING_SECRET_KEY}: {'; '.join(problems)}"
                )
            extra["webhook-signature"] = sign(keys, msg_id, ctx.timestamp, body)
        authorization = secret_value(ctx.secrets, AUTHORIZATION_KEY)
        if authorization is not None:
            extra["Authorization"] = authorization
        return OutgoingRequest(
            url=self.endpoint(spec, ctx.secrets),
            headers=self.headers(spec, extra),
            body=body,
        )


WEBHOOK = Webhook()
