"""Signatures of herald_delivery.signing, verified independently: ``v1`` with the
``standardwebhooks`` library, ``v1a`` with ``cryptography``'s ed25519 and the published
``whpk_`` public key."""

from __future__ import annotations

import base64
import os
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from herald_delivery.signing import signer
from herald_delivery.target_types.webhook import signing_public_keys


def hmac_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def ed25519_key(full: bool = False) -> tuple[str, str]:
    """(whsk_..., whpk_...): the seed, or seed + public key (libsodium's 64 bytes)."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    private = seed + public if full else seed
    return (
        "whsk_" + base64.b64encode(private).decode(),
        "whpk_" + base64.b64encode(public).decode(),
    )


def verify_v1a(public: str, header: str, msg_id: str, timestamp: int, body: bytes) -> bool:
    """True when one v1a signature of ``header`` verifies with ``public``."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    message = f"{msg_id}.{timestamp}.".encode() + body
    for part in header.split():
        version, _, signature = part.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), message)
        except InvalidSignature:
            continue
        return True
    return False


@pytest.mark.parametrize("full", [False, True])
def test_mixed_keys_sign_with_each_and_publish_the_public_ones(full: bool) -> None:
    old, new = hmac_secret(), hmac_secret()
    private, public = ed25519_key(full)
    s = signer(f"{old}\n{private} {new}")
    assert s.problems == ()
    assert s.public_keys == (public,)
    assert signing_public_keys({"signingSecret": f" {old} {private}\n"}) == [public]
    body, msg_id, ts = '{"a":"é"}'.encode(), "msg_2Kq", int(time.time())
    header = s.header(msg_id, ts, body)
    assert [p.split(",")[0] for p in header.split()] == ["v1", "v1", "v1a"]
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": header}
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"a": "é"}
    with pytest.raises(WebhookVerificationError):
        Webhook(hmac_secret()).verify(body, headers)
    assert verify_v1a(public, header, msg_id, ts, body)
    assert not verify_v1a(public, header, msg_id, ts, body + b" ")
    _, stranger = ed25519_key()
    assert not verify_v1a(stranger, header, msg_id, ts, body)
    assert private not in repr(s) and old not in repr(s)


def test_the_parsed_keys_are_cached_per_value() -> None:
    value = f"{hmac_secret()} {ed25519_key()[0]}"
    assert signer(value) is signer(value)
    assert signer(hmac_secret()) is not signer(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("whsk_" + base64.b64encode(b"K" * 31).decode(), "decodes to 31 bytes, not 32"),
        ("whsk_not*base64!", "is not valid base64"),
        (ed25519_key()[1], "is a public key (whpk_)"),
    ],
)
def test_unusable_ed25519_keys_are_named_without_the_key(value: str, expected: str) -> None:
    good = hmac_secret()
    s = signer(f"{good} {value}")
    [problem] = s.problems
    assert problem.startswith("secret #2 of 2 ") and expected in problem
    assert value.split("_", 1)[1] not in problem and good not in problem


def test_a_64_byte_key_whose_public_half_is_not_its_own_is_refused() -> None:
    (mine, _), (theirs, _) = ed25519_key(full=True), ed25519_key(full=True)
    seed = base64.b64decode(mine.removeprefix("whsk_"))[:32]
    other_public = base64.b64decode(theirs.removeprefix("whsk_"))[32:]
    [problem] = signer("whsk_" + base64.b64encode(seed + other_public).decode()).problems
    assert "public half that does not belong to its seed" in problem
