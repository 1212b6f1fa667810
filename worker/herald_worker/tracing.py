"""Traces from producer to receiver: a span per delivery attempt, exported with
OpenTelemetry's SDK over OTLP/HTTP, and the W3C ``traceparent``/``tracestate`` headers sent
to the receiver so its trace continues.

- Off unless configured: export starts when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and ``OTEL_SDK_DISABLED`` is not ``true``
  nor ``OTEL_TRACES_EXPORTER`` ``none``. Only then is the SDK imported; every other
  ``OTEL_*`` variable (service name, sampler, batch sizes, exporter headers and timeout) is
  the SDK's own.
- Off, a job's stored trace context still goes on to the receiver unchanged (a dict update
  per attempt, nothing else): its span continues the producer's trace.
- On, each attempt is a span (kind CLIENT) whose parent is the producer's span (a root span
  for a job submitted without one), with ``herald.target``, ``herald.attempt``,
  ``herald.job_id``, ``http.response.status_code`` and ``herald.error_class``; the receiver
  gets a ``traceparent`` naming the attempt's span as its parent. Spans leave through a
  :class:`BatchSpanProcessor` (a bounded queue, ``OTEL_BSP_MAX_QUEUE_SIZE``; a full queue
  drops spans): a delivery never waits for the exporter. Shutdown flushes for at most
  :data:`FLUSH_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from herald_core.trace_context import TraceContext, traceparent_of

if TYPE_CHECKING:  # the SDK is imported only when export is configured
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from herald_delivery.outcome import Outcome
    from herald_queue.records import ClaimedJob

log = logging.getLogger("herald.tracing")

DEFAULT_SERVICE_NAME = "herald-worker"
"""The service name of Herald's spans unless OTEL_SERVICE_NAME (or service.name in
OTEL_RESOURCE_ATTRIBUTES) says otherwise."""
FLUSH_TIMEOUT = 5.0
"""Seconds the worker's shutdown waits for the spans still queued to be exported."""
SPAN_NAME = "herald deliver"
_ACTION = {"action": "tracing"}
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables ask for trace export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def propagated(job: ClaimedJob) -> dict[str, str] | None:
    """The headers that carry ``job``'s stored trace context to the receiver unchanged
    (export off), or None."""
    if job.traceparent is None:
        return None
    if job.tracestate is None:
        return {"traceparent": job.traceparent}
    return {"traceparent": job.traceparent, "tracestate": job.tracestate}


def set_headers(headers: dict[str, str], trace: dict[str, str]) -> None:
    """Put ``trace`` into a request's ``headers``, replacing a target's own ``traceparent``
    or ``tracestate`` (whatever their case): the job's context wins."""
    for name in [k for k in headers if k.lower() in TRACE_HEADERS]:
        del headers[name]
    headers.update(trace)


class AttemptSpan:
    """One attempt's span, and the headers that continue it at the receiver."""

    __slots__ = ("_span", "headers")

    def __init__(self, span: Span, tracestate: str | None) -> None:
        self._span = span
        context = span.get_span_context()
        self.headers = {
            "traceparent": traceparent_of(
                f"{context.trace_id:032x}", f"{context.span_id:016x}", context.trace_flags
            )
        }
        if tracestate is not None:
            self.headers["tracestate"] = tracestate

    def finish(self, outcome: Outcome) -> None:
        try:
            self._finish(outcome)
        except Exception:  # tracing never fails a delivery
            log.warning("could not end an attempt's span", exc_info=True, extra=_ACTION)

    def _finish(self, outcome: Outcome) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._span
        if outcome.status is not None:
            span.set_attribute("http.response.status_code", outcome.status)
        if outcome.delivered:
            span.set_status(Status(StatusCode.OK))
        else:
            error_class = outcome.error_class.value if outcome.error_class else "gone"
            span.set_attribute("herald.error_class", error_class)
            span.set_attribute("error.type", str(outcome.status or error_class))
            # The class and status only: a receiver's answer may echo what it was sent.
            span.set_status(Status(StatusCode.ERROR, error_class))
        span.end()

    def fail(self, exc: BaseException) -> None:
        """The attempt ended in an exception inside the worker (a bug, a cancellation)."""
        from opentelemetry.trace import Status, StatusCode

        try:
            self._span.set_attribute("error.type", type(exc).__name__)
            self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self._span.end()
        except Exception:  # tracing never fails a delivery
            log.warning("could not end an attempt's span", exc_info=True, extra=_ACTION)


class AttemptTracer:
    """Makes the attempt spans; exists only while export is configured (:func:`start`)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer: Tracer = provider.get_tracer("herald.worker")

    def start(self, job: ClaimedJob, target: str) -> AttemptSpan | None:
        """The attempt's span, or None (logged) if tracing fails: never the delivery."""
        try:
            return self._start(job, target)
        except Exception:
            log.warning(
                "could not start an attempt's span; delivering without one",
                exc_info=True,
                extra=_ACTION | {"job": str(job.id)},
            )
            return None

    def _start(self, job: ClaimedJob, target: str) -> AttemptSpan:
        from opentelemetry.context import Context
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            TraceFlags,
            TraceState,
            set_span_in_context,
        )

        parent = Context()  # a root span unless the producer gave its context
        if job.traceparent is not None:
            trace = TraceContext(job.traceparent, job.tracestate)
            state = TraceState.from_header([job.tracestate]) if job.tracestate else None
            parent = set_span_in_context(
                NonRecordingSpan(
                    SpanContext(
                        trace_id=int(trace.trace_id, 16),
                        span_id=int(trace.parent_id, 16),
                        is_remote=True,
                        trace_flags=TraceFlags(TraceFlags.SAMPLED if trace.sampled else 0),
                        trace_state=state,
                    )
                ),
                parent,
            )
        attributes: dict[str, Any] = {
            "herald.target": target,
            "herald.attempt": job.attempts,
            "herald.job_id": str(job.id),
            "herald.priority": job.priority.value,
        }
        span = self._tracer.start_span(
            SPAN_NAME, context=parent, kind=SpanKind.CLIENT, attributes=attributes
        )
        return AttemptSpan(span, job.tracestate)

    def flush_and_stop(self) -> None:
        self.provider.force_flush(timeout_millis=int(FLUSH_TIMEOUT * 1000))
        self.provider.shutdown()


def start(environ: Mapping[str, str] = os.environ) -> AttemptTracer | None:
    """An :class:`AttemptTracer` exporting over OTLP/HTTP when the ``OTEL_*`` variables
    configure export, else None (and nothing of OpenTelemetry is imported)."""
    if not configured(environ):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.error(
            "trace export is configured (OTEL_EXPORTER_OTLP_ENDPOINT) but OpenTelemetry's "
            "SDK is not installed (pip install 'herald[tracing]'): no spans are exported; "
            "trace context is still passed on to receivers",
            extra={"action": "tracing", "missing": exc.name},
        )
        return None
    named = environ.get("OTEL_SERVICE_NAME", "").strip() or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": DEFAULT_SERVICE_NAME})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info(
        "exporting a span per delivery attempt over OTLP/HTTP",
        extra={
            "action": "tracing",
            "service": resource.attributes.get("service.name"),
            "sampler": environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        },
    )
    return AttemptTracer(provider)


async def stop(tracer: AttemptTracer | None, timeout: float = FLUSH_TIMEOUT + 1) -> None:
    """Flush the spans still queued and stop the exporter, waiting at most ``timeout``
    seconds (in a thread: the exporter's HTTP calls block)."""
    if tracer is None:
        return
    try:
        async with asyncio.timeout(timeout):
            await asyncio.to_thread(tracer.flush_and_stop)
    except TimeoutError:
        log.warning(
            "spans not exported before the shutdown's bound: the trace collector "
            "(OTEL_EXPORTER_OTLP_ENDPOINT) did not take them in time",
            extra={"action": "tracing", "timeout_seconds": timeout},
        )
