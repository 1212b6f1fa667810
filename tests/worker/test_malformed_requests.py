"""A request aiohttp's parser refuses (a NUL in a header, a control character in the
request line) is answered 400 and logged as one quiet line: no traceback at ERROR, and not
the offending bytes, which may hold a credential (aiohttp quotes the bad header line in
its message: an ``Authorization: Bearer ...`` among them). The worker's API and the
operator's /metrics server both."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from herald_operator.metrics import Metrics, MetricsServer
from tests.worker.harness import TrackingReceiver, target_doc, worker, write_manifests

SECRET = "sekrit-token-4711"
MALFORMED = [
    (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x00x\r\n\r\n",
        "Invalid header value char",
    ),
    ("GET /healthz HTTP/1.1\r\nHo\x00st: x\r\n\r\n", "Invalid header token"),
    (f"GET /healthz?t={SECRET}\x01 HTTP/1.1\r\nHost: x\r\n\r\n", None),
]


async def raw_request(port: int, raw: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw.encode("latin-1"))
        await writer.drain()
        return await asyncio.wait_for(reader.read(200), 10)
    finally:
        writer.close()


def check_logged(caplog: pytest.LogCaptureFixture, expected: list[str | None]) -> None:
    records = [r for r in caplog.records if r.name.startswith("aiohttp")]
    loud = [r for r in records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]
    lines = [r.getMessage() for r in records]
    assert len(lines) == len(expected), lines
    for line, reason in zip(lines, expected, strict=True):
        assert line.startswith("refused a malformed HTTP request from 127.0.0.1: "), line
        assert line.endswith("(answered 400)"), line
        assert "\n" not in line and SECRET not in line, line
        if reason is not None:
            assert reason in line, line
    assert SECRET not in caplog.text


async def test_the_worker_answers_400_and_logs_one_quiet_line(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with TrackingReceiver() as rx:
        path = write_manifests(tmp_path / "targets.yaml", [target_doc("hook", rx.url)])
        async with worker(db_url, path) as w:
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="aiohttp"):
                for raw, _ in MALFORMED:
                    answer = await raw_request(w.running.port, raw)
                    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer
                status, _ = await w.get("/healthz")
                assert status == 200, "and it goes on serving"
            check_logged(caplog, [reason for _, reason in MALFORMED])


async def test_the_operator_metrics_server_too(caplog: pytest.LogCaptureFixture) -> None:
    server = MetricsServer(Metrics(), "127.0.0.1", 0)
    port = await server.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp"):
            for raw, _ in MALFORMED:
                answer = await raw_request(port, raw.replace("/healthz", "/metrics"))
                assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer
        check_logged(caplog, [reason for _, reason in MALFORMED])
    finally:
        await server.stop()
