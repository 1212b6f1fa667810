"""What a delivery failure means: the one table of error classes (docs/delivery.md, "Failure
handling"). Transient failures are retried with backoff and count towards the target's
circuit breaker; permanent ones go to the dead-letter queue at once; unknown ones are
retried with a smaller budget; 410 Gone pauses the whole target."""

from __future__ import annotations

import datetime as dt
import email.utils

from herald_core.states import ErrorClass
from herald_delivery import http_client as http

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 422})
GONE = 410


def classify_status(status: int) -> ErrorClass | None:
    """None for success (2xx); 410 is handled apart (the target is paused)."""
    if 200 <= status < 300:
        return None
    if status in TRANSIENT_STATUSES:
        return ErrorClass.TRANSIENT
    if status in PERMANENT_STATUSES:
        return ErrorClass.PERMANENT
    return ErrorClass.UNKNOWN


def classify_exception(exc: BaseException, timeout: float) -> tuple[ErrorClass, str]:
    """The class of a failure to get a response, and a message without the URL (it may
    carry credentials, as Slack webhook URLs do)."""
    match exc:
        case http.EgressRefused():  # the target, not the receiver, must change
            return ErrorClass.PERMANENT, f"not delivered to {exc.host}: {exc.reason}"
        case TimeoutError():
            return ErrorClass.TRANSIENT, f"no response within {timeout:g}s (timeoutSeconds)"
        case http.TlsFailed(certificate_error=str(why)):
            return ErrorClass.TRANSIENT, f"TLS certificate not accepted: {why}"
        case http.TlsFailed(handshake_error=str(why)):
            return ErrorClass.TRANSIENT, f"TLS handshake failed: {why}"
        case http.TlsFailed():
            return ErrorClass.TRANSIENT, "TLS handshake failed"
        case http.DnsFailed():
            return ErrorClass.TRANSIENT, f"DNS lookup of {exc.host} failed"
        case http.ConnectFailed():
            return ErrorClass.TRANSIENT, f"cannot connect to {exc.host}:{exc.port}: {exc.reason}"
        case http.Disconnected():
            return ErrorClass.TRANSIENT, "the receiver closed the connection without a response"
        case http.BadResponse():
            return ErrorClass.TRANSIENT, "the receiver's answer is not valid HTTP/1.1"
        case ConnectionError():
            return ErrorClass.TRANSIENT, f"connection error: {type(exc).__name__}"
        case http.InvalidUrl():
            return ErrorClass.PERMANENT, "the target URL is not valid"
        case http.InvalidHeader():
            return ErrorClass.PERMANENT, (
                f"header {exc.name!r} cannot be sent (a line break or a character outside Latin-1)"
            )
    return ErrorClass.UNKNOWN, f"delivery failed: {type(exc).__name__}"


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())
