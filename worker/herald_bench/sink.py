"""The receiver of the delivery benchmark, run as its own process: answers 200 at once and
records, per request, now minus the ``t0`` (CLOCK_MONOTONIC ns, shared by every process on
the machine) the producer put in the payload. ``GET /stats`` returns the count, how many
came signed, the first and last arrival times and the latencies, all together and per path
(``/hook`` and ``/quiet``, the fair-share phase's second target)."""

from __future__ import annotations

import json
import sys
import time

from aiohttp import web


class Sink:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last = 0.0
        self.latencies_ms: list[float] = []
        self.by_path: dict[str, list[float]] = {}
        self.ids: set[str] = set()
        self.signed = 0

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic_ns()
        self.count += 1
        self.first = self.first or now / 1e9
        self.last = now / 1e9
        self.ids.add(request.headers.get("webhook-id", ""))
        self.signed += "webhook-signature" in request.headers
        try:
            t0 = json.loads(body).get("t0")
        except (ValueError, AttributeError):
            t0 = None
        if isinstance(t0, int):
            self.latencies_ms.append((now - t0) / 1e6)
            self.by_path.setdefault(request.path, []).append((now - t0) / 1e6)
        return web.Response(text="ok")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "count": self.count,
                "unique": len(self.ids),
                "signed": self.signed,
                "first": self.first,
                "last": self.last,
                "latencies_ms": self.latencies_ms,
                "latencies_ms_by_path": self.by_path,
            }
        )

    async def clear(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def main(port: int) -> None:
    sink = Sink()
    app = web.Application()
    app.router.add_post("/hook", sink.hook)
    app.router.add_post("/quiet", sink.hook)
    app.router.add_get("/stats", sink.stats)
    app.router.add_post("/reset", sink.clear)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]))
