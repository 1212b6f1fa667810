"""What became of one delivery attempt: the one shape an outcome has from the HTTP answer (or
its absence) to the settle statement."""

from __future__ import annotations

import dataclasses
import time

from herald_core.states import ErrorClass
from herald_delivery.failures import GONE, classify_status, parse_retry_after
from herald_delivery.http_client import Response

# How much of a response is kept for the job's last error and the attempt record.
BODY_SNIPPET = 200


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: int | None
    """The receiver's HTTP status; None when it gave no answer, or nothing was sent."""
    duration: float
    error_class: ErrorClass | None = None
    """None when delivered."""
    message: str = ""
    retry_after: float | None = None
    gone: bool = False
    """The receiver answered 410 Gone: this endpoint will not take deliveries any more."""
    withheld: bool = False
    """Not sent (the worker held the target back): given back, no attempt counted."""
    finished: float = dataclasses.field(default_factory=time.monotonic)
    """When the attempt ended (monotonic), to order the outcomes settled in one batch."""
    ended_at: float = dataclasses.field(default_factory=time.time)
    """When the attempt ended (the wall clock), for the attempt record."""
    response: str | None = None
    """The first characters of the receiver's answer (None without one)."""

    def __post_init__(self) -> None:
        # The settle statement stores both as text, which PostgreSQL refuses with a NUL (a
        # binary answer, an error quoting one) or a lone surrogate (text decoded with
        # surrogateescape): kept as U+FFFD and '?', never a failed settle batch.
        for name in ("message", "response"):
            value = getattr(self, name)
            if value is not None and ("\x00" in value or not value.isascii()):
                object.__setattr__(self, name, storable(value))

    @property
    def delivered(self) -> bool:
        return self.error_class is None and not self.gone and not self.withheld

    @classmethod
    def not_sent(cls, error_class: ErrorClass, message: str) -> Outcome:
        """Failed before a request went out (no target, a target's problem, a payload it
        cannot render, a bug): an attempt that took no time."""
        return cls(status=None, duration=0.0, error_class=error_class, message=message)

    @classmethod
    def held_back(cls, message: str) -> Outcome:
        """Not sent because this worker holds the target back: given back, not counted."""
        return cls(status=None, duration=0.0, withheld=True, message=message)

    @classmethod
    def unanswered(cls, error_class: ErrorClass, message: str, *, duration: float) -> Outcome:
        """Sent (or tried to), but no HTTP answer came: a timeout, a refused connection..."""
        return cls(status=None, duration=duration, error_class=error_class, message=message)

    @classmethod
    def answered(cls, response: Response, *, duration: float) -> Outcome:
        """What the receiver's HTTP answer means (failures.py has the table)."""
        status = response.status
        snippet = _snippet(response.snippet)
        if 200 <= status < 300:
            return cls(status=status, duration=duration, response=snippet)
        reason = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        if status == GONE:
            return cls(
                status=status,
                duration=duration,
                error_class=ErrorClass.PERMANENT,
                message=reason,
                response=snippet,
                gone=True,
            )
        if 300 <= status < 400:
            reason += " (a redirect: Herald does not follow them; set the target's url to the "
            reason += "final address)"
        return cls(
            status=status,
            duration=duration,
            error_class=classify_status(status) or ErrorClass.UNKNOWN,
            message=reason,
            response=snippet,
            retry_after=parse_retry_after(response.retry_after),
        )


def storable(text: str) -> str:
    """``text`` as PostgreSQL's text takes it: NUL as U+FFFD, a lone surrogate as '?'."""
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:BODY_SNIPPET] + ("…" if len(text) > BODY_SNIPPET else "")
