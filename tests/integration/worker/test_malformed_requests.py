"""A request aiohttp's parser refuses (a NUL in a header, a control character in the
request line) is answered 400 and logged as one quiet line: no traceback at ERROR, and not
the offending bytes, which may hold a credential (aiohttp quotes the bad header line in
its message: an ``Authorization: Bearer ...`` among them). The worker's API and the
operator's /metrics server both."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from herald_operator.metrics import Metrics, MetricsServer
from tests.integration.worker.harness import TrackingReceiver, target_doc, worker, write_manifests

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


PROTOCOL_ERRORS = [
    # (what, raw request, status)
    ("a request line too long", f"POST /v1/alertmanager/{'a' * 10_000} HTTP/1.1\r\n\r\n", 400),
    (
        "a header too long",
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 10_000}\r\n\r\n",
        400,
    ),
    ("a garbage request line", "HELLO THERE\r\n\r\n", 400),
    ("a bad method", "G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("not HTTP at all", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + "\x00" * 40, 400),
    *((f"malformed ({i})", raw, 400) for i, (raw, _) in enumerate(MALFORMED)),
]


async def whole_answer(port: int, raw: str) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of the one answer to ``raw`` (the server then closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw.encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


async def test_protocol_errors_are_answered_in_the_json_error_shape(
    db_url: str, tmp_path: Path
) -> None:
    """aiohttp answered these itself in text/plain, quoting the raw bytes
    (``bytearray(b'/v1/alertmanager/aaa...')``): now the API's JSON error, echoing nothing."""
    async with TrackingReceiver() as rx:
        path = write_manifests(tmp_path / "targets.yaml", [target_doc("hook", rx.url)])
        async with worker(db_url, path) as w:
            for what, raw, expected in PROTOCOL_ERRORS:
                status, headers, body = await whole_answer(w.running.port, raw)
                assert status == expected, f"{what}: {status} {body[:200]!r}"
                assert headers.get("content-type", "").startswith("application/json"), (
                    f"{what}: {headers} {body[:200]!r}"
                )
                answer = json.loads(body)
                assert set(answer) == {"error"}, what
                assert set(answer["error"]) == {"status", "field", "message"}, what
                assert answer["error"]["status"] == status, what
                message = answer["error"]["message"]
                assert isinstance(message, str) and message, what
                for echoed in ("bytearray", "aaaa", "bbbb", SECRET, "HELLO"):
                    assert echoed not in message, f"{what}: {message}"
            status, _ = await w.get("/healthz")
            assert status == 200, "and it goes on serving"
