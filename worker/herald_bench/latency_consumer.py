"""The consumer side of the latency benchmark (a separate process): woken by
LISTEN/NOTIFY, it claims, records now - t0 of each job, completes, and prints the
latencies (ms, JSON) once it has seen the number of jobs given on stdin."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from herald_bench.queue_bench import open_queue
from herald_queue.listener import Listener, wait
from herald_queue.models import ClaimedJob


async def main(url: str) -> None:
    queue = await open_queue(url, pool_max=3)
    listener = Listener(url)
    listen = asyncio.create_task(listener.run())
    await asyncio.wait_for(listener.connected.wait(), 30)
    latencies: list[float] = []
    expected: int | None = None
    to_complete: asyncio.Queue[list[ClaimedJob]] = asyncio.Queue()

    async def completer() -> None:  # completions never delay the next claim
        while True:
            await queue.jobs.complete("latency", await to_complete.get())
            to_complete.task_done()

    completing = asyncio.create_task(completer())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    expect_line = asyncio.create_task(reader.readline())
    print("ready", flush=True)
    try:
        while expected is None or len(latencies) < expected:
            listener.jobs.clear()
            jobs = await queue.jobs.claim("latency", 10)
            now = time.monotonic_ns()
            if jobs:
                latencies += [(now - json.loads(j.payload_json)["t0"]) / 1e6 for j in jobs]
                to_complete.put_nowait(jobs)
                continue
            if expect_line.done() and expected is None:
                expected = int(expect_line.result())
                continue
            await wait(listener.jobs, 0.5)
        await to_complete.join()
    finally:
        completing.cancel()
        listen.cancel()
        await queue.close()
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
