"""The worker scaling decision with an injected clock: clamp(ceil(ready / per replica)),
step limit, cooldown, scale-down stabilization (highest recommendation over the window,
nothing before a whole window was watched), bounds enforced at once."""

from __future__ import annotations

import pytest

from herald_core.errors import SettingsError
from herald_operator.scaling import Scaler, ScalingPolicy
from herald_operator.settings import OperatorSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def scaler(clock: Clock, **policy: float) -> Scaler:
    values = {
        "minimum": 1,
        "maximum": 10,
        "jobs_per_replica": 100,
        "max_step": 10,
        "cooldown": 0,
        "down_stabilization": 300,
    }
    values.update(policy)
    return Scaler(ScalingPolicy(**values), clock)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ready", "expected"), [(0, 1), (1, 1), (100, 1), (101, 2), (950, 10), (10**6, 10)]
)
def test_recommendation_is_clamped_ceiling(ready: int, expected: int) -> None:
    assert ScalingPolicy(minimum=1, maximum=10, jobs_per_replica=100).recommend(ready) == expected


def test_scales_up_at_once_in_limited_steps() -> None:
    clock = Clock()
    s = scaler(clock, max_step=2)
    decision = s.decide(ready=950, current=1)
    assert (decision.recommended, decision.desired, decision.direction) == (10, 3, "up")
    assert "at most 2 per change" in decision.reason
    s.changed()
    assert s.decide(ready=950, current=3).desired == 5


def test_the_cooldown_holds_any_change() -> None:
    clock = Clock()
    s = scaler(clock, cooldown=60)
    assert s.decide(ready=300, current=1).desired == 3
    s.changed()
    clock.advance(30)
    held = s.decide(ready=900, current=3)
    assert not held.changed and "cooldown: 30s" in held.reason
    clock.advance(31)
    assert s.decide(ready=900, current=3).desired == 9


def test_no_scale_down_before_a_whole_window_was_watched() -> None:
    clock = Clock()
    s = scaler(clock, down_stabilization=300)
    held = s.decide(ready=0, current=5)
    assert not held.changed and "stabilizing" in held.reason
    clock.advance(301)
    assert s.decide(ready=0, current=5).desired == 1


def test_scales_down_to_the_highest_recommendation_of_the_window() -> None:
    clock = Clock()
    s = scaler(clock, down_stabilization=300)
    clock.advance(300)
    for ready in (800, 200, 0):  # a burst, then quiet
        s.decide(ready=ready, current=8)
        clock.advance(60)
    decision = s.decide(ready=0, current=8)
    assert not decision.changed and "8 replicas were recommended" in decision.reason
    clock.advance(180)  # the burst (800 -> 8) left the window; 200 -> 2 did not
    decision = s.decide(ready=0, current=8)
    assert (decision.desired, decision.direction) == (2, "down")
    clock.advance(60)
    assert s.decide(ready=0, current=2).desired == 1


def test_a_dip_within_the_window_keeps_the_workers() -> None:
    clock = Clock()
    s = scaler(clock, down_stabilization=120)
    clock.advance(120)
    assert s.decide(ready=500, current=5).desired == 5
    for _ in range(3):
        clock.advance(30)
        assert not s.decide(ready=0, current=5).changed
    clock.advance(30)
    assert s.decide(ready=500, current=5).desired == 5


def test_bounds_are_enforced_at_once() -> None:
    clock = Clock()
    s = scaler(clock, minimum=2, maximum=4, max_step=1, cooldown=600)
    s.changed()
    assert s.decide(ready=0, current=0).desired == 2
    too_many = s.decide(ready=0, current=9)
    assert too_many.desired == 4 and "outside the bounds" in too_many.reason


def test_scale_to_zero_when_the_minimum_is_zero() -> None:
    clock = Clock()
    s = scaler(clock, minimum=0, down_stabilization=0)
    assert s.decide(ready=0, current=1).desired == 0
    assert s.decide(ready=1, current=0).desired == 1


@pytest.mark.parametrize(
    "policy",
    [
        {"minimum": -1},
        {"minimum": 5, "maximum": 4},
        {"maximum": 0},
        {"jobs_per_replica": 0},
        {"max_step": 0},
        {"cooldown": -1},
    ],
)
def test_bad_policies_are_refused(policy: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ScalingPolicy(**policy)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scale_min", "scale_max", "message"),
    [
        (0, 10, "HERALD_SCALE_MIN=0: must be an integer of at least 1"),
        (5, 4, "HERALD_SCALE_MIN=5, HERALD_SCALE_MAX=4: the minimum must not exceed the maximum"),
    ],
)
def test_operator_settings_refuse_a_scaling_range_without_workers(
    scale_min: int, scale_max: int, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        OperatorSettings(scale_min=scale_min, scale_max=scale_max)
    assert caught.value.lines == [message]
