"""The worker's tracing switch and its safety: export only when the OTEL_* variables ask
for it; the job's context replaces a target's own trace headers; a failing tracer never
fails a delivery."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider

from herald_core.states import Priority
from herald_queue.records import ClaimedJob
from herald_worker import tracing

NOW = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def claimed(traceparent: str | None = PARENT, tracestate: str | None = None) -> ClaimedJob:
    return ClaimedJob(
        id=uuid.uuid4(),
        target_id=1,
        priority=Priority.HIGH,
        payload_json="{}",
        attempts=1,
        idempotency_key=None,
        ordering_key=None,
        created_at=NOW,
        run_at=NOW,
        lease_expires_at=NOW,
        traceparent=traceparent,
        tracestate=tracestate,
    )


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_export_only_when_an_endpoint_is_configured(env: dict[str, str], on: bool) -> None:
    assert tracing.configured(env) is on
    if not on:
        assert tracing.start(env) is None


def test_propagated_headers_are_the_stored_ones() -> None:
    assert tracing.propagated(claimed(None)) is None
    assert tracing.propagated(claimed()) == {"traceparent": PARENT}
    assert tracing.propagated(claimed(tracestate="a=1")) == {
        "traceparent": PARENT,
        "tracestate": "a=1",
    }


def test_the_jobs_context_replaces_a_targets_own_trace_headers() -> None:
    headers = {"Traceparent": "bogus", "TRACESTATE": "x=1", "X-Team": "sre"}
    tracing.set_headers(headers, {"traceparent": PARENT})
    assert headers == {"X-Team": "sre", "traceparent": PARENT}


def test_a_failing_tracer_gives_no_span_and_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = tracing.AttemptTracer(TracerProvider(shutdown_on_exit=False))

    def broken(job: ClaimedJob, target: str) -> tracing.AttemptSpan:
        raise RuntimeError("a bug in tracing")

    monkeypatch.setattr(tracer, "_start", broken)
    assert tracer.start(claimed(), "default/hook") is None


def test_a_span_names_its_attempt_as_the_receivers_parent() -> None:
    tracer = tracing.AttemptTracer(TracerProvider(shutdown_on_exit=False))
    span = tracer.start(claimed(tracestate="a=1"), "default/hook")
    assert span is not None
    parent = span.headers["traceparent"]
    assert parent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and parent.endswith("-01")
    assert parent.split("-")[2] != "00f067aa0ba902b7", "the attempt's own span id"
    assert span.headers["tracestate"] == "a=1"
