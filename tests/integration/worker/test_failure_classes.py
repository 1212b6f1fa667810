"""Each class of failure leads where the table of ``herald_delivery.failures`` says:

- transient (408, 425, 429, 5xx, connection refused, timeouts): retried with backoff, then
  delivered (or dead after maxAttempts);
- permanent (400, 401, 403, 404, 405, 413, 422, a payload the target type rejects): dead
  after one attempt, with a dead letter that says why;
- unknown (anything else, e.g. 418, 409): retried with the smaller budget
  min(maxAttempts, 3), then dead.

End to end (real worker, real receiver, real PostgreSQL), then unit tests of the table.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from pathlib import Path

import pytest

from herald_core.states import ErrorClass
from herald_delivery import failures as classify
from herald_delivery import http_client as http
from herald_delivery.target_types.base import OutgoingRequest, RenderContext
from herald_delivery.target_types.webhook import Webhook
from herald_tools.receiver import Answer, always
from tests.helpers import wait_until
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    dead_letters,
    fail_first,
    free_port,
    job,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

TRANSIENT = [408, 425, 429, 500, 502, 503, 504]
PERMANENT = [400, 401, 403, 404, 405, 413, 422]
UNKNOWN = [418, 409]


def manifests(tmp_path: Path, url: str, *, max_attempts: int = 5, **spec: object) -> Path:
    return write_manifests(
        tmp_path / "targets.yaml",
        [
            target_doc(
                "hook",
                url,
                retry={"maxAttempts": max_attempts, **FAST_RETRY},
                circuitBreaker=NO_BREAKER,
                **spec,
            )
        ],
    )


# -- transient: retried, then delivered ----------------------------------------------------


@pytest.mark.parametrize("status", TRANSIENT)
async def test_transient_status_is_retried_then_delivered(
    db_url: str, tmp_path: Path, status: int
) -> None:
    async with (
        TrackingReceiver(fail_first(2, Answer(status, body=f"busy {status}"))) as rx,
        worker(db_url, manifests(tmp_path, rx.url)) as w,
    ):
        submitted = await w.submit("hook", {"status": status})
        await wait_state(w.queue, "succeeded", 1)
        row = await job(w.queue, submitted["id"])
        assert row["attempts"] == 3, "two failures, then the delivery"
        assert row["last_error_class"] == "transient"
        assert row["last_http_status"] == status
        assert [r.answer.status for r in rx.received] == [status, status, 200]
        assert {r.webhook_id for r in rx.received} == {submitted["id"]}
        assert await dead_letters(w.queue) == []


async def test_transient_failures_exhaust_max_attempts(db_url: str, tmp_path: Path) -> None:
    """A transient failure that never ends still ends in the DLQ after maxAttempts (4 here,
    more than the unknown class's 3, so the class is visible in the count)."""
    async with (
        TrackingReceiver(always(Answer(503, body="down"))) as rx,
        worker(db_url, manifests(tmp_path, rx.url, max_attempts=4)) as w,
    ):
        submitted = await w.submit("hook")
        await wait_state(w.queue, "dead", 1)
        assert len(rx.received) == 4
        [letter] = await dead_letters(w.queue)
        assert str(letter["job_id"]) == submitted["id"]
        assert (letter["error_type"], letter["reason"]) == ("transient", "attempts-exhausted")
        assert letter["http_status"] == 503
        assert letter["retry_count"] == 4


async def test_connection_refused_is_transient(db_url: str, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    async with worker(db_url, manifests(tmp_path, url, max_attempts=4)) as w:
        submitted = await w.submit("hook")
        await wait_state(w.queue, "dead", 1)
        row = await job(w.queue, submitted["id"])
        assert row["attempts"] == 4, "the transient budget (maxAttempts), not unknown's 3"
        [letter] = await dead_letters(w.queue)
        assert (letter["error_type"], letter["reason"]) == ("transient", "attempts-exhausted")
        assert letter["http_status"] is None
        assert "cannot connect" in letter["error_message"], letter["error_message"]
        assert url not in letter["error_message"], "the URL may be a credential"


async def test_receiver_recovering_from_refused_gets_the_job(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    rx = TrackingReceiver()
    async with worker(
        db_url, manifests(tmp_path, f"http://127.0.0.1:{port}/hook", max_attempts=100)
    ) as w:
        submitted = await w.submit("hook")

        async def failed_twice() -> bool:
            return (await job(w.queue, submitted["id"]))["attempts"] >= 2

        await wait_until(failed_twice, timeout=10)
        await rx.start(port)
        try:
            await wait_state(w.queue, "succeeded", 1)
            assert rx.delivered_ids() == [submitted["id"]]
            assert (await job(w.queue, submitted["id"]))["last_error_class"] == "transient"
        finally:
            await rx.stop()


@pytest.mark.slow
async def test_timeout_is_transient(db_url: str, tmp_path: Path) -> None:
    """The receiver answers the first attempt later than timeoutSeconds: retried, then
    delivered on the second attempt, which it answers at once. (A timeout of 1 s: the
    second attempt, answered at once, has ample time even on a loaded machine.)"""
    script = fail_first(1, Answer(200, delay=3))  # a 200 that comes too late
    async with (
        TrackingReceiver(script) as rx,
        worker(db_url, manifests(tmp_path, rx.url, timeoutSeconds=1)) as w,
    ):
        submitted = await w.submit("hook")
        await wait_state(w.queue, "succeeded", 1)
        row = await job(w.queue, submitted["id"])
        assert row["attempts"] == 2
        assert row["last_error_class"] == "transient"
        assert "no response within 1s" in row["last_error"], row["last_error"]
        assert await dead_letters(w.queue) == []


# -- permanent: dead after one attempt -------------------------------------------------------


@pytest.mark.parametrize("status", PERMANENT)
async def test_permanent_status_is_dead_after_one_attempt(
    db_url: str, tmp_path: Path, status: int
) -> None:
    message = f"field 'summary' is rejected ({status})"
    async with (
        TrackingReceiver(always(Answer(status, body=message))) as rx,
        worker(db_url, manifests(tmp_path, rx.url)) as w,
    ):
        submitted = await w.submit("hook", {"status": status})
        await wait_state(w.queue, "dead", 1)
        assert len(rx.received) == 1, "exactly one attempt"
        row = await job(w.queue, submitted["id"])
        assert (row["attempts"], row["dead_reason"]) == (1, "permanent-error")
        [letter] = await dead_letters(w.queue)
        assert str(letter["job_id"]) == submitted["id"]
        assert letter["error_type"] == "permanent"
        assert letter["reason"] == "permanent-error"
        assert letter["http_status"] == status
        assert message in letter["error_message"], letter["error_message"]
        assert f"HTTP {status}" in letter["error_message"]
        assert letter["retry_count"] == 1


async def test_payload_the_type_rejects_is_permanent(db_url: str, tmp_path: Path) -> None:
    """A Slack message whose text is not a string: nothing is sent, straight to the DLQ."""
    async with TrackingReceiver() as rx:
        path = write_manifests(
            tmp_path / "targets.yaml",
            [target_doc("chat", rx.url, type="slack", retry={"maxAttempts": 5, **FAST_RETRY})],
        )
        async with worker(db_url, path) as w:
            submitted = await w.submit("chat", {"text": 5})
            await wait_state(w.queue, "dead", 1)
            assert rx.received == [], "an invalid payload is never sent"
            [letter] = await dead_letters(w.queue)
            assert str(letter["job_id"]) == submitted["id"]
            assert (letter["error_type"], letter["reason"]) == ("permanent", "permanent-error")
            assert letter["http_status"] is None
            assert "slack" in letter["error_message"].lower()
            assert "text" in letter["error_message"]
            assert letter["retry_count"] == 1


# -- unknown: a smaller budget ---------------------------------------------------------------


@pytest.mark.parametrize("status", UNKNOWN)
async def test_unknown_status_gets_the_smaller_budget(
    db_url: str, tmp_path: Path, status: int
) -> None:
    async with (
        TrackingReceiver(always(Answer(status, body="what?"))) as rx,
        worker(db_url, manifests(tmp_path, rx.url, max_attempts=5)) as w,
    ):
        submitted = await w.submit("hook")
        await wait_state(w.queue, "dead", 1)
        assert len(rx.received) == 3, "min(maxAttempts=5, 3) attempts"
        [letter] = await dead_letters(w.queue)
        assert str(letter["job_id"]) == submitted["id"]
        assert (letter["error_type"], letter["reason"]) == ("unknown", "attempts-exhausted")
        assert letter["http_status"] == status
        assert letter["retry_count"] == 3


async def test_unknown_budget_is_capped_by_max_attempts(db_url: str, tmp_path: Path) -> None:
    async with (
        TrackingReceiver(always(Answer(418))) as rx,
        worker(db_url, manifests(tmp_path, rx.url, max_attempts=2)) as w,
    ):
        await w.submit("hook")
        await wait_state(w.queue, "dead", 1)
        assert len(rx.received) == 2, "min(maxAttempts=2, 3) attempts"


async def test_unknown_then_success_is_delivered(db_url: str, tmp_path: Path) -> None:
    async with (
        TrackingReceiver(fail_first(2, Answer(409))) as rx,
        worker(db_url, manifests(tmp_path, rx.url)) as w,
    ):
        submitted = await w.submit("hook")
        await wait_state(w.queue, "succeeded", 1)
        assert rx.delivered_ids() == [submitted["id"]]
        assert len(rx.received) == 3


# -- unit tests of the table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        *[(s, ErrorClass.TRANSIENT) for s in TRANSIENT],
        *[(s, ErrorClass.PERMANENT) for s in PERMANENT],
        *[(s, ErrorClass.UNKNOWN) for s in (*UNKNOWN, 302, 307, 402, 451, 501, 505, 599, 100)],
        *[(s, None) for s in (200, 201, 202, 204, 299)],
    ],
)
def test_classify_status(status: int, expected: ErrorClass | None) -> None:
    assert classify.classify_status(status) == expected


def test_gone_is_not_classified_as_permanent() -> None:
    """410 pauses the target (herald_delivery.outcome classifies it apart): it must not
    dead-letter."""
    assert classify.GONE == 410
    assert 410 not in classify.PERMANENT_STATUSES
    assert 410 not in classify.TRANSIENT_STATUSES


@pytest.mark.parametrize(
    ("exc", "expected", "fragment"),
    [
        (TimeoutError(), ErrorClass.TRANSIENT, "no response within 2.5s"),
        (
            http.ConnectFailed(
                "receiver.example", 8443, ConnectionRefusedError(111, "Connection refused")
            ),
            ErrorClass.TRANSIENT,
            "cannot connect to receiver.example:8443: Connection refused",
        ),
        (
            http.DnsFailed("receiver.example"),
            ErrorClass.TRANSIENT,
            "DNS lookup of receiver.example failed",
        ),
        (
            http.TlsFailed("self-signed certificate"),
            ErrorClass.TRANSIENT,
            "TLS certificate not accepted: self-signed",
        ),
        (http.TlsFailed(None), ErrorClass.TRANSIENT, "TLS handshake failed"),
        (
            http.TlsFailed(None, "sslv3 alert handshake failure"),
            ErrorClass.TRANSIENT,
            "TLS handshake failed: sslv3 alert handshake failure",
        ),
        (http.Disconnected(), ErrorClass.TRANSIENT, "closed the connection"),
        (http.BadResponse(), ErrorClass.TRANSIENT, "not valid HTTP/1.1"),
        (ConnectionResetError(), ErrorClass.TRANSIENT, "connection error"),
        (http.InvalidUrl("not a valid URL"), ErrorClass.PERMANENT, "not valid"),
        (http.InvalidHeader("X-Team"), ErrorClass.PERMANENT, "header 'X-Team' cannot be sent"),
        (
            http.EgressRefused("db.internal", "10.0.0.5 is a private address"),
            ErrorClass.PERMANENT,
            "not delivered to db.internal",
        ),
        (ValueError("odd"), ErrorClass.UNKNOWN, "ValueError"),
    ],
)
def test_classify_exception(exc: BaseException, expected: ErrorClass, fragment: str) -> None:
    error_class, message = classify.classify_exception(exc, 2.5)
    assert error_class == expected, message
    assert fragment in message


def test_classify_exception_never_repeats_the_url() -> None:
    secret_url = "https://hooks.slack.example/services/T000/B000/SECRETTOKEN"
    for exc in (http.InvalidUrl(secret_url), http.BadResponse(secret_url), ValueError(secret_url)):
        _, message = classify.classify_exception(exc, 1)
        assert "SECRETTOKEN" not in message, message


NOW = dt.datetime(2026, 11, 20, 10, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("3600", 3600.0),
        (email.utils.format_datetime(NOW + dt.timedelta(seconds=90), usegmt=True), 90.0),
        ("Fri, 20 Nov 2026 10:00:30 GMT", 30.0),
        ("Fri, 20 Nov 2026 10:00:30 +0000", 30.0),
        ("Fri, 20 Nov 2026 11:00:30 +0100", 30.0),
        ("Fri, 20 Nov 2026 09:59:00 GMT", 0.0),  # in the past: no wait, never negative
        ("Fri, 20 Nov 2026 10:00:30 -0000", 30.0),  # no zone: taken as UTC
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("-5", None),
        ("5 seconds", None),
        ("1e3", None),
        ("Fri, 99 Nov 2026 10:00:30 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    got = classify.parse_retry_after(value, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_parse_retry_after_uses_the_current_time_by_default() -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    got = classify.parse_retry_after(email.utils.format_datetime(later, usegmt=True))
    assert got is not None and 57 <= got <= 60


# -- the worker's own failure: retried as unknown, never left held -----------------------


async def test_a_failure_inside_the_worker_is_retried_as_unknown(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception the worker does not expect (a bug in rendering, a lost database while
    it looks a target up) ends the attempt as unknown: the job is retried, not held
    forever with its lease renewed."""
    render = Webhook.render
    calls = 0

    def flaky_render(self: Webhook, ctx: RenderContext) -> OutgoingRequest:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return render(self, ctx)

    monkeypatch.setattr(Webhook, "render", flaky_render)
    async with (
        TrackingReceiver(always(Answer(200))) as rx,
        worker(db_url, manifests(tmp_path, rx.url)) as w,
    ):
        submitted = await w.submit("hook", {"n": 1})
        await wait_state(w.queue, "succeeded", 1)
        row = await job(w.queue, submitted["id"])
        assert row["attempts"] == 2
        assert row["last_error_class"] == "unknown"
        assert "RuntimeError" in row["last_error"]
        assert len(rx.received) == 1
