"""How the API answers database errors: an outage and a busy server are told apart."""

from __future__ import annotations

import json

import psycopg

from herald_core import errors
from herald_model.submission import parse_job
from herald_worker.api.errors import http_error


def message(exc: BaseException) -> tuple[int, str, str | None]:
    response = http_error(exc)
    assert response.text is not None
    return (
        response.status,
        json.loads(response.text)["error"]["message"],
        response.headers.get("Retry-After"),
    )


def test_a_lock_timeout_or_a_conflict_is_answered_as_busy_not_as_an_outage() -> None:
    for exc, reason in [
        (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), "lock"),
        (psycopg.errors.DeadlockDetected("deadlock detected"), "deadlock"),
    ]:
        status, said, retry = message(exc)
        assert (status, retry) == (503, "2")
        assert said.startswith("PostgreSQL is busy: "), said
        assert reason in said and type(exc).__name__ in said
        assert "not available" not in said


def test_a_lost_connection_is_answered_as_an_outage() -> None:
    status, said, retry = message(psycopg.OperationalError("connection refused"))
    assert (status, retry) == (503, "2")
    assert said.startswith("PostgreSQL is not available right now"), said


def test_each_herald_error_says_its_own_status_field_and_retry_after() -> None:
    def answer(exc: BaseException) -> tuple[int, str | None, str, str | None]:
        response = http_error(exc)
        assert response.text is not None
        error = json.loads(response.text)["error"]
        assert error["status"] == response.status
        return (
            response.status,
            error["field"],
            error["message"],
            response.headers.get("Retry-After"),
        )

    assert answer(errors.InvalidRequest("limit", "must be at least 1")) == (
        400,
        "limit",
        "limit: must be at least 1",
        None,
    )
    assert answer(errors.IdempotencyKeyReused("k", "j", index=3))[:2] == (
        409,
        "[3].idempotencyKey",
    )
    assert answer(errors.IdempotencyKeyReused("k", "j"))[2].startswith("idempotencyKey: ")
    assert answer(errors.DeadLetterNotFound(["x"]))[:2] == (404, "ids")
    assert answer(errors.AlreadyReplayed(["x"]))[:2] == (409, "ids")
    assert answer(errors.TargetsMissing(["a/b"]))[:2] == (409, "target")
    assert answer(errors.TargetNotFound("a/b"))[:2] == (404, "target")
    assert answer(errors.QueueFull("full", "7"))[::3] == (429, "7")
    assert answer(errors.AmbiguousTarget("b", ["a", "c"]))[:2] == (400, "target")
    assert answer(errors.InvalidTarget("bad"))[:2] == (400, "target")
    assert answer(errors.MigrationError("no"))[:3] == (400, None, "no")
    away = answer(errors.SchemaOutOfDate(1, 2))
    assert away[::3] == (503, "2") and away[2] == errors.DATABASE_AWAY

    # A payload over HERALD_MAX_PAYLOAD_BYTES is 413, through the submission's validation.
    try:
        parse_job({"target": "t", "payload": "x" * 100}, max_payload_bytes=10)
    except errors.PayloadTooLarge as exc:
        status, field, said, _ = answer(exc)
        assert (status, field) == (413, "payload") and "HERALD_MAX_PAYLOAD_BYTES" in said
    else:
        raise AssertionError("not refused")
