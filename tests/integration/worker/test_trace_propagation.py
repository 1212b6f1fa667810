"""W3C trace context through the queue: what a producer's request carries is kept with its
jobs (``POST /v1/jobs``, one or a batch, and the Alertmanager receiver), and reaches the
receiver on every attempt; with export configured, each attempt is a span, a child of the
producer's span, and the receiver's ``traceparent`` names that attempt's span. With export
off, a worker process never imports OpenTelemetry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from herald_tools.receiver import Answer
from herald_worker import tracing
from tests.helpers import sql_rows
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    fail_first,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)
from tests.integration.worker.test_alertmanager import THREE

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PRODUCER_SPAN}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
HEADERS = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}


def manifests(tmp_path: Path, url: str) -> Path:
    return write_manifests(
        tmp_path / "targets.yaml",
        [
            target_doc(
                "hook", url, retry={"maxAttempts": 5, **FAST_RETRY}, circuitBreaker=NO_BREAKER
            )
        ],
    )


async def trace_columns(w: Any) -> list[tuple[str | None, str | None]]:
    rows = await sql_rows(w.queue, "SELECT traceparent, tracestate FROM herald.jobs ORDER BY seq")
    return [(r["traceparent"], r["tracestate"]) for r in rows]


async def test_the_context_is_kept_with_the_job_and_reaches_the_receiver_unchanged(
    db_url: str, tmp_path: Path
) -> None:
    """Export off: every attempt carries the producer's traceparent and tracestate as
    they were sent (the receiver's span is a child of the producer's)."""
    async with TrackingReceiver(fail_first(1, Answer(503))) as rx:
        async with worker(db_url, manifests(tmp_path, rx.url)) as w:
            assert w.running.worker.tracer is None, "export is off without OTEL_* variables"
            status, one = await w.post(
                "/v1/jobs", json={"target": "hook", "payload": {"n": 1}}, headers=HEADERS
            )
            assert status == 201, one
            status, batch = await w.post(
                "/v1/jobs",
                json=[{"target": "hook", "payload": {"n": n}} for n in (2, 3)],
                headers=HEADERS,
            )
            assert status == 201, batch
            plain = await w.submit("hook", {"n": 4})  # without a context
            await wait_state(w.queue, "succeeded", 4)
            assert await trace_columns(w) == [(TRACEPARENT, TRACESTATE)] * 3 + [(None, None)]

        traced = [r for r in rx.received if r.webhook_id != plain["id"]]
        assert len(traced) == 6, "three jobs, each failed once then delivered"
        for r in traced:
            assert r.headers["traceparent"] == TRACEPARENT
            assert r.headers["tracestate"] == TRACESTATE
        for r in rx.received:
            if r.webhook_id == plain["id"]:
                assert "traceparent" not in r.headers and "tracestate" not in r.headers


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": TRACEPARENT.upper()},
        {"traceparent": "00-" + "f" * 5000},
        {"traceparent": f"ff-{TRACE}-{PRODUCER_SPAN}-01", "tracestate": TRACESTATE},
    ],
)
async def test_an_invalid_traceparent_is_ignored_not_refused(
    db_url: str, tmp_path: Path, headers: dict[str, str]
) -> None:
    async with TrackingReceiver() as rx:
        async with worker(db_url, manifests(tmp_path, rx.url)) as w:
            status, body = await w.post(
                "/v1/jobs", json={"target": "hook", "payload": {}}, headers=headers
            )
            assert status == 201, body
            await wait_state(w.queue, "succeeded", 1)
            assert await trace_columns(w) == [(None, None)]
        assert "traceparent" not in rx.received[0].headers


async def test_an_invalid_tracestate_is_dropped_and_the_traceparent_kept(
    db_url: str, tmp_path: Path
) -> None:
    async with TrackingReceiver() as rx:
        async with worker(db_url, manifests(tmp_path, rx.url)) as w:
            status, body = await w.post(
                "/v1/jobs",
                json={"target": "hook", "payload": {}},
                headers={"traceparent": TRACEPARENT, "tracestate": "x" * 600},
            )
            assert status == 201, body
            await wait_state(w.queue, "succeeded", 1)
            assert await trace_columns(w) == [(TRACEPARENT, None)]
        assert rx.received[0].headers["traceparent"] == TRACEPARENT
        assert "tracestate" not in rx.received[0].headers


async def test_alertmanager_notifications_keep_the_context(db_url: str, tmp_path: Path) -> None:
    async with TrackingReceiver() as rx:
        async with worker(db_url, manifests(tmp_path, rx.url)) as w:
            status, body = await w.post("/v1/alertmanager/hook", json=THREE, headers=HEADERS)
            assert status == 200, body
            await wait_state(w.queue, "succeeded", 3)
            assert await trace_columns(w) == [(TRACEPARENT, TRACESTATE)] * 3
        assert {r.headers["traceparent"] for r in rx.received} == {TRACEPARENT}


async def test_with_export_each_attempt_is_a_span_the_receiver_continues(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attempt spans are children of the producer's span, with the target, attempt,
    status and error class; each receiver's traceparent names its attempt's span."""
    exported = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    monkeypatch.setattr(tracing, "start", lambda environ=None: tracing.AttemptTracer(provider))
    async with (
        TrackingReceiver(fail_first(1, Answer(503))) as rx,
        worker(db_url, manifests(tmp_path, rx.url)) as w,
    ):
        status, body = await w.post(
            "/v1/jobs", json={"target": "hook", "payload": {}}, headers=HEADERS
        )
        assert status == 201, body
        plain = await w.submit("hook", {})
        await wait_state(w.queue, "succeeded", 2)
    spans = sorted(exported.get_finished_spans(), key=lambda s: s.start_time or 0)
    traced = [s for s in spans if s.attributes and s.attributes["herald.job_id"] == body["id"]]
    assert [s.attributes["herald.attempt"] for s in traced if s.attributes] == [1, 2]
    first, second = traced
    for span in traced:
        assert span.kind == SpanKind.CLIENT
        assert span.context is not None and span.parent is not None
        assert f"{span.context.trace_id:032x}" == TRACE, "the producer's trace"
        assert f"{span.parent.span_id:016x}" == PRODUCER_SPAN, "a child of the producer's span"
        assert span.attributes is not None and span.attributes["herald.target"] == "default/hook"
        assert str(span.context.trace_state.to_header()) == TRACESTATE
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["herald.error_class"] == "transient"
    assert first.status.status_code == StatusCode.ERROR
    assert second.attributes["http.response.status_code"] == 200
    assert "herald.error_class" not in second.attributes
    assert second.status.status_code == StatusCode.OK

    by_attempt = [r for r in rx.received if r.webhook_id == body["id"]]
    assert [r.headers["traceparent"] for r in by_attempt] == [
        f"00-{TRACE}-{s.context.span_id:016x}-01" for s in traced if s.context
    ], "the receiver's parent is the attempt's span"
    assert {r.headers["tracestate"] for r in by_attempt} == {TRACESTATE}

    roots = [s for s in spans if s.attributes and s.attributes["herald.job_id"] == plain["id"]]
    assert roots and all(s.parent is None for s in roots), "no context: a root span per attempt"
    received = [r.headers["traceparent"] for r in rx.received if r.webhook_id == plain["id"]]
    assert received == [
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-{s.context.trace_flags:02x}"
        for s in roots
        if s.context
    ]


CHECK_IMPORTS = """
import sys
from herald_worker import process, tracing
from herald_tools.cli import main
tracer = tracing.start()
print(tracer is not None, any(m.startswith("opentelemetry") for m in sys.modules))
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "False False"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "True True"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"},
            "False False",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"},
            "False False",
        ),
    ],
)
def test_without_export_configured_no_opentelemetry_module_is_imported(
    env: dict[str, str], expected: str
) -> None:
    """The worker process's modules, and its tracing start, in a fresh interpreter."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    command = [sys.executable, "-c", CHECK_IMPORTS]
    try:
        done = subprocess.run(
            command, env=clean | env, capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("python -c CHECK_IMPORTS (importing the worker) did not finish in 60 s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == expected, done.stdout + done.stderr


@pytest.mark.parametrize("pruned", [False, True], ids=["job-kept", "job-pruned"])
async def test_a_dead_letter_keeps_the_context_and_a_replay_continues_the_trace(
    db_url: str, tmp_path: Path, pruned: bool
) -> None:
    """400 first (dead at once), 200 after the replay: the replayed attempt carries the
    producer's context, whether the dead job's row was still there or retention had
    removed it (the replay then makes the job again from its dead letter)."""
    answers = iter([Answer(400)])
    async with TrackingReceiver(lambda rx, req, body: next(answers, Answer())) as rx:
        async with worker(db_url, manifests(tmp_path, rx.url)) as w:
            status, body = await w.post(
                "/v1/jobs", json={"target": "hook", "payload": {}}, headers=HEADERS
            )
            assert status == 201, body
            await wait_state(w.queue, "dead", 1)
            rows = await sql_rows(
                w.queue, "SELECT id, traceparent, tracestate FROM herald.dead_letters"
            )
            assert [(r["traceparent"], r["tracestate"]) for r in rows] == [
                (TRACEPARENT, TRACESTATE)
            ]
            if pruned:
                await sql_rows(w.queue, "DELETE FROM herald.jobs RETURNING id")
            status, result = await w.post(f"/v1/dead-letters/{rows[0]['id']}/replay")
            assert status == 200, result
            await wait_state(w.queue, "succeeded", 1)
            assert await trace_columns(w) == [(TRACEPARENT, TRACESTATE)]
        assert [r.headers["traceparent"] for r in rx.received] == [TRACEPARENT] * 2
