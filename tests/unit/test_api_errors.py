"""How the API answers database errors: an outage and a busy server are told apart."""

from __future__ import annotations

import json

import psycopg

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
