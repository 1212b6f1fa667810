"""When a failed job is tried again: tenacity's wait strategies built from a target's
retry policy, the receiver's Retry-After, and the attempt budget of each error class."""

from __future__ import annotations

import dataclasses
import datetime as dt

import tenacity
from tenacity.wait import wait_base

from herald_core.states import ErrorClass
from herald_model.target_spec import RetryPolicy

# Failures nobody could classify are retried, but with a smaller budget: at most this
# many attempts (or the target's maxAttempts, if lower).
UNKNOWN_MAX_ATTEMPTS = 3


def wait_strategy(policy: RetryPolicy) -> wait_base:
    """The wait before attempt n+1 after n failed attempts, jitter included."""
    if policy.schedule:
        base: wait_base = tenacity.wait_chain(*(tenacity.wait_fixed(s) for s in policy.schedule))
    else:
        base = tenacity.wait_exponential(
            multiplier=policy.initial_backoff,
            exp_base=policy.multiplier,
            min=policy.initial_backoff,
            max=policy.max_backoff,
        )
    if policy.jitter > 0:
        return base + tenacity.wait_random(0, policy.jitter)
    return base


def backoff_seconds(policy: RetryPolicy, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempts)
    return float(wait_strategy(policy)(state))


def attempt_budget(policy: RetryPolicy, error_class: ErrorClass) -> int:
    if error_class is ErrorClass.UNKNOWN:
        return min(policy.max_attempts, UNKNOWN_MAX_ATTEMPTS)
    if error_class is ErrorClass.PERMANENT:
        return 1
    return policy.max_attempts


@dataclasses.dataclass(frozen=True)
class RetryDecision:
    retry_at: dt.datetime
    """Earliest time of the next attempt (meaningless when ``exhausted``)."""
    exhausted: bool
    """The attempts this error class allows are spent: the job goes to the DLQ (unless
    the target's circuit is open, which gives the attempt back)."""
    delay: float


def decide(
    policy: RetryPolicy,
    error_class: ErrorClass,
    attempts: int,
    now: dt.datetime,
    *,
    retry_after: float | None = None,
    retry_after_cap: float = 3600.0,
) -> RetryDecision:
    """What to do after the ``attempts``-th attempt failed with ``error_class``.

    The backoff comes from the policy; a Retry-After from the receiver is honoured (never
    retried earlier than it asks) up to ``retry_after_cap`` seconds.
    """
    delay = backoff_seconds(policy, attempts)
    if retry_after is not None:
        delay = max(delay, min(max(0.0, retry_after), retry_after_cap))
    exhausted = attempts >= attempt_budget(policy, error_class)
    return RetryDecision(
        retry_at=now + dt.timedelta(seconds=delay), exhausted=exhausted, delay=delay
    )
