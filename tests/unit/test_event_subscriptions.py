"""spec.subscriptions: event type patterns, the CEL filter's compile check and bounds, and
matching an event (herald_model.events, herald_model.target_spec)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from herald_core.errors import InvalidTarget
from herald_model import events
from herald_model.target_spec import Subscriptions, parse_spec


def spec(subscriptions: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": "https://hooks.example.com/x", "subscriptions": subscriptions}


def event(type_: str = "incident.opened", **payload: Any) -> dict[str, Any]:
    return events.event_view(
        event_id="e-1", event_type=type_, namespace="default", priority="high", payload=payload
    )


def test_spec_parses_subscriptions() -> None:
    parsed = parse_spec(
        spec(
            {"eventTypes": ["incident.*", "deploy.finished"], "filter": "event.priority == 'high'"}
        )
    )
    assert parsed.subscriptions is not None
    assert parsed.subscriptions.event_types == ("incident.*", "deploy.finished")
    assert parsed.to_config()["subscriptions"] == {
        "eventTypes": ["incident.*", "deploy.finished"],
        "filter": "event.priority == 'high'",
    }


def test_no_subscriptions_by_default() -> None:
    assert parse_spec(spec(None)).subscriptions is None


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("*", "anything.at.all", True),
        ("incident.*", "incident.opened", True),
        ("incident.*", "incident.sla.breached", True),
        ("incident.*", "incident", False),
        ("incident.*", "incidents.opened", False),
        ("incident.opened", "incident.opened", True),
        ("incident.opened", "incident.opened.again", False),
        ("incident.opened", "incident.closed", False),
    ],
)
def test_wildcards(pattern: str, event_type: str, expected: bool) -> None:
    assert events.type_matches(pattern, event_type) is expected


@pytest.mark.parametrize(
    "pattern", ["", "inc*", "*.opened", "incident.*.x", "a..b", "a b", "x" * 129, "incident.**"]
)
def test_bad_patterns_are_refused_with_the_field(pattern: str) -> None:
    with pytest.raises(InvalidTarget, match=r"spec\.subscriptions\.eventTypes\[0\]: "):
        parse_spec(spec({"eventTypes": [pattern]}))


def test_event_types_required_and_bounded() -> None:
    with pytest.raises(InvalidTarget, match=r"spec\.subscriptions\.eventTypes: is required"):
        parse_spec(spec({"filter": "true"}))
    with pytest.raises(InvalidTarget, match=r"eventTypes: must have 1 to 64 items"):
        parse_spec(spec({"eventTypes": []}))
    with pytest.raises(InvalidTarget, match=r"eventTypes: must have 1 to 64 items, got 65"):
        parse_spec(spec({"eventTypes": [f"t{i}" for i in range(65)]}))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("1 +", "is not valid CEL: unexpected end of expression at line 1, column 3"),
        ('event.type == "a" &&& x', "unexpected character '&' at line 1, column 21"),
        ('evnt.type == "a"', "refers to an unknown variable 'evnt'"),
        ("payload.x == 1", "refers to an unknown variable 'payload'"),
        ("launch(event)", "calls an unknown function launch()"),
        ("event.payload.a.map(x, x.all(y, y))", "nests the comprehension all() inside another"),
        ("   ", "is empty"),
    ],
)
def test_bad_filters_carry_the_compilers_message(source: str, message: str) -> None:
    with pytest.raises(InvalidTarget) as caught:
        parse_spec(spec({"eventTypes": ["*"], "filter": source}))
    assert str(caught.value).startswith("spec.subscriptions.filter: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("(" * 60 + "true" + ")" * 60, "is nested too deeply"),
        ("size([" + "1," * 500 + "1]) > 0", "is too large: more than 1000 syntax-tree nodes"),
        ("(" * 3000 + "1" + ")" * 3000, "is 6001 characters long, more than the limit of 1024"),
        ("[" * 400 + "]" * 400, "is nested too deeply"),
    ],
)
def test_hostile_filters_hit_the_bounds_not_the_interpreter(source: str, message: str) -> None:
    with pytest.raises(InvalidTarget, match=message):
        parse_spec(spec({"eventTypes": ["*"], "filter": source}))


def test_filters_within_the_bounds_evaluate() -> None:
    deepest = "(" * 20 + "true" + ")" * 20
    assert events.compile_filter(deepest).matches(event())
    longest = " && ".join(["true"] * 100)
    assert events.compile_filter(longest).matches(event())


def test_matching() -> None:
    subs = Subscriptions.model_validate(
        {
            "eventTypes": ["incident.*"],
            "filter": 'has(event.payload.severity) && event.payload.severity == "critical"',
        }
    )
    assert subs.matches(event(severity="critical"))
    assert not subs.matches(event(severity="warning"))
    assert not subs.matches(event())  # has() guards the missing field
    assert not subs.matches(event("deploy.finished", severity="critical"))


def test_an_evaluation_error_or_a_non_boolean_does_not_match() -> None:
    missing = events.compile_filter('event.payload.severity == "critical"')
    assert not missing.matches(event())  # no such field: an error, so no match
    assert not events.compile_filter("event.payload").matches(event(x=1))
    assert not events.compile_filter("1 / 0 == 1").matches(event())


def test_every_event_field_is_visible() -> None:
    f = events.compile_filter(
        'event.id == "e-1" && event.type == "incident.opened" && event.namespace == "default" '
        '&& event.priority == "high" && event.payload.n == 2 && event.payload.tags.exists(t, '
        't.startsWith("db")) && event.payload.host.matches("^db-[0-9]+$")'
    )
    assert f.matches(event(n=2, tags=["web", "db-main"], host="db-12"))
    assert not f.matches(event(n=2, tags=["web"], host="db-12"))


def test_regular_expressions_do_not_backtrack() -> None:
    """matches() is RE2: a pattern that backtracks exponentially in Python's re is linear."""
    f = events.compile_filter('event.payload.s.matches("^(a+)+$")')
    assert not f.matches(event(s="a" * 5000 + "!"))


def test_the_cost_is_estimated_from_the_comprehensions_and_the_payload() -> None:
    f = events.compile_filter("event.payload.items.exists(i, i == -1)")
    assert f.comprehensions == 1
    plain = events.compile_filter("event.payload.n == 1")
    assert plain.comprehensions == 0
    assert events.payload_values({"items": list(range(100))}, 10**6) == 102
    assert events.payload_values(list(range(10**6)), 50) == 51  # stops past the limit
    assert events.cost([f, plain], 102) == 102 * 2
    assert events.cost([], 10**6) == 0
    assert not f.matches(event(items=list(range(1000))))


def test_the_crd_describes_the_bounds() -> None:
    from herald_model.spec_base import openapi_schema
    from herald_model.target_spec import TargetSpec

    node = openapi_schema(TargetSpec)["properties"]["subscriptions"]
    assert node["required"] == ["eventTypes"]
    assert node["properties"]["filter"]["maxLength"] == events.FILTER_MAX_LENGTH
    assert node["properties"]["eventTypes"]["maxItems"] == events.MAX_EVENT_TYPES


def test_the_cel_library_loads_only_when_a_filter_is_compiled() -> None:
    """A worker whose targets have no filter never imports cel-python: its objects made each
    full garbage collection of a busy worker slower (issue 22's delivery benchmark)."""
    probe = (
        "import sys, herald_worker.process, herald_tools.cli.main\n"
        "from herald_model.target_spec import parse_spec\n"
        "parse_spec({'type': 'webhook', 'url': 'https://example.test/',"
        " 'subscriptions': {'eventTypes': ['incident.*']}})\n"
        "assert 'celpy' not in sys.modules and 'lark' not in sys.modules, 'loaded too early'\n"
        "parse_spec({'type': 'webhook', 'url': 'https://example.test/',"
        " 'subscriptions': {'eventTypes': ['a'], 'filter': 'event.priority == \"high\"'}})\n"
        "assert 'celpy' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
