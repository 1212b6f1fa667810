"""A claimer process for the multi-process tests (concurrency, crash recovery).

    python -m tests.integration.queue.claimer URL WORKER [--batch N] [--lease SECONDS]
                                                  [--hold] [--complete K] [--go]

Opens a Queue on URL and claims with worker id WORKER. Every claimed id is printed on
stdout as ``claimed <uuid>`` (flushed) *before* the job is completed, so the test knows
what this process held even if it is killed; completed ids follow as ``completed <uuid>``.

Default mode: claim batches of N and complete them, until a claim comes back empty while
no job is waiting (queued or retrying) any more; then print ``done`` and exit 0.

``--go``: once connected, print ``ready`` and wait for a line on stdin before claiming,
so that the test starts several claimers at the same instant.

``--hold``: claim one batch, complete its first K jobs (``--complete K``), print
``holding`` and wait forever with the rest still leased: the test kills the process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from herald_queue.queue import Queue
from herald_queue.settings import DatabaseSettings, QueueSettings

WAITING = b"SELECT count(*) FROM herald.jobs WHERE state IN ('queued', 'retrying')"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("worker")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--complete", type=int, default=0)
    parser.add_argument("--go", action="store_true")
    args = parser.parse_args(argv)

    queue = await Queue.open(
        DatabaseSettings(pool_min=1, pool_max=2), QueueSettings(lease=args.lease), url=args.url
    )
    try:
        if args.go:
            say("ready")
            await asyncio.to_thread(sys.stdin.readline)
        if args.hold:
            batch = await queue.jobs.claim(args.worker, args.batch)
            for job in batch:
                say(f"claimed {job.id}")
            done = await queue.jobs.complete(args.worker, batch[: args.complete])
            for job_id in done.completed:
                say(f"completed {job_id}")
            say("holding")
            await asyncio.Event().wait()  # until SIGKILL
            return 1
        while True:
            batch = await queue.jobs.claim(args.worker, args.batch)
            if not batch:
                async with queue.pool.connection() as conn:
                    row = await (await conn.execute(WAITING)).fetchone()
                if row is not None and row[0] == 0:
                    say("done")
                    return 0
                # Every candidate was locked by another claimer at that instant: go again.
                await asyncio.sleep(0.005)
                continue
            say("\n".join(f"claimed {job.id}" for job in batch))
            done = await queue.jobs.complete(args.worker, batch)
            say("\n".join(f"completed {job_id}" for job_id in done.completed))
            for lost in done.lost:
                say(f"lost {lost}")
    finally:
        await queue.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
