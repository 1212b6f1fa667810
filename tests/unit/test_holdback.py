"""The local hold-back: a target this worker saw fail failureThreshold times in a row is
held until those failures are written (then the shared circuit decides), and the outcome
shapes that must not count (success resets, permanent, 410, withheld) do not."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from herald_core.states import ErrorClass
from herald_delivery.http_client import Response
from herald_delivery.outcome import Outcome
from herald_worker.holdback import WITHHELD, HoldBack
from herald_worker.target_cache import RuntimeTarget

FAILED = Outcome.unanswered(ErrorClass.TRANSIENT, "no response within 5s", duration=5.0)
DELIVERED = Outcome.answered(Response(204, None, b""), duration=0.1)


def target(threshold: int) -> RuntimeTarget:
    """What the hold-back reads of a target: its ref and its failureThreshold."""
    spec = SimpleNamespace(circuit_breaker=SimpleNamespace(failure_threshold=threshold))
    return cast(RuntimeTarget, SimpleNamespace(ref="ns/t", row=SimpleNamespace(spec=spec)))


def test_a_target_is_held_at_its_threshold_until_those_failures_are_written() -> None:
    held, t = HoldBack(), target(3)
    assert [held.observe(1, t, FAILED) for _ in range(2)] == [True, True]
    assert 1 not in held
    assert held.observe(1, t, FAILED)
    assert 1 in held and held.targets == {1}
    held.written([1, 1])
    assert 1 in held, "one counted failure is not written yet"
    held.written([1])
    assert 1 not in held and not held.targets
    held.observe(1, t, FAILED)
    assert 1 not in held, "the streak starts again once the circuit has the failures"


def test_a_success_resets_the_streak_and_what_the_breaker_ignores_is_not_counted() -> None:
    held, t = HoldBack(), target(2)
    assert held.observe(1, t, FAILED)
    assert not held.observe(1, t, DELIVERED)
    assert held.observe(1, t, FAILED)
    assert 1 not in held, "one failure since the success"
    permanent = Outcome.answered(Response(400, None, b"bad"), duration=0.1)
    gone = Outcome.answered(Response(410, None, b""), duration=0.1)
    withheld = Outcome.held_back(WITHHELD)
    unknown_target = held.observe(1, None, FAILED)
    assert [held.observe(1, t, o) for o in (permanent, gone, withheld)] == [False] * 3
    assert not unknown_target and 1 not in held
