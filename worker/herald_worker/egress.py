"""The egress policy, enforced where the worker connects: a TCPConnector that checks every
address a target's host resolves to (or names literally) before it opens a connection.

Checking at connect time, on the addresses the connection will use, means a DNS answer
that changes after the target was accepted (DNS rebinding) cannot reach a refused address.
A host whose every address is refused fails with :class:`EgressRefused`, which the worker
classifies as permanent: the message names the policy and the setting that changes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult

from herald_queue.egress import EgressPolicy

log = logging.getLogger("herald.egress")


class EgressRefused(aiohttp.ClientConnectionError):
    """Every address of the host is one the egress policy refuses."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


class GuardedConnector(aiohttp.TCPConnector):
    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Any] | None = None
    ) -> list[ResolveResult]:
        resolved = await super()._resolve_host(host, port, traces=traces)
        allowed, refusals = [], []
        for entry in resolved:
            reason = self.policy.check(entry["host"])
            if reason is None:
                allowed.append(entry)
            else:
                refusals.append(reason)
        if not allowed:
            raise EgressRefused(host, refusals[0] if refusals else "no address")
        if refusals:
            log.warning(
                "skipped addresses the egress policy refuses",
                extra={"action": "egress", "host": host, "problem": refusals[0]},
            )
        return allowed
