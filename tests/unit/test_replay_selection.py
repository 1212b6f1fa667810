"""DeadLetterReplay decisions without a cluster: the selection a spec makes (in its own
namespace, fixed at its start), the tag it leaves, and every status it shows (checked
against the CRD)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from herald_core.states import ErrorClass
from herald_operator import replay_decisions as replay
from herald_operator.replay_decisions import InvalidSelection, Phase, Progress
from tests.unit import crd_schema

START = dt.datetime(2026, 11, 21, 9, 30, 0, 250000, tzinfo=dt.UTC)


def with_status(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "DeadLetterReplay",
        "metadata": {"name": "r", "namespace": "team"},
        "spec": spec,
        "status": status,
    }


def test_a_named_target_is_in_the_replays_own_namespace() -> None:
    selection = replay.select({"target": "hook", "errorClass": "transient"}, "team", START)
    assert selection.filter.namespace == "team" and selection.filter.target == "hook"
    assert selection.filter.params()["namespace"] == "team"
    assert selection.filter.params()["name"] == "hook"
    assert selection.filter.error_class is ErrorClass.TRANSIENT
    assert selection.target_ref == "team/hook"
    assert selection.limit == replay.DEFAULT_LIMIT and not selection.dry_run


def test_without_a_target_every_target_of_the_namespace() -> None:
    selection = replay.select({}, "team", START)
    assert selection.filter.params()["namespace"] == "team"
    assert selection.filter.params()["name"] is None
    assert "every target in namespace team" in selection.describe()


def test_a_target_in_another_namespace_is_refused() -> None:
    with pytest.raises(InvalidSelection, match="only reaches its own namespace"):
        replay.select({"target": "other/hook"}, "team", START)


def test_the_selection_is_fixed_at_the_start() -> None:
    """Dead letters that die after the replay started (a replayed job failing again) are
    not this replay's; an earlier failedBefore wins."""
    assert replay.select({}, "team", START).filter.failed_before == START
    before = "2026-11-20T00:00:00Z"
    selection = replay.select({"failedBefore": before}, "team", START)
    assert selection.filter.failed_before == dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert "failed before 2026-11-20T00:00:00Z" in selection.describe()
    later = replay.select({"failedBefore": "2027-01-01T00:00:00Z"}, "team", START)
    assert later.filter.failed_before == START
    assert "failed before 2027-01-01T00:00:00Z" in later.describe()


def test_a_window_that_starts_after_the_start_matches_nothing() -> None:
    selection = replay.select({"failedAfter": "2027-01-01T00:00:00Z"}, "team", START)
    assert selection.empty


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"failedAfter": "yesterday"}, "spec.failedAfter"),
        ({"failedBefore": "2026-11-20T00:00:00"}, "no time zone"),
        (
            {"failedAfter": "2026-11-20T00:00:00Z", "failedBefore": "2026-11-19T00:00:00Z"},
            "later than",
        ),
        ({"errorClass": "fatal"}, "spec.errorClass"),
        ({"priority": "urgent"}, "spec.priority"),
        ({"jobIds": ["not-a-uuid"]}, "spec.jobIds"),
        ({"limit": 0}, "spec.limit"),
        ({"target": "ho\x00ok"}, "spec.target"),
        ({"target": "hook\n"}, "spec.target"),
        ({"target": 5}, "spec.target"),
    ],
)
def test_invalid_specs_say_which_field(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidSelection, match=problem):
        replay.select(spec, "team", START)


def test_job_ids_limit_and_dry_run() -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    selection = replay.select(
        {"jobIds": [str(i) for i in ids], "limit": 5, "dryRun": True}, "team", START
    )
    assert selection.filter.job_ids == tuple(ids)
    assert selection.limit == 5 and selection.dry_run
    assert "2 job id(s), at most 5" in selection.describe()


def test_the_tag_is_unique_to_the_object() -> None:
    assert replay.replayed_by("team", "r", "uid-1") == "DeadLetterReplay/team/r/uid-1"
    assert replay.replayed_by("team", "r", "uid-1") != replay.replayed_by("team", "r", "uid-2")


def test_resume_takes_only_what_is_left() -> None:
    selection = replay.select({"limit": 10}, "team", START)
    assert replay.remaining(selection, Progress(matched=10, replayed=6, skipped=1)) == 3
    assert replay.remaining(selection, Progress(matched=10, replayed=10)) == 0


def test_phases() -> None:
    assert replay.phase_of({}) is None
    assert replay.phase_of({"phase": "Running"}) is Phase.RUNNING
    assert replay.phase_of({"phase": "Bogus"}) is None
    assert Phase.SUCCEEDED.finished and Phase.FAILED.finished
    assert not Phase.RUNNING.finished and not Phase.PENDING.finished


def test_every_status_is_what_the_crd_declares() -> None:
    selection = replay.select({"target": "hook"}, "team", START)
    now = START + dt.timedelta(seconds=3)
    running = replay.running(
        {}, Progress(10, 4), selection, now=now, started_at=START, generation=1
    )
    assert running["phase"] == "Running" and running["replayed"] == 4
    assert running["startTime"] == "2026-11-21T09:30:00.250000Z"
    assert replay.started_at_of(running) == START  # read back exactly, for the cutoff
    done = replay.succeeded(
        running, Progress(10, 9, 0), selection, now=now, started_at=START, generation=1
    )
    assert (done["replayed"], done["skipped"]) == (9, 1)
    complete = done["conditions"][0]
    assert (complete["type"], complete["status"], complete["reason"]) == (
        "Complete",
        "True",
        "Replayed",
    )
    nothing = replay.succeeded({}, Progress(0), selection, now=now, started_at=START, generation=1)
    assert nothing["conditions"][0]["reason"] == "NothingMatched"
    dry = replay.succeeded(
        {},
        Progress(5),
        replay.select({"dryRun": True}, "team", START),
        now=now,
        started_at=START,
        generation=1,
        target_missing=2,
    )
    assert (dry["matched"], dry["replayed"]) == (5, 0)
    assert "3 would be put back" in dry["message"] and "2 skipped" in dry["message"]
    failed = replay.failed(
        {}, "TargetNotFound", "no target", now=now, started_at=None, generation=1
    )
    assert [c["type"] for c in failed["conditions"]] == ["Complete", "Failed"]
    waiting = replay.waiting({}, "waiting for PostgreSQL", now=now, generation=1)
    assert waiting["phase"] == "Pending"
    for status in (running, done, nothing, dry, failed, waiting):
        assert crd_schema.validate(with_status(status, target="hook")) == [], status


def test_the_running_condition_keeps_its_transition_time_across_batches() -> None:
    selection = replay.select({}, "team", START)
    first = replay.running(
        {}, Progress(10, 0), selection, now=START, started_at=START, generation=1
    )
    later = START + dt.timedelta(minutes=1)
    second = replay.running(
        first, Progress(10, 5), selection, now=later, started_at=START, generation=1
    )
    assert (
        second["conditions"][0]["lastTransitionTime"]
        == first["conditions"][0]["lastTransitionTime"]
    )


def test_a_priority_selects_and_is_described() -> None:
    selection = replay.select({"target": "hook", "priority": "high"}, "team", START)
    assert selection.filter.params()["priority"] == "high"
    assert "priority high" in selection.describe()
