"""The operator's pure decisions, without a cluster or a database: conditions, readiness,
the rendered status (checked against the CRD, as an apiserver would), and peering."""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

import pytest

from herald_core.states import CircuitState, JobState, Priority
from herald_delivery.egress import EgressPolicy
from herald_model.target_spec import parse_spec
from herald_operator import disabling, peering, readiness
from herald_operator import status as target_status
from herald_operator.conditions import Condition, find, set_condition, timestamp, transitioned
from herald_operator.readiness import SecretOutcome, SecretRead
from herald_queue.records import StateCount, TargetRow
from tests.integration.operator.cluster import WEBHOOK_SECRET
from tests.unit import crd_schema

T0 = dt.datetime(2026, 11, 20, 12, 0, 0, tzinfo=dt.UTC)


# -- conditions ------------------------------------------------------------------------------


def test_a_new_condition_is_appended_with_its_transition_time() -> None:
    new = Condition("Ready", "True", "Ready", "ok")
    result = set_condition(None, new, now=T0, generation=3)
    assert result == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Ready",
            "message": "ok",
            "lastTransitionTime": "2026-11-20T12:00:00Z",
            "observedGeneration": 3,
        }
    ]
    assert transitioned(None, new)


def test_the_transition_time_moves_only_when_the_status_changes() -> None:
    first = set_condition(None, Condition("Ready", "False", "SecretNotFound", "a"), now=T0)
    later = T0 + dt.timedelta(minutes=5)
    same_status = set_condition(first, Condition("Ready", "False", "SecretInvalid", "b"), now=later)
    assert same_status[0]["lastTransitionTime"] == "2026-11-20T12:00:00Z"
    assert same_status[0]["reason"] == "SecretInvalid"
    assert not transitioned(first, Condition("Ready", "False", "SecretInvalid", "b"))
    flipped = set_condition(same_status, Condition("Ready", "True", "Ready", "c"), now=later)
    assert flipped[0]["lastTransitionTime"] == "2026-11-20T12:05:00Z"


def test_other_conditions_are_kept_in_place() -> None:
    existing = [
        {
            "type": "A",
            "status": "True",
            "reason": "X",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        },
        {
            "type": "Ready",
            "status": "True",
            "reason": "Ready",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        },
    ]
    result = set_condition(existing, Condition("Ready", "False", "Broken", "m"), now=T0)
    assert [c["type"] for c in result] == ["A", "Ready"]
    assert result[0] == existing[0]
    assert find(result, "Ready")["status"] == "False"  # type: ignore[index]


@pytest.mark.parametrize("reason", ["", "secret-missing", "Has space", "1Numeric"])
def test_reasons_are_camel_case(reason: str) -> None:
    with pytest.raises(ValueError, match="CamelCase"):
        Condition("Ready", "False", reason, "m")


def test_timestamps_are_rfc3339_utc() -> None:
    local = dt.datetime(2026, 11, 20, 13, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert timestamp(local) == "2026-11-20T12:00:00Z"
    assert timestamp(local, precise=True) == "2026-11-20T12:00:00.123456Z"


# -- readiness -------------------------------------------------------------------------------


def manifest(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "PublishingTarget",
        "metadata": {"name": "hook", "namespace": "team", "generation": 2},
        "spec": spec,
    }


def check(spec: dict[str, Any], secret: SecretRead | None = None) -> Condition:
    parsed = readiness.parse(manifest(**spec), EgressPolicy())
    if parsed.target is None:
        assert parsed.problem is not None
        return parsed.problem
    return readiness.check(parsed.target, secret)


def found(**data: str) -> SecretRead:
    return SecretRead("team", "creds", SecretOutcome.FOUND, data=data)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"headers": {"X-A": "a\x00b"}}, "spec.headers.X-A: must be a single-line header value"),
        ({"url": "https://h.example.com/a\x00b"}, "spec.url: must not contain control"),
        ({"url": "https://u:PASSWORD@h.example.com/"}, "spec.url: must not hold credentials"),
    ],
)
def test_hostile_strings_are_an_invalid_spec_before_the_database(
    spec: dict[str, Any], expected: str
) -> None:
    """What the CRD refuses, should an object get past it (an older CRD): the operator's
    parse makes it Ready=False InvalidSpec, so nothing reaches PostgreSQL's text columns."""
    parsed = readiness.parse(
        manifest(**{"type": "webhook", "url": "https://h.example.com/"} | spec), EgressPolicy()
    )
    assert parsed.target is None and parsed.problem is not None
    assert (parsed.problem.status, parsed.problem.reason) == ("False", "InvalidSpec")
    assert expected in parsed.problem.message
    assert "PASSWORD" not in parsed.problem.message


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://0xa9fea9fe/",
        "http://2852039166/",
        "http://169.254.43518/",
        "http://127.0.0.1:8080/hook",
    ],
)
def test_a_url_the_egress_policy_refuses_is_not_ready(url: str) -> None:
    parsed = readiness.parse(manifest(type="webhook", url=url), EgressPolicy())
    assert parsed.target is None and parsed.problem is not None
    assert (parsed.problem.status, parsed.problem.reason) == ("False", "EgressDenied")
    assert parsed.problem.message.startswith("spec.url: the egress policy refuses ")
    assert "HERALD_EGRESS_" in parsed.problem.message
    allowed = EgressPolicy(allow=(ipaddress.ip_network("169.254.169.254/32"),), allow_loopback=True)
    assert readiness.parse(manifest(type="webhook", url=url), allowed).target is not None


def test_a_secret_url_the_egress_policy_refuses_is_not_ready_and_not_shown() -> None:
    parsed = readiness.parse(manifest(type="webhook", secretRef={"name": "creds"}), EgressPolicy())
    assert parsed.target is not None
    secret = found(url="http://user:SECRETPART@0xa9fea9fe/hook")
    denied = readiness.check(parsed.target, secret, EgressPolicy())
    assert (denied.status, denied.reason) == ("False", "EgressDenied")
    assert "Secret team/creds (spec.secretRef) key url" in denied.message
    assert "SECRETPART" not in denied.message and "a9fe" not in denied.message
    assert "169.254" not in denied.message
    ok = readiness.check(parsed.target, found(url="https://hooks.example.com/x"), EgressPolicy())
    assert ok.reason == "Ready"


def test_a_plain_webhook_is_ready() -> None:
    parsed = readiness.parse(manifest(type="webhook", url="https://example.com/h"), EgressPolicy())
    assert parsed.target is not None and parsed.target.generation == 2
    ready = readiness.check(parsed.target, None)
    assert (ready.status, ready.reason) == ("True", "Ready")
    assert "team/hook" in ready.message


def test_a_paused_target_is_ready_and_says_it_is_paused() -> None:
    ready = check({"type": "webhook", "url": "https://example.com/h", "paused": True})
    assert ready.status == "True" and "paused" in ready.message


def test_a_spec_the_schema_let_through_is_reported_with_its_field_paths() -> None:
    bad = check(
        {"type": "webhook", "url": "https://example.com/h", "headers": {"Webhook-Id": "mine"}}
    )
    assert (bad.status, bad.reason) == ("False", "InvalidSpec")
    assert "spec.headers.Webhook-Id" in bad.message


def test_a_pagerduty_target_needs_a_secret() -> None:
    bad = check({"type": "pagerduty"})
    assert (bad.status, bad.reason) == ("False", "InvalidSpec")
    assert "spec.secretRef is required" in bad.message


def test_a_missing_secret_names_the_secret_and_the_keys_to_put_in_it() -> None:
    missing = check(
        {"type": "pagerduty", "secretRef": {"name": "creds"}},
        SecretRead("team", "creds", SecretOutcome.MISSING),
    )
    assert (missing.status, missing.reason) == ("False", "SecretNotFound")
    assert "Secret team/creds" in missing.message
    assert "routingKey (PagerDuty's integration key, required)" in missing.message


def test_a_missing_key() -> None:
    pd = check({"type": "pagerduty", "secretRef": {"name": "creds"}}, found(other="x"))
    assert (pd.status, pd.reason) == ("False", "SecretKeyMissing")
    assert "routingKey" in pd.message
    slack = check({"type": "slack", "secretRef": {"name": "creds"}}, found())
    assert (slack.status, slack.reason) == ("False", "SecretKeyMissing")
    assert "url" in slack.message


def test_a_bad_value_is_reported_without_showing_it() -> None:
    bad = check(
        {"type": "webhook", "url": "https://example.com/h", "secretRef": {"name": "creds"}},
        found(signingSecret="whsec_tooshort"),
    )
    assert (bad.status, bad.reason) == ("False", "SecretInvalid")
    assert "signingSecret" in bad.message and "whsec_tooshort" not in bad.message
    good = check(
        {"type": "webhook", "url": "https://example.com/h", "secretRef": {"name": "creds"}},
        found(signingSecret=WEBHOOK_SECRET),
    )
    assert good.reason == "Ready"


@pytest.mark.parametrize(
    ("outcome", "status", "reason"),
    [
        (SecretOutcome.FORBIDDEN, "Unknown", "SecretUnreadable"),
        (SecretOutcome.UNAVAILABLE, "Unknown", "SecretUnavailable"),
        (SecretOutcome.UNDECODABLE, "False", "SecretInvalid"),
    ],
)
def test_secrets_that_cannot_be_read(outcome: SecretOutcome, status: str, reason: str) -> None:
    result = check(
        {"type": "webhook", "url": "https://example.com/h", "secretRef": {"name": "creds"}},
        SecretRead("team", "creds", outcome, detail="HTTP 503"),
    )
    assert (result.status, result.reason) == (status, reason)
    assert "team/creds" in result.message


def test_the_database_being_down_is_unknown() -> None:
    down = readiness.database_unavailable("OperationalError", 10)
    assert (down.status, down.reason) == ("Unknown", "DatabaseUnavailable")


# -- status -----------------------------------------------------------------------------------


def row(**fields: Any) -> TargetRow:
    values: dict[str, Any] = {
        "id": 1,
        "namespace": "team",
        "name": "hook",
        "type": "webhook",
        "spec": parse_spec({"type": "webhook", "url": "https://example.com/h"}),
        "generation": 2,
        "paused": False,
        "auto_paused_reason": None,
        "auto_paused_at": None,
        "circuit_state": CircuitState.CLOSED,
        "consecutive_failures": 0,
        "circuit_changed_at": None,
        "circuit_open_until": None,
        "circuit_trips_total": 0,
        "circuit_recoveries_total": 0,
        "delivered_total": 0,
        "failed_attempts_total": 0,
        "dead_lettered_total": 0,
        "last_delivery_at": None,
        "last_error": None,
        "last_error_class": None,
        "last_error_at": None,
        "registered_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return TargetRow(**values)


def with_status(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "PublishingTarget",
        "metadata": {"name": "hook", "namespace": "team"},
        "spec": {"type": "webhook", "url": "https://example.com/h"},
        "status": body,
    }


def test_depth_per_priority_counts_waiting_jobs_only() -> None:
    rows = [
        StateCount(
            "team",
            "hook",
            Priority.HIGH,
            JobState.QUEUED,
            n=3,
            ready=2,
            oldest_ready_age_seconds=1.0,
        ),
        StateCount(
            "team",
            "hook",
            Priority.LOW,
            JobState.RETRYING,
            n=1,
            ready=0,
            oldest_ready_age_seconds=None,
        ),
        StateCount(
            "team",
            "hook",
            Priority.HIGH,
            JobState.RUNNING,
            n=5,
            ready=0,
            oldest_ready_age_seconds=None,
        ),
        StateCount(
            "other",
            "x",
            Priority.MEDIUM,
            JobState.QUEUED,
            n=7,
            ready=7,
            oldest_ready_age_seconds=2.0,
        ),
    ]
    depth = target_status.depth_by_target(rows)
    assert depth[("team", "hook")].to_json() == {
        "high": 3,
        "medium": 0,
        "low": 1,
        "total": 4,
        "ready": 2,
    }
    assert depth[("other", "x")].total == 7


def test_the_rendered_status_is_what_the_crd_declares() -> None:
    busy = row(
        circuit_state=CircuitState.OPEN,
        consecutive_failures=5,
        circuit_changed_at=T0,
        circuit_open_until=T0 + dt.timedelta(seconds=30),
        circuit_trips_total=2,
        circuit_recoveries_total=1,
        delivered_total=10,
        failed_attempts_total=6,
        dead_lettered_total=1,
        last_delivery_at=T0,
        last_error="HTTP 503 " + "x" * 2000,
        last_error_class="transient",
        last_error_at=T0,
        auto_paused_reason="endpoint gone (410)",
        auto_paused_at=T0,
    )
    rendered = target_status.render(busy, target_status.Depth(high=1, low=2, ready=3))
    assert rendered["circuit"]["state"] == "open"
    assert rendered["paused"] is True and rendered["pausedReason"] == "endpoint gone (410)"
    assert len(rendered["lastError"]["message"]) <= target_status.MAX_ERROR_MESSAGE
    conditions = set_condition(
        None, Condition("Ready", "True", "Ready", "ok"), now=T0, generation=2
    )
    body = rendered | {"conditions": conditions, "observedGeneration": 2}
    assert crd_schema.validate(with_status(body)) == []
    quiet = target_status.render(row(), target_status.Depth())
    assert quiet["lastError"] is None and quiet["lastDeliveryTime"] is None
    assert crd_schema.validate(with_status(quiet)) == []


def test_only_changed_fields_are_written() -> None:
    rendered = target_status.render(row(), target_status.Depth())
    assert target_status.changed(rendered, rendered) == {}
    assert target_status.changed({}, rendered).keys() == rendered.keys() - {
        "pausedReason",
        "lastDeliveryTime",
        "lastError",
    }  # None equals absent
    moved = dict(rendered, delivered=1)
    assert target_status.changed(rendered, moved) == {"delivered": 1}
    # What the API keeps of a merge patch: nulls are removed keys, nested ones too
    # (circuit.changedAt of a circuit that never changed). A quiet refresh writes nothing.
    stored = {
        k: ({ck: cv for ck, cv in v.items() if cv is not None} if isinstance(v, dict) else v)
        for k, v in rendered.items()
        if v is not None
    }
    assert "changedAt" not in stored["circuit"]
    assert target_status.changed(stored, rendered) == {}


def test_circuit_events_on_open_close_and_a_flap_between_refreshes() -> None:
    closed = target_status.render(row(), target_status.Depth())["circuit"]
    opened = row(
        circuit_state=CircuitState.OPEN,
        consecutive_failures=5,
        circuit_trips_total=1,
        circuit_open_until=T0,
    )
    event = target_status.circuit_transition(closed, opened)
    assert event is not None and (event.type, event.reason) == ("Warning", "CircuitOpened")
    assert "5 consecutive failures" in event.message
    open_status = target_status.render(opened, target_status.Depth())["circuit"]
    assert target_status.circuit_transition(open_status, opened) is None
    half = row(circuit_state=CircuitState.HALF_OPEN, circuit_trips_total=1)
    assert target_status.circuit_transition(open_status, half) is None
    recovered = row(circuit_trips_total=1, circuit_recoveries_total=1)
    event = target_status.circuit_transition(open_status, recovered)
    assert event is not None and event.reason == "CircuitClosed"
    flapped = row(circuit_trips_total=1, circuit_recoveries_total=1)
    event = target_status.circuit_transition(closed, flapped)
    assert event is not None and event.reason == "CircuitFlapped"
    assert target_status.circuit_transition(None, row()) is None  # first refresh, closed
    first_open = target_status.circuit_transition(None, opened)
    assert first_open is not None and first_open.reason == "CircuitOpened"


# -- peering ----------------------------------------------------------------------------------


def peers(**entries: tuple[int, dt.datetime]) -> dict[str, Any]:
    return {
        "status": {
            name: {"priority": p, "lifetime": 60, "lastseen": seen.isoformat()}
            for name, (p, seen) in entries.items()
        }
    }


def test_the_highest_priority_live_replica_acts() -> None:
    body = peers(me=(10, T0), other=(5, T0))
    assert peering.is_active(body, "me", 10, T0)
    assert not peering.is_active(body, "other", 5, T0)


def test_an_equal_priority_pauses_both_and_a_dead_peer_does_not_count() -> None:
    assert not peering.is_active(peers(me=(10, T0), other=(10, T0)), "me", 10, T0)
    stale = T0 - dt.timedelta(seconds=61)
    assert peering.is_active(peers(me=(10, T0), other=(99, stale)), "me", 10, T0)


def test_not_active_without_the_object_or_before_announcing_itself() -> None:
    assert not peering.is_active(None, "me", 10, T0)
    assert not peering.is_active(peers(other=(1, T0)), "me", 10, T0)


def test_random_priorities_stay_in_their_range() -> None:
    low, high = peering.PRIORITY_RANGE
    assert all(low <= peering.random_priority() <= high for _ in range(100))
    assert peering.identity() != peering.identity()


def test_dead_letter_events_are_one_per_interval_and_count_what_came_between() -> None:
    dead = target_status.DeadLetters(transient=2, permanent=5)
    notice = target_status.DeadLetterNotice(counted=0)
    quiet, notice = target_status.dead_letter_event(
        notice, row(dead_lettered_total=0), dead, now=0.0, interval=60
    )
    assert quiet is None
    first, notice = target_status.dead_letter_event(
        notice,
        row(dead_lettered_total=3, last_error="HTTP 400", last_error_class="permanent"),
        dead,
        now=1.0,
        interval=60,
    )
    assert first is not None and first.type == "Warning" and first.reason == "DeadLettered"
    assert first.message.startswith("3 job(s) went to the dead-letter queue")
    assert "last permanent error: HTTP 400" in first.message and "7 wait" in first.message
    # A storm: 500 more within the interval make no Event...
    for n, now in ((100, 10.0), (503, 59.0)):
        held, notice = target_status.dead_letter_event(
            notice, row(dead_lettered_total=n), dead, now=now, interval=60
        )
        assert held is None
    # ...then one that counts them all.
    later, notice = target_status.dead_letter_event(
        notice, row(dead_lettered_total=503), dead, now=61.0, interval=60
    )
    assert later is not None and later.message.startswith("500 job(s)")
    again, _ = target_status.dead_letter_event(
        notice, row(dead_lettered_total=503), dead, now=200.0, interval=60
    )
    assert again is None


def test_status_shows_waiting_dead_letters_per_error_class() -> None:
    rendered = target_status.render(
        row(), target_status.Depth(), target_status.DeadLetters.of({"transient": 2, "unknown": 1})
    )
    assert rendered["deadLetters"] == {"waiting": 3, "transient": 2, "permanent": 0, "unknown": 1}
    assert crd_schema.validate(with_status(rendered)) == []


# -- disabled after failing for days ---------------------------------------------------------


def test_the_disabled_condition_appears_only_once_disabled() -> None:
    assert disabling.condition(row(), None) is None, "never disabled: no condition"
    gone = row(auto_paused_reason="HTTP 410", auto_paused_at=T0, auto_paused_cause="gone")
    assert disabling.condition(gone, None) is None, "a 410 pause is not a disable"
    off = row(
        auto_paused_reason="deliveries have failed continuously since 2026-11-15T12:00:00Z",
        auto_paused_at=T0,
        auto_paused_cause="failing",
    )
    found = disabling.condition(off, None)
    assert found is not None and (found.status, found.reason) == ("True", "FailingTooLong")
    assert "herald targets enable team/hook" in found.message
    assert "kubectl annotate pt hook herald.dev/enabled-at=" in found.message
    written = set_condition(None, found, now=T0)
    back = disabling.condition(row(), written)
    assert back is not None and (back.status, back.reason) == ("False", "Enabled")


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (None, False),
        ("not a time", False),
        ("2026-11-20T11:59:59Z", False),  # before the disable: an old annotation
        ("2026-11-20T12:00:00Z", True),
        ("2026-11-21T00:00:00Z", True),
    ],
)
def test_the_enable_annotation_counts_only_after_the_disable(
    annotation: str | None, expected: bool
) -> None:
    off = row(
        auto_paused_reason="failing",
        auto_paused_at=T0 + dt.timedelta(microseconds=5),
        auto_paused_cause="failing",
    )
    annotations = {} if annotation is None else {disabling.ENABLE_ANNOTATION: annotation}
    assert disabling.enable_requested(annotations, off) is expected
    assert disabling.enable_requested(annotations, row()) is False, "not disabled"


def test_api_request_retries_never_run_out_and_are_logged_sparingly() -> None:
    import itertools
    import logging

    from herald_operator.app import RetryForever, _QuietRetries

    backoffs = RetryForever((1, 2, 4, 8, 15), cap=10)
    assert list(itertools.islice(backoffs, 8)) == [1, 2, 4, 8, 10, 10, 10, 10]
    assert list(itertools.islice(backoffs, 2)) == [1, 2]  # afresh for every request
    quiet = _QuietRetries(every=60)

    def passes(message: str) -> bool:
        return quiet.filter(logging.LogRecord("kopf.objects", 40, "", 0, message, None, None))

    assert passes("Request attempt #1 failed; will retry: PATCH /x -> boom")
    assert not passes("Request attempt #2 failed; will retry: PATCH /x -> boom")
    assert passes("Request attempt #120 failed; will retry: PATCH /x -> boom")
    assert passes("Request attempt #3 failed; escalating: PATCH /x -> boom")
    assert passes("Handler 'reconcile' succeeded.")


def test_conditions_are_compared_with_the_status_as_read() -> None:
    """The condition writer of the handlers and the status timer: a write still in flight
    stands in for a stale read once; a status overwritten by someone else is written
    again, without an Event."""
    import kopf

    from herald_operator.condition_writer import ConditionWriter
    from herald_operator.conditions import Condition

    memo: dict[str, Any] = {}
    ready = Condition("Ready", "True", "Ready", "registered")
    first = kopf.Patch()
    assert ConditionWriter({}, first, memo).set(ready, 1).news  # a first condition is news
    written = first.status["conditions"]
    assert [c["status"] for c in written] == ["True"]

    stale = kopf.Patch()  # a tick right after, reading the object before the write landed
    assert not ConditionWriter({}, stale, memo).set(ready, 1).news
    assert "conditions" not in stale.status

    landed = kopf.Patch()
    assert not ConditionWriter({"conditions": written}, landed, memo).set(ready, 1).news
    assert "conditions" not in landed.status  # a quiet target costs no write

    overwritten = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Restored",
                "message": "from a backup",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
    }
    repair = kopf.Patch()
    assert not ConditionWriter(overwritten, repair, memo).set(ready, 1).news  # no Event
    assert [(c["status"], c["reason"]) for c in repair.status["conditions"]] == [("True", "Ready")]
    # After a restart (an empty memo) the status as read is what was announced.
    fresh: dict[str, Any] = {}
    assert ConditionWriter(overwritten, kopf.Patch(), fresh).set(ready, 1).news


def test_each_condition_says_which_event_its_change_deserves() -> None:
    """Ready and Disabled: one Event per change of status (what the log line says too);
    CapacityPressure: one Warning per level the fill rises."""
    import logging

    ready = Condition("Ready", "True", "Ready", "registered")
    missing = Condition("Ready", "False", "SecretNotFound", "no Secret")
    first = readiness.notice(None, ready)
    assert first is not None and (first.type, first.reason, first.message) == (
        "Normal",
        "Ready",
        "registered",
    )
    assert (first.line, first.level) == ("target is ready: registered", logging.INFO)
    assert readiness.notice({"type": "Ready", "status": "True"}, ready) is None
    lost = readiness.notice({"type": "Ready", "status": "True"}, missing)
    assert lost is not None and (lost.type, lost.reason) == ("Warning", "SecretNotFound")
    assert lost.message == "no longer ready: no Secret"
    assert (lost.line, lost.level) == (
        "target is not ready (SecretNotFound): no Secret",
        logging.WARNING,
    )
    never = readiness.notice(None, missing)
    assert never is not None and never.message == "no Secret"

    off = Condition("Disabled", "True", "FailingTooLong", "failing")
    on = Condition("Disabled", "False", "Enabled", "deliveries are enabled")
    disabled = disabling.notice({"type": "Disabled", "status": "False"}, off)
    assert disabled is not None and (disabled.type, disabled.reason) == ("Warning", "Disabled")
    assert disabled.line == "target disabled: failing"
    enabled = disabling.notice({"type": "Disabled", "status": "True"}, on)
    assert enabled is not None and (enabled.type, enabled.reason, enabled.message) == (
        "Normal",
        "Enabled",
        "deliveries are enabled again",
    )
    assert enabled.line == "target enabled again"
    assert disabling.notice({"type": "Disabled", "status": "True"}, off) is None

    def pressure(reason: str) -> Condition:
        return Condition(
            "CapacityPressure", "False" if reason == "BelowCapacity" else "True", reason, "fill"
        )

    near = target_status.capacity_notice(None, pressure("NearCapacity"))
    assert near is not None and (near.type, near.reason, near.line) == (
        "Warning",
        "NearCapacity",
        "NearCapacity: fill",
    )
    assert target_status.capacity_notice({"reason": "NearCapacity"}, pressure("AtCapacity"))
    assert not target_status.capacity_notice({"reason": "AtCapacity"}, pressure("NearCapacity"))
    assert not target_status.capacity_notice(None, pressure("BelowCapacity"))


def test_the_condition_writer_posts_an_event_once_per_transition() -> None:
    import kopf

    from herald_operator.condition_writer import ConditionWriter
    from herald_operator.conditions import Transition

    memo: dict[str, Any] = {}
    posted: list[Transition] = []
    ready = Condition("Ready", "True", "Ready", "registered")
    first = kopf.Patch()
    ConditionWriter({}, first, memo, posted.append).set(ready, 1, readiness.notice)
    assert [e.reason for e in posted] == ["Ready"]
    written = {"conditions": first.status["conditions"]}
    again = kopf.Patch()
    ConditionWriter(written, again, memo, posted.append).set(ready, 1, readiness.notice)
    assert [e.reason for e in posted] == ["Ready"] and "conditions" not in again.status
    gone = Condition("Ready", "False", "SecretNotFound", "no Secret")
    lost = kopf.Patch()
    ConditionWriter(written, lost, memo, posted.append).set(gone, 1, readiness.notice)
    assert [e.message for e in posted] == ["registered", "no longer ready: no Secret"]
    assert [(c["status"], c["observedGeneration"]) for c in lost.status["conditions"]] == [
        ("False", 1)
    ]
