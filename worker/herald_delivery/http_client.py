"""The HTTP/1.1 client deliveries go through: one request at a time per connection, idle
connections kept per origin and reused, the egress policy checked on every address a host
resolves to before a connection opens, and nothing else.

Deliveries need little of a general HTTP client (no redirects, cookies, proxies, streaming
or compression), and its per-request work was the largest part of a worker's CPU per job,
so this one does only what they need: the request is written in one piece and the answer
parsed by httptools (llhttp, Node's parser). Only the status, ``Retry-After`` and the first
bytes of an error's body are kept, and what is not body is bounded (MAX_HEAD_BYTES), so a
receiver cannot make the worker store or copy endless headers. A connection that was idle
in the pool and closes before any byte of the answer (the receiver timed it out meanwhile)
is replaced once by a new one. Its behaviour against real peers, under asyncio and uvloop,
is tested in tests/integration/worker/test_http_client.py.

Checking the policy at connect time, on the addresses the connection will use, means a DNS
answer that changes after the target was accepted (DNS rebinding) cannot reach a refused
address. Every failure is one of the errors below, which ``herald_delivery.failures`` turns
into a class and a message; none repeats the URL (a Slack URL is a credential).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import logging
import os
import re
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import httptools

from herald_delivery.egress import EgressPolicy

log = logging.getLogger("herald.http")

KEEPALIVE_SECONDS = 15.0
"""How long a connection stays open unused; receivers commonly close theirs after 5-75 s,
and one that closes first is replaced without a failed delivery."""
DNS_TTL_SECONDS = 30.0
"""How long a host's resolved (and checked) addresses are reused."""
MAX_RESOLVED = 4096
"""Hosts whose addresses are kept; past it, the expired ones are dropped."""
SNIPPET_BYTES = 201
"""How much of an error's body is kept (the message shows 200 characters)."""
MAX_HEAD_BYTES = 64 * 1024
"""How much of an answer may be other than its body (status line, headers, chunk framing,
trailers), beyond as much as the body itself: a receiver sending endless headers or
trailers would otherwise cost memory, and the parser's copying CPU, until the timeout."""


class HttpError(Exception):
    """A request that got no usable answer."""


class InvalidUrl(HttpError):
    """The URL cannot be requested (its host or port is not valid)."""


class InvalidHeader(HttpError):
    """A header cannot be sent (a line break or a character outside Latin-1)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class DnsFailed(HttpError):
    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.host = host


class EgressRefused(HttpError):
    """Every address of the host is one the egress policy refuses."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


class ConnectFailed(HttpError):
    def __init__(self, host: str, port: int, error: OSError) -> None:
        super().__init__(f"{host}:{port}")
        self.host = host
        self.port = port
        # The system's words for the errno: asyncio's own strerror is "Connect call
        # failed (address)", uvloop's the system's, and some errors carry none.
        self.reason = os.strerror(error.errno) if error.errno else type(error).__name__


class TlsFailed(HttpError):
    def __init__(self, certificate_error: str | None, handshake_error: str | None = None) -> None:
        super().__init__(certificate_error or handshake_error or "handshake")
        self.certificate_error = certificate_error
        """Why the certificate was refused; None when the handshake failed otherwise."""
        self.handshake_error = handshake_error
        """Why the handshake failed otherwise, when OpenSSL said."""


_HUNG_UP = "the receiver closed the connection (is the port TLS?)"


def _handshake_error(exc: ssl.SSLError) -> str | None:
    """What a failed handshake means, in words: a plain HTTP port answers the TLS hello
    with text, which OpenSSL calls a wrong version number; others hang up."""
    if exc.reason == "WRONG_VERSION_NUMBER":
        return "the receiver's answer is not TLS (is the port plain HTTP?)"
    if isinstance(exc, ssl.SSLEOFError):
        return _HUNG_UP
    return exc.reason.lower().replace("_", " ") if exc.reason else None


class Disconnected(HttpError):
    """The receiver closed the connection before its answer was complete."""


class BadResponse(HttpError):
    """The receiver's answer is not HTTP/1.x."""


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    status: int
    retry_after: str | None
    """The ``Retry-After`` header, as sent."""
    snippet: bytes
    """The first bytes of the body of a non-2xx answer (b"" for 2xx)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """What a URL says about where and what to send, parsed once per URL."""

    tls: bool
    host: str
    """ASCII (IDNA) host name, or an IP address without brackets."""
    port: int
    head: bytes
    """The request line and the Host line."""
    origin: tuple[bool, str, int]
    """(tls, host, port): the pool's key, whose connections a request may reuse."""
    authorization: bytes
    """The Authorization line for credentials in the URL (userinfo), or b""."""


_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
"""A ``%`` that starts no escape: sent as ``%25``, escapes already in the URL kept."""


@functools.lru_cache(maxsize=4096)
def endpoint(url: str, method: str) -> Endpoint:
    """:class:`InvalidUrl` when ``url`` cannot be requested. URLs reaching here passed the
    target checks (http(s), a host, no whitespace or control characters)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname or ""
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except (ValueError, UnicodeError):
        raise InvalidUrl("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not ascii_host:
        raise InvalidUrl("not an http(s) URL with a host")
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    port = port or default
    shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    authority = shown if port == default else f"{shown}:{port}"
    path, query = (_STRAY_PERCENT.sub("%25", p) for p in (parts.path or "/", parts.query))
    target = quote(path, safe="/%!$&'()*+,;=:@~") + (
        "?" + quote(query, safe="/%!$&'()*+,;=:@~?") if query else ""
    )
    head = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n".encode()
    authorization = b""
    if parts.username is not None:  # credentials in a Secret's url: Basic authentication
        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = b"Authorization: Basic %s\r\n" % base64.b64encode(user)
    return Endpoint(tls, ascii_host, port, head, (tls, ascii_host, port), authorization)


class _Connection(asyncio.Protocol):
    """One connection: a request written, its answer parsed, then idle or closed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.on_idle_lost: Callable[[], None] | None = None
        """Set while the connection is in the pool: takes it out."""
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._keep_body = False
        self._keep_alive = False
        self.answer_started = False
        """Whether any byte of the current answer came (else a closed kept connection may
        be replaced: the receiver cannot have seen the request)."""
        self._headers_done = False
        self._fed = 0
        self._body_seen = 0
        self._retry_after: str | None = None
        self._encoding = b""
        self._body: list[bytes] = []
        self._body_len = 0

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():  # bytes nothing asked for: the
            self.close()  # connection cannot be trusted with the next request's answer
            return
        self.answer_started = True
        self._fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse())  # an upgrade nobody asked for
        except httptools.HttpParserError:
            self._fail(BadResponse())
        else:
            if self._fed - self._body_seen > MAX_HEAD_BYTES + self._body_seen:
                self._fail(BadResponse())

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_idle_lost is not None:  # closed in the pool: out of it at once
            forget, self.on_idle_lost = self.on_idle_lost, None
            forget()
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done:  # the status is known: the body was cut short, or it ends
            self.on_message_complete()  # with the connection (no length, no chunks)
        else:
            self._waiter.set_exception(Disconnected())

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif len(name) == 16 and name.lower() == b"content-encoding":
            self._encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._keep_body = True  # the first bytes of every answer: the attempt record

    def on_body(self, body: bytes) -> None:
        self._body_seen += len(body)
        if self._keep_body and self._body_len < SNIPPET_BYTES * 4:
            self._body.append(body)
            self._body_len += len(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (103 Early Hints...): the final one follows
            self._reset_answer()
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        # Asked here: once the message is parsed the parser has reset and answers False.
        self._keep_alive = self._parser.should_keep_alive()
        snippet = _decoded(b"".join(self._body), self._encoding) if self._body else b""
        waiter.set_result(Response(status, self._retry_after, snippet[:SNIPPET_BYTES]))

    # -- use ----------------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._reset_answer()
        self.answer_started = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def done(self) -> bool:
        """After an answer: whether the connection can take another request."""
        self._waiter = None
        return not self.closed and self._keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _reset_answer(self) -> None:
        self._headers_done = False
        self._fed = 0
        self._body_seen = 0
        self._keep_alive = False
        self._retry_after = None
        self._encoding = b""
        self._body = []
        self._body_len = 0

    def _fail(self, exc: HttpError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()


def _decoded(body: bytes, encoding: bytes) -> bytes:
    """The start of an error body in plain bytes (compressed answers were not asked for,
    but some receivers send them anyway)."""
    if encoding not in (b"gzip", b"deflate", b"x-gzip"):
        return body
    # gzip or zlib (as "deflate" should be), then raw deflate (as many servers send it).
    for wbits in (47, -15):
        try:
            return zlib.decompressobj(wbits=wbits).decompress(body, SNIPPET_BYTES)
        except zlib.error:
            continue
    return b""


def _header_lines(headers: Mapping[str, str], where: Endpoint) -> bytes:
    text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise InvalidHeader(next(n for n, v in headers.items() if _breaks(n + v)))
    try:
        lines = text.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidHeader(next(n for n, v in headers.items() if not _latin1(n + v))) from None
    if where.authorization and not any(n.lower() == "authorization" for n in headers):
        lines += where.authorization
    return lines


def _breaks(text: str) -> bool:
    return "\n" in text or "\r" in text


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class HttpClient:
    """Connections per origin (scheme, host, port), at most ``max_idle`` kept idle."""

    def __init__(
        self,
        egress: EgressPolicy,
        *,
        max_idle: int,
        tls: ssl.SSLContext | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._egress = egress
        self._max_idle = max_idle
        self._tls = tls
        self._keepalive = keepalive
        """How long an idle connection is kept (KEEPALIVE_SECONDS but in tests)."""
        self._clock = clock
        """Seconds, for the age of idle connections and of resolved addresses."""
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._resolved: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Response:
        """Send one request and read its answer within ``timeout`` seconds in all
        (connecting included)."""
        where = endpoint(url, method)
        data = b"".join(
            (
                where.head,
                _header_lines(headers, where),
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        async with asyncio.timeout(timeout):
            connection = self._take(where) or await self._connect(where)
            while True:
                try:
                    response = await connection.send(data)
                except Disconnected:
                    connection.close()
                    if connection.reused and not connection.answer_started:
                        # Closed while idle: once more on a new connection (the other
                        # idle ones are as old or older, likely closed too).
                        connection = await self._connect(where)
                        continue
                    raise
                except BaseException:  # a timeout or cancel mid-answer: never reused
                    connection.close()
                    raise
                self._give_back(where, connection)
                return response

    # -- the pool -----------------------------------------------------------------------

    def _take(self, where: Endpoint) -> _Connection | None:
        idle = self._idle.get(where.origin)
        now = self._clock()
        while idle:
            connection = idle.pop()
            connection.on_idle_lost = None
            self._idle_count -= 1
            if not connection.closed and now - connection.idle_since < self._keepalive:
                connection.reused = True
                return connection
            connection.close()
        return None

    def _give_back(self, where: Endpoint, connection: _Connection) -> None:
        if not connection.done() or self._closed or self._idle_count >= self._max_idle:
            connection.close()
            return
        connection.idle_since = self._clock()
        connection.on_idle_lost = functools.partial(self._forget, where.origin, connection)
        self._idle.setdefault(where.origin, []).append(connection)
        self._idle_count += 1
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self._keepalive, self._sweep)

    def _forget(self, key: tuple[bool, str, int], connection: _Connection) -> None:
        """An idle connection closed (by the receiver, mostly): no longer kept."""
        idle = self._idle.get(key)
        if idle is None or connection not in idle:
            return
        idle.remove(connection)
        self._idle_count -= 1
        if not idle:
            del self._idle[key]

    def _sweep(self) -> None:
        """Close connections idle for the keep-alive time; again later while any are idle."""
        self._sweeper = None
        cutoff = self._clock() - self._keepalive
        for key, idle in list(self._idle.items()):
            keep = []
            for c in idle:
                if not c.closed and c.idle_since > cutoff:
                    keep.append(c)
                else:
                    c.on_idle_lost = None
                    c.close()
            self._idle_count -= len(idle) - len(keep)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle_count and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive / 2, self._sweep)

    async def _connect(self, where: Endpoint) -> _Connection:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for address in await self._addresses(where.host, where.port):
            try:
                _, connection = await loop.create_connection(
                    _Connection,
                    address,
                    where.port,
                    ssl=self._tls_context() if where.tls else None,
                    server_hostname=where.host if where.tls else None,
                )
            except ssl.SSLCertVerificationError as exc:
                raise TlsFailed(exc.verify_message or str(exc)) from None
            except ssl.SSLError as exc:
                raise TlsFailed(None, _handshake_error(exc)) from None
            except (ConnectionResetError, ConnectionAbortedError) as exc:
                if where.tls:  # connected (a refusal is ConnectionRefusedError), then cut
                    raise TlsFailed(None, _HUNG_UP) from None
                last = exc
                continue
            except OSError as exc:
                last = exc
                continue
            return connection
        assert last is not None
        raise ConnectFailed(where.host, where.port, last)

    async def _addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` the egress policy allows, resolved at most every
        DNS_TTL_SECONDS; :class:`EgressRefused` when it allows none."""
        now = self._clock()
        cached = self._resolved.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError):
            raise DnsFailed(host) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed, refusals = [], []
        for address in addresses:
            reason = self._egress.check(address)
            if reason is None:
                allowed.append(address)
            else:
                refusals.append(reason)
        if not allowed:
            raise EgressRefused(host, refusals[0] if refusals else "no address")
        if refusals:
            log.warning(
                "skipped addresses the egress policy refuses",
                extra={"action": "egress", "host": host, "problem": refusals[0]},
            )
        if len(self._resolved) >= MAX_RESOLVED:  # hosts come and go with targets
            self._resolved = {k: v for k, v in self._resolved.items() if v[0] > now}
        self._resolved[(host, port)] = (now + DNS_TTL_SECONDS, allowed)
        return allowed

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.on_idle_lost = None
                connection.close()
        self._idle.clear()
        self._idle_count = 0
