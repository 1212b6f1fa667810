"""decode_submission keeps each job's payload text as submitted, and refuses exactly what
the stdlib decoder and PostgreSQL refuse, with the stdlib's own messages."""

from __future__ import annotations

import json

import pytest

from herald_queue.errors import InvalidRequest
from herald_queue.requests import RawPayload, decode_submission, parse_job

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
