"""Capacity levels, crossings and hard limits (herald_queue.capacity), without I/O."""

from __future__ import annotations

import pytest

from herald_core.errors import InvalidTarget
from herald_model.target_spec import CapacityPolicy, parse_spec
from herald_queue.capacity import ALL, CapacityWatch, Level, level_of, percent, retry_after

URL = "https://hooks.example.com/herald"


@pytest.mark.parametrize(
    ("waiting", "capacity", "level"),
    [(0, 10, Level.OK), (7, 10, Level.OK), (8, 10, Level.WARNING), (10, 10, Level.FULL),
     (12, 10, Level.FULL), (0, 1, Level.OK), (1, 1, Level.FULL)],
)  # fmt: skip
def test_levels_start_at_80_and_100_percent(waiting: int, capacity: int, level: Level) -> None:
    assert level_of(waiting, capacity) is level


def test_percent() -> None:
    assert percent(1, 3) == 33.3
    assert percent(5, 4) == 125.0
    assert percent(5, None) is None and percent(5, 0) is None


def test_a_crossing_is_reported_once_per_change_of_level() -> None:
    watch = CapacityWatch(capacity=100)
    soft = {"a/x": CapacityPolicy(jobs=10)}
    assert watch.observe({"a/x": 7}, soft) == []
    [up] = watch.observe({"a/x": 8}, soft)
    assert (up.scope, up.before, up.after, up.rising) == ("a/x", Level.OK, Level.WARNING, True)
    assert watch.observe({"a/x": 9}, soft) == [], "still warning: no second report"
    [full] = watch.observe({"a/x": 10}, soft)
    assert (full.after, full.waiting, full.capacity) == (Level.FULL, 10, 10)
    assert "a/x holds 10 of 10 jobs (100.0 %)" in full.describe()
    [down] = watch.observe({"a/x": 2}, soft)
    assert (down.after, down.rising) == (Level.OK, False)
    # The whole queue: 80 of 100 over two targets.
    crossings = watch.observe({"a/x": 2, "b/y": 78}, soft)
    assert [(c.scope, c.after) for c in crossings] == [(ALL, Level.WARNING)]


def test_the_first_sample_of_a_full_queue_is_a_crossing() -> None:
    watch = CapacityWatch()
    [c] = watch.observe({"a/x": 5}, {"a/x": CapacityPolicy(jobs=5)})
    assert (c.before, c.after) == (Level.OK, Level.FULL)


def test_without_a_hard_limit_nothing_is_refused() -> None:
    watch = CapacityWatch(capacity=1)
    watch.observe({"a/x": 50}, {"a/x": CapacityPolicy(jobs=1)})
    assert watch.refusal(["a/x"] * 10) is None


def test_a_hard_limit_refuses_what_goes_beyond_and_counts_accepted_jobs() -> None:
    watch = CapacityWatch()
    hard = {"a/x": CapacityPolicy(jobs=5, hardLimit=True)}
    watch.observe({"a/x": 3}, hard)
    assert watch.refusal(["a/x", "a/x"]) is None
    refused = watch.refusal(["a/x", "b/y", "a/x", "a/x"])
    assert refused is not None and (refused.scope, refused.waiting, refused.adding) == (
        "a/x",
        3,
        3,
    )
    assert "target a/x is full" in refused.message()
    watch.accepted(["a/x", "a/x"])  # this worker's own, before the next sample
    assert watch.refusal(["a/x"]) is not None
    assert watch.refusal(["b/y"] * 100) is None, "other targets are not limited"


HARD5 = {"a/x": CapacityPolicy(jobs=5, hardLimit=True)}


def test_submissions_in_flight_hold_their_places() -> None:
    """Two requests checked before either is written cannot both take the last place."""
    watch = CapacityWatch()
    watch.observe({"a/x": 4}, HARD5)
    assert watch.reserve(["a/x"]) is None
    refused = watch.reserve(["a/x"])
    assert refused is not None and refused.waiting == 5, "the first is in flight"
    watch.settle(["a/x"], created=[])  # the first failed (or was a duplicate): place freed
    assert watch.reserve(["a/x"]) is None
    watch.settle(["a/x"], created=["a/x"])
    assert watch.waiting["a/x"] == 5 and watch.reserve(["a/x"]) is not None


def test_a_job_accepted_while_a_count_runs_is_never_missed() -> None:
    """The count began, then a job was accepted, then the count came back without it (or
    with it): either way the next decision knows of the job."""
    watch = CapacityWatch()
    watch.observe({"a/x": 0}, HARD5)
    for seen_by_count in (0, 1):
        watch.observe({"a/x": 4}, HARD5)
        since = watch.begin()
        assert watch.reserve(["a/x"]) is None
        watch.settle(["a/x"], created=["a/x"])
        watch.observe({"a/x": 4 + seen_by_count}, HARD5, since)
        # Not seen: counted once; seen: counted twice until the next count (full side).
        assert watch.waiting["a/x"] == 5 + seen_by_count
        assert watch.reserve(["a/x"]) is not None
    # A count that began after the acceptance is exact again.
    watch.observe({"a/x": 5}, HARD5, watch.begin())
    assert watch.waiting["a/x"] == 5


def test_nothing_is_decided_before_the_first_count() -> None:
    watch = CapacityWatch()
    assert not watch.counted.is_set()
    watch.observe({}, HARD5)
    assert watch.counted.is_set()


def test_the_queue_wide_hard_limit() -> None:
    watch = CapacityWatch(capacity=10, hard_limit=True)
    watch.observe({"a/x": 9}, {})
    assert watch.refusal(["b/y"]) is None
    refused = watch.refusal(["b/y", "b/y"])
    assert refused is not None and refused.scope == ALL
    assert "HERALD_QUEUE_CAPACITY" in refused.message()


def test_retry_after_is_a_whole_number_of_seconds() -> None:
    assert retry_after(0.2) == "1"
    assert retry_after(10.0) == "10"
    assert retry_after(2.5) == "3"


def test_spec_capacity() -> None:
    assert parse_spec({"type": "webhook", "url": URL}).capacity is None
    spec = parse_spec({"type": "webhook", "url": URL, "capacity": {"jobs": 3}})
    assert spec.capacity == CapacityPolicy(jobs=3, hardLimit=False)
    assert spec.to_config()["capacity"] == {"jobs": 3, "hardLimit": False}
    assert parse_spec(spec.to_config() | {"url": URL}) == spec
    for bad, field in (
        ({"jobs": 3, "hard": True}, "spec.capacity.hard"),
        ({"jobs": 1.5}, "spec.capacity.jobs"),
        ({"jobs": 3, "hardLimit": "yes"}, "spec.capacity.hardLimit"),
        ([3], "spec.capacity"),
    ):
        with pytest.raises(InvalidTarget, match=field):
            parse_spec({"type": "webhook", "url": URL, "capacity": bad})
