"""One delivery outcome: what an HTTP answer means (failures.py has the table), and the
shape of an attempt that sent nothing."""

from __future__ import annotations

from herald_core.states import ErrorClass
from herald_delivery.http_client import Response
from herald_delivery.outcome import Outcome


def test_the_outcome_of_an_http_answer() -> None:
    delivered = Outcome.answered(Response(204, None, b""), duration=0.1)
    assert delivered.delivered and delivered.status == 204 and delivered.error_class is None
    gone = Outcome.answered(Response(410, None, b"bye"), duration=0.1)
    assert gone.gone and gone.error_class is ErrorClass.PERMANENT and not gone.delivered
    assert gone.message == "HTTP 410: bye"
    busy = Outcome.answered(Response(503, "7", b"later\nplease"), duration=0.1)
    assert (busy.error_class, busy.retry_after, busy.message) == (
        ErrorClass.TRANSIENT,
        7.0,
        "HTTP 503: later please",
    )
    moved = Outcome.answered(Response(302, None, b""), duration=0.1)
    assert moved.error_class is ErrorClass.UNKNOWN and "a redirect" in moved.message
    not_sent = Outcome.not_sent(ErrorClass.PERMANENT, "invalid payload")
    assert (not_sent.status, not_sent.duration, not_sent.message) == (None, 0.0, "invalid payload")
