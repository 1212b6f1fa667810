"""The receiver of the delivery benchmark, run as its own process: answers 200 at once and
records, per request, now minus the ``t0`` (CLOCK_MONOTONIC ns, shared by every process on
the machine) the producer put in the payload. ``GET /stats`` returns the count, how many
came signed, the first and last arrival times and the latencies, all together and per path
(``/hook`` and ``/quiet``, the fair-share phase's second target); ``POST /reset`` clears
them, ``GET /stats?reset=1`` returns and clears them at once.

It stands in for the receivers Herald delivers to, which run on other machines: here it
shares the benchmark's two cores with the workers and PostgreSQL, so it is a minimal
HTTP/1.1 server (keep-alive, Content-Length and chunked bodies parsed by httptools, uvloop)
that takes as little of them as it can: its CPU per request is reported with every figure.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import cast

import httptools
import uvloop

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class Sink:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last = 0.0
        self.latencies_ms: list[float] = []
        self.by_path: dict[str, list[float]] = {}
        self.ids: set[bytes] = set()
        self.signed = 0

    def hook(self, path: str, webhook_id: bytes, signed: bool, body: bytes) -> None:
        now = time.monotonic_ns()
        self.count += 1
        self.first = self.first or now / 1e9
        self.last = now / 1e9
        self.ids.add(webhook_id)
        self.signed += signed
        if b'"t0"' not in body:  # the throughput phase's jobs carry no enqueue time
            return
        try:
            t0 = json.loads(body).get("t0")
        except (ValueError, AttributeError):
            return
        if isinstance(t0, int):
            self.latencies_ms.append((now - t0) / 1e6)
            self.by_path.setdefault(path, []).append((now - t0) / 1e6)

    def stats(self) -> bytes:
        return json.dumps(
            {
                "count": self.count,
                "unique": len(self.ids),
                "signed": self.signed,
                "first": self.first,
                "last": self.last,
                "latencies_ms": self.latencies_ms,
                "latencies_ms_by_path": self.by_path,
            }
        ).encode()


class _Connection(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._start()

    def _start(self) -> None:
        self.url = b""
        self.webhook_id = b""
        self.signed = False
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(BAD)
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"webhook-id":
            self.webhook_id = value
        elif name == b"webhook-signature":
            self.signed = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        path, _, query = self.url.decode("latin-1").partition("?")
        if method == b"POST" and path in ("/hook", "/quiet"):
            self.sink.hook(path, self.webhook_id, self.signed, b"".join(self.body))
            answer = OK
        elif method == b"GET" and path == "/stats":
            body = self.sink.stats()
            if query == "reset=1":  # taken and cleared at once (the soak's intervals)
                self.sink.reset()
            answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            answer += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        elif method == b"POST" and path == "/reset":
            self.sink.reset()
            answer = OK
        else:
            answer = NOT_FOUND
        self.transport.write(answer)
        if not self.parser.should_keep_alive():
            self.transport.close()
        self._start()


async def serve(port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(sink), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(port: int) -> None:
    uvloop.run(serve(port))


if __name__ == "__main__":
    main(int(sys.argv[1]))
