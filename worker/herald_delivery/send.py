"""Sending one rendered request and saying what happened (an :class:`Outcome`)."""

from __future__ import annotations

import time

from herald_delivery.egress import EgressPolicy
from herald_delivery.failures import classify_exception
from herald_delivery.http_client import HttpClient, HttpError
from herald_delivery.outcome import Outcome
from herald_delivery.target_types.base import OutgoingRequest


class Sender:
    def __init__(self, *, concurrency: int, egress: EgressPolicy) -> None:
        # Every address is checked against the egress policy when a connection opens.
        self._client = HttpClient(egress, max_idle=concurrency)

    async def send(self, request: OutgoingRequest, *, timeout: float) -> Outcome:
        started = time.monotonic()
        try:
            response = await self._client.request(
                request.method, request.url, request.headers, request.body, timeout
            )
        except (TimeoutError, HttpError, OSError) as exc:
            error_class, message = classify_exception(exc, timeout)
            return Outcome.unanswered(error_class, message, duration=time.monotonic() - started)
        return Outcome.answered(response, duration=time.monotonic() - started)

    async def close(self) -> None:
        await self._client.close()
