"""The consumer side of the latency benchmark (a separate process): woken by
LISTEN/NOTIFY, it claims (completing what it held in the same statement), records
now - t0 of each job, and prints the latencies (ms, JSON) once it has seen the number of
jobs given on stdin."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from herald_queue.records import ClaimedJob
from herald_tools.bench.queue_bench import open_queue


async def main(url: str) -> None:
    queue = await open_queue(url, pool_max=2)
    latencies: list[float] = []
    expected: int | None = None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    expect_line = asyncio.create_task(reader.readline())
    print("ready", flush=True)
    try:
        # A sequential consumer on its own connection, woken by LISTEN/NOTIFY on it: each
        # step completes the jobs it holds and claims the next ones, in one statement.
        async with queue.jobs.consumer("latency") as consumer:
            held: list[ClaimedJob] = []
            while expected is None or len(latencies) < expected:
                held = await consumer.step(held, 10)
                now = time.monotonic_ns()
                if held:
                    latencies += [(now - json.loads(j.payload_json)["t0"]) / 1e6 for j in held]
                    continue
                if expect_line.done() and expected is None:
                    expected = int(expect_line.result())
                    continue
                await consumer.wait(0.5)
            await consumer.step(held, 0)
    finally:
        await queue.close()
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
