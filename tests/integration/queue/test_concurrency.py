"""Concurrent claimers never take the same job twice, and every job is completed once.

The claim is one UPDATE whose inner SELECT locks with FOR UPDATE SKIP LOCKED and
re-checks the state (``claim`` in sql/jobs.sql); these tests hammer it from several OS
processes, and from several asyncio tasks on separate pool connections.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import uuid

import pytest

from herald_core.states import Priority
from herald_queue.queue import Queue
from tests.helpers import ROOT, job, open_queue, register, sql_rows

TARGETS = ("alpha", "beta", "gamma")
PRIORITIES = (Priority.HIGH, Priority.MEDIUM, Priority.LOW)


async def fill(queue: Queue, total: int) -> set[uuid.UUID]:
    for name in TARGETS:
        await register(queue, name)
    ids: set[uuid.UUID] = set()
    for start in range(0, total, 500):
        results = await queue.jobs.enqueue_many(
            [
                job(TARGETS[i % 3], {"i": i}, PRIORITIES[(i // 3) % 3])
                for i in range(start, min(total, start + 500))
            ]
        )
        ids |= {r.id for r in results}
    assert len(ids) == total
    return ids


async def run_claimers(url: str, batches: list[int]) -> list[list[str]]:
    """Start one claimer process per batch size, let them all go at once, and return
    what each printed (split into words)."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.queue.claimer",
            url,
            f"proc-{n}",
            "--batch",
            str(batch),
            "--go",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n, batch in enumerate(batches)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line == b"ready\n", line
        results = await asyncio.gather(
            *(asyncio.wait_for(proc.communicate(b"go\n"), timeout=90) for proc in procs)
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    outputs = []
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, f"a claimer failed:\n{err.decode()}"
        outputs.append(out.decode().split())
    return outputs


def parse(words: list[str]) -> dict[str, list[uuid.UUID]]:
    lines: dict[str, list[uuid.UUID]] = collections.defaultdict(list)
    for verb, value in zip(words[0::2], words[1::2], strict=False):
        lines[verb].append(uuid.UUID(value))
    return lines


async def assert_all_done_once(queue: Queue, enqueued: set[uuid.UUID]) -> None:
    rows = await sql_rows(
        queue, "SELECT state, attempts, count(*) AS n FROM herald.jobs GROUP BY 1, 2"
    )
    assert rows == [{"state": "succeeded", "attempts": 1, "n": len(enqueued)}], (
        "every job succeeded after exactly one claim (a second claim would count an attempt)"
    )
    delivered = await sql_rows(
        queue, "SELECT name, delivered_total FROM herald.targets ORDER BY name"
    )
    assert sum(r["delivered_total"] for r in delivered) == len(enqueued)


@pytest.mark.slow
async def test_processes_claim_each_job_exactly_once(queue: Queue) -> None:
    enqueued = await fill(queue, 3000)
    outputs = await run_claimers(queue.url, [25, 50, 50, 100])
    claimed: list[uuid.UUID] = []
    completed: list[uuid.UUID] = []
    for words in outputs:
        assert words[-1] == "done"
        lines = parse(words[:-1])
        assert not lines.get("lost"), "no claimer lost a lease it held"
        claimed += lines["claimed"]
        completed += lines["completed"]
    duplicates = [i for i, n in collections.Counter(claimed).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} jobs were claimed twice"
    assert set(claimed) == enqueued
    assert sorted(completed) == sorted(claimed)
    assert sum(1 for words in outputs if "claimed" in words) >= 2, "the claimers overlapped"
    await assert_all_done_once(queue, enqueued)


async def test_tasks_on_separate_connections_claim_each_job_exactly_once(db_url: str) -> None:
    claimers = 6
    async with await open_queue(db_url, pool_max=claimers + 2) as queue:
        enqueued = await fill(queue, 2000)
        claimed: dict[str, list[uuid.UUID]] = {}

        async def claimer(worker: str, batch: int) -> None:
            mine = claimed.setdefault(worker, [])
            while True:
                jobs = await queue.jobs.claim(worker, batch)
                if not jobs:
                    waiting = await sql_rows(
                        queue,
                        "SELECT 1 FROM herald.jobs WHERE state IN ('queued', 'retrying') LIMIT 1",
                    )
                    if not waiting:
                        return
                    await asyncio.sleep(0)
                    continue
                mine += [j.id for j in jobs]
                done = await queue.jobs.complete(worker, jobs)
                assert done.lost == []

        await asyncio.gather(*(claimer(f"task-{n}", 10 + 7 * n) for n in range(claimers)))
        everything = [i for ids in claimed.values() for i in ids]
        assert len(everything) == len(set(everything)), "a job was claimed twice"
        assert set(everything) == enqueued
        assert sum(1 for ids in claimed.values() if ids) >= 2
        await assert_all_done_once(queue, enqueued)
