"""Generic webhooks, signed the Standard Webhooks way (https://www.standardwebhooks.com/).

The body is the job payload exactly as stored, byte for byte. ``webhook-id`` is the job id
(stable across retries, so a receiver can deduplicate), ``webhook-timestamp`` the attempt's
time, and, when the Secret has ``signingSecret``, ``webhook-signature`` carries one
signature per key it holds (``v1,`` HMAC for ``whsec_`` secrets, ``v1a,`` ed25519 for
``whsk_`` keys; several keys for rotation): see :mod:`herald_delivery.signing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from herald_core.errors import InvalidTarget
from herald_delivery.signing import signer
from herald_delivery.target_types.base import (
    URL_KEY,
    OutgoingRequest,
    RenderContext,
    TargetType,
    secret_label,
    secret_value,
)
from herald_model.target_spec import TargetSpec, header_value_problem

SIGNING_SECRET_KEY = "signingSecret"  # noqa: S105 - a key name, not a secret
AUTHORIZATION_KEY = "authorization"


def signing_public_keys(secrets: Mapping[str, str]) -> list[str]:
    """The ``whpk_...`` public keys of the ed25519 keys in ``signingSecret`` (safe to
    publish: receivers verify ``v1a`` signatures with them), [] when there are none."""
    value = secret_value(secrets, SIGNING_SECRET_KEY)
    return list(signer(value).public_keys) if value else []


class Webhook(TargetType):
    name = "webhook"
    optional_secret_keys = frozenset({URL_KEY, SIGNING_SECRET_KEY, AUTHORIZATION_KEY})
    secret_key_help: ClassVar[Mapping[str, str]] = {
        URL_KEY: "the endpoint URL, overriding spec.url",
        SIGNING_SECRET_KEY: "Standard Webhooks signing secret(s), whsec_... or whsk_...",
        AUTHORIZATION_KEY: "the Authorization header sent with every request, e.g. Bearer ...",
    }

    def check_secrets(self, spec: TargetSpec, secrets: Mapping[str, str]) -> list[str]:
        problems = []
        value = secret_value(secrets, SIGNING_SECRET_KEY)
        if value is not None:
            label = f"{secret_label(spec)} key {SIGNING_SECRET_KEY}"
            problems += [f"{label}: {p}" for p in signer(value).problems]
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
            keys = signer(value)
            if keys.problems:
                # Never send unsigned (or half-signed) what the target expects signed.
                raise InvalidTarget(
                    f"PublishingTarget {ctx.target.ref}: {secret_label(spec)} key "
                    f"{SIGNING_SECRET_KEY}: {'; '.join(keys.problems)}"
                )
            extra["webhook-signature"] = keys.header(msg_id, ctx.timestamp, body)
        authorization = secret_value(ctx.secrets, AUTHORIZATION_KEY)
        if authorization is not None:
            extra["Authorization"] = authorization
        return OutgoingRequest(
            url=self.endpoint(spec, ctx.secrets),
            headers=self.headers(spec, extra),
            body=body,
        )


WEBHOOK = Webhook()
