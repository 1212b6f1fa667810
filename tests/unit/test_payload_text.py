"""decode_submission keeps each job's payload text as submitted, and refuses exactly what
the stdlib decoder and PostgreSQL refuse, with the stdlib's own messages."""

from __future__ import annotations

import json
import uuid

import pytest

from herald_core.errors import InvalidRequest
from herald_core.json_depth import deeper_than, json_depth, shown_payload
from herald_delivery.target_types.base import InvalidPayload, RenderContext
from herald_model.submission import RawPayload, decode_submission, parse_job
from herald_model.target_spec import parse_target
from tests.helpers import target_manifest

BODIES = [
    '{"target": "hook", "payload": {"a": 1.0E2, "a": [ 1 ,2 ]}}',
    ' [ {"payload" : "\\u00e9", "target": "hook"} , {"target": "hook", "payload":-0.0e-0} ] ',
    '{"target": "hook", "payload": 1, "payload": {"last": true}}',
    "[]",
    "{}",
    '"just a string"',
    "[1, {}, []]",
]


@pytest.mark.parametrize("body", BODIES)
def test_the_value_is_the_stdlib_s_and_payloads_keep_their_text(body: str) -> None:
    decoded = decode_submission(body.encode())

    def plain(value: object) -> object:
        if isinstance(value, RawPayload):
            assert json.loads(value.text) == value.value
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    assert plain(decoded) == json.loads(body)


def test_the_stored_text_is_the_submitted_one() -> None:
    job = parse_job(decode_submission(BODIES[0].encode()), max_payload_bytes=1000)
    assert job.payload_json == '{"a": 1.0E2, "a": [ 1 ,2 ]}'
    [one, two] = decode_submission(BODIES[1])
    assert parse_job(one, max_payload_bytes=100).payload_json == '"\\u00e9"'
    assert parse_job(two, max_payload_bytes=100).payload_json == "-0.0e-0"
    last = parse_job(decode_submission(BODIES[2]), max_payload_bytes=100)
    assert last.payload_json == '{"last": true}', "the last duplicate member wins, as in json"


@pytest.mark.parametrize(
    "body",
    ['{"payload": 1,}', '[{"payload": 1} {"payload": 2}]', '{"payload" 1}', '{"a": 1} x', "[1,]"],
)
def test_invalid_json_fails_with_the_stdlib_s_message(body: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        decode_submission(body)
    with pytest.raises(json.JSONDecodeError) as stdlib:
        json.loads(body)
    assert str(ours.value) == str(stdlib.value)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("NaN", "NaN and Infinity are not valid JSON numbers"),
        ('{"x": [-Infinity]}', "NaN and Infinity are not valid JSON numbers"),
        ('"\\ud800"', "contains an unpaired surrogate"),
        ('"a\\u0000b"', "contains a NUL character"),
        ('"' + "x" * 100 + '"', "is 102 bytes of JSON, more than the limit of 100 bytes"),
    ],
)
def test_what_postgresql_cannot_store_is_refused(payload: str, problem: str) -> None:
    body = decode_submission(f'{{"target": "hook", "payload": {payload}}}')
    with pytest.raises(InvalidRequest) as refused:
        parse_job(body, max_payload_bytes=100)
    assert refused.value.field == "payload"
    assert refused.value.problem.startswith(problem)


def test_paired_surrogates_and_the_words_nan_and_infinity_in_strings_are_kept() -> None:
    text = '{"emoji": "\\ud83d\\ude80", "word": "NaN or Infinity"}'
    job = parse_job(
        decode_submission(f'{{"target": "hook", "payload": {text}}}'), max_payload_bytes=200
    )
    assert job.payload_json == text


DEPTHS = [
    ("1", 0),
    ('"[[{{"', 0),
    ("[]", 1),
    ('{"a": 1}', 1),
    ("[[1], {}]", 2),
    ('["a\\"]]]", "\\\\", [["}"]]]', 3),
    ('{"k": {"[": ["\\\\\\"{"]}}', 3),
    ("[" * 3000 + "]" * 3000, 3000),
]


@pytest.mark.parametrize(("text", "depth"), DEPTHS)
def test_depth_is_read_from_the_text_ignoring_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth
    assert json_depth(text.encode()) == depth
    assert deeper_than(text, depth) is None
    if depth:
        assert deeper_than(text, depth - 1) == deeper_than(text.encode(), depth - 1) == depth
    if depth < 500:
        assert depth == _decoded_depth(json.loads(text))


@pytest.mark.timeout(30)  # the quadratic scan took hours on this text (23 s at 80 KB)
def test_an_unterminated_string_runs_to_the_end_as_the_decoder_reads_it() -> None:
    """Brackets after an unterminated quote are inside it for the decoder too (it fails on
    the string before any of them), and the scan stays linear in the text's length: one
    request of quotes and escapes must not hold the worker's event loop."""
    text = "[" * 600 + '"' + '\\"' * 1_000_000 + "[" * 600
    assert deeper_than(text, 514) == json_depth(text) == 600
    assert json_depth('[[1, "]]]\\') == 2 and json_depth('{"a\\') == 1
    with pytest.raises(ValueError, match="Unterminated string"):
        json.loads('[[1, "[[[')


def _decoded_depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_decoded_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_decoded_depth, value), default=0)
    return 0


def test_a_payload_past_the_depth_limit_is_refused_naming_it() -> None:
    for make in (lambda n: "[" * n + "]" * n, lambda n: '{"a":' * n + "1" + "}" * n):
        text = make(11)
        body = decode_submission(f'{{"target": "hook", "payload": {text}}}')
        with pytest.raises(InvalidRequest) as raised:
            parse_job(body, max_payload_bytes=1000, max_payload_depth=10)
        assert raised.value.field == "payload"
        assert "nested 11 levels deep" in raised.value.problem
        assert "limit of 10 (HERALD_MAX_PAYLOAD_DEPTH)" in raised.value.problem
        ok = decode_submission(f'{{"target": "hook", "payload": {make(10)}}}')
        assert parse_job(ok, max_payload_bytes=1000, max_payload_depth=10).payload_json


def test_a_stored_payload_too_deep_is_shown_as_text() -> None:
    assert shown_payload('{"a": [1]}') == {"payload": {"a": [1]}}
    assert shown_payload(None) == {"payload": None}
    deep = "[" * 5000 + "]" * 5000
    shown = shown_payload(deep)
    assert (shown["payload"], shown["payloadText"]) == (None, deep)
    assert "5000" in shown["payloadNote"]
    assert shown_payload("not json")["payloadText"] == "not json"


def test_rendering_a_payload_too_deep_is_an_invalid_payload() -> None:
    """Slack and PagerDuty decode the payload to render it: a row too deep to decode goes
    to the dead-letter queue as a permanent failure, not a crash of the delivery."""
    target = parse_target(target_manifest("t", type="slack", url="https://hooks.example/x"))
    ctx = RenderContext(
        job_id=uuid.uuid4(),
        attempt=1,
        payload_json="[" * 5000 + "]" * 5000,
        target=target,
        secrets={},
        timestamp=0,
    )
    with pytest.raises(InvalidPayload, match="5000 levels deep"):
        ctx.payload()
