"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the keys of a
``signingSecret`` value, parsed once, and the ``webhook-signature`` header they make.

A value holds one or more whitespace-separated keys, so that a key can be rotated with no
downtime (every delivery carries one signature per key, space-separated; a receiver that
knows any of them accepts it):

- ``whsec_<base64 of 24 to 64 random bytes>``: symmetric, ``v1,<base64 HMAC-SHA256>``;
- ``whsk_<base64 of an ed25519 private key>`` (its 32-byte seed, or the 64 bytes seed +
  public key libsodium writes): asymmetric, ``v1a,<base64 ed25519 signature>``. Its public
  key, ``whpk_<base64 of 32 bytes>``, is what receivers verify with; Herald publishes it
  (:attr:`Signer.public_keys`).

Either signs ``"{webhook-id}.{webhook-timestamp}.{body}"``. :func:`signer` caches the
parsed keys per value, so a delivery only computes its signatures.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# cryptography (some 8 MiB of a worker's memory) is imported only when a whsk_ key is
# parsed: most targets sign with whsec_ (HMAC, the standard library's).

SYMMETRIC_PREFIX = "whsec_"
PRIVATE_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
FORM = (
    f"expected the Standard Webhooks form {SYMMETRIC_PREFIX}<base64 of {MIN_KEY_BYTES} to "
    f"{MAX_KEY_BYTES} random bytes> (e.g. from `openssl rand -base64 32`), or "
    f"{PRIVATE_PREFIX}<base64 of an ed25519 private key> for v1a signatures "
    "(`openssl genpkey -algorithm ed25519 -outform DER | tail -c 32 | base64`)"
)


@dataclasses.dataclass(frozen=True)
class Signer:
    """The parsed keys of one ``signingSecret`` value. ``repr`` shows no key."""

    hmac_keys: tuple[bytes, ...] = dataclasses.field(default=(), repr=False)
    private_keys: tuple[Ed25519PrivateKey, ...] = dataclasses.field(default=(), repr=False)
    public_keys: tuple[str, ...] = ()
    """``whpk_...`` of each ed25519 key, in the value's order: safe to publish."""
    problems: tuple[str, ...] = ()
    """Why some keys are not usable (sentences without the key); a target with problems
    must not be delivered to (never send half-signed what the receiver expects signed)."""

    def header(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value: each ``v1,`` then each ``v1a,`` signature."""
        message = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
        parts = [
            "v1," + base64.b64encode(hmac.digest(key, message, hashlib.sha256)).decode()
            for key in self.hmac_keys
        ]
        parts += ["v1a," + base64.b64encode(k.sign(message)).decode() for k in self.private_keys]
        return " ".join(parts)


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _private_key(text: str) -> Ed25519PrivateKey | str:
    raw = _b64(text)
    if raw is None:
        return "is not valid base64; " + FORM
    if len(raw) not in (32, 64):
        return f"decodes to {len(raw)} bytes, not 32 (seed) or 64 (seed + public key); " + FORM
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and raw[32:] != _public_bytes(key):
        return "holds a public half that does not belong to its seed; " + FORM
    return key


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key(key: Ed25519PrivateKey) -> str:
    """The ``whpk_...`` form of ``key``'s public key."""
    return PUBLIC_PREFIX + base64.b64encode(_public_bytes(key)).decode()


@functools.lru_cache(maxsize=1024)
def signer(value: str) -> Signer:
    """The keys of a ``signingSecret`` value (see the module doc), parsed once per value."""
    secrets = value.split()
    if not secrets:
        return Signer(problems=(f"is empty; {FORM}",))
    hmac_keys: list[bytes] = []
    private_keys: list[Ed25519PrivateKey] = []
    problems: list[str] = []
    for i, secret in enumerate(secrets, 1):
        why: str | None = None
        if secret.startswith(PUBLIC_PREFIX):
            why = "is a public key (whpk_): Herald signs with the private one (whsk_); " + FORM
        elif secret.startswith(PRIVATE_PREFIX):
            key = _private_key(secret.removeprefix(PRIVATE_PREFIX))
            if isinstance(key, str):
                why = key
            else:
                private_keys.append(key)
        else:
            raw = _b64(secret.removeprefix(SYMMETRIC_PREFIX))
            if raw is None:
                why = "is not valid base64; " + FORM
            elif not MIN_KEY_BYTES <= len(raw) <= MAX_KEY_BYTES:
                why = f"decodes to {len(raw)} bytes, not {MIN_KEY_BYTES} to {MAX_KEY_BYTES}; "
                why += FORM
            else:
                hmac_keys.append(raw)
        if why is not None:
            which = f"secret #{i} of {len(secrets)}" if len(secrets) > 1 else "the secret"
            problems.append(f"{which} {why}")
    return Signer(
        hmac_keys=tuple(hmac_keys),
        private_keys=tuple(private_keys),
        public_keys=tuple(public_key(k) for k in private_keys),
        problems=tuple(problems),
    )
