"""The API's models and generated document, without a server: every route documented and
every documented operation served, and the fuzzer's cases refused with a field path."""

from __future__ import annotations

from typing import Any

import pytest

from herald_core.errors import InvalidRequest
from herald_core.validation import validate
from herald_model.submission import parse_jobs
from herald_worker.api.inputs import adapter
from herald_worker.api.models import ReplaySelector
from herald_worker.api.openapi import build
from herald_worker.api.routes import ROUTES


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    doc = build(ROUTES)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(r.method, r.path) for r in ROUTES}
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        for status in route.replies:
            assert str(status) in op["responses"], f"{route.operation_id} {status}"
        for status in route.errors:
            error = op["responses"][str(status)]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}, route.operation_id
        for param in op.get("parameters", []):
            assert "null" not in str(param["schema"].get("type")), f"{param} is never null"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"target": "", "payload": 1}, "target", "is not a target name"),
        ({"target": "hook", "payload": 1, "idempotencyKey": ""}, "idempotencyKey", "is empty"),
        ({"target": "hook", "payload": 1, "orderingKey": "a\x00b"}, "orderingKey", "NUL"),
        ({"target": "hook", "payload": "a\x00"}, "payload", "NUL"),
        ({"target": "hook", "payload": 1, "priority": None}, "priority", "must be one of"),
        ([{"target": "hook", "payload": 1}, {"target": "hook"}], "[1].payload", "is required"),
    ],
)
def test_bad_submissions_name_the_field(body: Any, field: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_jobs(body, max_payload_bytes=1024)
    assert raised.value.field == field
    assert words in raised.value.problem


def test_every_problem_is_reported() -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_jobs({"target": 5, "priority": "urgent"}, max_payload_bytes=1024)
    message = str(raised.value)
    assert "target: must be a string" in message
    assert "payload: is required" in message
    assert "priority: must be one of high, medium, low" in message


def test_a_long_list_of_problems_is_counted_not_listed() -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_jobs([{"target": "hook"}] * 1000, max_payload_bytes=1024)
    assert raised.value.field == "[0].payload"
    assert str(raised.value).count("is required") == 10
    assert str(raised.value).endswith("and 990 more problems")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": None}, "target"),
        ({"all": True, "limit": 1.5}, "limit"),
        ({"ids": ["0190a5b200007000800000000000000a"]}, "ids[0]"),
        ({"all": True, "dryRun": None}, "dryRun"),
    ],
)
def test_bad_replay_selectors_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate(adapter(ReplaySelector), body)
    assert raised.value.field == field
