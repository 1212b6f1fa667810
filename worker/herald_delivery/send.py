"""Sending one rendered request and saying what happened."""

from __future__ import annotations

import dataclasses
import time

from herald_core.states import ErrorClass
from herald_delivery.egress import EgressPolicy
from herald_delivery.failures import GONE, classify_exception, classify_status, parse_retry_after
from herald_delivery.http_client import HttpClient, HttpError
from herald_delivery.target_types.base import OutgoingRequest

# How much of an error response is kept for the job's last error.
BODY_SNIPPET = 200


@dataclasses.dataclass(frozen=True)
class Result:
    status: int | None
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

    @property
    def delivered(self) -> bool:
        return self.error_class is None and not self.gone and not self.withheld


class Sender:
    def __init__(self, *, concurrency: int, egress: EgressPolicy) -> None:
        # Every address is checked against the egress policy when a connection opens.
        self._client = HttpClient(egress, max_idle=concurrency)

    async def send(self, request: OutgoingRequest, *, timeout: float) -> Result:
        started = time.monotonic()
        try:
            response = await self._client.request(
                request.method, request.url, request.headers, request.body, timeout
            )
        except (TimeoutError, HttpError, OSError) as exc:
            error_class, message = classify_exception(exc, timeout)
            return Result(
                status=None,
                duration=time.monotonic() - started,
                error_class=error_class,
                message=message,
            )
        duration = time.monotonic() - started
        status = response.status
        if 200 <= status < 300:
            return Result(status=status, duration=duration)
        snippet = _snippet(response.snippet)
        reason = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        if status == GONE:
            return Result(
                status=status,
                duration=duration,
                error_class=ErrorClass.PERMANENT,
                message=reason,
                gone=True,
            )
        if 300 <= status < 400:
            reason += " (a redirect: Herald does not follow them; set the target's url to the "
            reason += "final address)"
        error_class = classify_status(status) or ErrorClass.UNKNOWN
        return Result(
            status=status,
            duration=duration,
            error_class=error_class,
            message=reason,
            retry_after=parse_retry_after(response.retry_after),
        )

    async def close(self) -> None:
        await self._client.close()


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:BODY_SNIPPET] + ("…" if len(text) > BODY_SNIPPET else "")
