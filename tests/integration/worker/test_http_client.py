"""The worker's HTTP/1.1 client (``herald_delivery.http_client``) against real peers on
127.0.0.1: raw asyncio servers writing exact bytes where the shape of an answer matters,
aiohttp servers where an ordinary receiver is enough, a TLS server with a certificate made
here. What is checked: connections kept and reused (or not), answers read (status,
Retry-After, error snippets, interim answers, garbage), the request bytes on the wire,
timeouts, the egress policy at connect time, TLS, the idle pool, and the same scenario
under uvloop (which the real worker runs).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import gzip
import ipaddress
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TypeVar

import pytest
import uvloop
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from herald_delivery import failures as classify
from herald_delivery import http_client as http
from herald_delivery.egress import EgressPolicy
from herald_tools.receiver import Answer, always
from tests.helpers import sql_rows
from tests.integration.worker.harness import (
    FAST_RETRY,
    NO_BREAKER,
    TrackingReceiver,
    dead_letters,
    free_port,
    target_doc,
    wait_state,
    worker,
    write_manifests,
)

T = TypeVar("T")

LOOPBACK = EgressPolicy(allow_loopback=True)
TIMEOUT = 5.0
"""For requests that are answered: generous, a loaded machine never reaches it."""
WAIT = 5.0
"""How long a test waits for something the peer should see (an EOF, a connection)."""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- a raw peer --------------------------------------------------------------------------


@dataclasses.dataclass
class Conn:
    """One accepted connection, as the peer's script sees it."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    eof: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set when the client closed its side (the peer read EOF)."""

    async def read_request(self) -> bytes | None:
        """One whole request (head and Content-Length body), None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        try:
            return head + await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None

    async def wait_eof(self) -> None:
        """Until the client closes the connection (whatever it sends before is dropped)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.eof.set()

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Script = Callable[["Peer", Conn], Awaitable[None]]


class Peer:
    """An HTTP peer on 127.0.0.1 (or ``host``) whose script (one run per connection)
    reads requests and writes exact bytes; it counts connections and keeps every request
    it read."""

    def __init__(self, script: Script, *, host: str = "127.0.0.1") -> None:
        self.script = script
        self.host = host
        self.conns: list[Conn] = []
        self.requests: list[tuple[int, bytes]] = []
        """(connection index, raw request) in arrival order."""
        self.arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    def url(self, path: str = "/hook", scheme: str = "http") -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{shown}:{self.port}{path}"

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.conns:
            conn.writer.close()
        if self._tasks:  # each script ends as its connection closes
            await asyncio.wait(list(self._tasks), timeout=WAIT)
        assert not self._tasks, "a peer's script did not end with its connection"
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(len(self.conns), reader, writer)
        self.conns.append(conn)
        try:
            await self.script(self, conn)
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def read(self, conn: Conn) -> bytes | None:
        request = await conn.read_request()
        if request is not None:
            async with self.arrived:
                self.requests.append((conn.index, request))
                self.arrived.notify_all()
        return request

    async def wait_requests(self, n: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.requests) >= n), WAIT)

    @property
    def connections(self) -> list[int]:
        """The connection each request came on."""
        return [index for index, _ in self.requests]


def answering(*answers: bytes, close: bool = False) -> Script:
    """Each request answered with the next of ``answers`` (the last one repeated), on any
    connection; with ``close``, the connection closed after each answer without a word."""
    count = 0

    async def script(peer: Peer, conn: Conn) -> None:
        nonlocal count
        while await peer.read(conn) is not None:
            answer = answers[min(count, len(answers) - 1)]
            count += 1
            await conn.write(answer)
            if close:
                return
        conn.eof.set()

    return script


@contextlib.asynccontextmanager
async def client(
    egress: EgressPolicy = LOOPBACK,
    *,
    max_idle: int = 4,
    tls: ssl.SSLContext | None = None,
    keepalive: float = http.KEEPALIVE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[http.HttpClient]:
    c = http.HttpClient(egress, max_idle=max_idle, tls=tls, keepalive=keepalive, clock=clock)
    try:
        yield c
    finally:
        await c.close()


async def post(
    c: http.HttpClient,
    url: str,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> http.Response:
    return await c.request("POST", url, headers or {}, body, timeout)


def run_under(loop: str, main: Coroutine[object, object, T]) -> T:
    """``main`` run in a new event loop: asyncio's own, or uvloop's (the worker's)."""
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert type(runner.get_loop()).__module__.startswith(loop)
        return runner.run(main)


def message(exc: BaseException, timeout: float = TIMEOUT) -> str:
    return classify.classify_exception(exc, timeout)[1]


# -- 1. keep-alive ----------------------------------------------------------------------

CHUNKED_OK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "answer",
    [
        OK,
        CHUNKED_OK,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000,
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["content-length", "chunked", "204", "large-body", "http/1.0-keep-alive"],
)
async def test_consecutive_requests_reuse_one_connection(answer: bytes) -> None:
    async with Peer(answering(answer)) as peer, client() as c:
        for _ in range(5):
            response = await post(c, peer.url())
            body = answer.split(b"\r\n\r\n", 1)[1]
            if b"chunked" in answer:
                body = b"hello"
            assert (response.status, response.snippet) == (
                int(answer[9:12]),
                body[: http.SNIPPET_BYTES],
            )
        assert peer.connections == [0, 0, 0, 0, 0]
        assert len(peer.conns) == 1


async def test_requests_reuse_a_connection_of_an_aiohttp_receiver() -> None:
    peers: list[object] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with client() as c:
            for _ in range(5):
                assert (await post(c, f"http://127.0.0.1:{port}/hook")).status == 200
        assert len(peers) == 5 and len(set(peers)) == 1, peers
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 503 Busy\r\nconnection: CLOSE\r\nContent-Length: 2\r\n\r\nno",
    ],
    ids=["connection-close", "http/1.0", "error-close-any-case"],
)
async def test_an_answer_that_does_not_keep_alive_means_a_new_connection(answer: bytes) -> None:
    """The peer keeps its side open (it would take another request): the client alone
    decides, from the answer, not to reuse the connection."""
    async with Peer(answering(answer)) as peer, client() as c:
        for _ in range(3):
            assert (await post(c, peer.url())).status == int(answer[9:12])
        assert peer.connections == [0, 1, 2]
        await asyncio.wait_for(peer.conns[0].eof.wait(), WAIT)


async def test_a_body_delimited_by_close_is_read_to_the_end() -> None:
    async def script(peer: Peer, conn: Conn) -> None:
        await peer.read(conn)
        await conn.write(b"HTTP/1.1 200 OK\r\n\r\nthe body runs")
        await conn.write(b" until the connection closes")
        conn.writer.close()

    async with Peer(script) as peer, client() as c:
        for _ in range(2):
            assert (await post(c, peer.url())).status == 200
        assert peer.connections == [0, 1]


async def test_bytes_after_the_answer_end_the_connection() -> None:
    """A 204 with a body (a receiver's bug): the answer counts, the connection (whose
    next bytes would be read as the next answer) is not kept."""
    answer = b"HTTP/1.1 204 No Content\r\n\r\nsurprise"
    async with Peer(answering(answer)) as peer, client() as c:
        for _ in range(3):
            assert (await post(c, peer.url())).status == 204
        assert peer.connections == [0, 1, 2]


async def test_bytes_while_idle_end_the_connection() -> None:
    """Bytes nobody asked for on an idle connection: it is closed, the next request goes
    on a new one."""
    answered = asyncio.Event()

    async def script(peer: Peer, conn: Conn) -> None:
        if conn.index == 0:
            await peer.read(conn)
            await conn.write(OK)
            await answered.wait()
            await conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await conn.wait_eof()
        else:
            await answering(OK)(peer, conn)

    async with Peer(script) as peer, client() as c:
        assert (await post(c, peer.url())).status == 200
        answered.set()
        await asyncio.wait_for(peer.conns[0].eof.wait(), WAIT)
        assert (await post(c, peer.url())).status == 200
        assert peer.connections == [0, 1]


# -- 2. connections closed by the receiver ------------------------------------------------


async def test_a_pooled_connection_closed_while_idle_is_replaced() -> None:
    """The peer closes after each answer without saying so: every request after the first
    finds its pooled connection closed (or closing) and goes out once more on a new one,
    without a failure."""
    async with Peer(answering(OK, close=True)) as peer, client() as c:
        for _ in range(10):
            assert (await post(c, peer.url())).status == 200
        assert peer.connections == list(range(10))


async def test_a_pooled_connection_closed_before_the_answer_is_replaced() -> None:
    """The receiver reads the request on the kept connection, then closes without a word
    (its idle timer fired as the request came): sent again on a new connection."""

    async def script(peer: Peer, conn: Conn) -> None:
        request = await peer.read(conn)
        if request is None:
            return
        await conn.write(OK)
        if conn.index == 0:
            await peer.read(conn)  # the second request: dropped with the connection
            return
        await answering(OK)(peer, conn)

    async with Peer(script) as peer, client() as c:
        assert (await post(c, peer.url())).status == 200
        assert (await post(c, peer.url())).status == 200
        assert peer.connections == [0, 0, 1]


async def test_a_stale_pooled_connection_is_replaced_by_a_new_one() -> None:
    """Three connections kept; the receiver drops each as the next request arrives on it
    (it had timed them all out). The request goes once more on a new connection, not on
    every other kept one in turn: it is sent twice, not four times."""
    release = asyncio.Event()

    async def script(peer: Peer, conn: Conn) -> None:
        if await peer.read(conn) is None:
            return
        if conn.index < 3:
            await release.wait()
            await conn.write(OK)
            await peer.read(conn)  # the next request on it: dropped with the connection
            return
        await conn.write(OK)
        await answering(OK)(peer, conn)

    async with Peer(script) as peer, client() as c:
        sending = [asyncio.ensure_future(post(c, peer.url())) for _ in range(3)]
        await peer.wait_requests(3)
        release.set()
        await asyncio.gather(*sending)
        assert (await post(c, peer.url())).status == 200
        assert len(peer.requests) == 5, peer.connections
        assert peer.connections[4] == 3, "the retry went on a new connection"


async def test_a_fresh_connection_closed_before_any_answer_is_disconnected() -> None:
    async def script(peer: Peer, conn: Conn) -> None:
        await peer.read(conn)  # then close, no answer

    async with Peer(script) as peer, client() as c:
        with pytest.raises(http.Disconnected) as caught:
            await post(c, peer.url())
        assert len(peer.requests) == 1, "sent once: a new connection is not retried"
        assert message(caught.value) == "the receiver closed the connection without a response"


async def test_a_connection_cut_mid_body_still_gives_the_status() -> None:
    async def script(peer: Peer, conn: Conn) -> None:
        await peer.read(conn)
        await conn.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 1000\r\n\r\nonly this")

    async with Peer(script) as peer, client() as c:
        response = await post(c, peer.url())
        assert (response.status, response.snippet) == (503, b"only this")
        assert (await post(c, peer.url())).status == 503
        assert peer.connections == [0, 1]


# -- 3. answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after", ["120", "Fri, 20 Nov 2026 10:00:30 GMT", "  7 "], ids=["seconds", "date", "ws"]
)
async def test_status_and_retry_after_as_sent(retry_after: str) -> None:
    answer = (
        f"HTTP/1.1 429 Slow Down\r\nRetry-After: {retry_after}\r\nContent-Length: 4\r\n\r\nslow"
    )
    async with Peer(answering(answer.encode())) as peer, client() as c:
        response = await post(c, peer.url())
        assert response.status == 429
        assert response.retry_after is not None
        assert response.retry_after.strip() == retry_after.strip()
        assert response.snippet == b"slow"


async def test_no_retry_after_is_none() -> None:
    async with Peer(answering(OK)) as peer, client() as c:
        assert (await post(c, peer.url())).retry_after is None


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def encoded(encoding: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 422 Unprocessable\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
    return head % (encoding, len(body)) + body


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(data) + packer.flush()


ERROR_BODY = b"field 'summary' is rejected: " + b"0123456789" * 100


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 422 Unprocessable\r\nContent-Length: %d\r\n\r\n%s"
        % (len(ERROR_BODY), ERROR_BODY),
        b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(ERROR_BODY),
        b"HTTP/1.1 422 Unprocessable\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(gzip.compress(ERROR_BODY)), gzip.compress(ERROR_BODY)),
        b"HTTP/1.1 422 Unprocessable\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n" + chunked(gzip.compress(ERROR_BODY), 5),
        encoded(b"deflate", zlib.compress(ERROR_BODY)),
        encoded(b"deflate", raw_deflate(ERROR_BODY)),
    ],
    ids=["content-length", "chunked", "gzip", "gzip-chunked", "deflate", "raw-deflate"],
)
async def test_an_error_snippet_holds_the_first_bytes_of_the_body(answer: bytes) -> None:
    async with Peer(answering(answer)) as peer, client() as c:
        for _ in range(2):  # and the rest of the body is read: the connection is reused
            response = await post(c, peer.url())
            assert response.status == 422
            assert response.snippet == ERROR_BODY[: http.SNIPPET_BYTES]
        assert peer.connections == [0, 0]


async def test_a_success_keeps_its_snippet_too() -> None:
    """The attempt record keeps the first bytes of every answer."""
    answer = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"
    async with Peer(answering(answer)) as peer, client() as c:
        assert await post(c, peer.url()) == http.Response(201, None, b"hello")


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
    ],
    ids=["100", "103", "both"],
)
async def test_interim_answers_are_skipped(interim: bytes) -> None:
    final = b"HTTP/1.1 500 Oops\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\noops"

    async def script(peer: Peer, conn: Conn) -> None:
        while await peer.read(conn) is not None:
            await conn.write(interim)
            await conn.write(final)

    async with Peer(script) as peer, client() as c:
        for _ in range(2):
            assert await post(c, peer.url()) == http.Response(500, "3", b"oops")
        assert peer.connections == [0, 0]


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage, not HTTP\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 abc Nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ],
    ids=["garbage", "ssh", "status", "length", "101"],
)
async def test_an_answer_that_is_not_http_is_a_bad_response(answer: bytes) -> None:
    async def script(peer: Peer, conn: Conn) -> None:
        await peer.read(conn)
        await conn.write(answer)
        await conn.wait_eof()

    async with Peer(script) as peer, client() as c:
        with pytest.raises(http.BadResponse) as caught:
            await post(c, peer.url())
        assert message(caught.value) == "the receiver's answer is not valid HTTP/1.1"
        await asyncio.wait_for(peer.conns[0].eof.wait(), WAIT)  # and the connection dropped


ENDLESS = [
    (b"HTTP/1.1 200 OK\r\nX-Big: ", None),
    (b"HTTP/1.1 200 OK\r\nX-Big: ", 1000),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: ", None),
]


@pytest.mark.parametrize(("start", "split_at"), ENDLESS, ids=["head", "trickled", "trailer"])
async def test_endless_headers_are_a_bad_response(start: bytes, split_at: int | None) -> None:
    """The receiver sends headers (or trailers) without end: refused once they pass
    MAX_HEAD_BYTES, long before the timeout, and the connection dropped."""

    async def script(peer: Peer, conn: Conn) -> None:
        await peer.read(conn)
        await conn.write(start)
        line = b"a" * (split_at or 256 * 1024)
        with contextlib.suppress(ConnectionError):
            while not conn.eof.is_set():  # until the client hangs up
                await conn.write(line)
                await asyncio.sleep(0)

    async def watch(peer: Peer) -> None:
        await peer.wait_requests(1)
        await peer.conns[0].wait_eof()

    async with Peer(script) as peer, client() as c:
        watching = asyncio.ensure_future(watch(peer))
        with pytest.raises(http.BadResponse):
            await post(c, peer.url(), timeout=10)
        await asyncio.wait_for(watching, WAIT)


async def test_many_small_chunks_are_read() -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (10, b"%010d" % n) for n in range(5000))
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
    async with Peer(answering(answer)) as peer, client() as c:
        for _ in range(2):
            assert (await post(c, peer.url())).status == 200
        assert peer.connections == [0, 0]


async def test_a_long_but_bounded_head_is_read() -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 100) for n in range(300))  # ~32 KiB
    answer = b"HTTP/1.1 503 Busy\r\n" + headers + b"Retry-After: 9\r\nContent-Length: 1\r\n\r\nb"
    async with Peer(answering(answer)) as peer, client() as c:
        assert await post(c, peer.url()) == http.Response(503, "9", b"b")


# -- 4. the request on the wire -------------------------------------------------------------


def split(raw: bytes) -> tuple[bytes, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *lines = head.decode("latin-1").split("\r\n")
    headers = [(n, v.strip()) for n, _, v in (h.partition(":") for h in lines)]
    return line.encode(), headers, body


async def test_the_request_is_sent_exactly() -> None:
    body = b'{"text": "h\xc3\xa9llo"}\r\n\r\n' + bytes(range(256))
    headers = {"Content-Type": "application/json", "webhook-id": "msg_1", "X-Team": "caf\xe9"}
    async with Peer(answering(OK)) as peer, client() as c:
        await post(c, peer.url("/hooks/in?team=a&x=1"), body, headers)
        [(_, raw)] = peer.requests
        line, sent, got = split(raw)
        assert line == b"POST /hooks/in?team=a&x=1 HTTP/1.1"
        assert sent == [
            ("Host", f"127.0.0.1:{peer.port}"),
            ("Content-Type", "application/json"),
            ("webhook-id", "msg_1"),
            ("X-Team", "caf\xe9"),
            ("Content-Length", str(len(body))),
        ]
        assert got == body


async def test_a_non_ascii_path_is_percent_encoded_as_utf8() -> None:
    async with Peer(answering(OK)) as peer, client() as c:
        await post(c, peer.url("/caf\xe9/\u2603?q=\xfc&ok=%20"))
        [(_, raw)] = peer.requests
        assert split(raw)[0] == b"POST /caf%C3%A9/%E2%98%83?q=%C3%BC&ok=%20 HTTP/1.1"


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("/100%/a%2Fb%zz?p=5%&q=%41", "/100%25/a%2Fb%25zz?p=5%25&q=%41"),
        ('/a b"<>\\^`{|}[]', "/a%20b%22%3C%3E%5C%5E%60%7B%7C%7D%5B%5D"),
        ("/keep/!$&'()*+,;=:@~-._", "/keep/!$&'()*+,;=:@~-._"),
    ],
    ids=["stray-percent", "unsafe", "safe"],
)
def test_the_request_target_is_valid(path: str, sent: str) -> None:
    """A ``%`` that starts no escape is sent as ``%25`` (a receiver's parser refuses a
    bare one); escapes already there are kept; characters a target cannot hold are
    escaped, the ones it can are not."""
    head = http.endpoint(f"http://example.com{path}", "POST").head
    assert head.split(b"\r\n")[0] == f"POST {sent} HTTP/1.1".encode()


async def test_an_empty_path_is_slash_and_the_fragment_is_not_sent() -> None:
    async with Peer(answering(OK)) as peer, client() as c:
        await post(c, f"http://127.0.0.1:{peer.port}#frag")
        await post(c, f"http://127.0.0.1:{peer.port}/p?a=1#frag")
        assert [split(raw)[0] for _, raw in peer.requests] == [
            b"POST / HTTP/1.1",
            b"POST /p?a=1 HTTP/1.1",
        ]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://example.com/", "example.com"),
        ("http://example.com:80/", "example.com"),
        ("https://example.com:443/", "example.com"),
        ("http://example.com:443/", "example.com:443"),
        ("https://example.com:8443/", "example.com:8443"),
        ("http://EXAMPLE.com:8080/", "example.com:8080"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("https://[2001:db8::1]/", "[2001:db8::1]"),
        ("http://b\xfccher.example/", "xn--bcher-kva.example"),
    ],
)
def test_the_host_line(url: str, host: str) -> None:
    """Default ports are left out, others kept, IPv6 literals bracketed, names IDNA."""
    head = http.endpoint(url, "POST").head
    assert head.split(b"\r\n")[1] == b"Host: " + host.encode()


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no ::1")
async def test_an_ipv6_literal_is_bracketed_on_the_wire() -> None:
    async with Peer(answering(OK), host="::1") as peer, client() as c:
        assert (await post(c, peer.url())).status == 200
        [(_, raw)] = peer.requests
        assert ("Host", f"[::1]:{peer.port}") in split(raw)[1]


async def test_url_credentials_become_basic_authorization() -> None:
    async with Peer(answering(OK)) as peer, client() as c:
        await post(c, f"http://user:p%40ss%3Aw%C3%B6rd@127.0.0.1:{peer.port}/hook")
        await post(c, f"http://token@127.0.0.1:{peer.port}/hook")
        first, second = (dict(split(raw)[1]) for _, raw in peer.requests)
        assert (
            first["Authorization"]
            == "Basic " + base64.b64encode("user:p@ss:w\xf6rd".encode()).decode()
        )
        assert second["Authorization"] == "Basic " + base64.b64encode(b"token:").decode()
        assert split(peer.requests[0][1])[0] == b"POST /hook HTTP/1.1"
        assert f"Host: 127.0.0.1:{peer.port}\r\n".encode() in peer.requests[0][1]
        assert b"p%40ss" not in peer.requests[0][1] and b"user@" not in peer.requests[0][1]


async def test_an_authorization_header_wins_over_url_credentials() -> None:
    async with Peer(answering(OK)) as peer, client() as c:
        url = f"http://user:pass@127.0.0.1:{peer.port}/hook"
        await post(c, url, headers={"authorization": "Bearer t0ken"})
        [(_, raw)] = peer.requests
        sent = split(raw)[1]
        assert [v for n, v in sent if n.lower() == "authorization"] == ["Bearer t0ken"]


@pytest.mark.parametrize(
    ("headers", "bad"),
    [
        ({"X-Team": "a\r\nX-Injected: 1"}, "X-Team"),
        ({"X-Team": "a\nb"}, "X-Team"),
        ({"X-Team": "a\rb"}, "X-Team"),
        ({"X-Bad\r\nName": "a"}, "X-Bad\r\nName"),
        ({"X-Ok": "fine", "X-Snow": "\u2603"}, "X-Snow"),
        ({"X-Latin": "caf\xe9", "X-Snow": "\u2603"}, "X-Snow"),
    ],
    ids=["crlf", "lf", "cr", "name", "not-latin-1", "after-latin-1"],
)
async def test_a_header_that_cannot_be_sent_sends_nothing(
    headers: dict[str, str], bad: str
) -> None:
    async with Peer(answering(OK)) as peer, client() as c:
        with pytest.raises(http.InvalidHeader) as caught:
            await post(c, peer.url(), headers=headers)
        assert caught.value.name == bad
        assert "cannot be sent" in message(caught.value)
        assert peer.conns == [], "no connection was opened"


async def test_error_messages_never_carry_url_credentials() -> None:
    """Every failure a URL with credentials can meet, classified: the message names the
    host at most, never the user or the password."""
    port = free_port()
    failures: list[BaseException] = []

    async def expect_failure(
        url: str, timeout: float = TIMEOUT, egress: EgressPolicy = LOOPBACK
    ) -> None:
        async with client(egress) as c:
            try:
                await post(c, url, timeout=timeout)
            except (http.HttpError, TimeoutError) as exc:
                failures.append(exc)
            else:
                raise AssertionError(f"{url} was answered")

    async def silent(peer: Peer, conn: Conn) -> None:
        await conn.wait_eof()

    creds = "s3cr3tuser:hunter2pass"
    await expect_failure(f"http://{creds}@127.0.0.1:{port}/")
    await expect_failure(f"http://{creds}@nonexistent.invalid/")
    await expect_failure(f"http://{creds}@127.0.0.1:{port}/", egress=EgressPolicy())
    await expect_failure(f"http://{creds}@127.0.0.1:99999/")
    async with Peer(answering(b"garbage\r\n\r\n")) as peer:
        await expect_failure(f"http://{creds}@127.0.0.1:{peer.port}/")
    async with Peer(silent) as peer:
        await expect_failure(f"https://{creds}@127.0.0.1:{peer.port}/", timeout=0.2)
        await expect_failure(f"http://{creds}@127.0.0.1:{peer.port}/", timeout=0.2)
    assert len(failures) == 7
    for exc in failures:
        for text in (message(exc), str(exc), repr(exc)):
            assert "s3cr3tuser" not in text and "hunter2pass" not in text, text


# -- 5. timeouts -----------------------------------------------------------------------------


async def test_a_receiver_that_never_answers_times_out_and_is_not_reused() -> None:
    async def script(peer: Peer, conn: Conn) -> None:
        if conn.index == 0:
            await peer.read(conn)  # read the request, never answer
            await conn.wait_eof()
        else:
            await answering(OK)(peer, conn)

    timeout = 0.5
    async with Peer(script) as peer, client() as c:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError) as caught:
            await post(c, peer.url(), timeout=timeout)
        assert asyncio.get_running_loop().time() - started < 10 * timeout
        assert message(caught.value, timeout) == "no response within 0.5s (timeoutSeconds)"
        await asyncio.wait_for(peer.conns[0].eof.wait(), WAIT)  # the client dropped it
        assert (await post(c, peer.url())).status == 200
        assert peer.connections == [0, 1]


async def test_a_timeout_mid_answer_drops_the_connection() -> None:
    """The status came, the body never ends: a timeout, and the half-read connection is
    never given to the next request."""

    async def script(peer: Peer, conn: Conn) -> None:
        if conn.index == 0:
            await peer.read(conn)
            await conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
            await conn.wait_eof()
        else:
            await answering(OK)(peer, conn)

    async with Peer(script) as peer, client() as c:
        with pytest.raises(TimeoutError):
            await post(c, peer.url(), timeout=0.5)
        assert (await post(c, peer.url())).status == 200
        assert peer.connections == [0, 1]


# -- 6. egress --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1"])
async def test_a_host_resolving_to_loopback_is_refused_without_connecting(host: str) -> None:
    async with Peer(answering(OK)) as peer, client(EgressPolicy()) as c:
        with pytest.raises(http.EgressRefused) as caught:
            await post(c, f"http://{host}:{peer.port}/hook")
        assert caught.value.host == host
        assert "loopback" in caught.value.reason
        assert message(caught.value).startswith(f"not delivered to {host}: ")
        assert peer.conns == []


async def test_localhost_with_loopback_allowed_is_delivered() -> None:
    async with Peer(answering(OK)) as peer, client() as c:
        assert (await post(c, f"http://localhost:{peer.port}/hook")).status == 200
        [(_, raw)] = peer.requests
        assert ("Host", f"localhost:{peer.port}") in split(raw)[1]


async def test_an_unresolvable_name_is_a_dns_failure() -> None:
    async with client() as c:
        with pytest.raises(http.DnsFailed) as caught:
            await post(c, "http://nonexistent.invalid/hook")
        assert message(caught.value) == "DNS lookup of nonexistent.invalid failed"


async def test_a_port_nobody_listens_on_is_connection_refused() -> None:
    port = free_port()
    async with client() as c:
        with pytest.raises(http.ConnectFailed) as caught:
            await post(c, f"http://127.0.0.1:{port}/hook")
        assert message(caught.value) == f"cannot connect to 127.0.0.1:{port}: Connection refused"


# -- 7. TLS -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a server certificate it signed for 127.0.0.1 and localhost."""
    base = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Pki(base / "ca.pem", base / "cert.pem", base / "key.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclasses.dataclass
class TlsReceiver:
    port: int
    bodies: list[bytes]
    peers: list[object]
    """The client's address of each request: one per connection."""


@contextlib.asynccontextmanager
async def tls_receiver(pki: Pki, host: str = "127.0.0.1") -> AsyncIterator[TlsReceiver]:
    """An aiohttp receiver over TLS."""
    bodies: list[bytes] = []
    peers: list[object] = []

    async def hook(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, 0, ssl_context=pki.server_context()).start()
    try:
        yield TlsReceiver(runner.addresses[0][1], bodies, peers)
    finally:
        await runner.cleanup()


async def test_tls_with_an_unknown_ca_is_refused(pki: Pki) -> None:
    async with tls_receiver(pki) as rx, client() as c:
        with pytest.raises(http.TlsFailed) as caught:
            await post(c, f"https://127.0.0.1:{rx.port}/hook")
        assert caught.value.certificate_error is not None
        assert "unable to get local issuer certificate" in caught.value.certificate_error
        assert message(caught.value) == (
            f"TLS certificate not accepted: {caught.value.certificate_error}"
        )
        assert rx.bodies == []


async def test_tls_with_the_wrong_name_is_refused(pki: Pki) -> None:
    """The certificate is for 127.0.0.1 and localhost, not 127.0.0.2."""
    async with (
        tls_receiver(pki, "127.0.0.2") as rx,
        client(tls=pki.client_context()) as c,
    ):
        with pytest.raises(http.TlsFailed) as caught:
            await post(c, f"https://127.0.0.2:{rx.port}/hook")
        assert "mismatch" in (caught.value.certificate_error or ""), caught.value.certificate_error
        assert rx.bodies == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_trusting_the_ca_is_delivered(pki: Pki, host: str) -> None:
    async with tls_receiver(pki) as rx, client(tls=pki.client_context()) as c:
        for n in range(3):
            assert (await post(c, f"https://{host}:{rx.port}/hook", b"%d" % n)).status == 200
        assert rx.bodies == [b"0", b"1", b"2"]
        assert len(set(rx.peers)) == 1, "one connection, kept"


async def test_ssl_cert_file_names_the_cas_the_default_client_trusts(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's way to trust a private CA: SSL_CERT_FILE in the worker's environment
    (read by OpenSSL when the client makes its default context)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    async with tls_receiver(pki) as rx, client() as c:
        assert (await post(c, f"https://localhost:{rx.port}/hook", b"private")).status == 200
        assert rx.bodies == [b"private"]


async def answer_hello_with_http(peer: Peer, conn: Conn) -> None:
    await conn.reader.read(5)
    await conn.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")


async def hang_up_on_hello(peer: Peer, conn: Conn) -> None:
    await conn.reader.read(5)


async def hang_up_at_once(peer: Peer, conn: Conn) -> None:
    pass


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(
    ("script", "why"),
    [
        (answer_hello_with_http, "the receiver's answer is not TLS (is the port plain HTTP?)"),
        (hang_up_on_hello, "the receiver closed the connection (is the port TLS?)"),
        (hang_up_at_once, "the receiver closed the connection (is the port TLS?)"),
    ],
    ids=["http-answer", "hang-up-on-hello", "hang-up-at-once"],
)
def test_tls_to_a_port_that_does_not_speak_it_says_so(loop: str, script: Script, why: str) -> None:
    """An HTTP server answers the TLS hello with a plain-text 400, another just hangs up."""

    async def run() -> http.TlsFailed:
        async with Peer(script) as peer, client() as c:
            with pytest.raises(http.TlsFailed) as caught:
                await post(c, peer.url(scheme="https"))
            return caught.value

    failed = run_under(loop, run())
    assert failed.certificate_error is None
    assert message(failed) == f"TLS handshake failed: {why}"


# -- 8. the idle pool -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_at_most_max_idle_connections_are_kept() -> None:
    """Five requests at once on five connections: two are kept, three closed."""
    release = asyncio.Event()

    async def script(peer: Peer, conn: Conn) -> None:
        while await peer.read(conn) is not None:
            await release.wait()
            await conn.write(OK)

    async with Peer(script) as peer, client(max_idle=2) as c:
        sending = [asyncio.ensure_future(post(c, peer.url())) for _ in range(5)]
        await peer.wait_requests(5)
        release.set()
        assert [r.status for r in await asyncio.gather(*sending)] == [200] * 5
        assert len(peer.conns) == 5
        await asyncio.wait_for(eofs(peer, 3), WAIT)
        kept = {conn.index for conn in peer.conns if not conn.eof.is_set()}
        assert len(kept) == 2
        for _ in range(4):
            await post(c, peer.url())
        assert len(peer.conns) == 5, "no new connection: the kept ones are reused"
        assert {index for index, _ in peer.requests[5:]} <= kept


async def test_idle_connections_the_receiver_closed_leave_the_pool_at_once() -> None:
    """Receiver A closes both connections kept for it (its idle timeout is shorter than
    ours): they stop counting towards max_idle then, not at the next sweep, so receiver
    B's connection is kept."""
    release = asyncio.Event()
    hang_up = asyncio.Event()

    async def closing(peer: Peer, conn: Conn) -> None:
        await peer.read(conn)
        await release.wait()
        await conn.write(OK)
        await hang_up.wait()
        conn.writer.write_eof()  # half-closed: the peer sees the client's close after it
        await conn.wait_eof()  # (which the client does once it has dropped the connection)

    async with Peer(closing) as a, Peer(answering(OK)) as b, client(max_idle=2) as c:
        sending = [asyncio.ensure_future(post(c, a.url())) for _ in range(2)]
        await a.wait_requests(2)
        release.set()
        await asyncio.gather(*sending)
        hang_up.set()
        await asyncio.wait_for(eofs(a, 2), WAIT)
        for _ in range(3):
            assert (await post(c, b.url())).status == 200
        assert b.connections == [0, 0, 0]


async def eofs(peer: Peer, n: int) -> None:
    """Until the client has closed ``n`` of the peer's connections."""
    while sum(conn.eof.is_set() for conn in peer.conns) < n:
        waits = [asyncio.ensure_future(c.eof.wait()) for c in peer.conns if not c.eof.is_set()]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()


async def test_an_idle_connection_past_keepalive_is_not_reused() -> None:
    clock = Clock()
    async with Peer(answering(OK)) as peer, client(keepalive=60.0, clock=clock) as c:
        await post(c, peer.url())
        clock.now += 59
        await post(c, peer.url())
        assert peer.connections == [0, 0]
        clock.now += 60
        await post(c, peer.url())
        assert peer.connections == [0, 0, 1]
        await asyncio.wait_for(peer.conns[0].eof.wait(), WAIT)


async def test_the_sweep_closes_idle_connections_past_keepalive() -> None:
    clock = Clock()
    other = Peer(answering(OK))
    async with Peer(answering(OK)) as peer, other, client(keepalive=60.0, clock=clock) as c:
        await post(c, peer.url())
        clock.now += 30
        await post(c, other.url())
        clock.now += 31
        c._sweep()  # what its timer would do
        await asyncio.wait_for(peer.conns[0].eof.wait(), WAIT)
        assert not other.conns[0].eof.is_set()
        await post(c, other.url())
        assert other.connections == [0, 0], "the younger one was kept"


async def test_the_sweep_runs_on_its_own() -> None:
    """With a keep-alive of 50 ms (and the real clock), the timer set when the connection
    went idle closes it; nothing else would."""
    async with Peer(answering(OK)) as peer, client(keepalive=0.05) as c:
        await post(c, peer.url())
        await asyncio.wait_for(peer.conns[0].eof.wait(), WAIT)
        await post(c, peer.url())
        assert peer.connections == [0, 1]


async def test_close_closes_every_idle_connection() -> None:
    peers = [Peer(answering(OK)) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for p in peers:
            await stack.enter_async_context(p)
        c = http.HttpClient(LOOPBACK, max_idle=8)
        for p in peers:
            await post(c, p.url())
        assert not any(p.conns[0].eof.is_set() for p in peers)
        await c.close()
        await asyncio.wait_for(asyncio.gather(*(p.conns[0].eof.wait() for p in peers)), WAIT)


# -- 9. uvloop --------------------------------------------------------------------------------


async def scenario() -> list[str]:
    """Keep-alive reuse, an error answer, a dropped connection, a timeout, connection
    refused, a failed DNS lookup, an egress refusal: what happened, one line each."""
    seen: list[str] = []
    hold = asyncio.Event()

    async def script(peer: Peer, conn: Conn) -> None:
        while (request := await peer.read(conn)) is not None:
            if b"/slow" in request.split(b"\r\n", 1)[0]:
                await hold.wait()
            elif b"/error" in request.split(b"\r\n", 1)[0]:
                await conn.write(
                    b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + chunked(b"try later")
                )
            elif b"/bye" in request.split(b"\r\n", 1)[0]:
                await conn.write(OK)
                return
            else:
                await conn.write(OK)

    async with Peer(script) as peer, client() as c:
        for path in ("/a", "/b", "/error", "/c", "/bye", "/d"):
            r = await post(c, peer.url(path))
            seen.append(f"{path} {r.status} {r.retry_after} {r.snippet!r}")
        try:
            await post(c, peer.url("/slow"), timeout=0.5)
        except TimeoutError:
            seen.append("/slow timeout")
        seen.append(f"/e {(await post(c, peer.url('/e'))).status}")
        seen.append(f"connections {peer.connections}")
        nobody = free_port()
        for url in (f"http://127.0.0.1:{nobody}/", "http://nonexistent.invalid/"):
            try:
                await post(c, url)
            except http.HttpError as exc:
                seen.append(message(exc).replace(f":{nobody}:", ":PORT:"))
        hold.set()
    async with client(EgressPolicy()) as c:
        try:
            await post(c, f"http://localhost:{peer.port}/")
        except http.EgressRefused as exc:
            seen.append(f"refused {exc.host}: {'loopback' in exc.reason}")
    return seen


EXPECTED = [
    "/a 200 None b'ok'",
    "/b 200 None b'ok'",
    "/error 503 2 b'try later'",
    "/c 200 None b'ok'",
    "/bye 200 None b'ok'",
    "/d 200 None b'ok'",
    "/slow timeout",
    "/e 200",
    "connections [0, 0, 0, 0, 0, 1, 1, 2]",
    "cannot connect to 127.0.0.1:PORT: Connection refused",
    "DNS lookup of nonexistent.invalid failed",
    "refused localhost: True",
]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_same_scenario_under_both_loops(loop: str) -> None:
    assert run_under(loop, scenario()) == EXPECTED


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_under_both_loops(loop: str, pki: Pki) -> None:
    async def run() -> tuple[str, list[int], list[bytes]]:
        async with tls_receiver(pki) as rx:
            async with client() as c:
                try:
                    await post(c, f"https://localhost:{rx.port}/hook")
                except http.TlsFailed as exc:
                    refused = message(exc)
            async with client(tls=pki.client_context()) as c:
                statuses = [(await post(c, f"https://localhost:{rx.port}/hook", b"x")).status]
                statuses.append((await post(c, f"https://localhost:{rx.port}/hook", b"y")).status)
            return refused, statuses, rx.bodies

    refused, statuses, bodies = run_under(loop, run())
    assert refused.startswith("TLS certificate not accepted: ")
    assert statuses == [200, 200] and bodies == [b"x", b"y"]


# -- end to end ---------------------------------------------------------------------------------


class ClosingReceiver(TrackingReceiver):
    """Closes every connection once it has answered, without ``Connection: close``."""

    def __init__(self) -> None:
        super().__init__(always(Answer()))
        self.peers: list[object] = []
        """The client's address of each request: one per connection."""

    async def _handle(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        response = await super()._handle(request)
        await response.prepare(request)
        assert "Connection" not in response.headers, "the answer says nothing of closing"
        await response.write_eof()
        request.transport.close()
        return response


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_receiver_closing_every_connection_gets_every_job_once(
    db_url: str, tmp_path: Path, loop: str
) -> None:
    """The worker in the loop ``herald worker`` runs (uvloop) and in asyncio's."""

    async def run() -> None:
        rx = ClosingReceiver()
        async with rx:
            path = write_manifests(
                tmp_path / "targets.yaml",
                [
                    target_doc(
                        "hook",
                        rx.url,
                        retry={"maxAttempts": 5, **FAST_RETRY},
                        circuitBreaker=NO_BREAKER,
                    )
                ],
            )
            async with worker(db_url, path) as w:
                ids = await w.submit_many("hook", [{"n": n} for n in range(50)])
                await wait_state(w.queue, "succeeded", 50)
                assert sorted(rx.delivered_ids()) == sorted(ids)
                assert rx.counts() == {i: 1 for i in ids}, "each delivered exactly once"
                assert len(rx.received) == 50, "no failed attempt was sent again"
                assert len(set(rx.peers)) == 50, "every request came on a new connection"
                rows = await sql_rows(w.queue, "SELECT attempts, last_error FROM herald.jobs")
                assert [(r["attempts"], r["last_error"]) for r in rows] == [(1, None)] * 50
                assert await dead_letters(w.queue) == []

    run_under(loop, run())
