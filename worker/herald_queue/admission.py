"""How many jobs a claim may take from a target that needs a quota: the probes a
half-open circuit lets through, and the tokens of a rate limit. Pure functions over the
target's locked state, so the rules are tested without a database."""

from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class Grant:
    target_id: int
    limit: int
    probing: bool
    """The circuit is open (its open period over) or half-open: these are probes."""
    tokens: float | None
    """Tokens in the bucket now, before this claim spends any (None: no rate limit)."""


def grant(state: dict[str, Any], wanted: int) -> Grant:
    """The quota of one target; ``state`` is a row of the ``quota_state`` query."""
    limit = wanted
    probing = False
    circuit = state["circuit_state"]
    if circuit == "open" and not state["open_expired"]:
        limit = 0
    elif circuit in ("open", "half_open"):
        probing = True
        limit = min(limit, max(0, state["half_open_probes"] - state["running"]))
    tokens = None
    if state["rate_per_second"] is not None:
        burst = float(state["rate_burst"])
        if state["rate_tokens"] is None or state["rate_elapsed"] is None:
            tokens = burst
        else:
            elapsed = max(0.0, float(state["rate_elapsed"]))
            tokens = min(burst, float(state["rate_tokens"]) + elapsed * state["rate_per_second"])
        limit = min(limit, math.floor(tokens))
    return Grant(target_id=state["id"], limit=max(0, limit), probing=probing, tokens=tokens)


def spend(grant: Grant, claimed: int) -> tuple[bool, float | None]:
    """(a probe was taken, tokens left) once ``claimed`` jobs were taken under ``grant``."""
    tokens = None if grant.tokens is None else max(0.0, grant.tokens - claimed)
    return grant.probing and claimed > 0, tokens
