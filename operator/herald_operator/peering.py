"""Which operator replica acts. Pure code.

kopf's peering pauses every replica that sees a live peer of higher or equal priority in
the KopfPeering object (HERALD_PEERING). kopf pauses its own handlers that way; the
worker scaler is Herald's own loop, so it asks :func:`is_active` with the same rule
before it changes anything. Each replica gets a random priority at start, so exactly one
replica acts and the others stand by (a tie, one in a million, pauses both until one
restarts: never two acting at once).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from collections.abc import Mapping
from typing import Any

from herald_operator.conditions import parse_timestamp

GROUPS = ("kopf.dev", "zalando.org")
"""API groups of kopf's peering CRDs: kopf.dev now, zalando.org before (kopf serves both)."""
VERSION = "v1"
NAMESPACED_PLURAL = "kopfpeerings"
CLUSTER_PLURAL = "clusterkopfpeerings"
DEFAULT_LIFETIME = 60
PRIORITY_RANGE = (1, 1_000_000)
"""Random priorities of Herald's replicas; `kopf freeze --priority 1000001` or higher
pauses them all (for maintenance, or to debug with a local operator)."""


def identity() -> str:
    """This replica's name among its peers: the pod's name (its hostname) and process."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(2)}"


def random_priority() -> int:
    low, high = PRIORITY_RANGE
    return low + secrets.randbelow(high - low + 1)


def is_active(peering: Mapping[str, Any] | None, me: str, priority: int, now: dt.datetime) -> bool:
    """Whether the replica ``me`` (with ``priority``) acts, given the KopfPeering object.

    Not active without the object, before its own keep-alive is in it, or while a live
    peer has a higher or the same priority (kopf's own rule)."""
    if peering is None:
        return False
    status = peering.get("status") or {}
    if not isinstance(status, Mapping) or me not in status:
        return False
    for peer, info in status.items():
        if peer == me or not isinstance(info, Mapping):
            continue
        seen = parse_timestamp(info.get("lastseen")) or now
        lifetime = dt.timedelta(seconds=int(info.get("lifetime", DEFAULT_LIFETIME)))
        if seen + lifetime <= now:
            continue  # dead: kopf ignores (and cleans) it
        if int(info.get("priority", 0)) >= priority:
            return False
    return True
