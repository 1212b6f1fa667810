"""One trace from producer to receiver, in a real trace store: Jaeger v1.75 (built by
``scripts/build-jaeger.sh`` into a per-user cache; without it the test skips, and fails in
CI, HERALD_TEST_REQUIRE_ALL=1), in-memory storage, every port on 127.0.0.1.

The producer (this test, with OpenTelemetry's SDK) opens a span and submits a job with its
``traceparent``; a real ``herald worker`` process, exporting with the ``OTEL_*`` variables
only, delivers it to a receiver that fails the first attempt (503) and takes the second;
the receiver (this test again, its own tracer) continues the ``traceparent`` it gets. Then
Jaeger's query API must show one trace holding the producer's span, one span per attempt
(children of the producer's span, with target, attempt, status and error class) and the
receiver's spans (each a child of its attempt's span)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.conftest import REQUIRE_ALL
from tests.e2e.commands import env_for, processes, start_worker
from tests.e2e.observability import running
from tests.helpers import ROOT, free_port, target_manifest, wait_until
from tests.integration.worker.harness import FAST_RETRY, NO_BREAKER, write_manifests

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BUILD_SCRIPT = ROOT / "scripts" / "build-jaeger.sh"
TRACE_TIMEOUT = 90.0
"""Seconds for every span to reach Jaeger on a loaded machine."""
PROPAGATOR = TraceContextTextMapPropagator()


def jaeger_binary() -> str:
    """The cached build's path (``scripts/build-jaeger.sh --print``), or a skip (a failure
    in CI) saying how to build it."""
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/build-jaeger.sh --print did not answer in 30 s")
    if done.returncode != 0:
        message = "jaeger is not built: run scripts/build-jaeger.sh (needs Go; ~10 min cold)"
        if REQUIRE_ALL:
            pytest.fail(message + " (HERALD_TEST_REQUIRE_ALL=1: CI must run this test)")
        pytest.skip(message)
    return done.stdout.strip()


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


@contextlib.asynccontextmanager
async def jaeger(folder: Path) -> AsyncIterator[tuple[str, str]]:
    """Jaeger all-in-one (in-memory storage), OTLP/HTTP and the query API on free ports of
    127.0.0.1 and nothing else: (OTLP endpoint, query base URL). Stopped on the way out."""
    otlp, query, query_grpc = free_port(), free_port(), free_port()
    config = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": [],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": "memory"},
                "http": {"endpoint": f"127.0.0.1:{query}"},
                "grpc": {"endpoint": f"127.0.0.1:{query_grpc}"},
            },
            "jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": 10000}}}},
        },
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp}"}}}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
    }
    path = folder / "jaeger.yaml"
    path.write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{query}"
    async with running(
        [jaeger_binary(), "--config", f"file:{path}"], f"{base}/api/services", folder / "jaeger.log"
    ):
        await wait_until(
            lambda: listening(otlp), timeout=30, what=f"Jaeger's OTLP receiver on port {otlp}"
        )
        yield f"http://127.0.0.1:{otlp}", base


@contextlib.contextmanager
def tracer_provider(service: str, endpoint: str) -> Iterator[TracerProvider]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}), shutdown_on_exit=False
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=10),
            schedule_delay_millis=100,
        )
    )
    try:
        yield provider
    finally:
        provider.shutdown()


@contextlib.asynccontextmanager
async def receiver(provider: TracerProvider) -> AsyncIterator[tuple[str, list[str]]]:
    """A webhook receiver continuing each request's trace in a span of its own; 503 to a
    job's first attempt, 200 afterwards. Yields its URL and the traceparents it got."""
    tracer = provider.get_tracer("test-receiver")
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request.headers.get("traceparent", ""))
        parent = PROPAGATOR.extract(dict(request.headers))
        with tracer.start_as_current_span("receive", context=parent, kind=SpanKind.SERVER):
            first = sum(1 for t in seen if t) == 1
            return web.Response(status=503 if first else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", seen
    finally:
        await runner.cleanup()


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def parent_of(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references", []) if r.get("refType") == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


async def test_one_trace_from_producer_through_each_attempt_to_the_receiver(
    db_url: str, tmp_path: Path
) -> None:
    async with jaeger(tmp_path) as (otlp, query):
        with (
            tracer_provider("test-producer", otlp) as producer,
            tracer_provider("test-receiver", otlp) as receiving,
        ):
            async with receiver(receiving) as (url, seen):
                targets = write_manifests(
                    tmp_path / "targets.yaml",
                    [
                        target_manifest(
                            "hook",
                            url=url,
                            retry={"maxAttempts": 5, **FAST_RETRY},
                            circuitBreaker=NO_BREAKER,
                        )
                    ],
                )
                env = env_for(
                    db_url,
                    None,
                    OTEL_EXPORTER_OTLP_ENDPOINT=otlp,
                    OTEL_SERVICE_NAME="herald-worker",
                    OTEL_BSP_SCHEDULE_DELAY="100",
                )
                with processes() as started:
                    worker, base = await start_worker(started, env, "--targets", str(targets))

                    # The producer: its own span, its traceparent on the submission.
                    span = producer.get_tracer("test-producer").start_span(
                        "publish", kind=SpanKind.PRODUCER
                    )
                    carrier: dict[str, str] = {}
                    PROPAGATOR.inject(carrier, context=set_span_in_context(span))
                    async with (
                        aiohttp.ClientSession() as http,
                        http.post(
                            f"{base}/v1/jobs",
                            json={"target": "hook", "payload": {"hello": "traces"}},
                            headers=carrier,
                        ) as r,
                    ):
                        assert r.status == 201, await r.text()
                    span.end()
                    trace_id = f"{span.get_span_context().trace_id:032x}"
                    producer_span = f"{span.get_span_context().span_id:016x}"

                    await wait_until(
                        lambda: len(seen) >= 2,
                        timeout=TRACE_TIMEOUT,
                        what="two attempts at the receiver (503, then 200)",
                    )
                    assert all(t.split("-")[1] == trace_id for t in seen), seen
                    producer.force_flush(10_000)
                    receiving.force_flush(10_000)

                    found: dict[str, Any] = {}

                    async def complete() -> bool:
                        async with (
                            aiohttp.ClientSession() as http,
                            http.get(f"{query}/api/traces/{trace_id}") as r,
                        ):
                            if r.status != 200:
                                return False
                            data = (await r.json()).get("data") or []
                        if not data:
                            return False
                        trace = data[0]
                        services = {k: p["serviceName"] for k, p in trace["processes"].items()}
                        by: dict[str, list[dict[str, Any]]] = {}
                        for s in trace["spans"]:
                            by.setdefault(services[s["processID"]], []).append(s)
                        found.update(by)
                        return (
                            len(by.get("test-producer", [])) == 1
                            and len(by.get("herald-worker", [])) == 2
                            and len(by.get("test-receiver", [])) == 2
                        )

                    try:
                        await wait_until(
                            complete,
                            timeout=TRACE_TIMEOUT,
                            interval=0.5,
                            what=f"Jaeger's trace {trace_id}: the producer's span, two "
                            "attempts, two receiver spans",
                        )
                    except AssertionError as exc:
                        raise AssertionError(f"{exc}; spans found: {found}") from None
                    assert worker.stop() == 0, worker.tail()

    (published,) = found["test-producer"]
    assert published["spanID"] == producer_span
    attempts = sorted(found["herald-worker"], key=lambda s: tags(s)["herald.attempt"])
    assert [tags(s)["herald.attempt"] for s in attempts] == [1, 2]
    for attempt in attempts:
        assert attempt["operationName"] == "herald deliver"
        assert parent_of(attempt) == producer_span, "each attempt a child of the producer"
        assert tags(attempt)["herald.target"] == "default/hook"
    assert tags(attempts[0])["http.response.status_code"] == 503
    assert tags(attempts[0])["herald.error_class"] == "transient"
    assert tags(attempts[1])["http.response.status_code"] == 200
    assert "herald.error_class" not in tags(attempts[1])
    received = {parent_of(s) for s in found["test-receiver"]}
    assert received == {a["spanID"] for a in attempts}, "each receiver span under its attempt"
